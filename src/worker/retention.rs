//! Retention: every `PRUNE_INTERVAL`, inbox events older than
//! `HERALD_EVENT_RETENTION` (by the worker's clock) are deleted, one user's
//! prefix at a time, `PRUNE_BATCH` rows per statement with a short pause
//! between statements, so no statement holds a lock for long and writers
//! (sends, marks, deliveries) go on meanwhile. A user's last event always
//! stays: see `storage::retention`.
//!
//! The same pass prunes idempotency records older than
//! `HERALD_IDEMPOTENCY_TTL`, oldest first, `PRUNE_BATCH` per statement. It
//! has no loop of its own: an idle instance runs one DELETE more per
//! `PRUNE_INTERVAL`, and nothing in between.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use super::Delivery;
use crate::storage::{self, retention};

/// Rows one DELETE removes, at most.
pub const PRUNE_BATCH: i64 = 1000;
/// Users looked up per query.
const USERS_BATCH: u64 = 100;
/// The pause between two DELETEs, for other writers (SQLite has one lock).
const PRUNE_PAUSE: Duration = Duration::from_millis(10);
/// How often a worker prunes.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Events (or idempotency records) deleted.
    pub deleted: u64,
    /// DELETE statements run.
    pub batches: u64,
}

pub(super) async fn run_until_stopped(delivery: Delivery, shutdown: CancellationToken) {
    let settings = &delivery.settings;
    let mut tick = tokio::time::interval(settings.prune_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = settings.clock.now();
        // Each DELETE commits on its own: stopping between two loses nothing.
        let pruned = tokio::select! {
            () = shutdown.cancelled() => return,
            pruned = prune_events(&delivery.db, now, settings.event_retention) => pruned,
        };
        log("inbox events", pruned);
        let pruned = tokio::select! {
            () = shutdown.cancelled() => return,
            pruned = prune_idempotency_records(&delivery.db, now, settings.idempotency_ttl) => pruned,
        };
        log("idempotency records", pruned);
    }
}

fn log(what: &str, pruned: anyhow::Result<PruneReport>) {
    match pruned {
        Ok(report) if report.deleted > 0 => tracing::info!(?report, "pruned {what}"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = ?e, "pruning {what} failed"),
    }
}

/// One pass: deletes the idempotency records created more than `ttl`
/// before `now`, `PRUNE_BATCH` per statement. Their keys are free again.
pub async fn prune_idempotency_records(
    db: &DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
    ttl: Duration,
) -> anyhow::Result<PruneReport> {
    let before = storage::before(now, ttl);
    let mut report = PruneReport::default();
    loop {
        if report.batches > 0 {
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
        let deleted =
            storage::idempotency::delete_created_before(db, before, PRUNE_BATCH.unsigned_abs())
                .await?;
        report.deleted += deleted;
        report.batches += 1;
        if deleted < PRUNE_BATCH.unsigned_abs() {
            return Ok(report);
        }
    }
}

/// One pass: deletes the events older than `retention` at `now`, except
/// each user's last.
pub async fn prune_events(
    db: &DatabaseConnection,
    now: chrono::DateTime<chrono::Utc>,
    retention: Duration,
) -> anyhow::Result<PruneReport> {
    let before = storage::before(now, retention);
    let mut report = PruneReport::default();
    let mut after_user = i64::MIN;
    loop {
        let users = retention::users_with_old_events(db, before, after_user, USERS_BATCH).await?;
        for &user_id in &users {
            let Some((mut first, below)) = retention::prunable(db, user_id, before).await? else {
                continue;
            };
            while first < below {
                if report.batches > 0 {
                    tokio::time::sleep(PRUNE_PAUSE).await;
                }
                let upto = below.min(first.saturating_add(PRUNE_BATCH));
                report.deleted += retention::delete_events_below(db, user_id, upto).await?;
                report.batches += 1;
                first = upto;
            }
        }
        match users.last() {
            Some(&last) if users.len() as u64 == USERS_BATCH => after_user = last,
            _ => return Ok(report),
        }
    }
}
