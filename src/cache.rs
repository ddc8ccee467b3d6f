//! The read cache: string values with a TTL, and entries ordered by a seq
//! that a write only ever moves forward (`set_if_newer`: a user's inbox
//! snapshot, which decides which of their cached pages count).
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

/// The field of a `set_if_newer` value (a JSON object) that orders it:
/// every payload stored that way keeps it, in every format version.
pub const SEQ_FIELD: &str = "last_seq";

/// Sets KEYS[1] to ARGV[1] (PX ARGV[3]) unless it holds a JSON object whose
/// `last_seq` is greater than ARGV[2]; 1 when it wrote. What is not such
/// an object (another format) is overwritten.
const SET_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then
    local seq = tonumber(decoded['last_seq'])
    if seq and seq > tonumber(ARGV[2]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

/// The order of a stored `set_if_newer` value (`None`: not such a value).
fn seq_of(value: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(value)
        .ok()?
        .get(SEQ_FIELD)?
        .as_i64()
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait::async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Several keys in one round trip, in order.
    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<Option<String>>>;
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Removes `key` (absent: nothing happens).
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// Sets `key` to `value`, a JSON object whose `last_seq` is `seq`,
    /// unless it holds one with a greater `last_seq`: a slow writer never
    /// moves it back. Atomic (a Lua script; the map's lock). `false`: a
    /// newer value stays.
    async fn set_if_newer(
        &self,
        key: &str,
        value: &str,
        seq: i64,
        ttl: Duration,
    ) -> anyhow::Result<bool>;
    /// For `/readyz`: the backend's name, and whether it answers.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> anyhow::Result<()>;
}

pub struct RedisCache {
    manager: ConnectionManager,
    /// Hashed once (EVALSHA, EVAL on a script-cache miss).
    set_if_newer: redis::Script,
}

impl RedisCache {
    pub fn new(manager: ConnectionManager) -> Self {
        Self {
            manager,
            set_if_newer: redis::Script::new(SET_IF_NEWER),
        }
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
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await
            .context("cache SET")
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .context("cache DEL")
    }

    async fn set_if_newer(
        &self,
        key: &str,
        value: &str,
        seq: i64,
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let mut conn = self.manager.clone();
        let wrote: i64 = self
            .set_if_newer
            .key(key)
            .arg(value)
            .arg(seq)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await
            .context("cache set-if-newer")?;
        Ok(wrote == 1)
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

#[derive(Default)]
struct InProcess {
    values: HashMap<String, (Instant, String)>,
}

impl InProcess {
    /// Stores `value`, keeping at most `max_entries`.
    fn insert(&mut self, max_entries: usize, key: &str, value: &str, ttl: Duration) {
        if self.values.len() >= max_entries && !self.values.contains_key(key) {
            let now = Instant::now();
            self.values.retain(|_, (expires, _)| *expires > now);
            if self.values.len() >= max_entries {
                // Still full of live entries: start over rather than grow.
                self.values.clear();
            }
        }
        self.values
            .insert(key.to_owned(), (Instant::now() + ttl, value.to_owned()));
    }
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
        self.lock().insert(self.max_entries, key, value, ttl);
        Ok(())
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.lock().values.remove(key);
        Ok(())
    }

    async fn set_if_newer(
        &self,
        key: &str,
        value: &str,
        seq: i64,
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let mut inner = self.lock();
        let newer = inner
            .values
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .and_then(|(_, current)| seq_of(current))
            .is_some_and(|current| current > seq);
        if newer {
            return Ok(false);
        }
        inner.insert(self.max_entries, key, value, ttl);
        Ok(true)
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
    async fn entries_expire() {
        let cache = InProcessCache::new(10);
        cache
            .set("a", "1", Duration::from_millis(30))
            .await
            .expect("set");
        assert_eq!(cache.get("a").await.expect("get").as_deref(), Some("1"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.get("a").await.expect("get"), None);
    }

    fn snapshot(seq: i64) -> String {
        format!(r#"{{"v":1,"last_seq":{seq},"counts":{{"total":{seq}}}}}"#)
    }

    /// The in-process half of the only-if-newer contract (the Redis script
    /// has its own test in tests/api/inbox.rs, against a real Redis).
    #[tokio::test]
    async fn a_late_writer_with_an_older_seq_does_not_move_the_entry_back() {
        let cache = InProcessCache::new(10);
        let ttl = Duration::from_secs(60);
        assert!(
            cache
                .set_if_newer("s", &snapshot(5), 5, ttl)
                .await
                .expect("set")
        );
        assert!(
            !cache
                .set_if_newer("s", &snapshot(4), 4, ttl)
                .await
                .expect("set")
        );
        assert_eq!(cache.get("s").await.expect("get"), Some(snapshot(5)));
        assert!(
            cache
                .set_if_newer("s", &snapshot(5), 5, ttl)
                .await
                .expect("set")
        );
        assert!(
            cache
                .set_if_newer("s", &snapshot(6), 6, ttl)
                .await
                .expect("set")
        );
        assert_eq!(cache.get("s").await.expect("get"), Some(snapshot(6)));
        // What is not such a value, or has expired, is replaced.
        cache.set("t", "not json", ttl).await.expect("set");
        assert!(
            cache
                .set_if_newer("t", &snapshot(1), 1, ttl)
                .await
                .expect("set")
        );
        cache
            .set_if_newer("u", &snapshot(9), 9, Duration::from_millis(20))
            .await
            .expect("set");
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            cache
                .set_if_newer("u", &snapshot(2), 2, ttl)
                .await
                .expect("set")
        );
        assert_eq!(cache.get("u").await.expect("get"), Some(snapshot(2)));
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
