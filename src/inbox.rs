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
        if let Err(e) = self.cache.bump(&key).await {
            // Pages of this user cached under the old version could now be
            // served stale until their TTL: say so loudly.
            tracing::error!(error = ?e, user_id = row.user_id, "inbox version bump failed");
        }
        let event = StatusEvent {
            notification: row.clone(),
            previous,
            at: row.updated_at,
        };
        if let Err(e) = self.events.publish(&event).await {
            tracing::warn!(error = ?e, notification_id = row.id, "status event not published");
        }
    }

    /// One page of `user_id`'s notifications, from the cache when it holds
    /// the current version's copy.
    pub async fn page(
        &self,
        db: &DatabaseConnection,
        user_id: i64,
        page: u64,
        page_size: u64,
    ) -> Result<Page, StorageError> {
        let version = match self.cache.version(&self.keys.inbox_version(user_id)).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = ?e, "cache unavailable; reading the database");
                None
            }
        };
        let key = version.map(|v| self.keys.inbox_page(user_id, v, page, page_size));
        if let Some(key) = &key {
            match self.cache.get(key).await {
                Ok(Some(json)) => match serde_json::from_str::<Page>(&json) {
                    Ok(page) => return Ok(page),
                    Err(e) => tracing::warn!(error = %e, key, "unreadable cache entry"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = ?e, "cache unavailable; reading the database"),
            }
        }
        let (items, total) = storage::notifications::page(db, user_id, page, page_size).await?;
        let fresh = Page { items, total };
        if let Some(key) = key {
            match serde_json::to_string(&fresh) {
                Ok(json) => {
                    if let Err(e) = self.cache.set(&key, &json, self.ttl).await {
                        tracing::warn!(error = ?e, "cache write failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "page not serializable"),
            }
        }
        Ok(fresh)
    }
}
