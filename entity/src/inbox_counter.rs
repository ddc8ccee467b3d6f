//! `inbox_counters`: one row per user with their last inbox seq and exact
//! counts. Every change to a user's notifications updates it in the change's
//! transaction; its row lock orders one user's writes (DESIGN.md, invariant 4).
//! A user without a row has seq 0 and no notifications.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbox_counters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    /// The seq of the user's last inbox event.
    pub last_seq: i64,
    /// Notifications not archived.
    pub total: i64,
    /// Not archived and not read.
    pub unread: i64,
    /// Not archived and not seen.
    pub unseen: i64,
    /// Every notification, archived or not (migration 5): the old
    /// `notifications` list's `totalCount`. Only a creation moves it.
    pub notifications: i64,
}

/// The foreign key to `users` (ON DELETE CASCADE) lives in the migration;
/// nothing joins through it.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
