//! The services-mode queue: one Redis Stream with one consumer group.
//!
//! - `enqueue`: `XADD queue * id <id> [tp <traceparent>]` on the shared
//!   connection manager.
//! - `next`: `XREADGROUP … BLOCK` on a dedicated connection (a blocking read
//!   on the shared one would hit its 500 ms response timeout and stall every
//!   other command), after reclaiming entries idle longer than the
//!   visibility timeout with `XAUTOCLAIM`.
//! - `ack`: `XACK` + `XDEL`, so the stream holds only unfinished entries.
//! - `dead_letter`: `XADD queue:dead`, then ack.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use redis::{
    AsyncConnectionConfig, Client, Value,
    aio::{ConnectionManager, MultiplexedConnection},
    streams::{
        StreamAutoClaimReply, StreamInfoGroupsReply, StreamPendingCountReply, StreamRangeReply,
        StreamReadReply,
    },
};
use tokio::sync::Mutex;

use super::{Depth, Job, Queue};
use crate::keys::Keys;

/// The stream, consumer group and dead-letter stream of one queue.
#[derive(Debug, Clone)]
pub struct QueueNames {
    pub stream: String,
    pub group: String,
    pub dead_letters: String,
}

impl QueueNames {
    /// The delivery queue: email jobs.
    pub fn notifications(keys: &Keys) -> Self {
        Self {
            stream: keys.queue(),
            group: keys.queue_group(),
            dead_letters: keys.dead_letters(),
        }
    }

    /// The webhook queue.
    pub fn webhooks(keys: &Keys) -> Self {
        Self {
            stream: keys.webhook_queue(),
            group: keys.webhook_queue_group(),
            dead_letters: keys.webhook_dead_letters(),
        }
    }
}

/// How many reclaimable entries one `next` call looks at.
const RECLAIM_BATCH: usize = 100;

pub struct RedisStreamQueue {
    client: Client,
    manager: ConnectionManager,
    names: QueueNames,
    consumer: String,
    /// `None` in a process that only enqueues: it reclaims nothing.
    visibility: Option<Duration>,
    /// The blocking-read connection, made on first use and again after an error.
    reader: Mutex<Option<MultiplexedConnection>>,
    group_ready: std::sync::atomic::AtomicBool,
    /// When this consumer last looked for entries to reclaim: a few times
    /// per visibility timeout is enough, not once per read.
    last_reclaim: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RedisStreamQueue {
    pub fn new(
        client: Client,
        manager: ConnectionManager,
        names: QueueNames,
        visibility: Option<Duration>,
    ) -> Self {
        let consumer = format!(
            "{}-{}-{}",
            hostname(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            client,
            manager,
            names,
            consumer,
            visibility,
            reader: Mutex::new(None),
            group_ready: std::sync::atomic::AtomicBool::new(false),
            last_reclaim: std::sync::Mutex::new(None),
        }
    }

    /// Creates the group (and the stream) once; an existing group is fine.
    async fn ensure_group(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        if self.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = self.manager.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e).context("creating the queue's consumer group"),
        }
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn reader(&self, block: Duration) -> anyhow::Result<MultiplexedConnection> {
        let mut slot = self.reader.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(block + Duration::from_secs(5)));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting the queue reader")?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Entries other consumers took and never acked within the visibility
    /// timeout, now ours, with how often each has been handed out.
    async fn reclaim(&self, max: usize) -> anyhow::Result<Vec<Job>> {
        let Some(visibility) = self.visibility else {
            return Ok(Vec::new());
        };
        {
            let mut last = self
                .last_reclaim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let every = (visibility / 4).max(Duration::from_millis(200));
            if last.is_some_and(|at| at.elapsed() < every) {
                return Ok(Vec::new());
            }
            *last = Some(tokio::time::Instant::now());
        }
        let mut conn = self.manager.clone();
        let idle_ms = u64::try_from(visibility.as_millis()).unwrap_or(u64::MAX);
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg("IDLE")
            .arg(idle_ms)
            .arg("-")
            .arg("+")
            .arg(max.min(RECLAIM_BATCH))
            .query_async(&mut conn)
            .await
            .context("XPENDING")?;
        if pending.ids.is_empty() {
            return Ok(Vec::new());
        }
        let delivered: HashMap<String, u64> = pending
            .ids
            .iter()
            .map(|p| (p.id.clone(), p.times_delivered as u64))
            .collect();
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(&self.consumer)
            .arg(idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(max.min(RECLAIM_BATCH))
            .query_async(&mut conn)
            .await
            .context("XAUTOCLAIM")?;
        let mut jobs = Vec::with_capacity(claimed.claimed.len());
        for entry in claimed.claimed {
            let deliveries = delivered.get(&entry.id).copied().unwrap_or(1) + 1;
            match parse_id(&entry.map) {
                Some(id) => jobs.push(Job {
                    id,
                    traceparent: field(&entry.map, "tp"),
                    receipt: entry.id,
                    deliveries,
                }),
                None => self.drop_malformed(&entry.id).await,
            }
        }
        Ok(jobs)
    }

    async fn drop_malformed(&self, entry_id: &str) {
        tracing::warn!(entry_id, "dropping a queue entry without a notification id");
        let mut conn = self.manager.clone();
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("XACK")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.names.stream)
            .arg(entry_id)
            .ignore()
            .query_async(&mut conn)
            .await;
    }
}

fn parse_id(map: &HashMap<String, Value>) -> Option<i64> {
    match map.get("id")? {
        Value::Int(i) => Some(*i),
        _ => field(map, "id")?.parse().ok(),
    }
}

/// A text field of an entry (`tp`: the traceparent, absent from entries
/// queued without one or by an older release).
fn field(map: &HashMap<String, Value>, name: &str) -> Option<String> {
    match map.get(name)? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "herald".to_owned())
}

#[async_trait::async_trait]
impl Queue for RedisStreamQueue {
    async fn enqueue_traced(&self, id: i64, traceparent: Option<&str>) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.names.stream).arg("*").arg("id").arg(id);
        if let Some(traceparent) = traceparent {
            xadd.arg("tp").arg(traceparent);
        }
        let _: String = xadd.query_async(&mut conn).await.context("XADD")?;
        Ok(())
    }

    async fn next(&self, max: usize, wait: Duration) -> anyhow::Result<Vec<Job>> {
        self.ensure_group().await?;
        let reclaimed = self.reclaim(max).await?;
        if !reclaimed.is_empty() {
            return Ok(reclaimed);
        }
        let block_ms = u64::try_from(wait.as_millis()).unwrap_or(1000).max(1);
        let mut conn = self.reader(wait).await?;
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.names.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.names.stream)
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match read {
            Ok(reply) => reply,
            Err(e) => {
                // Make a fresh reader next time; the group may be gone too
                // (a Redis restart without persistence).
                *self.reader.lock().await = None;
                self.group_ready
                    .store(false, std::sync::atomic::Ordering::Release);
                return Err(e).context("XREADGROUP");
            }
        };
        let mut jobs = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                match parse_id(&entry.map) {
                    Some(id) => jobs.push(Job {
                        id,
                        traceparent: field(&entry.map, "tp"),
                        receipt: entry.id,
                        deliveries: 1,
                    }),
                    None => self.drop_malformed(&entry.id).await,
                }
            }
        }
        Ok(jobs)
    }

    /// The group's `lag` (Redis 7: entries never delivered to a consumer);
    /// `None` when Redis cannot tell, or there is no group yet.
    async fn waiting(&self) -> anyhow::Result<Option<u64>> {
        let mut conn = self.manager.clone();
        let info: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.names.stream)
            .query_async(&mut conn)
            .await;
        let info = match info {
            Ok(info) => info,
            // No stream yet ("no such key"): nothing waits.
            Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => return Ok(Some(0)),
            Err(e) => return Err(e).context("XINFO GROUPS"),
        };
        let group = &self.names.group;
        Ok(info
            .groups
            .iter()
            .find(|g| g.name == *group)
            .and_then(|g| g.lag)
            .map(|lag| lag as u64))
    }

    async fn ack(&self, job: &Job) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: () = redis::pipe()
            .cmd("XACK")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(&job.receipt)
            .ignore()
            .cmd("XDEL")
            .arg(&self.names.stream)
            .arg(&job.receipt)
            .ignore()
            .query_async(&mut conn)
            .await
            .context("XACK")?;
        Ok(())
    }

    async fn dead_letter(&self, job: &Job, reason: &str) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: String = redis::cmd("XADD")
            .arg(&self.names.dead_letters)
            .arg("*")
            .arg("id")
            .arg(job.id)
            .arg("entry")
            .arg(&job.receipt)
            .arg("deliveries")
            .arg(job.deliveries)
            .arg("reason")
            .arg(reason)
            .query_async(&mut conn)
            .await
            .context("XADD dead letter")?;
        self.ack(job).await
    }

    fn survives_restart(&self) -> bool {
        true
    }

    /// `XLEN` (acked entries are deleted, so the stream holds only
    /// unfinished ones, taken or not; no consumer group needed) and the
    /// first entry's id, whose first part is when it was added (ms).
    async fn depth(&self) -> anyhow::Result<Depth> {
        let mut conn = self.manager.clone();
        let (entries, first): (u64, StreamRangeReply) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.names.stream)
            .cmd("XRANGE")
            .arg(&self.names.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .context("XLEN")?;
        let added_ms = first
            .ids
            .first()
            .and_then(|entry| entry.id.split('-').next())
            .and_then(|ms| ms.parse::<i64>().ok());
        let oldest = added_ms.map(|ms| {
            let age = chrono::Utc::now().timestamp_millis().saturating_sub(ms);
            Duration::from_millis(u64::try_from(age).unwrap_or(0))
        });
        Ok(Depth { entries, oldest })
    }
}
