use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

/// Which database a `DATABASE_URL` names. Chosen once, from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseKind {
    pub fn of(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres:// (got scheme {scheme:?})"
            ),
        }
    }
}

/// How long a SQLite writer waits for the lock before "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts the statements a connection runs (tests assert on it: a cached
/// read runs none, a page's recipients take one batched query) and logs slow
/// ones.
#[derive(Debug, Default)]
pub struct QueryStats {
    total: AtomicU64,
    user_reads: AtomicU64,
}

impl QueryStats {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Statements that read the `users` table.
    pub fn user_reads(&self) -> u64 {
        self.user_reads.load(Ordering::Relaxed)
    }

    fn record(&self, info: &sea_orm::metric::Info<'_>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let sql = &info.statement.sql;
        if sql.starts_with("SELECT") && sql.contains("FROM \"users\"") {
            self.user_reads.fetch_add(1, Ordering::Relaxed);
        }
        if info.elapsed > SLOW_STATEMENT {
            tracing::warn!(elapsed_ms = info.elapsed.as_millis(), sql, "slow statement");
        }
    }
}

const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// `connect`, with every statement counted in the returned stats.
pub async fn connect_with_stats(
    url: &str,
) -> anyhow::Result<(DatabaseConnection, Arc<QueryStats>)> {
    let mut db = connect(url).await?;
    let stats = Arc::new(QueryStats::default());
    let recorder = stats.clone();
    db.set_metric_callback(move |info| recorder.record(info));
    Ok((db, stats))
}

/// Connects to the database `url` names. SQLite files are created as needed
/// (with their folder) and opened in WAL mode with a busy timeout.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_sized(url, None).await
}

/// [`connect`] with a pool of at most `max` connections (`None`: the
/// usual size).
pub async fn connect_sized(url: &str, max: Option<u32>) -> anyhow::Result<DatabaseConnection> {
    let kind = DatabaseKind::of(url)?;
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    match kind {
        DatabaseKind::Sqlite => {
            let parsed = SqliteConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
            let in_memory = parsed.get_filename() == Path::new(":memory:")
                || url.contains(":memory:")
                || url.contains("mode=memory");
            if !in_memory
                && let Some(dir) = parsed.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            // Each connection to an in-memory database is its own empty
            // database, so those get exactly one; files get a few readers.
            options.max_connections(if in_memory { 1 } else { 4 });
            options.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
            });
        }
        DatabaseKind::Postgres => {
            options
                .max_connections(max.unwrap_or(20))
                .min_connections(1);
        }
    }
    Database::connect(options)
        .await
        .with_context(|| format!("connecting to the {kind:?} database"))
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await.context("running migrations")
}

/// Is the database answering? Used by `/readyz`.
pub async fn ping(db: &impl ConnectionTrait) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_database() {
        assert_eq!(
            DatabaseKind::of("sqlite://./x.db?mode=rwc").ok(),
            Some(DatabaseKind::Sqlite)
        );
        assert_eq!(
            DatabaseKind::of("postgres://u@h/db").ok(),
            Some(DatabaseKind::Postgres)
        );
        assert_eq!(
            DatabaseKind::of("postgresql://u@h/db").ok(),
            Some(DatabaseKind::Postgres)
        );
        assert!(DatabaseKind::of("mysql://u@h/db").is_err());
    }
}
