//! The status indexes hold only the rows whose status their scan looks for
//! (issue 13), on Postgres: `(status, next_attempt_at)` the PENDING and
//! PROCESSING rows (the sweeper's re-enqueue and expired-claim scans),
//! `(status, send_at)` the SCHEDULED ones (the scheduler), and
//! `(status, expires_at)` the waiting rows that have an expiry (the expiry
//! pass). A delivered row leaves all three, so a notification's insert,
//! claim and outcome write 11 index entries instead of 18, and the indexes
//! stay the size of the backlog, not of the table.
//!
//! Status changes stay non-HOT even so: Postgres counts a column named in an
//! index's predicate like a key column. SQLite keeps its full indexes: its
//! planner uses a partial index only when the query repeats the predicate's
//! terms literally.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (name, column, the rows it keeps).
const INDEXES: [(&str, &str, &str); 3] = [
    (
        "notifications_status_due_idx",
        "next_attempt_at",
        "status IN ('PENDING', 'PROCESSING')",
    ),
    (
        "notifications_status_send_at_idx",
        "send_at",
        "status = 'SCHEDULED'",
    ),
    (
        "notifications_status_expires_at_idx",
        "expires_at",
        "status IN ('PENDING', 'SCHEDULED') AND expires_at IS NOT NULL",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, false).await
    }
}

/// Each status index again, partial or (`partial` false) as it was.
async fn rebuild(manager: &SchemaManager<'_>, partial: bool) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for (name, column, rows) in INDEXES {
        let predicate = if partial {
            format!(" WHERE {rows}")
        } else {
            String::new()
        };
        db.execute_unprepared(&format!(
            "DROP INDEX IF EXISTS {name}; \
             CREATE INDEX {name} ON notifications (status, {column}){predicate}"
        ))
        .await?;
    }
    Ok(())
}
