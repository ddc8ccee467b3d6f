//! Every setting's default, and the range each number or duration accepts,
//! written once: the command line applies and shows them, and
//! `Config::embedded` and the settings' `Default`s read them.
//!
//! Ranges keep valid-but-huge values (a visibility timeout of `u64::MAX`
//! seconds, a burst of 2^33) from reaching arithmetic that would overflow;
//! the README's configuration tables list them.

use clap::builder::RangedU64ValueParser;

use super::duration::Span;

/// A count setting: its default and the values it accepts.
#[derive(Debug, Clone, Copy)]
pub struct Count<T> {
    pub default: T,
    min: u64,
    max: u64,
}

impl<T> Count<T> {
    const fn new(default: T, min: u64, max: u64) -> Self {
        Self { default, min, max }
    }
}

impl<T> Count<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    /// A clap value parser: a whole number within the range.
    pub fn parser(self) -> RangedU64ValueParser<T> {
        RangedU64ValueParser::new().range(self.min..=self.max)
    }
}

pub const DATA_DIR: &str = "./herald-data";
pub const BIND: &str = "127.0.0.1:8000";
pub const REDIS_PREFIX: &str = "herald:";
pub const SMTP_FROM: &str = "Herald <herald@localhost>";

/// The most a count setting accepts unless it says otherwise: fits a `u32`.
const HUGE: u64 = 1_000_000_000;

// Serve.
pub const JWT_TTL: Span = Span::new("1h", "1m", "365d");
/// What `inboxChanges` tells a polling client to wait before its next poll.
pub const POLL_INTERVAL: Span = Span::new("15s", "1s", "1h");
pub const WS_MAX_SUBSCRIPTIONS: Count<usize> = Count::new(20, 1, 10_000);
pub const WS_MAX_SOCKETS_PER_USER: Count<usize> = Count::new(10, 1, HUGE);
/// Sends stored together in one transaction, at most (group commit); 1:
/// each send in a transaction of its own.
pub const SEND_BATCH: Count<usize> = Count::new(128, 1, 1_000);
/// How long a persisted query's text is kept after its registration.
pub const PERSISTED_QUERY_TTL: Span = Span::new("24h", "1m", "30d");
/// Whole responses of users' inbox queries, kept by the user's last seq.
pub const RESPONSE_CACHE: super::Switch = super::Switch::On;

// Query limits.
pub const MAX_DEPTH: Count<usize> = Count::new(10, 1, 1_000);
pub const MAX_COMPLEXITY: Count<usize> = Count::new(1000, 1, HUGE);
pub const MAX_ALIASES: Count<usize> = Count::new(30, 1, 10_000);
pub const MAX_DIRECTIVES: Count<usize> = Count::new(50, 1, 10_000);
pub const MAX_RECURSIVE_DEPTH: Count<usize> = Count::new(32, 1, 10_000);
/// At most the request body limit.
pub const MAX_QUERY_BYTES: Count<usize> =
    Count::new(16 * 1024, 1, crate::http::MAX_BODY_BYTES as u64);
pub const MAX_BATCH: Count<usize> = Count::new(10, 1, 1_000);
pub const REQUEST_TIMEOUT: Span = Span::new("10s", "10ms", "1h");

// Rate limits.
pub const LOGIN_FAILURES_PER_ACCOUNT: Count<u64> = Count::new(10, 1, HUGE);
pub const LOGIN_FAILURES_PER_IP: Count<u64> = Count::new(50, 1, HUGE);
pub const REGISTER_PER_IP: Count<u64> = Count::new(10, 1, HUGE);
pub const SEND_PER_MINUTE: Count<u64> = Count::new(60, 1, HUGE);
pub const SEND_BURST: Count<u64> = Count::new(20, 1, HUGE);
/// Per application key; up to a million a second are told apart.
pub const APP_SEND_PER_SECOND: Count<u64> = Count::new(1000, 1, 1_000_000);
pub const APP_SEND_BURST: Count<u64> = Count::new(2000, 1, HUGE);

// Delivery, cache, lifecycle.
pub const SMTP_TIMEOUT: Span = Span::new("10s", "100ms", "1h");
pub const WORKER_CONCURRENCY: Count<usize> = Count::new(16, 1, 10_000);
/// Claims and outcomes stored together in one transaction, at most (group
/// commit); 1: each in a transaction of its own.
pub const WORKER_BATCH: Count<usize> = Count::new(64, 1, 1_000);
/// An upper bound under the retry window, high enough for the default one
/// even if every delay is at its shortest (a test checks it).
pub const MAX_ATTEMPTS: Count<i32> = Count::new(250, 1, 1_000_000);
pub const RETRY_BASE: Span = Span::new("5s", "10ms", "1d");
pub const RETRY_MAX: Span = Span::new("15m", "10ms", "7d");
pub const RETRY_WINDOW: Span = Span::new("24h", "1s", "365d");
pub const VISIBILITY_TIMEOUT: Span = Span::new("60s", "1s", "1d");
pub const SWEEP_INTERVAL: Span = Span::new("2s", "10ms", "1h");
/// How often due SCHEDULED rows are looked for (a send lands within about
/// this of its `sendAt`).
pub const SCHEDULE_INTERVAL: Span = Span::new("1s", "10ms", "1h");
/// How long inbox events are kept (`inboxChanges`/`inboxEvents` replay).
pub const EVENT_RETENTION: Span = Span::new("7d", "1h", "365d");
/// How long an idempotency key holds at least (the contract's 24 h is the
/// floor).
pub const IDEMPOTENCY_TTL: Span = Span::new("24h", "24h", "365d");
/// Webhook deliveries in flight at once, their own limit.
pub const WEBHOOK_CONCURRENCY: Count<usize> = Count::new(8, 1, 10_000);
/// The first webhook retry's delay; doubled (with jitter) after each
/// further failure, up to `WEBHOOK_RETRY_MAX`, for `WEBHOOK_RETRY_WINDOW`.
pub const WEBHOOK_RETRY_BASE: Span = Span::new("5s", "10ms", "1d");
pub const WEBHOOK_RETRY_MAX: Span = Span::new("1h", "10ms", "1d");
pub const WEBHOOK_RETRY_WINDOW: Span = Span::new("24h", "1s", "30d");
/// One webhook attempt, connection and answer included.
pub const WEBHOOK_TIMEOUT: Span = Span::new("10s", "10ms", "10m");
pub const MAX_DELIVERIES: Count<u64> = Count::new(5, 1, 1_000_000);
pub const SHUTDOWN_GRACE: Span = Span::new("10s", "10ms", "1h");
pub const CACHE_TTL: Span = Span::new("300s", "1s", "30d");
