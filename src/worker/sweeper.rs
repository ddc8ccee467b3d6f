//! The sweeper: the queue is a hint, the rows are the truth. Every interval
//! it releases claims whose worker died (PROCESSING past the visibility
//! timeout) and enqueues PENDING rows that are due and whose queue entry may
//! be lost, and moves PENDING and SCHEDULED rows past their `expires_at` to
//! EXPIRED. While the circuit breaker is open it enqueues nothing: the rows
//! wait for the mail server, and the queue does not churn.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Delivery, Failure, outcome_of};
use crate::storage::{self, notifications};

/// Rows looked at per pass, at most.
const SWEEP_BATCH: u64 = 1000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub released: usize,
    pub enqueued: usize,
    /// PENDING or SCHEDULED rows past their `expires_at`, now EXPIRED.
    pub expired: usize,
    /// The circuit was open: nothing was enqueued.
    pub paused: bool,
}

pub(super) async fn run_until_stopped(delivery: Delivery, shutdown: CancellationToken) {
    // A queue that forgets on restart holds nothing of what the rows say is
    // queued: the first pass takes every due row.
    let mut everything = !delivery.queue.survives_restart();
    let mut tick = tokio::time::interval(delivery.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&delivery, everything).await {
            Ok(report) => {
                everything &= report.paused;
                if report.released > 0 || report.enqueued > 0 || report.expired > 0 {
                    tracing::info!(?report, "swept");
                }
            }
            Err(e) => tracing::warn!(error = ?e, "sweep failed"),
        }
    }
}

/// Rows whose enqueue stamp is older than this may have lost their queue
/// entry. `everything`: nothing is on the queue (only this pass's own
/// stamps count). `waiting`: entries on the queue no worker has taken yet;
/// while there are some, stamps are trusted (a backlog's entries are still
/// there) and only rows never queued count.
pub fn stamped_before(
    now: DateTime<Utc>,
    visibility: std::time::Duration,
    everything: bool,
    waiting: Option<u64>,
) -> DateTime<Utc> {
    if everything {
        now
    } else if waiting.is_some_and(|n| n > 0) {
        // Every stamp is later than this: only rows never queued count.
        storage::EARLIEST
    } else {
        storage::before(now, visibility)
    }
}

/// One pass. `everything`: ignore enqueue stamps (nothing is on the queue).
pub async fn sweep(delivery: &Delivery, everything: bool) -> anyhow::Result<SweepReport> {
    let settings = &delivery.settings;
    let now = settings.clock.now();
    let visibility = settings.visibility_timeout;
    let mut released = 0;
    for row in notifications::expired_claims(&delivery.db, now, visibility, SWEEP_BATCH).await? {
        // The attempt counts: a message that kills its worker must not
        // come back forever.
        let decision = settings
            .retry
            .decide(Failure::Lost, row.attempts, row.created_at, now);
        let outcome = outcome_of(decision, "the worker stopped without an outcome".to_owned());
        let moved =
            notifications::release_expired_claim(&delivery.db, &row, &outcome, now, visibility)
                .await?;
        if let Some(moved) = moved {
            delivery.inbox.changed(&moved.row, moved.event).await;
            released += 1;
        }
    }
    let expired = expire(delivery, now).await?;
    if delivery.breaker.is_open() {
        return Ok(SweepReport {
            released,
            enqueued: 0,
            expired,
            paused: true,
        });
    }
    // Entries stamped within the visibility timeout may still be on the
    // queue; with `everything`, only this pass's own stamps count. While
    // entries wait on the queue (a backlog), older stamps are trusted too:
    // only rows never queued are taken (see `Queue::waiting`).
    let waiting = match delivery.queue.waiting().await {
        Ok(waiting) => waiting,
        Err(e) => {
            tracing::warn!(error = ?e, "queue length unknown; re-queuing stale entries");
            None
        }
    };
    let stamped_before = stamped_before(now, settings.visibility_timeout, everything, waiting);
    let mut enqueued = 0;
    // Batch after batch while there is a backlog (after an outage, say),
    // so recovery is not paced by the sweep interval.
    loop {
        let due =
            notifications::take_for_enqueue(&delivery.db, now, stamped_before, SWEEP_BATCH).await?;
        let full = due.len() as u64 == SWEEP_BATCH;
        for (i, id) in due.iter().enumerate() {
            if let Err(e) = delivery.queue.enqueue(*id).await {
                // The queue is down: leave this row and the rest to the next pass.
                tracing::warn!(error = ?e, notification_id = id, "enqueue failed; the next sweep retries");
                for id in &due[i..] {
                    notifications::mark_unqueued(&delivery.db, *id).await?;
                }
                return Ok(SweepReport {
                    released,
                    enqueued,
                    expired,
                    paused: false,
                });
            }
            enqueued += 1;
        }
        if !full {
            break;
        }
    }
    Ok(SweepReport {
        released,
        enqueued,
        expired,
        paused: false,
    })
}

/// PENDING and SCHEDULED rows past their `expires_at` → EXPIRED, batch
/// after batch.
async fn expire(delivery: &Delivery, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<usize> {
    let mut expired = 0;
    loop {
        let rows = notifications::expired(&delivery.db, now, SWEEP_BATCH).await?;
        let full = rows.len() as u64 == SWEEP_BATCH;
        let mut moved_any = false;
        for row in rows {
            if let Some(moved) = notifications::expire(&delivery.db, &row, now).await? {
                delivery.inbox.changed(&moved.row, moved.event).await;
                expired += 1;
                moved_any = true;
            }
        }
        // A full batch that another sweeper took entirely: leave the rest
        // to it rather than read the same rows again.
        if !full || !moved_any {
            return Ok(expired);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_backlog_on_the_queue_is_not_queued_again() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let minute = Duration::from_secs(60);
        let a_minute_ago = storage::before(now, minute);
        // Nothing waits (or the queue cannot tell): stamps older than the
        // visibility timeout may be lost entries.
        assert_eq!(stamped_before(now, minute, false, Some(0)), a_minute_ago);
        assert_eq!(stamped_before(now, minute, false, None), a_minute_ago);
        // Entries wait: only rows never queued (no stamp at all).
        assert_eq!(
            stamped_before(now, minute, false, Some(5)),
            storage::EARLIEST
        );
        // After a restart of a queue that forgets, every stamp is stale.
        assert_eq!(stamped_before(now, minute, true, Some(5)), now);
    }
}
