//! What follows every committed change to a user's notifications (DESIGN.md,
//! invariant 4): store the user's newest snapshot (last seq and counts) in
//! the cache, only if newer, so every cached page of theirs read at an
//! older seq stops counting at once; then publish the inbox hint.
//!
//! Also the read side of the cache: `page` (the old `notifications`) and
//! `inbox_page` (cursor pages) serve a cached copy when it was read at the
//! cached last seq, else read the database; `last_snapshot` answers the
//! last seq and counts from the cache, the counter row on a miss.
//!
//! Every cache write here is a hint: a lost one is retried (`LostBumps`),
//! or, if the instance dies with it, costs staleness for at most the
//! snapshot entry's TTL.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use entity::notification;
use sea_orm::DatabaseConnection;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    cache::Cache,
    keys::Keys,
    metrics::CacheName,
    pubsub::EventBus,
    storage::{
        self, StorageError,
        inbox::{Filter, Snapshot},
    },
    wire::{
        self, InboxEventV1, InboxHintV1, InboxPageV1, InboxSnapshotV1, NotificationV1, PageV1,
        Payload,
    },
};

#[derive(Clone)]
pub struct Inbox {
    pub cache: Arc<dyn Cache>,
    pub events: Arc<dyn EventBus>,
    pub keys: Keys,
    /// Of cached pages (the snapshot entry keeps at most `SNAPSHOT_TTL`).
    pub ttl: Duration,
    /// Snapshot updates the cache refused (it was unreachable).
    pub lost_bumps: Arc<LostBumps>,
    /// This application's webhook relay: changes that write outbox rows
    /// run in its scope and wake it.
    pub webhooks: crate::webhooks::Wake,
    /// Events published, cache hits and misses, and what followers deliver.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The longest a snapshot entry is kept: the longest a snapshot update
/// lost with its instance (a crash right after the commit) can hide that
/// commit from cached pages, idle polls and idle subscribers. Refilling an
/// expired entry costs one primary-key read of the counter row; pages cached
/// at the same seq stay valid.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(30);

/// How often lost snapshot updates are tried again.
const BUMP_RETRY: Duration = Duration::from_secs(1);

/// Snapshot updates that failed, tried again every second until the cache
/// takes them: without this, pages cached before an outage would be served
/// stale, by every instance, until the snapshot entry's TTL once the cache
/// is back. Until then this instance reads those inboxes from the database.
pub struct LostBumps {
    /// By snapshot key: the newest snapshot owed (its seq, its payload).
    keys: Mutex<HashMap<String, (i64, String)>>,
    retrying: AtomicBool,
    /// Ends the retry loop at shutdown (updates still owed stay owed).
    stop: CancellationToken,
    /// Where the retry loop runs, so shutdown can wait for it to end.
    tasks: TaskTracker,
}

impl LostBumps {
    pub fn new(stop: CancellationToken, tasks: TaskTracker) -> Self {
        Self {
            keys: Mutex::default(),
            retrying: AtomicBool::new(false),
            stop,
            tasks,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, String)>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an update of `key` is still owed. Lock-free while nothing is
    /// owed (a retry loop runs exactly while some update is), since every
    /// cached read asks.
    pub fn contains(&self, key: &str) -> bool {
        self.retrying.load(Ordering::Acquire) && self.lock().contains_key(key)
    }

    /// Remembers that `key` owes `value` (at `seq`; a newer one owed
    /// already stays) and makes sure a retry loop runs. The loop ends once
    /// every lost update has landed (decided under the lock `remember`
    /// takes, so no key is left without a loop), or at shutdown.
    fn remember(
        self: &Arc<Self>,
        key: String,
        seq: i64,
        value: String,
        cache: Arc<dyn Cache>,
        ttl: Duration,
    ) {
        let mut keys = self.lock();
        let owed = keys.entry(key).or_insert((seq, value.clone()));
        if owed.0 < seq {
            *owed = (seq, value);
        }
        if self.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let lost = self.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = lost.stop.cancelled() => break,
                    () = tokio::time::sleep(BUMP_RETRY) => {}
                }
                let pending: Vec<(String, (i64, String))> = lost
                    .lock()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (key, (seq, value)) in pending {
                    if cache.set_if_newer(&key, &value, seq, ttl).await.is_ok() {
                        tracing::info!(key, seq, "lost inbox snapshot update applied");
                        let mut keys = lost.lock();
                        // Unless a newer one was lost meanwhile.
                        if keys.get(&key).is_some_and(|(owed, _)| *owed == seq) {
                            keys.remove(&key);
                        }
                    }
                }
                let keys = lost.lock();
                if keys.is_empty() {
                    lost.retrying.store(false, Ordering::Release);
                    break;
                }
            }
        });
        drop(keys);
    }
}

/// One page of notifications, newest first, and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<NotificationV1>,
    pub total: u64,
}

impl From<Snapshot> for InboxSnapshotV1 {
    fn from(s: Snapshot) -> Self {
        Self {
            last_seq: s.last_seq,
            counts: s.counts,
        }
    }
}

impl From<InboxSnapshotV1> for Snapshot {
    fn from(s: InboxSnapshotV1) -> Self {
        Self {
            last_seq: s.last_seq,
            counts: s.counts,
        }
    }
}

/// A cached payload read at one of its user's seqs: it counts only while
/// that is the cached last seq.
trait AtSeq: Payload {
    fn last_seq(&self) -> i64;
}

impl AtSeq for PageV1 {
    fn last_seq(&self) -> i64 {
        self.last_seq
    }
}

impl AtSeq for InboxPageV1 {
    fn last_seq(&self) -> i64 {
        self.last_seq
    }
}

/// `json` decoded; another format version (another release wrote it) or
/// what does not decode (logged) is absent.
fn decode<T: Payload>(json: &str, key: &str) -> Option<T> {
    match wire::decode::<T>(json) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::warn!(error = %e, key, "unreadable cache entry");
            None
        }
    }
}

impl Inbox {
    /// Call after the change to `row` is committed, with the inbox event its
    /// transaction wrote (carried by the hint, so followers need no SQL for
    /// it). Never fails: a lost cache update (retried) or hint is logged;
    /// the row and the log stay the truth.
    pub async fn changed(&self, row: &notification::Model, inbox_event: InboxEventV1) {
        self.touched(row.user_id, Snapshot::from(&inbox_event))
            .await;
        // Announced after the cache update: a client that refetches on the
        // event never reads the page as it was before the change.
        self.announce(row.user_id, Some(inbox_event)).await;
    }

    /// [`Self::touched`] once per user for `events` committed together (a
    /// group commit's batch): each user's snapshot moves to the last of
    /// their events, in one cache update per user instead of one per event.
    /// Announce each event after it.
    pub async fn touched_by<'a>(&self, events: impl IntoIterator<Item = &'a InboxEventV1>) {
        let mut last = std::collections::BTreeMap::<i64, Snapshot>::new();
        for event in events {
            let newest = last
                .entry(event.user_id)
                .or_insert_with(|| Snapshot::from(event));
            if event.seq > newest.last_seq {
                *newest = Snapshot::from(event);
            }
        }
        futures_util::future::join_all(
            last.into_iter()
                .map(|(user_id, snapshot)| self.touched(user_id, snapshot)),
        )
        .await;
    }

    fn snapshot_ttl(&self) -> Duration {
        self.ttl.min(SNAPSHOT_TTL)
    }

    /// Call after a commit that wrote `user_id`'s inbox event `event` (or
    /// one not at hand): publishes the hint live subscribers follow. Never
    /// fails; a lost hint is repaired by the subscribers from the log.
    pub async fn announce(&self, user_id: i64, event: Option<InboxEventV1>) {
        let hint = InboxHintV1 { user_id, event };
        match self.events.publish_inbox(&hint).await {
            Ok(()) => self.metrics.event_published(),
            Err(e) => tracing::warn!(error = ?e, user_id, "inbox hint not published"),
        }
    }

    /// Call after a committed change to `user_id`'s inbox (a status change
    /// or a mark) with the snapshot right after it: the cached snapshot
    /// moves to it unless a newer one is there, and every page cached at an
    /// older seq stops counting. Never fails; a refused update is retried.
    pub async fn touched(&self, user_id: i64, snapshot: Snapshot) {
        let key = self.keys.inbox_snapshot(user_id);
        let Some(value) = encode(&InboxSnapshotV1::from(snapshot)) else {
            return;
        };
        let stored = self
            .cache
            .set_if_newer(&key, &value, snapshot.last_seq, self.snapshot_ttl())
            .await;
        if let Err(e) = stored {
            // Pages of this user cached at an older seq would be served
            // stale: store it as soon as the cache answers.
            tracing::error!(error = ?e, user_id, "inbox snapshot update failed; retrying");
            self.lost_bumps.remember(
                key,
                snapshot.last_seq,
                value,
                self.cache.clone(),
                self.snapshot_ttl(),
            );
        }
    }

    /// The user's last seq and counts: from the cache (one read), else
    /// from the counter row, which then fills the cache (only if newer).
    /// The cache may lag a commit by a moment (its update follows the
    /// commit); what must be exact confirms against the database.
    pub async fn last_snapshot(
        &self,
        db: &DatabaseConnection,
        user_id: i64,
    ) -> Result<Snapshot, StorageError> {
        let key = self.keys.inbox_snapshot(user_id);
        if self.lost_bumps.contains(&key) {
            self.metrics.cache(CacheName::InboxSnapshots, false);
            return storage::inbox::snapshot(db, user_id).await;
        }
        let answered = match self.cache.get(&key).await {
            Ok(Some(json)) => match decode::<InboxSnapshotV1>(&json, &key) {
                Some(cached) => {
                    self.metrics.cache(CacheName::InboxSnapshots, true);
                    return Ok(cached.into());
                }
                None => true,
            },
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = ?e, "cache unavailable; reading the database");
                false
            }
        };
        self.metrics.cache(CacheName::InboxSnapshots, false);
        let snapshot = storage::inbox::snapshot(db, user_id).await?;
        if answered {
            self.fill(user_id, snapshot).await;
        }
        Ok(snapshot)
    }

    /// Stores `snapshot`, read from the database, unless a newer one is
    /// cached. A failure leaves a miss (or an older entry that a writer's
    /// own update supersedes): nothing to retry.
    async fn fill(&self, user_id: i64, snapshot: Snapshot) {
        let key = self.keys.inbox_snapshot(user_id);
        let Some(value) = encode(&InboxSnapshotV1::from(snapshot)) else {
            return;
        };
        if let Err(e) = self
            .cache
            .set_if_newer(&key, &value, snapshot.last_seq, self.snapshot_ttl())
            .await
        {
            tracing::warn!(error = ?e, "cache write failed");
        }
    }

    /// The user's cached last seq and the value at `key`, read together
    /// (one round trip: a value read at a seq counts only while that is the
    /// cached last seq). `None` when nothing cached may be used: the cache
    /// is unreachable, or an update of this user's snapshot is owed (cached
    /// copies may predate a change). Shared by the pages and the response
    /// cache (`responses.rs`), so both are never stale alike.
    pub async fn with_last_seq(
        &self,
        user_id: i64,
        key: &str,
    ) -> Option<(Option<i64>, Option<String>)> {
        let snapshot_key = self.keys.inbox_snapshot(user_id);
        if self.lost_bumps.contains(&snapshot_key) {
            return None;
        }
        let values = match self
            .cache
            .get_many(&[snapshot_key.clone(), key.to_owned()])
            .await
        {
            Ok(values) => values,
            Err(e) => {
                tracing::warn!(error = ?e, "cache unavailable; reading the database");
                return None;
            }
        };
        let mut values = values.into_iter();
        let last_seq = values
            .next()
            .flatten()
            .and_then(|json| decode::<InboxSnapshotV1>(&json, &snapshot_key))
            .map(|s| s.last_seq);
        Some((last_seq, values.next().flatten()))
    }

    /// The payload at `key` when it was read at the user's cached last seq
    /// (one round trip: the snapshot and the page together), else `load`'s
    /// (a page and the database snapshot it was read at), which is cached.
    async fn read_through<T: AtSeq>(
        &self,
        user_id: i64,
        key: String,
        load: impl Future<Output = Result<(T, Snapshot), StorageError>>,
    ) -> Result<T, StorageError> {
        // `Some` when the cache answered: the cached last seq, if any.
        let cached_seq = match self.with_last_seq(user_id, &key).await {
            None => None,
            Some((last_seq, value)) => {
                let page = value.and_then(|json| decode::<T>(&json, &key));
                match (last_seq, page) {
                    (Some(seq), Some(page)) if page.last_seq() == seq => {
                        self.metrics.cache(CacheName::InboxPages, true);
                        return Ok(page);
                    }
                    // Read at another seq (stale, or ahead of a lagging
                    // snapshot), or no snapshot to check it by: a miss.
                    _ => Some(last_seq),
                }
            }
        };
        self.metrics.cache(CacheName::InboxPages, false);
        let (fresh, snapshot) = load.await?;
        if let Some(cached_seq) = cached_seq {
            // Stored at the seq it was read at: it counts once (and while)
            // that is the cached last seq.
            if let Some(json) = encode(&fresh)
                && let Err(e) = self.cache.set(&key, &json, self.ttl).await
            {
                tracing::warn!(error = ?e, "cache write failed");
            }
            if cached_seq.is_none_or(|seq| seq < snapshot.last_seq) {
                self.fill(user_id, snapshot).await;
            }
        }
        Ok(fresh)
    }

    /// One page of `user_id`'s notifications (the old `notifications`
    /// list), from the cache when its copy was read at the cached last seq,
    /// else from the database.
    pub async fn page(
        &self,
        db: &DatabaseConnection,
        user_id: i64,
        page: u64,
        page_size: u64,
    ) -> Result<Page, StorageError> {
        let key = self.keys.inbox_page(user_id, page, page_size);
        let load = async {
            let found = storage::notifications::page(db, user_id, page, page_size).await?;
            let entry = PageV1 {
                last_seq: found.snapshot.last_seq,
                items: found.items.into_iter().map(NotificationV1::from).collect(),
                total: found.total,
            };
            Ok((entry, found.snapshot))
        };
        let entry = self.read_through(user_id, key, load).await?;
        Ok(Page {
            items: entry.items,
            total: entry.total,
        })
    }

    /// One cursor page of `user_id`'s inbox (`inbox(first, after, filter)`)
    /// with the counts and last seq of the same snapshot, from the cache
    /// when its copy was read at the cached last seq, else from the
    /// database.
    pub async fn inbox_page(
        &self,
        db: &DatabaseConnection,
        user_id: i64,
        before: Option<i64>,
        first: u64,
        filter: Filter,
    ) -> Result<InboxPageV1, StorageError> {
        let key = self
            .keys
            .inbox_cursor_page(user_id, first, before, &filter.tag());
        let load = async {
            let found = storage::inbox::page(db, user_id, before, first, filter).await?;
            let entry = InboxPageV1 {
                last_seq: found.snapshot.last_seq,
                counts: found.snapshot.counts,
                items: found.items.into_iter().map(NotificationV1::from).collect(),
                has_next_page: found.has_next_page,
            };
            Ok((entry, found.snapshot))
        };
        self.read_through(user_id, key, load).await
    }
}

/// `payload` as a cache value (`None`, logged, if it cannot be: then it is
/// simply not cached).
fn encode<T: Payload>(payload: &T) -> Option<String> {
    wire::encode(payload)
        .inspect_err(|e| tracing::warn!(error = %e, "payload not serializable"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache that never answers a bump.
    struct Unreachable;

    #[async_trait::async_trait]
    impl Cache for Unreachable {
        async fn get(&self, _: &str) -> anyhow::Result<Option<String>> {
            anyhow::bail!("down")
        }
        async fn get_many(&self, _: &[String]) -> anyhow::Result<Vec<Option<String>>> {
            anyhow::bail!("down")
        }
        async fn set(&self, _: &str, _: &str, _: Duration) -> anyhow::Result<()> {
            anyhow::bail!("down")
        }
        async fn delete(&self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("down")
        }
        async fn set_if_newer(
            &self,
            _: &str,
            _: &str,
            _: i64,
            _: Duration,
        ) -> anyhow::Result<bool> {
            anyhow::bail!("down")
        }
        fn backend(&self) -> &'static str {
            "unreachable"
        }
        async fn ping(&self) -> anyhow::Result<()> {
            anyhow::bail!("down")
        }
    }

    #[tokio::test]
    async fn the_lost_bump_retry_loop_ends_at_shutdown_with_the_bump_still_owed() {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let lost = Arc::new(LostBumps::new(stop.clone(), tasks.clone()));
        lost.remember(
            "s".to_owned(),
            1,
            "{}".to_owned(),
            Arc::new(Unreachable),
            Duration::from_secs(60),
        );
        assert_eq!(tasks.len(), 1, "the retry loop runs");
        // Though the cache is still down.
        crate::test_support::shut_down(&stop, &tasks, "the retry loop").await;
        assert!(lost.contains("s"), "the update is still owed");
    }
}
