//! Webhook endpoints and the webhook outbox (`webhooks` module).
//!
//! `record` runs inside the transaction of the change it reports (called
//! where inbox events are written, and by `inbox::mark` for the first
//! READ): one outbox row per (enabled endpoint listening, event), so a crash
//! cannot lose a webhook the change committed.

use chrono::{DateTime, Utc};
use entity::{webhook_delivery, webhook_endpoint};
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter as _, QueryOrder as _, Statement, Value, sea_query::Expr,
};

use super::StorageError;
use crate::{
    webhooks::{EventSet, EventType, WebhookEventV1},
    wire::{self, InboxChangeV1, InboxEventV1, NotificationV1},
};

type Result<T> = std::result::Result<T, StorageError>;

pub async fn create_endpoint(
    db: &DatabaseConnection,
    url: &url::Url,
    events: &EventSet,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<webhook_endpoint::Model> {
    let row = webhook_endpoint::ActiveModel {
        url: Set(url.as_str().to_owned()),
        events: Set(events.to_stored()),
        secret: Set(secret.to_owned()),
        created_at: Set(now),
        failing_since: Set(None),
        disabled_at: Set(None),
        last_error: Set(None),
        ..Default::default()
    };
    Ok(webhook_endpoint::Entity::insert(row)
        .exec_with_returning(db)
        .await?)
}

pub async fn list_endpoints(db: &DatabaseConnection) -> Result<Vec<webhook_endpoint::Model>> {
    Ok(webhook_endpoint::Entity::find()
        .order_by_asc(webhook_endpoint::Column::Id)
        .all(db)
        .await?)
}

/// Deletes the endpoint and (cascade) its outbox rows: `false` if unknown.
pub async fn delete_endpoint(db: &DatabaseConnection, id: i64) -> Result<bool> {
    let deleted = webhook_endpoint::Entity::delete_by_id(id).exec(db).await?;
    Ok(deleted.rows_affected > 0)
}

/// Enables a disabled endpoint (its failure streak starts over): `false`
/// if unknown.
pub async fn enable_endpoint(db: &DatabaseConnection, id: i64) -> Result<bool> {
    let updated = webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::DisabledAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            webhook_endpoint::Column::FailingSince,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_endpoint::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// One event about to be recorded for every endpoint listening for it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub event_type: EventType,
    pub notification_id: i64,
    /// The body, exactly as it will be signed and sent.
    pub payload: String,
}

impl Outgoing {
    pub fn new(event_type: EventType, at: DateTime<Utc>, notification: &NotificationV1) -> Self {
        let event = WebhookEventV1::new(event_type, at, notification);
        Self {
            event_type,
            notification_id: notification.id,
            // A struct of strings, numbers and a JSON value: always encodes.
            payload: wire::encode(&event).unwrap_or_default(),
        }
    }
}

/// The webhook events `events` report: each move to a final status.
pub fn from_inbox_events(events: &[InboxEventV1]) -> Vec<Outgoing> {
    events
        .iter()
        .filter_map(|event| match &event.change {
            InboxChangeV1::DeliveryStatusChanged { notification, .. } => {
                EventType::for_status(notification.status)
                    .map(|t| Outgoing::new(t, event.at, notification))
            }
            _ => None,
        })
        .collect()
}

/// Rows per multi-row statement (3 bound values a row).
const ROWS_PER_STATEMENT: usize = 300;

/// Writes an outbox row for every (enabled endpoint listening, event) of
/// `events`, in the caller's transaction. One statement per 300 events,
/// none for no events; no row when no endpoint listens.
pub async fn record(
    txn: &impl ConnectionTrait,
    events: &[Outgoing],
    now: DateTime<Utc>,
) -> Result<u64> {
    let backend = txn.get_database_backend();
    let mut written = 0;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3 + 1);
        values.push(now.into());
        let mut rows = Vec::with_capacity(chunk.len());
        for event in chunk {
            let first = values.len() + 1;
            rows.push(format!(
                "({}, {}, {})",
                placeholder(backend, first),
                placeholder(backend, first + 1),
                placeholder(backend, first + 2)
            ));
            values.push(event.event_type.as_str().into());
            values.push(event.notification_id.into());
            values.push(event.payload.clone().into());
        }
        // `column1..3`: the names both SQLite and Postgres give a VALUES
        // list's columns.
        let sql = format!(
            "INSERT INTO webhook_deliveries \
               (endpoint_id, event_type, notification_id, payload, status, attempts, created_at) \
             SELECT e.id, v.column1, v.column2, v.column3, 'PENDING', 0, {now} \
             FROM webhook_endpoints e, (VALUES {rows}) AS v \
             WHERE e.disabled_at IS NULL \
               AND (',' || e.events || ',') LIKE ('%,' || v.column1 || ',%')",
            now = placeholder(backend, 1),
            rows = rows.join(", "),
        );
        let result = txn
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        written += result.rows_affected();
    }
    Ok(written)
}

/// Whether an enabled endpoint listens for `event`: lets a change skip
/// building events nobody receives.
pub async fn listens(txn: &impl ConnectionTrait, event: EventType) -> Result<bool> {
    let backend = txn.get_database_backend();
    let sql = format!(
        "SELECT 1 AS one FROM webhook_endpoints WHERE disabled_at IS NULL \
           AND (',' || events || ',') LIKE {} LIMIT 1",
        placeholder(backend, 1)
    );
    let pattern = format!("%,{},%", event.as_str());
    let found = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(pattern)],
        ))
        .await?;
    Ok(found.is_some())
}

/// The `n`th (1-based) bound-value placeholder.
fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// Outbox rows (for tests and the CLI).
pub async fn deliveries(db: &impl ConnectionTrait) -> Result<Vec<webhook_delivery::Model>> {
    Ok(webhook_delivery::Entity::find()
        .order_by_asc(webhook_delivery::Column::Id)
        .all(db)
        .await?)
}
