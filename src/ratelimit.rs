//! Rate limits that hold across instances: Redis in services mode, a map in
//! process in embedded mode (chosen once, in `app.rs`).
//!
//! Two primitives: a fixed-window counter whose places are reserved before
//! the work they guard and can be given back (login failures,
//! registrations), and a token bucket as GCRA (sends: a steady rate with a
//! burst, per user and per application key), timed in microseconds so that
//! an application's thousands a second are told apart.

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

impl Bucket {
    /// A steady `per_second` (saturating) with bursts of up to `burst`.
    pub const fn per_second(per_second: u64, burst: u64) -> Self {
        Self {
            per_minute: per_second.saturating_mul(60),
            burst,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub login_failures_per_account: Window,
    pub login_failures_per_ip: Window,
    pub registrations_per_ip: Window,
    pub sends_per_user: Bucket,
    /// `sendNotification` with an API key, per key (user tokens keep
    /// `sends_per_user`).
    pub sends_per_app: Bucket,
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
            sends_per_app: Bucket::per_second(
                crate::config::defaults::APP_SEND_PER_SECOND.default,
                crate::config::defaults::APP_SEND_BURST.default,
            ),
        }
    }
}

/// The outcome of [`RateLimiter::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// A place was taken, in the window `Ticket` names.
    Taken(Ticket),
    /// The window is full; it resets in `retry_after` seconds.
    Full { retry_after: u64 },
}

/// Names the window a place was taken in, so that giving it back after that
/// window has ended takes nothing from the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one of `rule.limit` attempts in `key`'s current window, in one
    /// atomic step. Check and count are one step so that concurrent requests
    /// cannot all pass a check made before any of them was counted.
    async fn reserve(&self, key: &str, rule: Window) -> anyhow::Result<Reserved>;
    /// Gives back an attempt taken by [`RateLimiter::reserve`] (a login that
    /// succeeded is no failure), if its window is still the current one. A
    /// window given back to zero is deleted.
    async fn release(&self, key: &str, ticket: Ticket) -> anyhow::Result<()>;
    /// Takes a token from `key`'s bucket: `Ok(None)` when allowed, else the
    /// seconds until one is available.
    async fn take(&self, key: &str, bucket: Bucket) -> anyhow::Result<Option<u64>>;
}

/// Interval between tokens, in microseconds: at least 1 (so at most
/// a million a second are told apart; above that the limit is a million).
fn emission_us(bucket: Bucket) -> u64 {
    (60_000_000 / bucket.per_minute.max(1)).max(1)
}

pub struct RedisRateLimiter {
    manager: ConnectionManager,
    /// The scripts, each hashed once (EVALSHA, EVAL on a cache miss).
    reserve: redis::Script,
    release: redis::Script,
    gcra: redis::Script,
}

impl RedisRateLimiter {
    pub fn new(manager: ConnectionManager) -> Self {
        Self {
            manager,
            reserve: redis::Script::new(RESERVE),
            release: redis::Script::new(RELEASE),
            gcra: redis::Script::new(GCRA),
        }
    }
}

/// A fixed window's reservation: KEYS[1] counts the window's attempts
/// (ARGV: the limit, the window in seconds). Returns `{1, the window's end}`
/// (milliseconds on the server's clock, the ticket) when a place is taken,
/// else `{0, the seconds until the window resets}`. Redis 6.2 compatible: no
/// `EXPIRE … NX` (7.0), a key without expiry is given one instead.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if n >= tonumber(ARGV[1]) then
  if ttl == -1 then
    redis.call('EXPIRE', KEYS[1], window)
  end
  if ttl < 0 then
    ttl = window * 1000
  end
  return {0, math.ceil(ttl / 1000)}
end
redis.call('INCR', KEYS[1])
if ttl < 0 then
  ttl = window * 1000
  redis.call('EXPIRE', KEYS[1], window)
end
return {1, now + ttl}
";

/// Gives back one place reserved in the window that ends at ARGV[1] (the
/// ticket), never below zero; a window given back to zero is deleted. The
/// end is recomputed from the remaining time, so it may differ by a few
/// milliseconds; windows last at least a second, so another window's end
/// is never that close.
const RELEASE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= 0 then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if math.abs(now + ttl - tonumber(ARGV[1])) > 100 then
    return 0
  end
end
if n == 1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('DECR', KEYS[1])
end
return 1
";

/// GCRA on the server's clock, in microseconds: KEYS[1] holds the
/// theoretical arrival time (ARGV: the token interval, the burst); returns
/// the microseconds until a token is available, 0 when one was taken. The
/// time is written with `%.0f`: Lua's own number-to-text keeps 14 digits,
/// and microseconds since 1970 have 16.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then return allow_at - now end
local ttl_ms = math.ceil((burst * interval + interval) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, ttl_ms))
return 0
";

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn reserve(&self, key: &str, rule: Window) -> anyhow::Result<Reserved> {
        let mut conn = self.manager.clone();
        let (taken, value): (u8, u64) = self
            .reserve
            .key(key)
            .arg(rule.limit)
            .arg(rule.window.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .context("rate limit reserve")?;
        Ok(if taken == 1 {
            Reserved::Taken(Ticket(value))
        } else {
            Reserved::Full {
                retry_after: value.max(1),
            }
        })
    }

    async fn release(&self, key: &str, ticket: Ticket) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let _: i64 = self
            .release
            .key(key)
            .arg(ticket.0)
            .invoke_async(&mut conn)
            .await
            .context("rate limit release")?;
        Ok(())
    }

    async fn take(&self, key: &str, bucket: Bucket) -> anyhow::Result<Option<u64>> {
        let mut conn = self.manager.clone();
        let wait_us: u64 = self
            .gcra
            .key(key)
            .arg(emission_us(bucket))
            .arg(bucket.burst.max(1))
            .invoke_async(&mut conn)
            .await
            .context("rate limit GCRA")?;
        Ok((wait_us > 0).then(|| wait_us.div_ceil(1_000_000).max(1)))
    }
}

/// How many windows the in-process limiter holds before it sweeps out
/// those that have ended, and how often at most it sweeps.
const SWEEP_ABOVE: usize = 100_000;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One key's current window.
struct Slot {
    resets: Instant,
    taken: u64,
    /// Tells this window from the key's earlier ones (the ticket).
    id: u64,
}

/// The in-process windows: ended ones stay until they are used again or
/// swept, and a sweep (a scan of the map under the lock) runs at most
/// every [`SWEEP_EVERY`], only while more than [`SWEEP_ABOVE`] are held.
struct Windows {
    slots: HashMap<String, Slot>,
    next_id: u64,
    swept: Instant,
}

impl Windows {
    fn new(now: Instant) -> Self {
        Self {
            slots: HashMap::new(),
            next_id: 0,
            swept: now.checked_sub(SWEEP_EVERY).unwrap_or(now),
        }
    }

    /// Drops the windows that have ended, if more than [`SWEEP_ABOVE`] are
    /// held and the last sweep is [`SWEEP_EVERY`] ago.
    fn sweep_if_due(&mut self, now: Instant) {
        if self.slots.len() > SWEEP_ABOVE && now >= self.swept + SWEEP_EVERY {
            self.slots.retain(|_, slot| slot.resets > now);
            self.swept = now;
        }
    }
}

pub struct InProcessRateLimiter {
    windows: Mutex<Windows>,
    buckets: Mutex<HashMap<String, Instant>>,
}

impl Default for InProcessRateLimiter {
    fn default() -> Self {
        Self {
            windows: Mutex::new(Windows::new(Instant::now())),
            buckets: Mutex::default(),
        }
    }
}

impl InProcessRateLimiter {
    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many windows are held (current or ended, not yet swept).
    pub fn windows_held(&self) -> usize {
        self.windows().slots.len()
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
    async fn reserve(&self, key: &str, rule: Window) -> anyhow::Result<Reserved> {
        let mut windows = self.windows();
        let now = Instant::now();
        windows.sweep_if_due(now);
        if rule.limit == 0 {
            // Never a place: no window to hold either.
            return Ok(Reserved::Full {
                retry_after: rule.window.as_secs().max(1),
            });
        }
        let Windows { slots, next_id, .. } = &mut *windows;
        let slot = slots.entry(key.to_owned()).or_insert(Slot {
            resets: now,
            taken: 0,
            id: 0,
        });
        if slot.resets <= now {
            *next_id += 1;
            *slot = Slot {
                resets: now + rule.window,
                taken: 0,
                id: *next_id,
            };
        }
        if slot.taken >= rule.limit {
            return Ok(Reserved::Full {
                retry_after: secs_left(slot.resets).max(1),
            });
        }
        slot.taken += 1;
        Ok(Reserved::Taken(Ticket(slot.id)))
    }

    async fn release(&self, key: &str, ticket: Ticket) -> anyhow::Result<()> {
        let mut windows = self.windows();
        let Some(slot) = windows.slots.get_mut(key) else {
            return Ok(());
        };
        if slot.id != ticket.0 || slot.resets <= Instant::now() {
            return Ok(());
        }
        slot.taken = slot.taken.saturating_sub(1);
        if slot.taken == 0 {
            windows.slots.remove(key);
        }
        Ok(())
    }

    async fn take(&self, key: &str, bucket: Bucket) -> anyhow::Result<Option<u64>> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let interval = Duration::from_micros(emission_us(bucket));
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

    /// The ticket of a place taken, or a panic.
    async fn taken(rl: &InProcessRateLimiter, key: &str, rule: Window) -> Ticket {
        match rl.reserve(key, rule).await.expect("reserve") {
            Reserved::Taken(ticket) => ticket,
            full => panic!("{key}: {full:?}"),
        }
    }

    async fn full(rl: &InProcessRateLimiter, key: &str, rule: Window) -> bool {
        matches!(
            rl.reserve(key, rule).await.expect("reserve"),
            Reserved::Full { retry_after } if retry_after >= 1
        )
    }

    fn minute(limit: u64) -> Window {
        Window {
            limit,
            window: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_window_reserves_up_to_its_limit_and_gives_back() {
        let rl = InProcessRateLimiter::default();
        let rule = minute(2);
        taken(&rl, "k", rule).await;
        let second = taken(&rl, "k", rule).await;
        assert!(full(&rl, "k", rule).await);
        // Another key has its own window.
        taken(&rl, "j", rule).await;
        // One given back can be taken again, once.
        rl.release("k", second).await.expect("release");
        taken(&rl, "k", rule).await;
        assert!(full(&rl, "k", rule).await);
        // Giving back more than was taken frees no more than the limit.
        for _ in 0..3 {
            rl.release("k", second).await.expect("release");
        }
        taken(&rl, "k", rule).await;
        taken(&rl, "k", rule).await;
        assert!(full(&rl, "k", rule).await);
    }

    /// A window resets when it ends, and a place taken in the ended one is
    /// not given back to the next (it would take one from there).
    #[tokio::test]
    async fn a_window_resets_and_a_release_from_it_takes_nothing_from_the_next() {
        let rl = InProcessRateLimiter::default();
        let short = Window {
            limit: 1,
            window: Duration::from_millis(50),
        };
        let old = taken(&rl, "k", short).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Reset: the next window has its place.
        taken(&rl, "k", minute(1)).await;
        rl.release("k", old).await.expect("release");
        assert!(
            full(&rl, "k", minute(1)).await,
            "the old ticket freed a place"
        );
    }

    /// A window given back to zero is dropped, and a refusal creates none:
    /// a client cannot fill the map with empty windows.
    #[tokio::test]
    async fn windows_at_zero_are_not_held() {
        let rl = InProcessRateLimiter::default();
        for i in 0..100 {
            let key = format!("k{i}");
            let ticket = taken(&rl, &key, minute(1)).await;
            rl.release(&key, ticket).await.expect("release");
        }
        assert_eq!(rl.windows_held(), 0);
        assert!(full(&rl, "none", minute(0)).await);
        assert_eq!(rl.windows_held(), 0);
    }

    /// Ended windows are swept out only while the map is large, and at most
    /// once a second (a sweep scans the whole map under the lock).
    #[test]
    fn ended_windows_are_swept_at_most_once_a_second() {
        let start = Instant::now();
        let mut windows = Windows::new(start);
        let fill = |windows: &mut Windows, n: usize| {
            for i in 0..n {
                windows.slots.insert(
                    format!("k{i}"),
                    Slot {
                        resets: start,
                        taken: 1,
                        id: 1,
                    },
                );
            }
        };
        fill(&mut windows, SWEEP_ABOVE);
        windows.sweep_if_due(start + Duration::from_secs(5));
        assert_eq!(windows.slots.len(), SWEEP_ABOVE, "a map not yet large");
        fill(&mut windows, SWEEP_ABOVE + 1);
        windows.sweep_if_due(start + Duration::from_millis(1));
        assert_eq!(windows.slots.len(), 0, "a large map of ended windows");
        fill(&mut windows, SWEEP_ABOVE + 1);
        windows.sweep_if_due(start + Duration::from_millis(500));
        assert_eq!(windows.slots.len(), SWEEP_ABOVE + 1, "within the second");
        windows.sweep_if_due(start + Duration::from_millis(1001));
        assert_eq!(windows.slots.len(), 0, "a second later");
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

    /// Redis 6.2 (the oldest Herald supports) runs every script: its
    /// `EXPIRE` takes no option (`NX`, `XX`, `GT`, `LT` came with 7.0; a
    /// script using one fails there, and the limiter fails open).
    #[test]
    fn the_scripts_run_on_redis_6_2() {
        for script in [RESERVE, RELEASE, GCRA] {
            for line in script.lines().filter(|l| l.contains("EXPIRE'")) {
                assert!(
                    !["'NX'", "'XX'", "'GT'", "'LT'"]
                        .iter()
                        .any(|option| line.contains(option)),
                    "a Redis 7 option: {line}"
                );
            }
        }
    }

    #[test]
    fn the_token_interval_is_never_zero() {
        assert_eq!(
            emission_us(Bucket {
                per_minute: 60,
                burst: 1
            }),
            1_000_000
        );
        // An application's default: a thousand a second, one a millisecond.
        assert_eq!(emission_us(Bucket::per_second(1000, 2000)), 1000);
        assert_eq!(emission_us(Bucket::per_second(5000, 1)), 200);
        assert_eq!(
            emission_us(Bucket {
                per_minute: 100_000_000_000,
                burst: 1
            }),
            1
        );
        assert_eq!(
            emission_us(Bucket {
                per_minute: 0,
                burst: 1
            }),
            60_000_000
        );
    }

    #[tokio::test]
    async fn a_bucket_refills_at_its_rate() {
        let rl = InProcessRateLimiter::default();
        // One token a second, no burst beyond one: the second take comes
        // well within the second even on a loaded machine.
        let bucket = Bucket {
            per_minute: 60,
            burst: 1,
        };
        assert_eq!(rl.take("u", bucket).await.expect("take"), None);
        assert_eq!(rl.take("u", bucket).await.expect("take"), Some(1));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(rl.take("u", bucket).await.expect("take"), None);
    }
}
