//! What follows every committed change to a notification (DESIGN.md,
//! invariant 4): bump the owner's inbox version, so every cached page of
//! theirs is invisible at once, then publish the status event.
//!
//! Also the read side of the cache: `page` serves `notifications` from the
//! cache under the current version, or from the database.

use std::{sync::Arc, time::Duration};

use entity::notification::{self, Status};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};

use crate::{
    cache::Cache,
    keys::Keys,
    pubsub::{EventBus, StatusEvent},
    storage::{self, StorageError},
};

#[derive(Clone)]
pub struct Inbox {
    pub cache: Arc<dyn Cache>,
    pub events: Arc<dyn EventBus>,
    pub keys: Keys,
    pub ttl: Duration,
}

/// A cached page: the rows and the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<notification::Model>,
    pub total: u64,
}

impl Inbox {
    /// Call after the change to `row` is committed. Never fails: a lost bump
    /// or event is logged; the row stays the truth.
    pub async fn changed(&self, previous: Option<Status>, row: &notification::Model) {
        let key = self.keys.inbox_version(row.user_id);
        let bumped = self.cache.bump(&key).await;
        if let Err(e) = bumped {
            // Pages of this user cached under the old version could now be
            // served stale until their TTL: say so loudly.
            tracing::error!(error = ?e, user_id = row.user_id, "inbox version bump failed");
        }
        // Published after the bump: a client that refetches on the event
        // never reads the page as it was before the change.
        let event = StatusEvent {
            notification: row.clone(),
            previous,
            at: row.updated_at,
        };
        if let Err(e) = self.events.publish(&event).await {
            tracing::warn!(error = ?e, notification_id = row.id, "status event not published");
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
        let cached = self
            .cache
            .get_many(&[self.keys.inbox_version(user_id), page_key.clone()])
            .await;
        let version = match cached {
            Ok(values) => {
                let mut values = values.into_iter();
                let version = values
                    .next()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if let Some(json) = values.next().flatten() {
                    match serde_json::from_str::<Versioned>(&json) {
                        Ok(entry) if entry.version == version => return Ok(entry.page),
                        Ok(_) => {} // an older version's copy: stale, ignore
                        Err(e) => tracing::warn!(error = %e, page_key, "unreadable cache entry"),
                    }
                }
                Some(version)
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cache unavailable; reading the database");
                None
            }
        };
        let (items, total) = storage::notifications::page(db, user_id, page, page_size).await?;
        let fresh = Page { items, total };
        // Stored under the version read *before* the query: if a change
        // landed meanwhile, the version has moved on and this copy never counts.
        if let Some(version) = version {
            let entry = Versioned {
                version,
                page: fresh.clone(),
            };
            match serde_json::to_string(&entry) {
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

/// A cached page and the inbox version it was read at.
#[derive(Serialize, Deserialize)]
struct Versioned {
    version: u64,
    page: Page,
}
