//! Storage: connecting, migrating, and the queries Herald runs.
//!
//! Functions here take `&impl ConnectionTrait` and return entity models or
//! `StorageError`; no GraphQL types and no HTTP concerns.

pub mod api_keys;
pub mod db;
pub mod idempotency;
pub mod inbox;
pub mod notifications;
pub mod preferences;
pub mod retention;
pub mod users;
pub mod webhooks;

pub use db::{DatabaseKind, QueryStats, connect, connect_with_stats, migrate};

/// The current time as stored: whole milliseconds, so SQLite (nanoseconds)
/// and Postgres (microseconds) return the same value a JavaScript `Date`
/// holds.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3)
}

/// The earliest time Herald stores or compares with: every database takes
/// it (chrono's `MIN_UTC`, 262,144 BC, is out of Postgres's range, and a
/// query bound to it fails with "timestamp out of range").
pub const EARLIEST: chrono::DateTime<chrono::Utc> = chrono::DateTime::UNIX_EPOCH;

/// `at - span`, or [`EARLIEST`] when that would come before it.
pub fn before(
    at: chrono::DateTime<chrono::Utc>,
    span: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_sub_signed(span))
        .map_or(EARLIEST, |t| t.max(EARLIEST))
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The unique index `users_email_key` rejected the insert.
    #[error("email already registered")]
    EmailTaken,
    /// One of the notifications named belongs to another user.
    #[error("forbidden")]
    Forbidden,
    /// These notification ids do not exist.
    #[error("unknown notifications {0:?}")]
    UnknownNotifications(Vec<i64>),
    /// The idempotency key was used before with a different input.
    #[error("idempotency key used with a different input")]
    IdempotencyConflict,
    /// A concurrent send committed the idempotency key first: the insert
    /// rolled back, and `idempotency::replay` finds the winner's row.
    #[error("idempotency key taken by a concurrent send")]
    IdempotencyKeyTaken,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn before_saturates_instead_of_panicking() {
        let now = super::now();
        assert_eq!(
            super::before(now, Duration::from_secs(60)),
            now - chrono::Duration::seconds(60)
        );
        let earliest = super::EARLIEST;
        assert_eq!(super::before(now, Duration::from_secs(u64::MAX)), earliest);
        assert_eq!(super::before(now, Duration::MAX), earliest);
        // chrono's own range ends long before Duration's.
        assert_eq!(super::before(now, Duration::from_secs(1 << 50)), earliest);
    }
}
