//! `inbox_events`: the per-user log of inbox changes, keyed (user_id, seq),
//! gapless per user. Written in the same transaction as the change it
//! records; `payload` is a versioned wire type, not a model.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbox_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// `NotificationCreated`, `DeliveryStatusChanged` or `NotificationsMarked`.
    pub kind: String,
    pub at: DateTimeUtc,
    /// The user's counts right after this event.
    pub total: i64,
    pub unread: i64,
    pub unseen: i64,
    /// JSON of a versioned payload (`wire::InboxEventV1`).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
}

/// The foreign key to `users` (ON DELETE CASCADE) lives in the migration;
/// nothing joins through it.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
