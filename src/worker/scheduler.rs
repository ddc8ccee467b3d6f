//! The scheduler: SCHEDULED rows whose `send_at` has come move to PENDING
//! (a compare-and-set, one DeliveryStatusChanged event each) and are
//! queued. Due rows are read from the `(status, send_at)` index every
//! `schedule_interval`, in batches; a schedule never sits in the queue, so
//! restarts lose nothing (rows due while every instance was down go out at
//! the first pass), and any instance's pass serves every row.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use super::Delivery;
use crate::storage::notifications;

/// Rows read per batch; a pass goes on while batches come back full.
const BATCH: u64 = 1000;

pub(super) async fn run_until_stopped(delivery: Delivery, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(delivery.settings.schedule_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match promote_due(&delivery).await {
            Ok(0) => {}
            Ok(promoted) => tracing::info!(promoted, "scheduled notifications due"),
            Err(e) => tracing::warn!(error = ?e, "the scheduler's pass failed"),
        }
    }
}

/// One pass: every due SCHEDULED row to PENDING and onto the queue. While
/// the circuit is open they are left for the sweeper to enqueue once it
/// closes. Returns how many this pass moved.
pub async fn promote_due(delivery: &Delivery) -> anyhow::Result<usize> {
    let mut promoted = 0;
    loop {
        let now = delivery.settings.clock.now();
        let due = notifications::due_scheduled(&delivery.db, now, BATCH).await?;
        let full = due.len() as u64 == BATCH;
        // One transaction per recipient per batch.
        let mut by_user: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (id, user_id) in due {
            by_user.entry(user_id).or_default().push(id);
        }
        for (user_id, ids) in by_user {
            let queued = !delivery.breaker.is_open();
            let moved = notifications::promote(&delivery.db, user_id, &ids, now, queued).await?;
            promoted += moved.len();
            if let Some(last) = moved.last() {
                delivery.inbox.touched(user_id, (&last.event).into()).await;
            }
            for m in &moved {
                delivery
                    .inbox
                    .announce(user_id, Some(m.event.clone()))
                    .await;
            }
            if !queued {
                continue;
            }
            for (i, m) in moved.iter().enumerate() {
                if let Err(e) = delivery.queue.enqueue(m.row.id).await {
                    // The queue is down: the sweeper enqueues these later.
                    tracing::warn!(error = ?e, notification_id = m.row.id, "enqueue failed; the sweeper will");
                    for m in &moved[i..] {
                        notifications::mark_unqueued(&delivery.db, m.row.id).await?;
                    }
                    return Ok(promoted);
                }
            }
        }
        if !full {
            return Ok(promoted);
        }
    }
}
