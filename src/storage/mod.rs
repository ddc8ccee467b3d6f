//! Storage: connecting, migrating, and the queries Herald runs.
//!
//! Functions here take `&impl ConnectionTrait` and return entity models or
//! `StorageError`; no GraphQL types and no HTTP concerns.

pub mod db;
pub mod users;

pub use db::{DatabaseKind, connect, migrate};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The unique index `users_email_key` rejected the insert.
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}
