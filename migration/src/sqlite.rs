//! Rebuilding a SQLite table, the way SQLite's ALTER TABLE documentation
//! prescribes for what ALTER TABLE cannot do (dropping NOT NULL, changing a
//! CHECK): create the new table, copy, drop the old one, rename, recreate the
//! indexes, all on one connection with foreign keys off (a DROP TABLE with
//! them on would cascade into the rows that point at the old table), checked
//! with `PRAGMA foreign_key_check` before the commit.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{DatabaseConnection, sqlx},
};

/// The migration's own connection (the migrator runs SQLite migrations
/// outside a transaction, so the rebuild can turn foreign keys off).
pub fn connection<'a>(
    manager: &'a SchemaManager<'_>,
    migration: u32,
) -> Result<&'a DatabaseConnection, DbErr> {
    match manager.get_connection() {
        SchemaManagerConnection::Connection(db) => Ok(db),
        _ => Err(DbErr::Migration(format!(
            "migration {migration} must run outside a transaction on SQLite"
        ))),
    }
}

/// Runs `steps` in one `BEGIN IMMEDIATE` transaction with foreign keys off,
/// and commits only if every foreign key still holds. `what` names the work
/// in errors ("rebuilding users").
pub async fn run_with_foreign_keys_off(
    db: &DatabaseConnection,
    what: &str,
    steps: &[String],
) -> Result<(), DbErr> {
    let fail = |e: sqlx::Error| DbErr::Migration(format!("{what}: {e}"));
    let mut conn = db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .map_err(fail)?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    let mut outcome = Ok(());
    for step in std::iter::once("BEGIN IMMEDIATE").chain(steps.iter().map(String::as_str)) {
        // Built by the migrations from constants and the schema, not from input.
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(step))
            .execute(&mut *conn)
            .await
        {
            outcome = Err(fail(e));
            break;
        }
    }
    if outcome.is_ok() {
        match sqlx::query("PRAGMA foreign_key_check")
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(None) => {
                outcome = sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
                    .map_err(fail)
            }
            Ok(Some(_)) => {
                outcome = Err(DbErr::Migration(format!("{what} broke a foreign key")));
            }
            Err(e) => outcome = Err(fail(e)),
        }
    }
    if outcome.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    // The connection goes back to the pool as every other one is.
    let restored = sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await
        .map_err(fail);
    outcome.and(restored.map(|_| ()))
}
