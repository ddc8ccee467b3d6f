//! `inbox_counters.notifications`: every notification of the user's,
//! archived or not (the counter's `total` leaves archived ones out), so the
//! old `notifications(page, pageSize)` takes its `totalCount` from the
//! counter row, not from a `COUNT(*)`. Backfilled from the rows.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Counter rows exist for every user with notifications (migration 4 and
/// every insert since create them), so an UPDATE backfills them all.
const BACKFILL: &str = "UPDATE inbox_counters SET notifications = \
    (SELECT COUNT(*) FROM notifications WHERE notifications.user_id = inbox_counters.user_id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InboxCounters::Table)
                    .add_column(big_integer(InboxCounters::Notifications).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(BACKFILL)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InboxCounters::Table)
                    .drop_column(InboxCounters::Notifications)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum InboxCounters {
    Table,
    /// Every notification, archived or not.
    Notifications,
}
