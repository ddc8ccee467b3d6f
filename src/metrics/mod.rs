//! Prometheus metrics: one `Metrics` per application, every series in its
//! own registry (no global one: each app, and each test's app, counts for
//! itself), served on a listener of its own (`HERALD_METRICS_BIND`, see
//! `serve`).
//!
//! What happens is counted where it happens, with atomic counters and
//! histograms that cost a few nanoseconds whether or not anybody scrapes;
//! what is a state (queue depth, the SMTP pool) is read when scraped.
//! Label values come from closed enums only: never a user, an email or a
//! key.

mod serve;

use std::{
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub use serve::{Exposition, router};

use crate::{mailer::Mailer, queue::Queue};

/// Seconds, for request-sized durations: 1 ms to 10 s.
const FAST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Seconds from a notification's creation to its sending: 10 ms to 6 h
/// (retries and schedules take long).
const DELIVERY_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0,
];

fn fast_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS)
}

/// A GraphQL operation's type, or `None` when the request never got far
/// enough to have one (unparsable, refused before execution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Query,
    Mutation,
    Subscription,
    None,
}

impl Operation {
    pub fn label(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
            Self::None => "none",
        }
    }
}

/// The `extensions.code` values a response can carry (the contract's),
/// `OTHER` for anything else, so a label never holds free text.
const CODES: [&str; 7] = [
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "BAD_USER_INPUT",
    "CONFLICT",
    "RATE_LIMITED",
    "INTERNAL",
    "PERSISTED_QUERY_NOT_FOUND",
];

/// `code` as a label value: one of the contract's codes, else `OTHER`.
pub fn code_label(code: Option<&str>) -> &'static str {
    code.and_then(|code| CODES.iter().find(|c| **c == code).copied())
        .unwrap_or("OTHER")
}

/// An error's `extensions.code`, if it has one.
pub fn code_of(error: &async_graphql::ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code),
        _ => None,
    }
}

/// What became of one delivery attempt (the notification's move).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Sent,
    /// Will be tried again (a transient failure, or the mail server was
    /// unreachable and the attempt does not count).
    Retry,
    Failed,
    /// Not mailed: the recipient's preferences turned email off.
    Skipped,
    /// Not mailed: past its `expiresAt` when a worker took it.
    Expired,
}

impl DeliveryOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Expired => "expired",
        }
    }
}

/// Herald's two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    Email,
    Webhooks,
}

impl QueueName {
    fn label(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Webhooks => "webhooks",
        }
    }
}

/// The caches whose hits and misses are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheName {
    /// Pages of a user's notifications (`notifications`, `inbox`).
    InboxPages,
    /// A user's last seq and counts.
    InboxSnapshots,
    /// Users (recipients, `sender`), in process and shared.
    Users,
    /// Email preferences.
    Preferences,
    /// Persisted queries' texts.
    PersistedQueries,
    /// Whole GraphQL responses (`responses.rs`).
    Responses,
}

impl CacheName {
    fn label(self) -> &'static str {
        match self {
            Self::InboxPages => "inbox_pages",
            Self::InboxSnapshots => "inbox_snapshots",
            Self::Users => "users",
            Self::Preferences => "preferences",
            Self::PersistedQueries => "persisted_queries",
            Self::Responses => "responses",
        }
    }
}

/// The rate limits (README, Security).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LoginFailuresPerAccount,
    LoginFailuresPerIp,
    RegistrationsPerIp,
    SendsPerUser,
    SendsPerApp,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Self::LoginFailuresPerAccount => "login_failures_per_account",
            Self::LoginFailuresPerIp => "login_failures_per_ip",
            Self::RegistrationsPerIp => "registrations_per_ip",
            Self::SendsPerUser => "sends_per_user",
            Self::SendsPerApp => "sends_per_app",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What is read at scrape time rather than counted.
#[derive(Default)]
struct Sources {
    queues: Vec<(QueueName, Arc<dyn Queue>)>,
    mailer: Option<Arc<Mailer>>,
}

/// Every series of one application. Cheap to share (`Arc`); recording is
/// a few atomic operations.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    graphql_errors: Family<CodeLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    delivery_latency: Histogram,
    in_flight: Family<QueueLabels, Gauge>,
    queue_depth: Family<QueueLabels, Gauge>,
    queue_oldest: Family<QueueLabels, FloatGauge>,
    smtp_connections: Family<StateLabels, Gauge>,
    websockets: Gauge,
    subscriptions: Gauge,
    events_published: Counter,
    events_delivered: Counter,
    resyncs: Counter,
    event_lag: Histogram,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    argon2_wait: Histogram,
    sources: Mutex<Sources>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "herald_http_requests",
            "GraphQL requests over HTTP (each operation of a batch counts once), by operation type and outcome: ok, or the first error's extensions.code",
            requests.clone(),
        );
        let request_duration =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                fast_histogram,
            );
        registry.register(
            "herald_http_request_duration_seconds",
            "Time to answer a GraphQL request over HTTP, by operation type",
            request_duration.clone(),
        );
        let graphql_errors = Family::<CodeLabels, Counter>::default();
        registry.register(
            "herald_graphql_errors",
            "Errors in GraphQL responses (HTTP and websocket), by extensions.code",
            graphql_errors.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "herald_deliveries",
            "Email delivery attempts recorded, by outcome: sent, retry, failed, skipped (email turned off), expired",
            deliveries.clone(),
        );
        let delivery_latency = Histogram::new(DELIVERY_BUCKETS);
        registry.register(
            "herald_delivery_latency_seconds",
            "Time from a notification's creation to its email being sent",
            delivery_latency.clone(),
        );
        let in_flight = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "herald_worker_in_flight",
            "Jobs this worker is running now, by queue",
            in_flight.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "herald_queue_depth",
            "Entries in the queue, waiting or taken and not yet acknowledged (read at scrape time)",
            queue_depth.clone(),
        );
        let queue_oldest = Family::<QueueLabels, FloatGauge>::default();
        registry.register(
            "herald_queue_oldest_age_seconds",
            "Age of the oldest entry in the queue, 0 when empty (read at scrape time)",
            queue_oldest.clone(),
        );
        let smtp_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "herald_smtp_pool_connections",
            "SMTP connections of the worker's pool: idle (kept open) and in_use (sending)",
            smtp_connections.clone(),
        );
        let websockets = Gauge::default();
        registry.register(
            "herald_websockets_open",
            "Open GraphQL websockets",
            websockets.clone(),
        );
        let subscriptions = Gauge::default();
        registry.register(
            "herald_subscriptions_active",
            "Active GraphQL subscriptions on this instance's websockets",
            subscriptions.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "herald_events_published",
            "Inbox events this instance published after a commit",
            events_published.clone(),
        );
        let events_delivered = Counter::default();
        registry.register(
            "herald_events_delivered",
            "Inbox events handed to live subscribers on this instance",
            events_delivered.clone(),
        );
        let resyncs = Counter::default();
        registry.register(
            "herald_resyncs",
            "Subscribers that could not continue from the log and were told to refetch (InboxResync, LAGGED)",
            resyncs.clone(),
        );
        let event_lag = fast_histogram();
        registry.register(
            "herald_event_lag_seconds",
            "Time from an inbox event's commit to its delivery to a subscriber",
            event_lag.clone(),
        );
        let cache_hits = Family::<CacheLabels, Counter>::default();
        registry.register(
            "herald_cache_hits",
            "Reads answered from the cache, by cache",
            cache_hits.clone(),
        );
        let cache_misses = Family::<CacheLabels, Counter>::default();
        registry.register(
            "herald_cache_misses",
            "Reads the cache could not answer (absent, stale or unreachable), by cache",
            cache_misses.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "herald_rate_limit_rejections",
            "Requests refused with RATE_LIMITED, by limit",
            rate_limited.clone(),
        );
        let argon2_wait = fast_histogram();
        registry.register(
            "herald_argon2_wait_seconds",
            "Time a password hash or check waited for one of the hasher's permits",
            argon2_wait.clone(),
        );
        // Every closed label value from the start, at 0: a series that
        // appears only with its first event breaks rate() over the window
        // before it, and the exposition names every metric at once.
        for operation in [
            Operation::Query,
            Operation::Mutation,
            Operation::Subscription,
            Operation::None,
        ] {
            let operation = operation.label();
            let _ = requests.get_or_create(&RequestLabels {
                operation,
                code: "ok",
            });
            let _ = request_duration.get_or_create(&OperationLabels { operation });
        }
        for code in CODES.into_iter().chain(["OTHER"]) {
            let _ = graphql_errors.get_or_create(&CodeLabels { code });
        }
        for outcome in [
            DeliveryOutcome::Sent,
            DeliveryOutcome::Retry,
            DeliveryOutcome::Failed,
            DeliveryOutcome::Skipped,
            DeliveryOutcome::Expired,
        ] {
            let _ = deliveries.get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            });
        }
        for queue in [QueueName::Email, QueueName::Webhooks] {
            let _ = in_flight.get_or_create(&QueueLabels {
                queue: queue.label(),
            });
        }
        for cache in [
            CacheName::InboxPages,
            CacheName::InboxSnapshots,
            CacheName::Users,
            CacheName::Preferences,
            CacheName::PersistedQueries,
            CacheName::Responses,
        ] {
            let labels = CacheLabels {
                cache: cache.label(),
            };
            let _ = cache_hits.get_or_create(&labels);
            let _ = cache_misses.get_or_create(&labels);
        }
        for limit in [
            Limit::LoginFailuresPerAccount,
            Limit::LoginFailuresPerIp,
            Limit::RegistrationsPerIp,
            Limit::SendsPerUser,
            Limit::SendsPerApp,
        ] {
            let _ = rate_limited.get_or_create(&LimitLabels {
                limit: limit.label(),
            });
        }
        Self {
            registry,
            requests,
            request_duration,
            graphql_errors,
            deliveries,
            delivery_latency,
            in_flight,
            queue_depth,
            queue_oldest,
            smtp_connections,
            websockets,
            subscriptions,
            events_published,
            events_delivered,
            resyncs,
            event_lag,
            cache_hits,
            cache_misses,
            rate_limited,
            argon2_wait,
            sources: Mutex::default(),
        }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `queue`'s depth and oldest entry at every scrape.
    pub fn watch_queue(&self, name: QueueName, queue: Arc<dyn Queue>) {
        self.sources().queues.push((name, queue));
    }

    /// Reports the mailer's SMTP pool at every scrape.
    pub fn watch_mailer(&self, mailer: Arc<Mailer>) {
        self.sources().mailer = Some(mailer);
    }

    /// One GraphQL request over HTTP: its operation, its outcome (`None`:
    /// no error, else the first error's code) and how long it took.
    pub fn request(&self, operation: Operation, code: Option<&str>, took: Duration) {
        let code = code.map_or("ok", |c| code_label(Some(c)));
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.label(),
                code,
            })
            .inc();
        self.request_duration
            .get_or_create(&OperationLabels {
                operation: operation.label(),
            })
            .observe(took.as_secs_f64());
    }

    /// One error in a GraphQL response, by its `extensions.code`.
    pub fn graphql_error(&self, code: Option<&str>) {
        self.graphql_errors
            .get_or_create(&CodeLabels {
                code: code_label(code),
            })
            .inc();
    }

    /// The errors of one GraphQL response, by their `extensions.code`.
    pub fn graphql_errors(&self, errors: &[async_graphql::ServerError]) {
        for error in errors {
            self.graphql_error(code_of(error));
        }
    }

    /// A delivery attempt's outcome, recorded; `since_created` for a sent one.
    pub fn delivery(&self, outcome: DeliveryOutcome, since_created: Option<Duration>) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        if let Some(latency) = since_created {
            self.delivery_latency.observe(latency.as_secs_f64());
        }
    }

    /// Counts a job of `queue` in flight until the guard drops.
    pub fn in_flight(&self, queue: QueueName) -> GaugeGuard {
        GaugeGuard::new(
            self.in_flight
                .get_or_create(&QueueLabels {
                    queue: queue.label(),
                })
                .clone(),
        )
    }

    /// Counts an open websocket until the guard drops.
    pub fn websocket(&self) -> GaugeGuard {
        GaugeGuard::new(self.websockets.clone())
    }

    /// Subscriptions started (positive) or ended (negative) on a socket.
    pub fn subscriptions_changed(&self, by: i64) {
        self.subscriptions.inc_by(by);
    }

    pub fn event_published(&self) {
        self.events_published.inc();
    }

    /// An event handed to a subscriber, `lag` after its commit.
    pub fn event_delivered(&self, lag: Duration) {
        self.events_delivered.inc();
        self.event_lag.observe(lag.as_secs_f64());
    }

    pub fn resync(&self) {
        self.resyncs.inc();
    }

    /// A read of `cache`: answered from it, or not.
    pub fn cache(&self, cache: CacheName, hit: bool) {
        self.cache_reads(cache, u64::from(hit), u64::from(!hit));
    }

    /// Reads of `cache` (several keys at once): how many it answered.
    pub fn cache_reads(&self, cache: CacheName, hits: u64, misses: u64) {
        let labels = CacheLabels {
            cache: cache.label(),
        };
        if hits > 0 {
            self.cache_hits.get_or_create(&labels).inc_by(hits);
        }
        if misses > 0 {
            self.cache_misses.get_or_create(&labels).inc_by(misses);
        }
    }

    pub fn rate_limited(&self, limit: Limit) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.label(),
            })
            .inc();
    }

    /// The histogram of the argon2 permit waits, for the password hasher.
    pub fn argon2_wait(&self) -> Histogram {
        self.argon2_wait.clone()
    }
}

/// Holds a gauge one higher while it lives.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_outside_the_contract_are_other() {
        assert_eq!(code_label(Some("RATE_LIMITED")), "RATE_LIMITED");
        assert_eq!(code_label(Some("user@example.com")), "OTHER");
        assert_eq!(code_label(None), "OTHER");
    }
}
