//! What an application's send carries (issue 11): the sender, a category, a
//! JSON `data` object, `send_at` (SCHEDULED until then) and `expires_at`
//! (EXPIRED if not delivered by then); the statuses SCHEDULED, CANCELED and
//! EXPIRED (and SKIPPED, for preferences); the sweeper's indexes on
//! `(status, send_at)` and `(status, expires_at)`; and `idempotency_records`,
//! one row per (sender, idempotency key).
//!
//! The status CHECK cannot be altered in place on SQLite: there the table is
//! rebuilt from its own `CREATE TABLE` text with the wider list (see
//! `sqlite.rs`); Postgres swaps the constraint.

use sea_orm_migration::{
    prelude::*,
    schema::*,
    sea_orm::{DatabaseBackend, Statement},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD_STATUSES: &str = "'PENDING', 'PROCESSING', 'SENT', 'FAILED'";
const NEW_STATUSES: &str =
    "'PENDING', 'PROCESSING', 'SENT', 'FAILED', 'SCHEDULED', 'CANCELED', 'EXPIRED', 'SKIPPED'";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Sqlite => widen_status_sqlite(manager).await?,
            _ => {
                manager
                    .get_connection()
                    .execute_unprepared(&format!(
                        "ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_status_check, \
                         ADD CONSTRAINT notifications_status_check CHECK (status IN ({NEW_STATUSES}))"
                    ))
                    .await?;
            }
        }
        // One column per statement: SQLite adds one at a time.
        for column in [
            big_integer_null(Notifications::SenderAppId),
            string_len_null(Notifications::Category, 64),
            text_null(Notifications::Data),
            timestamp_with_time_zone_null(Notifications::SendAt),
            timestamp_with_time_zone_null(Notifications::ExpiresAt),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Notifications::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        for (name, column) in [
            // The scheduler: SCHEDULED rows by due time.
            ("notifications_status_send_at_idx", Notifications::SendAt),
            // The sweeper's expiry pass: waiting rows by expiry.
            (
                "notifications_status_expires_at_idx",
                Notifications::ExpiresAt,
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Notifications::Table)
                        .col(Notifications::Status)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyRecords::Table)
                    // "app:<key id>" or "user:<user id>".
                    .col(string_len(IdempotencyRecords::Sender, 40))
                    .col(string_len(IdempotencyRecords::Key, 255))
                    // SHA-256 (hex) of the send's canonical input.
                    .col(string_len(IdempotencyRecords::RequestHash, 64))
                    .col(big_integer(IdempotencyRecords::NotificationId))
                    .col(timestamp_with_time_zone(IdempotencyRecords::CreatedAt))
                    .primary_key(
                        Index::create()
                            .name("idempotency_records_pkey")
                            .col(IdempotencyRecords::Sender)
                            .col(IdempotencyRecords::Key),
                    )
                    .to_owned(),
            )
            .await?;
        // The pruning scan.
        manager
            .create_index(
                Index::create()
                    .name("idempotency_records_created_idx")
                    .table(IdempotencyRecords::Table)
                    .col(IdempotencyRecords::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Rows in the new statuses cannot go back under the old CHECK.
        Err(DbErr::Migration(
            "migration 8 (application sends) cannot be rolled back".to_owned(),
        ))
    }
}

/// `notifications` again, from its own CREATE TABLE text with the status
/// list widened; rows, ids and indexes as they were.
async fn widen_status_sqlite(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = crate::sqlite::connection(manager, 8)?;
    let schema = |kind: &str| {
        Statement::from_string(
            DatabaseBackend::Sqlite,
            format!(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'notifications' \
                 AND type = '{kind}' AND sql IS NOT NULL ORDER BY name"
            ),
        )
    };
    let sql_of = |row: sea_orm_migration::sea_orm::QueryResult| row.try_get::<String>("", "sql");
    let create = db
        .query_one_raw(schema("table"))
        .await?
        .ok_or_else(|| DbErr::Migration("migration 8: no notifications table".to_owned()))
        .and_then(sql_of)?;
    let indexes = db
        .query_all_raw(schema("index"))
        .await?
        .into_iter()
        .map(sql_of)
        .collect::<Result<Vec<_>, _>>()?;
    if create.matches(OLD_STATUSES).count() != 1 {
        return Err(DbErr::Migration(
            "migration 8: the notifications status CHECK is not the one expected".to_owned(),
        ));
    }
    let create = create.replacen(OLD_STATUSES, NEW_STATUSES, 1).replacen(
        "\"notifications\"",
        "\"notifications_new\"",
        1,
    );
    if !create.contains("\"notifications_new\"") {
        return Err(DbErr::Migration(
            "migration 8: unexpected notifications CREATE TABLE".to_owned(),
        ));
    }
    let mut steps = vec![
        create,
        "INSERT INTO notifications_new SELECT * FROM notifications".to_owned(),
        "DROP TABLE notifications".to_owned(),
        "ALTER TABLE notifications_new RENAME TO notifications".to_owned(),
    ];
    steps.extend(indexes);
    crate::sqlite::run_with_foreign_keys_off(db, "rebuilding notifications", &steps).await
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Status,
    /// The application key that sent it; `NULL`: the recipient sent it
    /// to themselves.
    SenderAppId,
    Category,
    /// A JSON object (text), at most 8 KiB.
    Data,
    SendAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    Sender,
    Key,
    RequestHash,
    NotificationId,
    CreatedAt,
}
