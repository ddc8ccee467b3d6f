//! What follows every committed change to a notification (DESIGN.md,
//! invariant 4): bump the owner's inbox version, so every cached page of
//! theirs is invisible at once, then publish the inbox hint.
//!
//! Also the read side of the cache: `page` serves `notifications` from the
//! cache under the current version, or from the database.

use std::{
    collections::HashSet,
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
    pubsub::EventBus,
    storage::{self, StorageError},
    wire::{self, InboxEventV1, InboxHintV1, NotificationV1, PageV1},
};

#[derive(Clone)]
pub struct Inbox {
    pub cache: Arc<dyn Cache>,
    pub events: Arc<dyn EventBus>,
    pub keys: Keys,
    pub ttl: Duration,
    /// Inbox versions whose bump failed (the cache was unreachable).
    pub lost_bumps: Arc<LostBumps>,
}

/// How often lost version bumps are tried again.
const BUMP_RETRY: Duration = Duration::from_secs(1);

/// Version bumps that failed, tried again every second until the cache takes
/// them: without this, pages cached before an outage would be served stale,
/// by every instance, until their TTL once the cache is back. Until then this
/// instance reads those inboxes from the database.
pub struct LostBumps {
    keys: Mutex<HashSet<String>>,
    retrying: AtomicBool,
    /// Ends the retry loop at shutdown (bumps still owed stay owed).
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key`'s bump is still owed. Lock-free while nothing is owed
    /// (a retry loop runs exactly while some bump is), since every page
    /// read asks.
    pub fn contains(&self, key: &str) -> bool {
        self.retrying.load(Ordering::Acquire) && self.lock().contains(key)
    }

    /// Remembers `key` and makes sure a retry loop runs. The loop ends once
    /// every lost bump has landed (decided under the lock `remember` takes,
    /// so no key is left without a loop), or at shutdown.
    fn remember(self: &Arc<Self>, key: String, cache: Arc<dyn Cache>) {
        let mut keys = self.lock();
        keys.insert(key);
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
                let pending: Vec<String> = lost.lock().iter().cloned().collect();
                for key in pending {
                    if cache.bump(&key).await.is_ok() {
                        tracing::info!(key, "lost inbox version bump applied");
                        lost.lock().remove(&key);
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

impl Inbox {
    /// Call after the change to `row` is committed, with the inbox event its
    /// transaction wrote (carried by the hint, so followers need no SQL for
    /// it). Never fails: a lost bump or hint is logged; the row and the log
    /// stay the truth.
    pub async fn changed(&self, row: &notification::Model, inbox_event: InboxEventV1) {
        self.touched(row.user_id).await;
        // Announced after the bump: a client that refetches on the event
        // never reads the page as it was before the change.
        self.announce(row.user_id, Some(inbox_event)).await;
    }

    /// Call after a commit that wrote `user_id`'s inbox event `event` (or
    /// one not at hand): publishes the hint live subscribers follow. Never
    /// fails; a lost hint is repaired by the subscribers from the log.
    pub async fn announce(&self, user_id: i64, event: Option<InboxEventV1>) {
        let hint = InboxHintV1 { user_id, event };
        if let Err(e) = self.events.publish_inbox(&hint).await {
            tracing::warn!(error = ?e, user_id, "inbox hint not published");
        }
    }

    /// Call after a committed change to `user_id`'s inbox (a status change
    /// or a mark): every cached page of theirs becomes invisible. Never
    /// fails; a lost bump is retried.
    pub async fn touched(&self, user_id: i64) {
        let key = self.keys.inbox_version(user_id);
        let bumped = self.cache.bump(&key).await;
        if let Err(e) = bumped {
            // Pages of this user cached under the old version would be served
            // stale: bump again as soon as the cache answers.
            tracing::error!(error = ?e, user_id, "inbox version bump failed; retrying");
            self.lost_bumps.remember(key, self.cache.clone());
        }
    }

    /// One page of `user_id`'s notifications, from the cache when its copy
    /// was read at the current inbox version (one round trip: the version and
    /// the page together), else from the database.
    pub async fn page(
        &self,
        db: &DatabaseConnection,
        user_id: i64,
        page: u64,
        page_size: u64,
    ) -> Result<Page, StorageError> {
        let page_key = self.keys.inbox_page(user_id, page, page_size);
        let version_key = self.keys.inbox_version(user_id);
        // While a bump of this inbox is owed, cached copies may predate a
        // change: the database, and nothing cached.
        let cached = if self.lost_bumps.contains(&version_key) {
            None
        } else {
            Some(self.cache.get_many(&[version_key, page_key.clone()]).await)
        };
        let version = match cached {
            None => None,
            Some(Ok(values)) => {
                let mut values = values.into_iter();
                let version = values
                    .next()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if let Some(json) = values.next().flatten() {
                    match wire::decode::<PageV1>(&json) {
                        Ok(Some(entry)) if entry.inbox_version == version => {
                            return Ok(Page {
                                items: entry.items,
                                total: entry.total,
                            });
                        }
                        // A copy from an older inbox version (stale), or in
                        // another release's format: a miss.
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, page_key, "unreadable cache entry"),
                    }
                }
                Some(version)
            }
            Some(Err(e)) => {
                tracing::warn!(error = ?e, "cache unavailable; reading the database");
                None
            }
        };
        let (rows, total) = storage::notifications::page(db, user_id, page, page_size).await?;
        let fresh = Page {
            items: rows.into_iter().map(NotificationV1::from).collect(),
            total,
        };
        // Stored under the version read *before* the query: if a change
        // landed meanwhile, the version has moved on and this copy never counts.
        if let Some(inbox_version) = version {
            let entry = PageV1 {
                inbox_version,
                items: fresh.items.clone(),
                total,
            };
            match wire::encode(&entry) {
                Ok(json) => {
                    if let Err(e) = self.cache.set(&page_key, &json, self.ttl).await {
                        tracing::warn!(error = ?e, "cache write failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "page not serializable"),
            }
        }
        Ok(fresh)
    }
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
        async fn version(&self, _: &str) -> anyhow::Result<u64> {
            anyhow::bail!("down")
        }
        async fn bump(&self, _: &str) -> anyhow::Result<u64> {
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
        lost.remember("v".to_owned(), Arc::new(Unreachable));
        assert_eq!(tasks.len(), 1, "the retry loop runs");
        // Though the cache is still down.
        crate::test_support::shut_down(&stop, &tasks, "the retry loop").await;
        assert!(lost.contains("v"), "the bump is still owed");
    }
}
