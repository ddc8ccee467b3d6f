//! Rate limits that hold across instances: Redis in services mode, a map in
//! process in embedded mode (chosen once, in `app.rs`).
//!
//! Two primitives: a fixed-window counter (login failures, registrations)
//! and a token bucket as GCRA (sends: a steady rate with a burst).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use redis::aio::ConnectionManager;

use crate::keys::Keys;

/// A fixed window: at most `limit` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub window: Duration,
}

/// A steady `per_minute` with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub per_minute: u64,
    pub burst: u64,
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub login_failures_per_account: Window,
    pub login_failures_per_ip: Window,
    pub registrations_per_ip: Window,
    pub sends_per_user: Bucket,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_failures_per_account: Window {
                limit: crate::config::defaults::LOGIN_FAILURES_PER_ACCOUNT.default,
                window: Duration::from_secs(15 * 60),
            },
            login_failures_per_ip: Window {
                limit: crate::config::defaults::LOGIN_FAILURES_PER_IP.default,
                window: Duration::from_secs(15 * 60),
            },
            registrations_per_ip: Window {
                limit: crate::config::defaults::REGISTER_PER_IP.default,
                window: Duration::from_secs(3600),
            },
            sends_per_user: Bucket {
                per_minute: crate::config::defaults::SEND_PER_MINUTE.default,
                burst: crate::config::defaults::SEND_BURST.default,
            },
        }
    }
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Hits counted in `key`'s current window, and seconds until it resets.
    async fn count(&self, key: &str) -> anyhow::Result<(u64, u64)>;
    /// Counts one more hit in a window of `window`; returns the new count
    /// and the seconds until the window resets.
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, u64)>;
    /// Takes a token from `key`'s bucket: `Ok(None)` when allowed, else the
    /// seconds until one is available.
    async fn take(&self, key: &str, bucket: Bucket) -> anyhow::Result<Option<u64>>;
}

/// Interval between tokens, in milliseconds: at least 1 (so at most
/// 60,000 a minute are told apart; above that the limit is 60,000).
fn emission_ms(bucket: Bucket) -> u64 {
    (60_000 / bucket.per_minute.max(1)).max(1)
}

pub struct RedisRateLimiter {
    manager: ConnectionManager,
}

impl RedisRateLimiter {
    pub fn new(manager: ConnectionManager) -> Self {
        Self { manager }
    }
}

/// GCRA on the server's clock: KEYS[1] holds the theoretical arrival time.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, burst * interval + interval))
return 0
";

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn count(&self, key: &str) -> anyhow::Result<(u64, u64)> {
        let mut conn = self.manager.clone();
        let (count, ttl): (Option<u64>, i64) = redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .context("rate limit GET")?;
        Ok((count.unwrap_or(0), u64::try_from(ttl).unwrap_or(0)))
    }

    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, u64)> {
        let mut conn = self.manager.clone();
        let (count, ttl): (u64, i64) = redis::pipe()
            .cmd("INCR")
            .arg(key)
            .cmd("EXPIRE")
            .arg(key)
            .arg(window.as_secs().max(1))
            .arg("NX")
            .ignore()
            .cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .context("rate limit INCR")?;
        Ok((count, u64::try_from(ttl).unwrap_or(0)))
    }

    async fn take(&self, key: &str, bucket: Bucket) -> anyhow::Result<Option<u64>> {
        let mut conn = self.manager.clone();
        let wait_ms: u64 = redis::Script::new(GCRA)
            .key(key)
            .arg(emission_ms(bucket))
            .arg(bucket.burst.max(1))
            .invoke_async(&mut conn)
            .await
            .context("rate limit GCRA")?;
        Ok((wait_ms > 0).then(|| wait_ms.div_ceil(1000).max(1)))
    }
}

#[derive(Default)]
pub struct InProcessRateLimiter {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
    buckets: Mutex<HashMap<String, Instant>>,
}

fn secs_left(until: Instant) -> u64 {
    until
        .saturating_duration_since(Instant::now())
        .as_secs_f64()
        .ceil() as u64
}

#[async_trait::async_trait]
impl RateLimiter for InProcessRateLimiter {
    async fn count(&self, key: &str) -> anyhow::Result<(u64, u64)> {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(match windows.get(key) {
            Some((resets, n)) if *resets > Instant::now() => (*n, secs_left(*resets)),
            _ => (0, 0),
        })
    }

    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, u64)> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if windows.len() > 100_000 {
            windows.retain(|_, (resets, _)| *resets > now);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now + window, 0));
        if entry.0 <= now {
            *entry = (now + window, 0);
        }
        entry.1 += 1;
        Ok((entry.1, secs_left(entry.0)))
    }

    async fn take(&self, key: &str, bucket: Bucket) -> anyhow::Result<Option<u64>> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let interval = Duration::from_millis(emission_ms(bucket));
        let tat = buckets.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let allow_at = new_tat
            .checked_sub(interval * bucket.burst.max(1) as u32)
            .unwrap_or(now);
        if now < allow_at {
            return Ok(Some(secs_left(allow_at).max(1)));
        }
        buckets.insert(key.to_owned(), new_tat);
        Ok(None)
    }
}

/// The names of every limit's key.
impl Keys {
    pub fn login_failures_account(&self, email: &str) -> String {
        format!("{}rl:login:account:{email}", self.prefix())
    }

    pub fn login_failures_ip(&self, ip: std::net::IpAddr) -> String {
        format!("{}rl:login:ip:{ip}", self.prefix())
    }

    pub fn registrations_ip(&self, ip: std::net::IpAddr) -> String {
        format!("{}rl:register:ip:{ip}", self.prefix())
    }

    pub fn sends_user(&self, user_id: i64) -> String {
        format!("{}rl:send:user:{user_id}", self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_counts_and_resets() {
        let rl = InProcessRateLimiter::default();
        assert_eq!(
            rl.hit("k", Duration::from_millis(50)).await.expect("hit").0,
            1
        );
        assert_eq!(
            rl.hit("k", Duration::from_millis(50)).await.expect("hit").0,
            2
        );
        assert_eq!(rl.count("k").await.expect("count").0, 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(rl.count("k").await.expect("count").0, 0);
        assert_eq!(
            rl.hit("k", Duration::from_millis(50)).await.expect("hit").0,
            1
        );
    }

    #[tokio::test]
    async fn a_bucket_allows_its_burst_then_refuses() {
        let rl = InProcessRateLimiter::default();
        let bucket = Bucket {
            per_minute: 60,
            burst: 20,
        };
        for i in 0..20 {
            assert_eq!(rl.take("u", bucket).await.expect("take"), None, "token {i}");
        }
        let wait = rl.take("u", bucket).await.expect("take");
        assert!(wait.is_some_and(|s| s >= 1), "{wait:?}");
        // Another key has its own bucket.
        assert_eq!(rl.take("v", bucket).await.expect("take"), None);
    }

    #[test]
    fn the_token_interval_is_never_zero() {
        assert_eq!(
            emission_ms(Bucket {
                per_minute: 60,
                burst: 1
            }),
            1000
        );
        assert_eq!(
            emission_ms(Bucket {
                per_minute: 100_000_000,
                burst: 1
            }),
            1
        );
        assert_eq!(
            emission_ms(Bucket {
                per_minute: 0,
                burst: 1
            }),
            60_000
        );
    }

    #[tokio::test]
    async fn a_bucket_refills_at_its_rate() {
        let rl = InProcessRateLimiter::default();
        // One token every 10 ms, no burst beyond one.
        let bucket = Bucket {
            per_minute: 6000,
            burst: 1,
        };
        assert_eq!(rl.take("u", bucket).await.expect("take"), None);
        assert!(rl.take("u", bucket).await.expect("take").is_some());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(rl.take("u", bucket).await.expect("take"), None);
    }
}
