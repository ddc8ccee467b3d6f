//! Idempotency records: one per (sender, key), naming the notification the
//! first send with that key stored, with a hash of that send's input.
//!
//! The record is written in the notification's own transaction (`claim`),
//! so a key never names a notification that was not stored, nor a stored
//! notification lack its record. Between concurrent sends the primary key
//! decides: the losers' inserts do nothing (on Postgres they wait for the
//! winner's transaction first), they roll back, and `replay` reads the
//! winner's notification. There is no "in progress" state.
//!
//! A record whose notification is gone (its recipient was deleted, and the
//! rows with them) names nothing: `replay` deletes it and the key is free.

use chrono::{DateTime, Utc};
use entity::{
    idempotency_record::{self, Column, Entity},
    notification,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, ExprTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, QueryTrait as _, sea_query::Expr,
};

use super::{StorageError, notifications};
use crate::domain::idempotency::Idempotency;

type Result<T> = std::result::Result<T, StorageError>;

/// Inside the transaction that stores notification `notification_id`:
/// records the key for it. `false`: the key is taken (a concurrent send
/// committed it first); roll back and `replay`.
pub async fn claim(
    txn: &impl ConnectionTrait,
    idempotency: &Idempotency,
    notification_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let record = idempotency_record::ActiveModel {
        sender: Set(idempotency.sender.clone()),
        key: Set(idempotency.key.as_str().to_owned()),
        request_hash: Set(idempotency.request_hash.clone()),
        notification_id: Set(notification_id),
        created_at: Set(now),
    };
    let inserted = Entity::insert(record)
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await?;
    Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0))
}

/// What an earlier send with this key stored: its notification as it is
/// now. `None` when there is no record, or its notification is gone (the
/// record is deleted then). `IdempotencyConflict` when the earlier send's
/// input differs.
pub async fn replay(
    db: &impl ConnectionTrait,
    idempotency: &Idempotency,
) -> Result<Option<notification::Model>> {
    let key = (
        idempotency.sender.clone(),
        idempotency.key.as_str().to_owned(),
    );
    let Some(record) = Entity::find_by_id(key).one(db).await? else {
        return Ok(None);
    };
    match notifications::find(db, record.notification_id).await? {
        Some(_) if record.request_hash != idempotency.request_hash => {
            Err(StorageError::IdempotencyConflict)
        }
        Some(row) => Ok(Some(row)),
        None => {
            // Only this record: a concurrent send may have replaced it.
            Entity::delete_many()
                .filter(Column::Sender.eq(&record.sender))
                .filter(Column::Key.eq(&record.key))
                .filter(Column::NotificationId.eq(record.notification_id))
                .exec(db)
                .await?;
            Ok(None)
        }
    }
}

/// Deletes up to `limit` records created before `before`, oldest first:
/// one statement. Returns how many went.
pub async fn delete_created_before(
    db: &impl ConnectionTrait,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<u64> {
    let oldest = Entity::find()
        .select_only()
        .column(Column::Sender)
        .column(Column::Key)
        .filter(Column::CreatedAt.lt(before))
        .order_by_asc(Column::CreatedAt)
        .limit(limit)
        .into_query();
    let pair = Expr::tuple([Expr::col(Column::Sender), Expr::col(Column::Key)]);
    Ok(Entity::delete_many()
        .filter(pair.in_subquery(oldest))
        .exec(db)
        .await?
        .rows_affected)
}
