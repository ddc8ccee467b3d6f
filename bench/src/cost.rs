//! What a notification costs end to end over a window of the bench: CPU
//! time by process (Herald; its Postgres backends; Postgres's background
//! processes; Redis), read from `/proc`, SQL statements per notification
//! (`pg_stat_statements` when the server preloads it; otherwise
//! transactions and rows written, from `pg_stat_database`), Redis commands
//! (`INFO commandstats`), and the share of `notifications`' updates that
//! were HOT (`pg_stat_user_tables`).
//!
//! The bench's own connections carry `application_name=herald-bench` and its
//! polling statements a `/* herald-bench */` comment, so neither is counted.
//! Redis's counters and Postgres's background processes are the whole
//! server's: other work on the machine shows up in them.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use sea_orm::{ConnectionTrait as _, DatabaseConnection, Statement};

use crate::cpu_time;

/// Marks the bench's own statements, which `pg_stat_statements` then skips.
pub const MARK: &str = "/* herald-bench */";

/// The application name of the bench's own Postgres connections.
pub const APP_NAME: &str = "herald-bench";

/// Reads the counters at the start and the end of a window.
pub struct Probe {
    db: DatabaseConnection,
    redis: redis::aio::MultiplexedConnection,
    herald: Option<u32>,
    redis_pid: Option<u32>,
    /// `pg_stat_statements` answers (it is preloaded and installed here).
    statements: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Herald,
    PgBackend,
    PgBackground,
    Redis,
}

/// The counters at one moment.
pub struct Snapshot {
    cpu: HashMap<u32, (Role, Duration)>,
    statements: Option<i64>,
    xacts: i64,
    rows_written: i64,
    updates: i64,
    hot_updates: i64,
    redis_calls: HashMap<String, u64>,
}

/// A window's cost per notification.
pub struct Cost {
    pub name: String,
    pub notifications: u64,
    cpu: HashMap<Role, Duration>,
    statements: Option<i64>,
    xacts: i64,
    rows_written: i64,
    updates: i64,
    hot_updates: i64,
    redis_calls: Vec<(String, u64)>,
}

impl Probe {
    pub async fn new(
        db: DatabaseConnection,
        redis_url: &str,
        herald: Option<u32>,
    ) -> anyhow::Result<Self> {
        let mut redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis for INFO")?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await?;
        let redis_pid = field(&info, "process_id").and_then(|p| p.parse().ok());
        // Installing it is harmless; reading it fails unless the server
        // preloads the library (shared_preload_libraries, a restart).
        let _ = db
            .execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await;
        let statements = db
            .execute_unprepared(&format!("{MARK} SELECT count(*) FROM pg_stat_statements"))
            .await
            .is_ok();
        Ok(Self {
            db,
            redis,
            herald,
            redis_pid,
            statements,
        })
    }

    /// Whether SQL statements are counted (else transactions and rows).
    pub fn counts_statements(&self) -> bool {
        self.statements
    }

    /// The counters now. At the end of a window, call [`Probe::settle`]
    /// first.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut cpu = HashMap::new();
        let mut add = |pid: u32, role| {
            if let Some(t) = cpu_time(pid) {
                cpu.insert(pid, (role, t));
            }
        };
        if let Some(pid) = self.herald {
            add(pid, Role::Herald);
        }
        if let Some(pid) = self.redis_pid {
            add(pid, Role::Redis);
        }
        let sql = format!(
            "{MARK} SELECT pid, (backend_type = 'client backend')::int4 FROM pg_stat_activity \
             WHERE (datname = current_database() AND application_name <> '{APP_NAME}') \
             OR backend_type <> 'client backend'"
        );
        for row in self.query(&sql).await? {
            let pid: i32 = row.try_get_by_index(0)?;
            let client: i32 = row.try_get_by_index(1)?;
            let role = if client == 1 {
                Role::PgBackend
            } else {
                Role::PgBackground
            };
            add(u32::try_from(pid)?, role);
        }
        let statements = if self.statements {
            let sql = format!(
                "{MARK} SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND query NOT LIKE '%herald-bench%'"
            );
            Some(self.scalar(&sql).await?)
        } else {
            None
        };
        let db = format!(
            "{MARK} SELECT (xact_commit + xact_rollback)::int8, (tup_inserted + tup_updated + tup_deleted)::int8 \
             FROM pg_stat_database WHERE datname = current_database()"
        );
        let (xacts, rows_written) = self.pair(&db, "no pg_stat_database row").await?;
        let table = format!(
            "{MARK} SELECT n_tup_upd::int8, n_tup_hot_upd::int8 FROM pg_stat_user_tables WHERE relname = 'notifications'"
        );
        let (updates, hot_updates) = self.pair(&table, "no notifications table").await?;
        let mut redis = self.redis.clone();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut redis)
            .await?;
        let redis_calls = info
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                Some((name.to_owned(), field_in(rest, "calls")?.parse().ok()?))
            })
            .collect();
        Ok(Snapshot {
            cpu,
            statements,
            xacts,
            rows_written,
            updates,
            hot_updates,
            redis_calls,
        })
    }

    /// Waits until Postgres has published what the window's backends did: a
    /// backend that flushed its statistics less than a second before going
    /// idle flushes the rest only 10 s later (PGSTAT_IDLE_INTERVAL).
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(10_500)).await;
    }

    /// From `before` to now: the cost of `notifications` notifications.
    pub async fn since(
        &self,
        name: impl Into<String>,
        before: &Snapshot,
        notifications: u64,
    ) -> anyhow::Result<Cost> {
        self.settle().await;
        let after = self.snapshot().await?;
        let mut cpu: HashMap<Role, Duration> = HashMap::new();
        for (pid, (role, t)) in &after.cpu {
            // A process that started in the window counts from zero.
            let start = before.cpu.get(pid).map_or(Duration::ZERO, |(_, t)| *t);
            *cpu.entry(*role).or_default() += t.saturating_sub(start);
        }
        let mut redis_calls: Vec<(String, u64)> = after
            .redis_calls
            .iter()
            .map(|(name, calls)| {
                let start = before.redis_calls.get(name).copied().unwrap_or(0);
                (name.clone(), calls.saturating_sub(start))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        redis_calls.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        Ok(Cost {
            name: name.into(),
            notifications,
            cpu,
            statements: after.statements.zip(before.statements).map(|(a, b)| a - b),
            xacts: after.xacts - before.xacts,
            rows_written: after.rows_written - before.rows_written,
            updates: after.updates - before.updates,
            hot_updates: after.hot_updates - before.hot_updates,
            redis_calls,
        })
    }

    async fn query(&self, sql: &str) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
        Ok(self
            .db
            .query_all_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await?)
    }

    /// The first row of `sql`'s answer (`missing` when there is none).
    async fn first(
        &self,
        sql: &str,
        missing: &'static str,
    ) -> anyhow::Result<sea_orm::QueryResult> {
        self.query(sql).await?.into_iter().next().context(missing)
    }

    async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(self.first(sql, "no row").await?.try_get_by_index(0)?)
    }

    /// The first two columns of `sql`'s first row.
    async fn pair(&self, sql: &str, missing: &'static str) -> anyhow::Result<(i64, i64)> {
        let row = self.first(sql, missing).await?;
        Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?))
    }
}

impl Cost {
    /// Milliseconds of CPU per notification by `role`.
    fn ms(&self, role: Role) -> f64 {
        let t = self.cpu.get(&role).copied().unwrap_or_default();
        t.as_secs_f64() * 1000.0 / self.per()
    }

    fn per(&self) -> f64 {
        self.notifications.max(1) as f64
    }

    pub fn total_ms(&self) -> f64 {
        [
            Role::Herald,
            Role::PgBackend,
            Role::PgBackground,
            Role::Redis,
        ]
        .into_iter()
        .map(|r| self.ms(r))
        .sum()
    }

    /// `(figure, value)` pairs for the before/after comparison.
    pub fn summary(&self) -> Vec<(String, f64)> {
        let n = &self.name;
        let mut out = vec![
            (
                format!("{n}: CPU ms per notification, all"),
                self.total_ms(),
            ),
            (
                format!("{n}: CPU ms per notification, Herald"),
                self.ms(Role::Herald),
            ),
            (
                format!("{n}: CPU ms per notification, Postgres + Redis"),
                self.ms(Role::PgBackend) + self.ms(Role::PgBackground) + self.ms(Role::Redis),
            ),
            (
                format!("{n}: Postgres transactions per notification"),
                self.xacts as f64 / self.per(),
            ),
            (
                format!("{n}: Redis commands per notification"),
                self.redis_total() as f64 / self.per(),
            ),
            (
                format!("{n}: HOT share of notifications updates (%)"),
                self.hot_percent(),
            ),
        ];
        if let Some(s) = self.statements {
            out.push((
                format!("{n}: SQL statements per notification"),
                s as f64 / self.per(),
            ));
        }
        out
    }

    fn redis_total(&self) -> u64 {
        self.redis_calls.iter().map(|(_, n)| n).sum()
    }

    fn hot_percent(&self) -> f64 {
        100.0 * self.hot_updates as f64 / self.updates.max(1) as f64
    }
}

/// Prints `costs` as a table, one window a row, every figure per notification.
pub fn table(costs: &[Cost]) {
    println!(
        "| per notification | notifications | Herald CPU ms | Postgres backends ms | Postgres background ms | Redis ms | all CPU ms | SQL statements | transactions | rows written | Redis commands | notifications updates HOT |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in costs {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.2} | {:.2} | {:.1} | {:.0}% of {} |",
            c.name,
            c.notifications,
            c.ms(Role::Herald),
            c.ms(Role::PgBackend),
            c.ms(Role::PgBackground),
            c.ms(Role::Redis),
            c.total_ms(),
            c.statements
                .map_or("n/a".to_owned(), |s| format!("{:.1}", s as f64 / c.per())),
            c.xacts as f64 / c.per(),
            c.rows_written as f64 / c.per(),
            c.redis_total() as f64 / c.per(),
            c.hot_percent(),
            c.updates,
        );
    }
    println!();
    for c in costs {
        let top: Vec<String> = c
            .redis_calls
            .iter()
            .take(8)
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / c.per()))
            .collect();
        println!(
            "- {}: Redis commands per notification: {}",
            c.name,
            top.join(", ")
        );
    }
    println!();
}

/// `name:value` from an INFO section.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// `name=value` from a comma-separated INFO entry.
fn field_in<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    entry
        .split(',')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}
