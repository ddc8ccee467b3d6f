//! The delivery worker, the sweeper and the pruning of the inbox log.
//!
//! Worker, per job: claim the row (PENDING → PROCESSING, compare-and-set),
//! send the email, record the outcome (compare-and-set on the claim), then
//! announce the change and ack the queue entry. Sweeper: put back what the
//! queue lost, and release the claims of workers that died. While the mail
//! server is unreachable the circuit breaker pauses both (`breaker`).

mod breaker;
mod clock;
mod retention;
mod retry;
mod scheduler;
mod sweeper;
mod webhooks;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::DatabaseConnection;

use crate::group_commit::InboxWrites;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use breaker::{Breaker, Circuit};
pub use clock::{Clock, SystemClock};
pub use retention::{
    PRUNE_BATCH, PRUNE_INTERVAL, PruneReport, prune_events, prune_idempotency_records,
};
pub use retry::{Decision, Failure, RetryPolicy};
pub use scheduler::promote_due;
pub use sweeper::{SweepReport, stamped_before, sweep};
pub use webhooks::{RelayReport, relay};

use crate::{
    directory::Directory,
    inbox::Inbox,
    mailer::{Email, Fault, Mailer, SendError},
    metrics::{DeliveryOutcome, Metrics, QueueName},
    preferences::Preferences,
    queue::{Job, Queue},
    storage::notifications::{self, Outcome},
};

/// Everything a worker and a sweeper act on.
#[derive(Clone)]
pub struct Delivery {
    pub db: DatabaseConnection,
    pub queue: Arc<dyn Queue>,
    /// Webhook deliveries (`webhooks`): a stream of their own, so a slow
    /// receiver never holds up email.
    pub webhook_queue: Arc<dyn Queue>,
    pub mailer: Arc<Mailer>,
    pub inbox: Inbox,
    /// Recipients' addresses (users never change: cached in process).
    pub directory: Arc<Directory>,
    /// Recipients' email preferences, through the shared cache.
    pub preferences: Arc<Preferences>,
    pub settings: WorkerSettings,
    /// Whether the mail server is taking deliveries; `/readyz` shows it.
    pub breaker: Arc<Breaker>,
    /// Outcomes, latency and jobs in flight.
    pub metrics: Arc<Metrics>,
    /// Where the worker's claims and outcomes are stored.
    pub moves: Moves,
}

type MoveResult = Result<Option<notifications::Moved>, crate::storage::StorageError>;

/// The worker's claims and outcomes. With a batch over 1 they are
/// group-committed with the sends of their owners ([`InboxWrites`]):
/// concurrent changes share one transaction
/// (`notifications::write_batch`), each move still its own compare-and-set;
/// a batch that fails is run change by change. Either way a committed move
/// has moved its owner's cached snapshot by the time it is answered (once
/// per owner for a batch); the caller announces it.
#[derive(Clone)]
pub struct Moves {
    db: DatabaseConnection,
    inbox: Inbox,
    writes: Option<InboxWrites>,
}

impl Moves {
    /// `writes`: the group commit moves go through (`None`: each alone).
    pub fn new(db: DatabaseConnection, writes: Option<InboxWrites>, inbox: Inbox) -> Self {
        Self { db, inbox, writes }
    }

    /// Runs `change` (in the next batch); answers once it committed and
    /// its owner's cached snapshot moved. Announce the move next.
    pub async fn run(&self, change: notifications::Move) -> MoveResult {
        let Some(writes) = &self.writes else {
            let moved = change.run(&self.db).await?;
            if let Some(moved) = &moved {
                self.inbox.touched_by([&moved.event]).await;
            }
            return Ok(moved);
        };
        writes.run(change).await
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs claiming and sending at once (SMTP sessions); up to
    /// `JOBS_PER_SESSION` times as many in flight, the rest storing outcomes.
    pub concurrency: usize,
    /// Claims and outcomes stored together, at most (1: each alone).
    pub batch: usize,
    pub retry: RetryPolicy,
    /// A claim (PROCESSING) or a queue entry older than this belongs to a
    /// worker that died. Must exceed the SMTP timeout.
    pub visibility_timeout: Duration,
    pub sweep_interval: Duration,
    /// How often due SCHEDULED rows are promoted to PENDING and queued.
    pub schedule_interval: Duration,
    /// Inbox events older than this are pruned (each user's last stays).
    pub event_retention: Duration,
    /// Idempotency records older than this are pruned.
    pub idempotency_ttl: Duration,
    /// How often the events older than `event_retention` (and the
    /// idempotency records older than `idempotency_ttl`) are pruned.
    pub prune_interval: Duration,
    /// A queue entry handed out more often than this goes to the dead
    /// letters and its notification fails.
    pub max_deliveries: u64,
    /// How long in-flight jobs get to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// What "now" is for claims, retries, the sweeper and the breaker.
    pub clock: Arc<dyn Clock>,
    /// Categories mailed whatever their recipient's preferences say.
    pub critical_categories: Vec<String>,
    /// Webhook deliveries: their own concurrency, retries and timeout.
    pub webhooks: WebhookSettings,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Webhook jobs in flight at once: a limit of their own, so a slow or
    /// hanging receiver never holds up email.
    pub concurrency: usize,
    /// Every failure is retried (base, doubling with jitter, capped) until
    /// `window` has passed since the event; then it is FAILED.
    pub retry: RetryPolicy,
    /// One attempt, connection and answer included.
    pub timeout: Duration,
    /// Loopback, private and link-local targets allowed (SSRF protection off).
    pub allow_private: bool,
    /// An endpoint every delivery to which failed for this long is disabled.
    pub disable_after: Duration,
}

impl WebhookSettings {
    /// The defaults for what is not given: retries up to an hour apart for
    /// a day, and an endpoint disabled after a day of failures.
    pub fn new(
        concurrency: usize,
        retry_base: Duration,
        timeout: Duration,
        allow_private: bool,
    ) -> Self {
        use crate::config::defaults;
        Self {
            concurrency,
            retry: RetryPolicy {
                // The window decides; this only bounds it.
                max_attempts: 10_000,
                base: retry_base,
                max_delay: defaults::WEBHOOK_RETRY_MAX.default,
                window: defaults::WEBHOOK_RETRY_WINDOW.default,
            },
            timeout,
            allow_private,
            disable_after: defaults::WEBHOOK_RETRY_WINDOW.default,
        }
    }
}

impl WorkerSettings {
    /// A circuit breaker that probes from the retry base up to the longest
    /// retry delay.
    pub fn breaker(&self) -> Breaker {
        Breaker::new(self.retry.base, self.retry.max_delay)
    }
}

/// Jobs read from the queue at once, at most.
const READ_BATCH: usize = 64;

/// Jobs in flight per SMTP session (`WorkerSettings::concurrency`): a
/// session is taken before the job is read from the queue and held to the
/// end of sending, and a job whose mail is sent waits for its outcome to be
/// stored without it. Recording takes about as long as claiming and
/// sending together under load, so without this the sessions sat idle half
/// the time, and the outcomes' batches stayed small.
const JOBS_PER_SESSION: usize = 4;

impl Delivery {
    /// Runs the worker and the sweeper until `shutdown`; then lets in-flight
    /// jobs finish within the grace period and releases the rest.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        // Moves they commit may write webhooks: they wake the relay.
        let wake = &self.inbox.webhooks;
        let sweeper =
            tokio::spawn(wake.scope(sweeper::run_until_stopped(self.clone(), shutdown.clone())));
        let pruner = tokio::spawn(retention::run_until_stopped(self.clone(), shutdown.clone()));
        let scheduler =
            tokio::spawn(wake.scope(scheduler::run_until_stopped(self.clone(), shutdown.clone())));
        let webhooks = self.webhook_sender().map(|sender| {
            tokio::spawn(
                self.clone()
                    .deliver_webhooks_until_stopped(sender, shutdown.clone()),
            )
        });
        self.work_until_stopped(shutdown).await;
        if let Some(webhooks) = webhooks {
            let _ = webhooks.await;
        }
        let _ = sweeper.await;
        let _ = scheduler.await;
        let _ = pruner.await;
    }

    /// The HTTP client webhooks go out with; `None` (logged) if it cannot
    /// be built, and then no webhook is sent.
    fn webhook_sender(&self) -> Option<crate::webhooks::sender::Sender> {
        let settings = &self.settings.webhooks;
        match crate::webhooks::sender::Sender::new(settings.timeout, settings.allow_private) {
            Ok(sender) => Some(sender),
            Err(e) => {
                tracing::error!(error = ?e, "building the webhook HTTP client failed; webhooks stay queued");
                None
            }
        }
    }

    async fn work_until_stopped(&self, shutdown: CancellationToken) {
        let concurrency = self.settings.concurrency.max(1);
        // An SMTP session each: taken before the queue read, held to the
        // end of sending.
        let permits = Arc::new(Semaphore::new(concurrency));
        // Jobs between the queue read and the recorded outcome.
        let jobs = Arc::new(Semaphore::new(concurrency.saturating_mul(JOBS_PER_SESSION)));
        let in_flight: InFlight = Arc::default();
        let mut tasks = JoinSet::new();
        let mut reader = ReadAhead::new(self.queue.clone(), self.settings.concurrency);
        // The rows of the jobs read ahead, each batch read in one query
        // (`None`: that read failed, the job reads its own).
        let mut rows = HashMap::<i64, Option<notifications::Pending>>::new();
        loop {
            while tasks.try_join_next().is_some() {}
            if self.breaker.is_open() {
                rows.clear();
                self.hand_back(&mut reader.buffered).await;
                if !self.probe_when_due(&shutdown).await {
                    break;
                }
                continue;
            }
            let Some(job_permit) = acquire(&jobs, &shutdown).await else {
                break;
            };
            let Some(permit) = acquire(&permits, &shutdown).await else {
                break;
            };
            // The circuit may have opened while we waited for the permit.
            if self.breaker.is_open() {
                continue;
            }
            let job = match reader.next(&shutdown).await {
                Ok(Some(job)) => job,
                Ok(None) => continue,
                Err(Stopped) => break,
            };
            if !rows.contains_key(&job.id) {
                let ids: Vec<i64> = std::iter::once(job.id)
                    .chain(reader.buffered.iter().map(|job| job.id))
                    .collect();
                let read = tokio::select! {
                    // Read but not started: its row is still PENDING.
                    () = shutdown.cancelled() => break,
                    read = notifications::pending_many(&self.db, &ids) => read,
                };
                match read {
                    Ok(found) => rows.extend(found.into_iter().map(|(id, row)| (id, Some(row)))),
                    Err(e) => {
                        // Each of them reads its own row in its task, not
                        // the whole batch again here.
                        tracing::warn!(error = ?e, "reading the rows of a batch of jobs failed");
                        rows.extend(ids.into_iter().map(|id| (id, None)));
                    }
                }
            }
            let row = rows.remove(&job.id).flatten();
            let this = self.clone();
            let in_flight = in_flight.clone();
            tasks.spawn(self.inbox.webhooks.scope(async move {
                let _in_flight = this.metrics.in_flight(QueueName::Email);
                this.process(job, row, &in_flight, permit).await;
                drop(job_permit);
            }));
        }
        // Read but never started: their entries come back to another worker
        // after the visibility timeout, and the rows are still PENDING.
        if !reader.buffered.is_empty() {
            tracing::info!(
                jobs = reader.buffered.len(),
                "leaving read-ahead jobs to other workers"
            );
        }
        if !finish_within(&mut tasks, self.settings.shutdown_grace).await {
            self.release(&in_flight).await;
        }
    }

    /// The circuit is open: jobs read ahead go back to the sweeper, which
    /// enqueues their rows again once the circuit closes.
    async fn hand_back(&self, buffered: &mut VecDeque<Job>) {
        for job in buffered.drain(..) {
            if let Err(e) = notifications::mark_unqueued(&self.db, job.id).await {
                // Not acked: the entry comes back after the visibility timeout.
                tracing::warn!(error = ?e, notification_id = job.id, "handing a job back failed");
                continue;
            }
            self.ack(&job).await;
        }
    }

    /// While the circuit is open: waits for the next probe (re-reading the
    /// clock every sweep interval), then probes. `false` on shutdown.
    async fn probe_when_due(&self, shutdown: &CancellationToken) -> bool {
        let clock = &self.settings.clock;
        let Some(due) = self.breaker.next_probe() else {
            return true;
        };
        let wait = (due - clock.now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(wait.min(self.settings.sweep_interval)) => {}
            }
            return true;
        }
        let probed = tokio::select! {
            () = shutdown.cancelled() => return false,
            probed = self.mailer.probe() => probed,
        };
        match probed {
            Ok(()) => self.breaker.answered(clock.now()),
            Err(error) => self.breaker.probe_failed(&error.cause, clock.now()),
        }
        true
    }

    /// After an aborted shutdown: put the rows we still held back to PENDING
    /// so another worker takes them now rather than after the claim expires.
    async fn release(&self, in_flight: &InFlight) {
        let held: Vec<(i64, Claim)> = lock(in_flight).drain().collect();
        let now = self.settings.clock.now();
        for (id, Claim { attempt, user_id }) in held {
            let outcome = Outcome::Retry {
                error: "the worker shut down during delivery".to_owned(),
                retry_at: now,
            };
            match notifications::record(&self.db, id, user_id, attempt, &outcome, now).await {
                Ok(Some(moved)) => self.inbox.changed(&moved.row, moved.event).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = ?e, notification_id = id, "release failed"),
            }
        }
    }

    /// One job, start to finish, in a `delivery` span (a child of the
    /// send request's span when the entry carries its `traceparent`).
    /// Errors are logged; an entry that is not acked comes back after the
    /// visibility timeout.
    /// `row`: what was read of the job's row with the rest of its read
    /// batch (`None`: read it now). `session`: the job's SMTP session
    /// permit, given back once the mail is sent, before the outcome is
    /// recorded.
    pub async fn process(
        &self,
        job: Job,
        row: Option<notifications::Pending>,
        in_flight: &InFlight,
        session: OwnedSemaphorePermit,
    ) {
        let span = tracing::info_span!(
            "delivery",
            otel.name = "deliver notification",
            notification_id = job.id
        );
        crate::telemetry::continue_trace(&span, job.traceparent.as_deref());
        self.attempt(job, row, in_flight, session)
            .instrument(span)
            .await;
    }

    async fn attempt(
        &self,
        job: Job,
        row: Option<notifications::Pending>,
        in_flight: &InFlight,
        session: OwnedSemaphorePermit,
    ) {
        let id = job.id;
        let clock = &self.settings.clock;
        let started = std::time::Instant::now();
        if job.deliveries > self.settings.max_deliveries {
            self.dead_letter(&job).await;
            return;
        }
        let row = match row {
            Some(row) => Ok(row),
            None => notifications::pending(&self.db, id).await,
        };
        let (user_id, category) = match row {
            Ok(Some(found)) => found,
            Ok(None) => {
                // Already taken, finished, canceled, or gone: nothing to do.
                self.ack(&job).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = ?e, "claiming failed");
                return;
            }
        };
        // Decided before the claim, from the cached preferences (no query
        // per delivery), so a change applies to whatever is not yet taken.
        let mail = match self.preferences.get(user_id).await {
            Ok(preferences) => crate::preferences::mails(
                &preferences,
                category.as_deref(),
                &self.settings.critical_categories,
            ),
            Err(e) => {
                // Not acked: the entry comes back after the visibility timeout.
                tracing::error!(error = ?e, "reading the recipient's preferences failed");
                return;
            }
        };
        let claimed = self
            .moves
            .run(notifications::claim_move(id, user_id, mail, clock.now()))
            .await;
        let (claimed, claim_event) = match claimed {
            Ok(Some(moved)) => (moved.row, moved.event),
            Ok(None) => {
                // Already taken, finished, canceled, not due yet, or gone:
                // nothing to do.
                self.ack(&job).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = ?e, "claiming failed");
                return;
            }
        };
        if claimed.status != entity::notification::Status::Processing {
            // Past its expiresAt, the claim expired it; with email turned
            // off, it skipped it (kept in the inbox, not mailed). Nothing to
            // send: the place goes to the next job.
            drop(session);
            tracing::info!(status = ?claimed.status, "not sent");
            match claimed.status {
                entity::notification::Status::Skipped => {
                    self.metrics.delivery(DeliveryOutcome::Skipped, None);
                }
                entity::notification::Status::Expired => {
                    self.metrics.delivery(DeliveryOutcome::Expired, None);
                }
                _ => {}
            }
            self.inbox
                .announce(claimed.user_id, Some(claim_event))
                .await;
            self.ack(&job).await;
            return;
        }
        let claimed_after = started.elapsed();
        lock(in_flight).insert(
            id,
            Claim {
                attempt: claimed.attempts,
                user_id: claimed.user_id,
            },
        );
        self.inbox
            .announce(claimed.user_id, Some(claim_event))
            .await;

        let recipient = self.directory.get(claimed.user_id).await;
        let send_started = std::time::Instant::now();
        let result = match recipient {
            Ok(Some(user)) => {
                let email = Email {
                    to: user.email,
                    subject: claimed.title.clone(),
                    body: claimed.content.clone(),
                    id_seed: claimed.id,
                };
                let sent = self.mailer.send(&email).await;
                match &sent {
                    Err(e) if e.fault == Fault::Unreachable => {
                        self.breaker.unreachable(&e.cause, clock.now());
                    }
                    // Only a reply shows the server is there: a timeout or
                    // a broken connection says nothing either way.
                    Ok(()) => self.breaker.answered(clock.now()),
                    Err(e) if e.replied => self.breaker.answered(clock.now()),
                    Err(_) => {}
                }
                sent
            }
            Ok(None) => Err(SendError::no_reply(
                Fault::Permanent,
                "the recipient no longer exists",
                "the recipient no longer exists",
            )),
            Err(e) => Err(SendError::no_reply(
                Fault::Transient,
                "the recipient could not be loaded",
                format_args!("loading the recipient: {e:#}"),
            )),
        };
        // Sent: the session takes the next job while this one's outcome is
        // stored (in a batch with others', `Moves`).
        drop(session);
        let cause = result.as_ref().err().map(|e| e.cause.clone());
        let send_time = send_started.elapsed();
        let now = clock.now();
        let outcome = self.outcome(result, &claimed, now);
        match &outcome {
            Outcome::Sent => tracing::info!(
                attempt = claimed.attempts,
                claim_ms = claimed_after.as_secs_f64() * 1e3,
                send_ms = send_time.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "sent"
            ),
            Outcome::Retry { error, retry_at } => {
                tracing::warn!(attempt = claimed.attempts, %retry_at, error, cause, "will retry");
            }
            Outcome::GiveBack { error, retry_at } => {
                tracing::info!(%retry_at, error, cause, "mail server unreachable; the attempt does not count");
            }
            Outcome::Failed { error } => {
                tracing::warn!(attempt = claimed.attempts, error, cause, "failed");
            }
        }
        let recorded = self
            .moves
            .run(notifications::record_move(
                id,
                claimed.user_id,
                claimed.attempts,
                &outcome,
                now,
                sea_orm::Condition::all(),
            ))
            .await;
        lock(in_flight).remove(&id);
        match recorded {
            Ok(Some(moved)) => {
                self.count(&outcome, &claimed, now);
                self.inbox
                    .announce(moved.row.user_id, Some(moved.event))
                    .await;
                self.ack(&job).await;
            }
            Ok(None) => {
                tracing::warn!("the claim expired and was taken over; this outcome is dropped");
                self.ack(&job).await;
            }
            Err(e) => {
                // Not acked: the entry is reclaimed, and the sweeper releases
                // the claim once it expires.
                tracing::error!(error = ?e, "recording the outcome failed");
            }
        }
    }

    /// A recorded outcome, in the metrics; a sent one with its time since
    /// the notification was created.
    fn count(
        &self,
        outcome: &Outcome,
        claimed: &entity::notification::Model,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        match outcome {
            Outcome::Sent => {
                let latency = (now - claimed.created_at).to_std().unwrap_or_default();
                self.metrics.delivery(DeliveryOutcome::Sent, Some(latency));
            }
            Outcome::Retry { .. } | Outcome::GiveBack { .. } => {
                self.metrics.delivery(DeliveryOutcome::Retry, None);
            }
            Outcome::Failed { .. } => self.metrics.delivery(DeliveryOutcome::Failed, None),
        }
    }

    /// What a send's result comes to for `claimed`, by the retry policy.
    fn outcome(
        &self,
        result: Result<(), SendError>,
        claimed: &entity::notification::Model,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Outcome {
        let error = match result {
            Ok(()) => return Outcome::Sent,
            Err(e) => e,
        };
        let failure = match error.fault {
            Fault::Unreachable => Failure::Unreachable,
            Fault::Transient => Failure::Temporary,
            Fault::Permanent => Failure::Permanent,
        };
        outcome_of(
            self.settings
                .retry
                .decide(failure, claimed.attempts, claimed.created_at, now),
            error.message,
        )
    }

    async fn dead_letter(&self, job: &Job) {
        let reason = format!(
            "queue entry delivered {} times without an outcome",
            job.deliveries
        );
        if let Err(e) = self.queue.dead_letter(job, &reason).await {
            tracing::error!(error = ?e, "dead-lettering failed");
            return;
        }
        let now = self.settings.clock.now();
        match notifications::fail_unfinished(&self.db, job.id, &reason, now).await {
            Ok(Some(moved)) => {
                self.metrics.delivery(DeliveryOutcome::Failed, None);
                self.inbox.changed(&moved.row, moved.event).await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = ?e, "failing a dead-lettered notification"),
        }
    }

    async fn ack(&self, job: &Job) {
        ack(self.queue.as_ref(), job).await;
    }
}

/// Forgets `job`'s entry on `queue` (its outcome is stored); a failure
/// only means the entry comes back and finds its row moved.
async fn ack(queue: &dyn Queue, job: &Job) {
    if let Err(e) = queue.ack(job).await {
        tracing::warn!(error = ?e, "ack failed; the entry will come back and find the row moved");
    }
}

/// The storage outcome of a policy decision on a failure described by `error`.
fn outcome_of(decision: Decision, error: String) -> Outcome {
    match decision {
        Decision::RetryAt(retry_at) => Outcome::Retry { error, retry_at },
        Decision::GiveBack(retry_at) => Outcome::GiveBack { error, retry_at },
        Decision::GiveUp { budget: None } => Outcome::Failed { error },
        Decision::GiveUp {
            budget: Some(budget),
        } => Outcome::Failed {
            error: format!("{error} ({budget})"),
        },
    }
}

/// A permit, or `None` once shutdown is asked for.
pub(super) async fn acquire(
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        () = shutdown.cancelled() => None,
        permit = permits.clone().acquire_owned() => permit.ok(),
    }
}

/// Waits up to `grace` for `tasks`, then aborts the rest: `false` if some
/// had to be aborted.
pub(super) async fn finish_within(tasks: &mut JoinSet<()>, grace: Duration) -> bool {
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    finished.is_ok()
}

/// The queue was read when shutdown came.
pub(super) struct Stopped;

/// Jobs read ahead from one queue, up to one per permit: one queue read
/// serves many jobs under load instead of one read per freed permit.
pub(super) struct ReadAhead {
    queue: Arc<dyn Queue>,
    pub(super) buffered: VecDeque<Job>,
    batch: usize,
    /// After a failed read, doubling up to 5 s.
    backoff: Duration,
}

impl ReadAhead {
    pub(super) fn new(queue: Arc<dyn Queue>, concurrency: usize) -> Self {
        Self {
            queue,
            buffered: VecDeque::new(),
            batch: concurrency.clamp(1, READ_BATCH),
            backoff: Duration::from_millis(100),
        }
    }

    /// The next job: read ahead, or read now (waiting about a second);
    /// `None` when there was none, or the read failed (after a backoff).
    pub(super) async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Job>, Stopped> {
        if self.buffered.is_empty() {
            let jobs = tokio::select! {
                () = shutdown.cancelled() => return Err(Stopped),
                jobs = self.queue.next(self.batch, Duration::from_secs(1)) => jobs,
            };
            match jobs {
                Ok(jobs) => {
                    self.backoff = Duration::from_millis(100);
                    self.buffered.extend(jobs);
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "reading the queue failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(Stopped),
                        () = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(self.buffered.pop_front())
    }
}

/// Rows this worker holds a claim on: id → the claim's attempt number.
pub type InFlight = Arc<Mutex<HashMap<i64, Claim>>>;

/// A claim this worker holds: its attempt number (the compare-and-set
/// token) and the notification's owner.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub attempt: i32,
    pub user_id: i64,
}

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashMap<i64, Claim>> {
    in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
