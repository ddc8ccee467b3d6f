//! What the delivery pipeline tracks on each notification.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            Notifications::ClaimedAt,
            Notifications::EnqueuedAt,
            Notifications::SentAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Notifications::Table)
                        .add_column(timestamp_with_time_zone_null(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Notifications::ClaimedAt,
            Notifications::EnqueuedAt,
            Notifications::SentAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Notifications::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Notifications {
    Table,
    /// When a worker moved the row to PROCESSING; older than the visibility
    /// timeout means that worker died.
    ClaimedAt,
    /// When the row was last put on the queue; a hint for the sweeper, which
    /// re-enqueues PENDING rows whose entry may have been lost.
    EnqueuedAt,
    SentAt,
}
