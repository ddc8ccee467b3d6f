//! Users' public profiles (id, email, created_at) by id, for `recipient`
//! and for the worker's `To:`.
//!
//! Users never change once registered, so every copy is good forever: a
//! bounded map in this process, then the shared cache, then one batched
//! `WHERE id IN (…)` for the rest.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::DatabaseConnection;

use crate::{
    cache::Cache,
    keys::Keys,
    metrics::{CacheName, Metrics},
    wire::{self, UserV1},
};

/// A user's public fields: the wire payload itself, so a cached copy is
/// used as it decodes.
pub type Profile = UserV1;

/// Profiles kept in this process at most.
const LOCAL_CAPACITY: usize = 50_000;

pub struct Directory {
    db: DatabaseConnection,
    cache: Arc<dyn Cache>,
    keys: Keys,
    ttl: Duration,
    local: Mutex<HashMap<i64, Profile>>,
    /// Hits (in this process or the shared cache) and misses, by user.
    metrics: Arc<Metrics>,
}

impl Directory {
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
            local: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Profile>> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, profile: &Profile) {
        let mut local = self.local();
        if local.len() >= LOCAL_CAPACITY {
            local.clear();
        }
        local.insert(profile.id, profile.clone());
    }

    pub async fn get(&self, id: i64) -> anyhow::Result<Option<Profile>> {
        Ok(self.get_many(&[id]).await?.remove(&id))
    }

    /// The profiles of `ids` that exist.
    pub async fn get_many(&self, ids: &[i64]) -> anyhow::Result<HashMap<i64, Profile>> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let local = self.local();
            for &id in ids {
                match local.get(&id) {
                    Some(p) => {
                        found.insert(id, p.clone());
                    }
                    None => missing.push(id),
                }
            }
        }
        if missing.is_empty() {
            self.metrics
                .cache_reads(CacheName::Users, found.len() as u64, 0);
            return Ok(found);
        }
        let keys: Vec<String> = missing.iter().map(|id| self.keys.user(*id)).collect();
        let cached = self.cache.get_many(&keys).await.unwrap_or_else(|e| {
            tracing::warn!(error = ?e, "cache unavailable; reading users from the database");
            vec![None; keys.len()]
        });
        let mut from_db = Vec::new();
        for (id, json) in missing.into_iter().zip(cached) {
            // Another release's format, or unreadable: read it again.
            match json.and_then(|j| wire::decode::<Profile>(&j).ok().flatten()) {
                Some(profile) => {
                    self.remember(&profile);
                    found.insert(id, profile);
                }
                None => from_db.push(id),
            }
        }
        self.metrics
            .cache_reads(CacheName::Users, found.len() as u64, from_db.len() as u64);
        if from_db.is_empty() {
            return Ok(found);
        }
        let rows = crate::storage::users::find_many(&self.db, from_db).await?;
        for row in rows {
            let profile = Profile::from(row);
            if let Ok(json) = wire::encode(&profile) {
                let _ = self
                    .cache
                    .set(&self.keys.user(profile.id), &json, self.ttl)
                    .await;
            }
            self.remember(&profile);
            found.insert(profile.id, profile);
        }
        Ok(found)
    }
}
