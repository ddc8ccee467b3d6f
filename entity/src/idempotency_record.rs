//! `idempotency_records`: one row per (sender, idempotency key), written in
//! the transaction that stores the notification (migration 8). The primary
//! key decides between concurrent repeats; the background pruner deletes
//! rows older than `HERALD_IDEMPOTENCY_TTL`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_records")]
pub struct Model {
    /// `app:<api key id>` or `user:<user id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub sender: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// SHA-256 (hex) of the send's canonical input.
    pub request_hash: String,
    pub notification_id: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
