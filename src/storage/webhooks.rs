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
    EntityTrait, ExprTrait as _, QueryFilter as _, QueryOrder as _, Statement, Value,
    sea_query::Expr,
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
    if written > 0 {
        crate::webhooks::wrote_rows();
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

/// The `n`th (1-based) bound value, by number (`$n`, SQLite's `?n`):
/// usable more than once.
fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    }
}

/// Outbox rows (for tests and the CLI).
pub async fn deliveries(db: &impl ConnectionTrait) -> Result<Vec<webhook_delivery::Model>> {
    Ok(webhook_delivery::Entity::find()
        .order_by_asc(webhook_delivery::Column::Id)
        .all(db)
        .await?)
}

// ---- Delivery: the relay, the worker's claim and outcome ----

/// PENDING outbox rows that are due, not claimed (or their claim expired),
/// whose endpoint is enabled and whose queue entry may be lost (never
/// queued, or queued before `stamped_before`): re-stamped as queued `now`
/// in one statement, their ids returned. Of several relays running it at
/// once, each row goes to one.
pub async fn take_for_enqueue(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    stamped_before: DateTime<Utc>,
    visibility: std::time::Duration,
    limit: u64,
) -> Result<Vec<i64>> {
    let backend = db.get_database_backend();
    // The conditions, on the table as `d.` or unqualified.
    let stale = |d: &str| {
        format!(
            "{d}status = 'PENDING' \
               AND ({d}next_attempt_at IS NULL OR {d}next_attempt_at <= {now}) \
               AND ({d}claimed_at IS NULL OR {d}claimed_at < {expired}) \
               AND ({d}enqueued_at IS NULL OR {d}enqueued_at < {stamped})",
            now = placeholder(backend, 1),
            expired = placeholder(backend, 2),
            stamped = placeholder(backend, 3),
        )
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET enqueued_at = {now} \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE e.disabled_at IS NULL AND {inner} \
             ORDER BY d.id LIMIT {limit}) \
           AND {outer} \
         RETURNING id",
        now = placeholder(backend, 1),
        inner = stale("d."),
        outer = stale(""),
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                Value::from(now),
                Value::from(super::before(now, visibility)),
                Value::from(stamped_before),
            ],
        ))
        .await?;
    let mut ids = rows
        .iter()
        .map(|row| row.try_get::<i64>("", "id"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Clears the queue stamp of a PENDING row whose enqueue failed: the next
/// relay pass takes it.
pub async fn mark_unqueued(db: &impl ConnectionTrait, id: i64) -> Result<()> {
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::EnqueuedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_delivery::Column::Id.eq(id))
        .filter(webhook_delivery::Column::Status.eq(webhook_delivery::Status::Pending))
        .exec(db)
        .await?;
    Ok(())
}

/// Takes outbox row `id` for one attempt (compare-and-set): PENDING, due,
/// not claimed (or the claim expired, its worker died), its endpoint
/// enabled → `claimed_at = now`, `attempts + 1`. The row as claimed and its
/// endpoint; `None` when another worker has it, it is finished, not due,
/// its endpoint is disabled, or it is gone.
pub async fn claim(
    db: &DatabaseConnection,
    id: i64,
    now: DateTime<Utc>,
    visibility: std::time::Duration,
) -> Result<Option<(webhook_delivery::Model, webhook_endpoint::Model)>> {
    use webhook_delivery::Column;
    let enabled = sea_orm::sea_query::Query::select()
        .column(webhook_endpoint::Column::Id)
        .from(webhook_endpoint::Entity)
        .and_where(webhook_endpoint::Column::DisabledAt.is_null())
        .to_owned();
    let claimed = webhook_delivery::Entity::update_many()
        .col_expr(Column::ClaimedAt, Expr::value(Some(now)))
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(webhook_delivery::Status::Pending))
        .filter(
            sea_orm::Condition::any()
                .add(Column::NextAttemptAt.is_null())
                .add(Column::NextAttemptAt.lte(now)),
        )
        .filter(
            sea_orm::Condition::any()
                .add(Column::ClaimedAt.is_null())
                .add(Column::ClaimedAt.lt(super::before(now, visibility))),
        )
        .filter(Column::EndpointId.in_subquery(enabled))
        .exec_with_returning(db)
        .await?;
    let Some(row) = claimed.into_iter().next() else {
        return Ok(None);
    };
    let endpoint = webhook_endpoint::Entity::find_by_id(row.endpoint_id)
        .one(db)
        .await?;
    Ok(endpoint.map(|endpoint| (row, endpoint)))
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Due again at `retry_at`.
    Retry {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// Given up.
    Failed {
        error: String,
    },
}

/// Records `attempt` for `claimed` (a compare-and-set on the claim: still
/// PENDING, same attempt number and claim time): `false` when the claim
/// expired and another worker took the row over (this outcome is dropped).
pub async fn record_attempt(
    db: &DatabaseConnection,
    claimed: &webhook_delivery::Model,
    attempt: &Attempt,
    now: DateTime<Utc>,
) -> Result<bool> {
    use webhook_delivery::{Column, Status};
    let none = Option::<DateTime<Utc>>::None;
    let update = webhook_delivery::Entity::update_many()
        .col_expr(Column::ClaimedAt, Expr::value(none))
        .filter(Column::Id.eq(claimed.id))
        .filter(Column::Status.eq(Status::Pending))
        .filter(Column::Attempts.eq(claimed.attempts))
        .filter(Column::ClaimedAt.eq(claimed.claimed_at));
    let update = match attempt {
        Attempt::Delivered => update
            .col_expr(Column::Status, Expr::value(Status::Delivered))
            .col_expr(Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(Column::LastError, Expr::value(Option::<String>::None)),
        Attempt::Retry { error, retry_at } => update
            .col_expr(Column::NextAttemptAt, Expr::value(Some(*retry_at)))
            .col_expr(Column::EnqueuedAt, Expr::value(none))
            .col_expr(Column::LastError, Expr::value(Some(error.clone()))),
        Attempt::Failed { error } => update
            .col_expr(Column::Status, Expr::value(Status::Failed))
            .col_expr(Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(Column::LastError, Expr::value(Some(error.clone()))),
    };
    Ok(update.exec(db).await?.rows_affected > 0)
}

/// An endpoint answered with a 2xx: its failure streak ends (no statement
/// is written when there was none).
pub async fn endpoint_succeeded(db: &DatabaseConnection, endpoint_id: i64) -> Result<()> {
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::FailingSince,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_endpoint::Column::Id.eq(endpoint_id))
        .filter(webhook_endpoint::Column::FailingSince.is_not_null())
        .exec(db)
        .await?;
    Ok(())
}

/// A delivery to an endpoint failed at `now`: its streak starts (if none
/// runs), and its last error is kept. When the streak has lasted
/// `disable_after`, the endpoint is disabled and its PENDING rows are
/// FAILED. `Some(failing_since)` when this call disabled it.
pub async fn endpoint_failed(
    db: &DatabaseConnection,
    endpoint_id: i64,
    error: &str,
    now: DateTime<Utc>,
    disable_after: std::time::Duration,
) -> Result<Option<DateTime<Utc>>> {
    use webhook_endpoint::Column;
    let streak = Expr::col(Column::FailingSince).if_null(now);
    let updated = webhook_endpoint::Entity::update_many()
        .col_expr(Column::FailingSince, streak)
        .col_expr(Column::LastError, Expr::value(Some(error.to_owned())))
        .filter(Column::Id.eq(endpoint_id))
        .exec_with_returning(db)
        .await?;
    let Some(endpoint) = updated.into_iter().next() else {
        return Ok(None);
    };
    let Some(since) = endpoint.failing_since else {
        return Ok(None);
    };
    if endpoint.disabled_at.is_some() || since > super::before(now, disable_after) {
        return Ok(None);
    }
    let txn = sea_orm::TransactionTrait::begin(db).await?;
    let disabled = webhook_endpoint::Entity::update_many()
        .col_expr(Column::DisabledAt, Expr::value(Some(now)))
        .filter(Column::Id.eq(endpoint_id))
        .filter(Column::DisabledAt.is_null())
        .filter(Column::FailingSince.eq(since))
        .exec(&txn)
        .await?;
    if disabled.rows_affected == 0 {
        txn.rollback().await?;
        return Ok(None);
    }
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(webhook_delivery::Status::Failed),
        )
        .col_expr(webhook_delivery::Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(
            webhook_delivery::Column::LastError,
            Expr::value(Some(format!(
                "the endpoint was disabled: every delivery failed since {since}"
            ))),
        )
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .filter(webhook_delivery::Column::Status.eq(webhook_delivery::Status::Pending))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(since))
}

/// A queue entry handed out too often: the row FAILED (unless finished).
pub async fn fail_unfinished(
    db: &DatabaseConnection,
    id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    use webhook_delivery::{Column, Status};
    let updated = webhook_delivery::Entity::update_many()
        .col_expr(Column::Status, Expr::value(Status::Failed))
        .col_expr(Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(Column::LastError, Expr::value(Some(error.to_owned())))
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(Status::Pending))
        .exec(db)
        .await?;
    Ok(updated.rows_affected > 0)
}
