//! Users' email preferences, read by the worker through the shared cache
//! (Redis, or in-process), so a delivery costs no query for them; the
//! database is read on a miss. `setNotificationPreference` deletes the
//! user's entry after its commit, so every instance reads the change at its
//! next delivery for that user.
//!
//! Which setting holds: the category's own, else the user's default, else
//! on; a category in `HERALD_CRITICAL_CATEGORIES` is always mailed.

use std::{sync::Arc, time::Duration};

use entity::notification_preference::DEFAULT_CATEGORY;
use sea_orm::DatabaseConnection;

use crate::{
    cache::Cache,
    keys::Keys,
    metrics::{CacheName, Metrics},
    wire::{self, CategoryPreferenceV1, PreferencesV1},
};

pub struct Preferences {
    db: DatabaseConnection,
    cache: Arc<dyn Cache>,
    keys: Keys,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl Preferences {
    pub fn new(
        db: DatabaseConnection,
        cache: Arc<dyn Cache>,
        keys: Keys,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            cache,
            keys,
            ttl,
            metrics,
        }
    }

    /// `user_id`'s settings: the cached copy, else the database's (cached).
    pub async fn get(&self, user_id: i64) -> anyhow::Result<PreferencesV1> {
        let key = self.keys.preferences(user_id);
        match self.cache.get(&key).await {
            Ok(Some(json)) => {
                // Another release's format, or unreadable: read it again.
                if let Ok(Some(cached)) = wire::decode::<PreferencesV1>(&json) {
                    self.metrics.cache(CacheName::Preferences, true);
                    return Ok(cached);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = ?e, "cache unavailable; reading preferences from the database");
            }
        }
        self.metrics.cache(CacheName::Preferences, false);
        let fresh = self.read(user_id).await?;
        if let Ok(json) = wire::encode(&fresh) {
            let _ = self.cache.set(&key, &json, self.ttl).await;
        }
        Ok(fresh)
    }

    /// `user_id`'s settings from the database.
    pub async fn read(&self, user_id: i64) -> anyhow::Result<PreferencesV1> {
        let rows = crate::storage::preferences::of_user(&self.db, user_id).await?;
        let mut preferences = PreferencesV1::default();
        for row in rows {
            if row.category == DEFAULT_CATEGORY {
                preferences.email = Some(row.email);
            } else {
                preferences.categories.push(CategoryPreferenceV1 {
                    category: row.category,
                    email: row.email,
                });
            }
        }
        Ok(preferences)
    }

    /// After a committed change: drops `user_id`'s cached copy. A failure is
    /// logged; the copy then lives out its TTL.
    pub async fn changed(&self, user_id: i64) {
        if let Err(e) = self.cache.delete(&self.keys.preferences(user_id)).await {
            tracing::warn!(error = ?e, user_id, "dropping cached preferences failed");
        }
    }
}

/// Whether a notification of `category` is mailed under `preferences`.
pub fn mails(preferences: &PreferencesV1, category: Option<&str>, critical: &[String]) -> bool {
    let Some(category) = category else {
        return preferences.email.unwrap_or(true);
    };
    if critical.iter().any(|c| c == category) {
        return true;
    }
    preferences
        .categories
        .iter()
        .find(|c| c.category == category)
        .map(|c| c.email)
        .or(preferences.email)
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(email: Option<bool>, categories: &[(&str, bool)]) -> PreferencesV1 {
        PreferencesV1 {
            email,
            categories: categories
                .iter()
                .map(|(c, e)| CategoryPreferenceV1 {
                    category: (*c).to_owned(),
                    email: *e,
                })
                .collect(),
        }
    }

    #[test]
    fn the_category_then_the_default_then_on() {
        let none: &[String] = &[];
        assert!(mails(&prefs(None, &[]), Some("news"), none));
        assert!(mails(&prefs(None, &[]), None, none));
        assert!(!mails(&prefs(Some(false), &[]), Some("news"), none));
        assert!(!mails(&prefs(Some(false), &[]), None, none));
        assert!(mails(
            &prefs(Some(false), &[("news", true)]),
            Some("news"),
            none
        ));
        assert!(!mails(
            &prefs(Some(true), &[("news", false)]),
            Some("news"),
            none
        ));
        assert!(mails(
            &prefs(Some(true), &[("news", false)]),
            Some("other"),
            none
        ));
        let critical = ["security".to_owned()];
        assert!(mails(
            &prefs(Some(false), &[("security", false)]),
            Some("security"),
            &critical
        ));
        assert!(!mails(&prefs(Some(false), &[]), Some("news"), &critical));
    }
}
