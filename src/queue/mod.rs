//! The delivery queue: a hint that a notification is waiting. The row is
//! the truth; a lost entry only delays delivery until the sweeper re-enqueues
//! it (DESIGN.md, invariant 1).
//!
//! Two implementations, chosen once in `app.rs`: Redis Streams (`REDIS_URL`)
//! and an in-process channel (embedded mode).

pub mod in_process;
pub mod redis_streams;

use std::time::Duration;

/// One queue entry handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The row the job is about: a notification, or on the webhook queue
    /// an outbox row (`webhook_deliveries.id`).
    pub id: i64,
    /// The backend's handle for `ack` (the stream entry id).
    pub receipt: String,
    /// How many times this entry has been handed out, this time included.
    pub deliveries: u64,
    /// The W3C `traceparent` of the request that queued it (only while
    /// traces are exported): the job's span continues that trace.
    pub traceparent: Option<String>,
}

#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    async fn enqueue(&self, id: i64) -> anyhow::Result<()> {
        self.enqueue_traced(id, None).await
    }

    /// `enqueue`, carrying the W3C `traceparent` of the request that
    /// queues it (see `telemetry::traceparent`).
    async fn enqueue_traced(&self, id: i64, traceparent: Option<&str>) -> anyhow::Result<()>;

    /// Up to `max` jobs, waiting at most about `wait` for the first one.
    /// Includes entries reclaimed from consumers that went silent.
    async fn next(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<Job>>;

    /// The job's outcome is stored: forget the entry.
    async fn ack(&self, job: &Job) -> anyhow::Result<()>;

    /// Moves the entry to the dead-letter store with `reason`, and acks it.
    async fn dead_letter(&self, job: &Job, reason: &str) -> anyhow::Result<()>;

    /// Entries queued that no worker has taken yet, when the backend can
    /// tell (`None`: it cannot). While some wait, the sweeper does not
    /// re-queue rows merely because their entry is older than the
    /// visibility timeout: in a backlog those entries are still there, and
    /// re-queuing them would only grow the queue (a lost entry is re-queued
    /// once the backlog has drained).
    async fn waiting(&self) -> anyhow::Result<Option<u64>>;

    /// Whether entries outlive this process. When they do not, whatever was
    /// queued before a restart is gone, and the sweeper's first pass
    /// re-enqueues every due row.
    fn survives_restart(&self) -> bool;

    /// What the queue holds now, for the metrics: read at scrape time.
    async fn depth(&self) -> anyhow::Result<Depth>;
}

/// A queue's size at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Entries waiting, or taken by a worker and not yet acknowledged.
    pub entries: u64,
    /// How long the oldest of them has been queued; `None` when empty.
    pub oldest: Option<Duration>,
}
