//! The read cache: string values with a TTL, and per-user version counters
//! that make whole groups of entries invisible at once.
//!
//! Two implementations, chosen once in `app.rs`: Redis (`REDIS_URL`) and an
//! in-process map. Cache errors never fail a request: callers fall back to
//! the database.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use redis::aio::ConnectionManager;

/// How long a version counter lives after its last bump. Far longer than
/// any entry's TTL, so a counter that expires and restarts can never bring
/// an old entry back.
const VERSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[async_trait::async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Several keys in one round trip, in order.
    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<Option<String>>>;
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()>;
    /// The counter at `key` (0 when there is none).
    async fn version(&self, key: &str) -> anyhow::Result<u64>;
    /// Increments the counter at `key`; returns the new value.
    async fn bump(&self, key: &str) -> anyhow::Result<u64>;
    /// For `/readyz`: the backend's name, and whether it answers.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> anyhow::Result<()>;
}

pub struct RedisCache {
    manager: ConnectionManager,
}

impl RedisCache {
    pub fn new(manager: ConnectionManager) -> Self {
        Self { manager }
    }
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.manager.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .context("cache GET")
    }

    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<Option<String>>> {
        let mut conn = self.manager.clone();
        redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .context("cache MGET")
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await
            .context("cache SET")
    }

    async fn version(&self, key: &str) -> anyhow::Result<u64> {
        let mut conn = self.manager.clone();
        let v: Option<u64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .context("cache version")?;
        Ok(v.unwrap_or(0))
    }

    async fn bump(&self, key: &str) -> anyhow::Result<u64> {
        let mut conn = self.manager.clone();
        let (v,): (u64,) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(key)
            .cmd("EXPIRE")
            .arg(key)
            .arg(VERSION_TTL.as_secs())
            .ignore()
            .query_async(&mut conn)
            .await
            .context("cache bump")?;
        Ok(v)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .context("PING")?;
        Ok(())
    }
}

/// The embedded cache: a map with expiry, bounded in entries.
pub struct InProcessCache {
    max_entries: usize,
    inner: Mutex<InProcess>,
}

/// Counters live among the values (as decimal strings), as in Redis, so
/// `get_many` reads both alike.
#[derive(Default)]
struct InProcess {
    values: HashMap<String, (Instant, String)>,
}

impl InProcessCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            inner: Mutex::new(InProcess::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InProcess> {
        // A panic while holding this lock cannot leave the maps half-written
        // in a harmful way: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Cache for InProcessCache {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let mut inner = self.lock();
        match inner.values.get(key) {
            Some((expires, value)) if *expires > Instant::now() => Ok(Some(value.clone())),
            Some(_) => {
                inner.values.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<Option<String>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()> {
        let mut inner = self.lock();
        if inner.values.len() >= self.max_entries {
            let now = Instant::now();
            inner.values.retain(|_, (expires, _)| *expires > now);
            if inner.values.len() >= self.max_entries {
                // Still full of live entries: start over rather than grow.
                inner.values.clear();
            }
        }
        inner
            .values
            .insert(key.to_owned(), (Instant::now() + ttl, value.to_owned()));
        Ok(())
    }

    async fn version(&self, key: &str) -> anyhow::Result<u64> {
        Ok(self
            .get(key)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    async fn bump(&self, key: &str) -> anyhow::Result<u64> {
        let mut inner = self.lock();
        let now = Instant::now();
        let current = match inner.values.get(key) {
            Some((expires, v)) if *expires > now => v.parse::<u64>().unwrap_or(0),
            _ => 0,
        };
        let next = current + 1;
        inner
            .values
            .insert(key.to_owned(), (now + VERSION_TTL, next.to_string()));
        Ok(next)
    }

    fn backend(&self) -> &'static str {
        "in-process"
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_and_versions_count_up() {
        let cache = InProcessCache::new(10);
        cache
            .set("a", "1", Duration::from_millis(30))
            .await
            .expect("set");
        assert_eq!(cache.get("a").await.expect("get").as_deref(), Some("1"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.get("a").await.expect("get"), None);
        assert_eq!(cache.version("v").await.expect("v"), 0);
        assert_eq!(cache.bump("v").await.expect("bump"), 1);
        assert_eq!(cache.bump("v").await.expect("bump"), 2);
        assert_eq!(cache.version("v").await.expect("v"), 2);
    }

    #[tokio::test]
    async fn counters_read_back_through_get_many() {
        let cache = InProcessCache::new(10);
        cache.bump("v").await.expect("bump");
        cache.bump("v").await.expect("bump");
        let got = cache.get_many(&["v".to_owned()]).await.expect("get_many");
        assert_eq!(got, [Some("2".to_owned())]);
    }

    #[tokio::test]
    async fn get_many_answers_in_order() {
        let cache = InProcessCache::new(10);
        cache
            .set("a", "1", Duration::from_secs(60))
            .await
            .expect("set");
        cache
            .set("c", "3", Duration::from_secs(60))
            .await
            .expect("set");
        let keys = ["a", "b", "c"].map(String::from);
        let got = cache.get_many(&keys).await.expect("get_many");
        assert_eq!(got, [Some("1".into()), None, Some("3".into())]);
    }

    #[tokio::test]
    async fn a_full_cache_stays_within_its_bound() {
        let cache = InProcessCache::new(3);
        for i in 0..10 {
            cache
                .set(&format!("k{i}"), "v", Duration::from_secs(60))
                .await
                .expect("set");
        }
        assert!(cache.lock().values.len() <= 3);
        assert_eq!(cache.get("k9").await.expect("get").as_deref(), Some("v"));
    }
}
