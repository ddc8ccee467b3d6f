//! Webhook delivery: the relay and a second consumer loop.
//!
//! - Relay: the outbox rows are the truth, the webhook queue a hint. Every
//!   sweep interval, and right after a change that wrote outbox rows (its
//!   `Wake`), PENDING rows that are due, whose endpoint is enabled, not
//!   claimed (or whose claim expired) and not queued recently are stamped
//!   and queued.
//! - Worker, per job, under its own semaphore (`HERALD_WEBHOOK_CONCURRENCY`):
//!   claim the row (compare-and-set), POST the stored body signed for this
//!   attempt, record the outcome (compare-and-set on the claim), update the
//!   endpoint's failure streak, ack.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    Decision, Delivery, Failure, ReadAhead, Stopped, acquire, finish_within,
    sweeper::stamped_before,
};
use crate::{
    metrics::QueueName,
    queue::Job,
    storage::webhooks::{self as outbox, Attempt},
    webhooks::sender::{Message, Sender, Sent},
};

/// Rows queued per relay statement, at most.
const RELAY_BATCH: u64 = 1000;
/// After a wake: how long the relay waits for the change to commit.
const COMMIT_WAIT: Duration = Duration::from_millis(10);
/// A wake whose pass found nothing (the commit was slower): one more pass
/// this much later, before leaving it to the sweep.
const SECOND_LOOK: Duration = Duration::from_millis(250);

/// What a relay pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    pub enqueued: usize,
}

impl Delivery {
    /// The relay and the webhook worker, until `shutdown`.
    pub(super) async fn deliver_webhooks_until_stopped(
        self,
        sender: Sender,
        shutdown: CancellationToken,
    ) {
        let relay = tokio::spawn(self.clone().relay_until_stopped(shutdown.clone()));
        self.webhook_worker_until_stopped(Arc::new(sender), shutdown)
            .await;
        let _ = relay.await;
    }

    async fn relay_until_stopped(self, shutdown: CancellationToken) {
        // A queue that forgets on restart holds none of the entries the
        // stamps speak of: the first pass takes every due row.
        let mut everything = !self.webhook_queue.survives_restart();
        let mut tick = tokio::time::interval(self.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wake = self.inbox.webhooks.clone();
        loop {
            let woken = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                () = wake.woken() => true,
            };
            if woken {
                tokio::time::sleep(COMMIT_WAIT).await;
            }
            let mut report = relay(&self, everything).await;
            if woken && matches!(report, Ok(RelayReport { enqueued: 0 })) {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(SECOND_LOOK) => {}
                }
                report = relay(&self, false).await;
            }
            match report {
                Ok(report) => {
                    everything = false;
                    if report.enqueued > 0 {
                        tracing::debug!(?report, "webhooks relayed");
                    }
                }
                Err(e) => tracing::warn!(error = ?e, "webhook relay failed"),
            }
        }
    }

    async fn webhook_worker_until_stopped(&self, sender: Arc<Sender>, shutdown: CancellationToken) {
        let limit = self.settings.webhooks.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(limit));
        let mut tasks = JoinSet::new();
        let mut reader = ReadAhead::new(self.webhook_queue.clone(), limit);
        loop {
            while tasks.try_join_next().is_some() {}
            let Some(permit) = acquire(&permits, &shutdown).await else {
                break;
            };
            let job = match reader.next(&shutdown).await {
                Ok(Some(job)) => job,
                Ok(None) => continue,
                Err(Stopped) => break,
            };
            let this = self.clone();
            let sender = sender.clone();
            tasks.spawn(self.inbox.webhooks.scope(async move {
                let _in_flight = this.metrics.in_flight(QueueName::Webhooks);
                this.deliver_webhook(&sender, job).await;
                drop(permit);
            }));
        }
        // Unfinished attempts keep their claim; it expires after the
        // visibility timeout and the relay queues the row again.
        finish_within(&mut tasks, self.settings.shutdown_grace).await;
    }

    /// One webhook job, start to finish. Errors are logged; an entry that
    /// is not acked comes back (Redis), and the relay re-queues the row.
    #[tracing::instrument(skip_all, fields(webhook_delivery_id = job.id))]
    async fn deliver_webhook(&self, sender: &Sender, job: Job) {
        let settings = &self.settings;
        let clock = &settings.clock;
        if job.deliveries > settings.max_deliveries {
            let reason = format!(
                "queue entry delivered {} times without an outcome",
                job.deliveries
            );
            if let Err(e) = self.webhook_queue.dead_letter(&job, &reason).await {
                tracing::error!(error = ?e, "dead-lettering failed");
                return;
            }
            if let Err(e) = outbox::fail_unfinished(&self.db, job.id, &reason, clock.now()).await {
                tracing::error!(error = ?e, "failing a dead-lettered webhook");
            }
            return;
        }
        let claimed =
            outbox::claim(&self.db, job.id, clock.now(), settings.visibility_timeout).await;
        let (row, endpoint) = match claimed {
            Ok(Some(found)) => found,
            Ok(None) => {
                // Taken, finished, not due, its endpoint disabled, or gone.
                super::ack(self.webhook_queue.as_ref(), &job).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = ?e, "claiming a webhook failed");
                return;
            }
        };
        let msg_id = format!("msg_{}", row.id);
        let sent = sender
            .send(&Message {
                url: &endpoint.url,
                secret: &endpoint.secret,
                msg_id: &msg_id,
                // The receiver checks it against its own clock: the
                // system's, not the injected one.
                timestamp: chrono::Utc::now().timestamp(),
                body: row.payload.as_bytes(),
            })
            .await;
        let now = clock.now();
        let attempt = match &sent {
            Sent::Delivered { .. } => Attempt::Delivered,
            Sent::Failed { error } => {
                match settings.webhooks.retry.decide(
                    Failure::Temporary,
                    row.attempts,
                    row.created_at,
                    now,
                ) {
                    Decision::RetryAt(retry_at) | Decision::GiveBack(retry_at) => Attempt::Retry {
                        error: error.clone(),
                        retry_at,
                    },
                    Decision::GiveUp { budget } => Attempt::Failed {
                        error: match budget {
                            Some(budget) => format!("{error} ({budget})"),
                            None => error.clone(),
                        },
                    },
                }
            }
        };
        match &attempt {
            Attempt::Delivered => tracing::info!(
                attempt = row.attempts,
                endpoint_id = endpoint.id,
                event = row.event_type,
                "webhook delivered"
            ),
            Attempt::Retry { error, retry_at } => tracing::info!(
                attempt = row.attempts,
                endpoint_id = endpoint.id,
                event = row.event_type,
                %retry_at,
                error,
                "webhook failed; will retry"
            ),
            Attempt::Failed { error } => tracing::warn!(
                attempt = row.attempts,
                endpoint_id = endpoint.id,
                url = endpoint.url,
                event = row.event_type,
                notification_id = row.notification_id,
                error,
                "webhook given up"
            ),
        }
        match outbox::record_attempt(&self.db, &row, &attempt, now).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the webhook claim expired and was taken over; this outcome is dropped"
                );
            }
            Err(e) => {
                // Not acked: the claim expires and the relay queues it again.
                tracing::error!(error = ?e, "recording a webhook attempt failed");
                return;
            }
        }
        let streak = match &sent {
            Sent::Delivered { .. } => outbox::endpoint_succeeded(&self.db, endpoint.id)
                .await
                .map(|()| None),
            Sent::Failed { error } => {
                outbox::endpoint_failed(
                    &self.db,
                    endpoint.id,
                    error,
                    now,
                    settings.webhooks.disable_after,
                )
                .await
            }
        };
        match streak {
            Ok(Some(failing_since)) => tracing::warn!(
                endpoint_id = endpoint.id,
                url = endpoint.url,
                %failing_since,
                "webhook endpoint disabled: every delivery failed for {:?}; `herald webhook enable {}` turns it back on",
                settings.webhooks.disable_after,
                endpoint.id
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = ?e, "updating the endpoint's failure streak failed"),
        }
        super::ack(self.webhook_queue.as_ref(), &job).await;
    }
}

/// One relay pass. `everything`: ignore queue stamps (nothing is queued).
pub async fn relay(delivery: &Delivery, everything: bool) -> anyhow::Result<RelayReport> {
    let settings = &delivery.settings;
    let now = settings.clock.now();
    let waiting = match delivery.webhook_queue.waiting().await {
        Ok(waiting) => waiting,
        Err(e) => {
            tracing::warn!(error = ?e, "webhook queue length unknown; re-queuing stale entries");
            None
        }
    };
    let stamped_before = stamped_before(now, settings.visibility_timeout, everything, waiting);
    let mut enqueued = 0;
    loop {
        let due = outbox::take_for_enqueue(
            &delivery.db,
            now,
            stamped_before,
            settings.visibility_timeout,
            RELAY_BATCH,
        )
        .await?;
        let full = due.len() as u64 == RELAY_BATCH;
        for (i, id) in due.iter().enumerate() {
            if let Err(e) = delivery.webhook_queue.enqueue(*id).await {
                tracing::warn!(error = ?e, webhook_delivery_id = id, "webhook enqueue failed; the next pass retries");
                for id in &due[i..] {
                    outbox::mark_unqueued(&delivery.db, *id).await?;
                }
                return Ok(RelayReport { enqueued });
            }
            enqueued += 1;
        }
        if !full {
            return Ok(RelayReport { enqueued });
        }
    }
}
