//! Users an application names by its own id: `users.external_id` (unique,
//! nullable, 1..=255 characters), and `password_hash` nullable, since a user
//! an application creates has no password (and can never log in with one).
//!
//! SQLite cannot drop a NOT NULL constraint in place: the table is rebuilt
//! the way SQLite's ALTER TABLE documentation prescribes, on one connection
//! with foreign keys off (a DROP TABLE with them on would cascade into
//! every user's notifications), checked before the commit.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The unique index the recipient upsert's `ON CONFLICT` names.
const EXTERNAL_ID_INDEX: &str = "users_external_id_key";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DatabaseBackend::Sqlite => rebuild_sqlite(manager).await?,
            _ => {
                manager
                    .alter_table(
                        Table::alter()
                            .table(Users::Table)
                            .modify_column(ColumnDef::new(Users::PasswordHash).text().null())
                            .add_column(string_len_null(Users::ExternalId, 255))
                            .to_owned(),
                    )
                    .await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name(EXTERNAL_ID_INDEX)
                    .table(Users::Table)
                    .col(Users::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Users without a password cannot go back to a NOT NULL column.
        Err(DbErr::Migration(
            "migration 7 (external ids) cannot be rolled back".to_owned(),
        ))
    }
}

/// `users` again, with `password_hash` nullable and `external_id` added;
/// ids, emails and the email's unique index as they were.
async fn rebuild_sqlite(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = crate::sqlite::connection(manager, 7)?;
    let create = Table::create()
        .table(UsersNew::Table)
        .col(big_pk_auto(Users::Id))
        .col(string_len(Users::Email, 320))
        .col(text_null(Users::PasswordHash))
        .col(timestamp_with_time_zone(Users::CreatedAt))
        .col(string_len_null(Users::ExternalId, 255))
        .to_string(SqliteQueryBuilder);
    let email_index = Index::create()
        .name("users_email_key")
        .table(Users::Table)
        .col(Users::Email)
        .unique()
        .to_string(SqliteQueryBuilder);
    let steps = [
        create,
        "INSERT INTO users_new (id, email, password_hash, created_at, external_id) \
         SELECT id, email, password_hash, created_at, NULL FROM users"
            .to_owned(),
        "DROP TABLE users".to_owned(),
        "ALTER TABLE users_new RENAME TO users".to_owned(),
        email_index,
    ];
    crate::sqlite::run_with_foreign_keys_off(db, "rebuilding users", &steps).await
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    CreatedAt,
    /// An application's own id for the user; unique (`users_external_id_key`).
    ExternalId,
}

#[derive(DeriveIden)]
enum UsersNew {
    Table,
}
