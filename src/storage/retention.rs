//! Retention of the inbox event log: the queries that prune it, a prefix
//! of one user's log at a time, by primary key (`worker::retention` runs
//! them in batches).
//!
//! What is deleted is always a prefix of the user's log, and never the
//! user's last event: `inbox::changes_after` and the subscription replay
//! tell "older than the retained log" by the first event left, so a
//! client whose `after` falls before it gets `InboxResync`, and a hole in
//! the middle (an event stamped late by a skewed clock) cannot happen.

use chrono::{DateTime, Utc};
use entity::{
    inbox_counter,
    inbox_event::{self, Column},
};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, sea_query::Expr,
};

use super::StorageError;

type Result<T> = std::result::Result<T, StorageError>;

/// Up to `limit` users, by id above `after_user`, who have an event older
/// than `before` that is not their last.
pub async fn users_with_old_events(
    db: &impl ConnectionTrait,
    before: DateTime<Utc>,
    after_user: i64,
    limit: u64,
) -> Result<Vec<i64>> {
    Ok(inbox_event::Entity::find()
        .select_only()
        .column(Column::UserId)
        .distinct()
        .filter(Column::At.lt(before))
        .filter(Column::UserId.gt(after_user))
        .filter(Expr::cust(
            "seq < (SELECT c.last_seq FROM inbox_counters c \
             WHERE c.user_id = inbox_events.user_id)",
        ))
        .order_by_asc(Column::UserId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// The prunable prefix of `user_id`'s log: `(first, below)`, the seq of
/// its first event and the seq before which every event may go (the first
/// event at or after `before`, and at most the user's last seq). `None`
/// when the user has no log.
pub async fn prunable(
    db: &impl ConnectionTrait,
    user_id: i64,
    before: DateTime<Utc>,
) -> Result<Option<(i64, i64)>> {
    let min_seq = |recent: bool| {
        let mut query = inbox_event::Entity::find()
            .select_only()
            .column_as(Expr::cust("MIN(seq)"), "seq")
            .filter(Column::UserId.eq(user_id));
        if recent {
            query = query.filter(Column::At.gte(before));
        }
        query.into_tuple::<Option<i64>>().one(db)
    };
    let Some(Some(first)) = min_seq(false).await? else {
        return Ok(None);
    };
    let last = inbox_counter::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .map_or(first, |c| c.last_seq);
    let kept = min_seq(true).await?.flatten().unwrap_or(last);
    Ok(Some((first, kept.min(last))))
}

/// Deletes `user_id`'s events with seq below `below`: one statement, by
/// primary key range. Returns how many went.
pub async fn delete_events_below(
    db: &impl ConnectionTrait,
    user_id: i64,
    below: i64,
) -> Result<u64> {
    Ok(inbox_event::Entity::delete_many()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Seq.lt(below))
        .exec(db)
        .await?
        .rows_affected)
}
