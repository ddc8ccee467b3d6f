//! Storage: connecting, migrating, and the queries Herald runs.
//!
//! Functions here take `&impl ConnectionTrait` and return entity models or
//! `StorageError`; no GraphQL types and no HTTP concerns.

pub mod db;
pub mod notifications;
pub mod users;

pub use db::{DatabaseKind, QueryStats, connect, connect_with_stats, migrate};

/// The current time as stored: whole milliseconds, so SQLite (nanoseconds)
/// and Postgres (microseconds) return the same value a JavaScript `Date`
/// holds.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3)
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The unique index `users_email_key` rejected the insert.
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}
