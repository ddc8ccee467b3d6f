//! Rate limits that hold across instances: Redis in services mode, a map in
//! process in embedded mode (chosen once, in `app.rs`).
//!
//! Two primitives: a fixed-window counter whose places are reserved before
//! the work they guard and can be given back (login failures,
//! registrations), and a token bucket as GCRA (sends: a steady rate with a
//! burst).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use redis::aio::ConnectionManager;

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
    /// Takes one of `rule.limit` attempts in `key`'s current window, in one
    /// atomic step: `Ok(None)` when taken, else the seconds until the window
    /// resets. Check and count are one step so that concurrent requests
    /// cannot all pass a check made before any of them was counted.
    async fn reserve(&self, key: &str, rule: Window) -> anyhow::Result<Option<u64>>;
    /// Gives back an attempt taken by [`RateLimiter::reserve`] (a login that
    /// succeeded is no failure).
    async fn release(&self, key: &str) -> anyhow::Result<()>;
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

/// A fixed window's reservation: KEYS[1] counts the window's attempts.
/// Returns 0 when one is taken, else the seconds until the window resets.
const RESERVE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return math.max(ttl, 1)
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2], 'NX')
return 0
";

/// Gives one reserved attempt back, never below zero.
const RELEASE: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
";

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
    async fn reserve(&self, key: &str, rule: Window) -> anyhow::Result<Option<u64>> {
        let mut conn = self.manager.clone();
        let retry_after: u64 = redis::Script::new(RESERVE)
            .key(key)
            .arg(rule.limit)
            .arg(rule.window.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .context("rate limit reserve")?;
        Ok((retry_after > 0).then_some(retry_after))
    }

    async fn release(&self, key: &str) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(key)
            .invoke_async(&mut conn)
            .await
            .context("rate limit release")?;
        Ok(())
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

impl InProcessRateLimiter {
    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u64)>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn secs_left(until: Instant) -> u64 {
    until
        .saturating_duration_since(Instant::now())
        .as_secs_f64()
        .ceil() as u64
}

#[async_trait::async_trait]
impl RateLimiter for InProcessRateLimiter {
    async fn reserve(&self, key: &str, rule: Window) -> anyhow::Result<Option<u64>> {
        let mut windows = self.windows();
        let now = Instant::now();
        if windows.len() > 100_000 {
            windows.retain(|_, (resets, _)| *resets > now);
        }
        let entry = windows
            .entry(key.to_owned())
            .or_insert((now + rule.window, 0));
        if entry.0 <= now {
            *entry = (now + rule.window, 0);
        }
        if entry.1 >= rule.limit {
            return Ok(Some(secs_left(entry.0).max(1)));
        }
        entry.1 += 1;
        Ok(None)
    }

    async fn release(&self, key: &str) -> anyhow::Result<()> {
        let mut windows = self.windows();
        if let Some((resets, n)) = windows.get_mut(key)
            && *resets > Instant::now()
        {
            *n = n.saturating_sub(1);
        }
        Ok(())
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
            // A burst too big for u32 is a burst of u32::MAX, not a truncated one.
            .checked_sub(
                interval.saturating_mul(u32::try_from(bucket.burst.max(1)).unwrap_or(u32::MAX)),
            )
            .unwrap_or(now);
        if now < allow_at {
            return Ok(Some(secs_left(allow_at).max(1)));
        }
        buckets.insert(key.to_owned(), new_tat);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_burst_is_not_truncated() {
        let rl = InProcessRateLimiter::default();
        let bucket = Bucket {
            per_minute: 60,
            burst: 1 << 33,
        };
        for _ in 0..100 {
            assert_eq!(rl.take("k", bucket).await.expect("take"), None);
        }
    }

    #[tokio::test]
    async fn a_window_reserves_up_to_its_limit_gives_back_and_resets() {
        let rl = InProcessRateLimiter::default();
        let rule = Window {
            limit: 2,
            window: Duration::from_millis(80),
        };
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), None);
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), None);
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), Some(1));
        // Another key has its own window.
        assert_eq!(rl.reserve("j", rule).await.expect("reserve"), None);
        // One given back can be taken again, once.
        rl.release("k").await.expect("release");
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), None);
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), Some(1));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), None);
    }

    #[tokio::test]
    async fn releasing_more_than_was_reserved_gives_nothing_extra() {
        let rl = InProcessRateLimiter::default();
        let rule = Window {
            limit: 1,
            window: Duration::from_secs(60),
        };
        rl.release("k").await.expect("release");
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), None);
        rl.release("k").await.expect("release");
        rl.release("k").await.expect("release");
        assert_eq!(rl.reserve("k", rule).await.expect("reserve"), None);
        assert!(rl.reserve("k", rule).await.expect("reserve").is_some());
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
