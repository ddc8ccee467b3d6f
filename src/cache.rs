//! The read cache: string values with a TTL, and entries ordered by a seq
//! that a write only ever moves forward (`set_if_newer`: a user's inbox
//! snapshot, which decides which of their cached pages count).
//!
//! Two implementations, chosen once in `app.rs`: Redis (`REDIS_URL`) and an
//! in-process LRU. Cache errors never fail a request: callers fall back to
//! the database.

use std::{
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

/// The embedded cache: entries with expiry, bounded in number and in bytes
/// (keys and values); when full, the least recently used entry goes first.
pub struct InProcessCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<InProcess>,
}

struct InProcess {
    /// Least recently read or written last.
    values: lru::LruCache<String, (Instant, String)>,
    /// Of every key and value held.
    bytes: usize,
}

fn size(key: &str, value: &str) -> usize {
    key.len().saturating_add(value.len())
}

impl InProcess {
    fn remove(&mut self, key: &str) {
        if let Some((_, value)) = self.values.pop(key) {
            self.bytes = self.bytes.saturating_sub(size(key, &value));
        }
    }

    /// Stores `value`, evicting the least recently used entries to stay
    /// within `max_entries` and `max_bytes`; a value larger than the whole
    /// cache is not kept.
    fn insert(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        key: &str,
        value: &str,
        ttl: Duration,
    ) {
        self.remove(key);
        let needed = size(key, value);
        if needed > max_bytes {
            return;
        }
        while self.values.len() >= max_entries || self.bytes.saturating_add(needed) > max_bytes {
            let Some((old_key, (_, old_value))) = self.values.pop_lru() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(size(&old_key, &old_value));
        }
        self.values
            .push(key.to_owned(), (Instant::now() + ttl, value.to_owned()));
        self.bytes = self.bytes.saturating_add(needed);
    }
}

impl InProcessCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            max_bytes: usize::MAX,
            inner: Mutex::new(InProcess {
                values: lru::LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Also bounds the bytes its keys and values take together.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
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
                inner.remove(key);
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
        self.lock()
            .insert(self.max_entries, self.max_bytes, key, value, ttl);
        Ok(())
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.lock().remove(key);
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
            .peek(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .and_then(|(_, current)| seq_of(current))
            .is_some_and(|current| current > seq);
        if newer {
            return Ok(false);
        }
        inner.insert(self.max_entries, self.max_bytes, key, value, ttl);
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

    #[tokio::test]
    async fn a_full_cache_drops_the_least_recently_used_entry() {
        let cache = InProcessCache::new(3);
        let ttl = Duration::from_secs(60);
        for key in ["a", "b", "c"] {
            cache.set(key, "v", ttl).await.expect("set");
        }
        // Reading `a` makes `b` the least recently used.
        assert!(cache.get("a").await.expect("get").is_some());
        cache.set("d", "v", ttl).await.expect("set");
        let keys = ["a", "b", "c", "d"].map(String::from);
        let got = cache.get_many(&keys).await.expect("get_many");
        assert_eq!(
            got,
            [Some("v".into()), None, Some("v".into()), Some("v".into())]
        );
    }

    #[tokio::test]
    async fn a_byte_bound_holds_whatever_the_entries_sizes() {
        // 100 bytes: keys of 3 and values of 30 fit three at a time.
        let cache = InProcessCache::new(1000).with_max_bytes(100);
        let ttl = Duration::from_secs(60);
        let value = "x".repeat(30);
        for i in 10..20 {
            cache.set(&format!("k{i}"), &value, ttl).await.expect("set");
            let inner = cache.lock();
            assert!(inner.bytes <= 100, "{} bytes", inner.bytes);
        }
        assert_eq!(cache.lock().values.len(), 3);
        assert_eq!(cache.get("k19").await.expect("get"), Some(value.clone()));
        // Replacing an entry counts its new size only; removing frees it.
        cache.set("k19", "y", ttl).await.expect("set");
        cache.delete("k18").await.expect("delete");
        assert_eq!(cache.lock().bytes, 3 + 30 + 3 + 1);
        // A value larger than the whole cache is not kept, and evicts nothing.
        cache.set("big", &"z".repeat(200), ttl).await.expect("set");
        assert_eq!(cache.get("big").await.expect("get"), None);
        assert_eq!(cache.get("k17").await.expect("get"), Some(value));
    }
}
