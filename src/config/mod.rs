//! Command line and configuration: every setting is a flag and an environment
//! variable, with defaults that run with nothing installed.
//!
//! `Config` is the resolved form `app::build` takes; tests build it directly.
//! `cli` holds the clap arguments, `defaults` every default and range,
//! `duration` the duration syntax, `resolve` turns the arguments into a
//! `Config`, and `secret` reads or creates the embedded JWT key file.

mod cli;
pub mod defaults;
mod duration;
mod resolve;
mod secret;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{SecretBox, SecretString};

pub use cli::*;
pub use duration::parse_duration;

use crate::{
    cors::AllowedOrigins,
    graphql::SchemaOptions,
    ratelimit::RateLimits,
    worker::{RetryPolicy, SystemClock, WebhookSettings, WorkerSettings},
    ws::SocketLimits,
};

/// Everything `app::build` needs, resolved and validated.
pub struct Config {
    pub database_url: String,
    pub migrate_on_start: bool,
    pub data_dir: PathBuf,
    /// The GraphQL API; `None` for a worker-only process.
    pub http: Option<HttpSettings>,
    /// `None`: in-process queue, cache and events.
    pub redis: Option<RedisSettings>,
    pub mail: MailSettings,
    /// `None`: no worker or sweeper in this process.
    pub worker: Option<WorkerSettings>,
    pub cache_ttl: Duration,
    /// After shutdown is asked for: how long in-flight requests get (the
    /// worker's deliveries get `WorkerSettings::shutdown_grace`, the same
    /// setting).
    pub shutdown_grace: Duration,
    /// Where `GET /metrics` is served (Prometheus); `None`: no listener.
    pub metrics_bind: Option<SocketAddr>,
}

pub struct HttpSettings {
    pub bind: SocketAddr,
    /// The HS256 key, at least 32 bytes.
    pub jwt_secret: SecretBox<[u8]>,
    pub jwt_ttl: Duration,
    /// `inboxChanges`' `pollInterval`.
    pub poll_interval: Duration,
    /// Limits, introspection, suggestions.
    pub schema: SchemaOptions,
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Origins allowed by CORS and on the websocket upgrade.
    pub cors: AllowedOrigins,
    /// Subscriptions per socket and sockets per user.
    pub sockets: SocketLimits,
    /// How long a persisted query's text is kept.
    pub persisted_query_ttl: Duration,
    /// Sends stored together in one transaction, at most (1: each alone).
    pub send_batch: usize,
    /// Whole responses of users' inbox queries (`responses.rs`).
    pub response_cache: bool,
}

pub struct RedisSettings {
    pub url: SecretString,
    pub prefix: String,
}

pub struct MailSettings {
    /// `None`: `.eml` files in `<data dir>/outbox/`.
    pub smtp_url: Option<SecretString>,
    /// Extra CA certificates (PEM) for the SMTP server's TLS certificate.
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub timeout: Duration,
}

impl Config {
    /// Embedded defaults around a database URL, for tests and tools:
    /// in-process backends, .eml outbox, a worker with the default settings;
    /// it listens on a free port rather than `defaults::BIND`.
    pub fn embedded(database_url: String, data_dir: PathBuf, jwt_secret: &[u8]) -> Self {
        Self {
            database_url,
            migrate_on_start: true,
            data_dir,
            http: Some(HttpSettings {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                jwt_secret: SecretBox::new(jwt_secret.into()),
                jwt_ttl: defaults::JWT_TTL.default,
                poll_interval: defaults::POLL_INTERVAL.default,
                schema: SchemaOptions::default(),
                rate_limits: RateLimits::default(),
                trusted_proxies: Vec::new(),
                cors: AllowedOrigins::Localhost,
                sockets: SocketLimits::default(),
                persisted_query_ttl: defaults::PERSISTED_QUERY_TTL.default,
                send_batch: defaults::SEND_BATCH.default,
                response_cache: defaults::RESPONSE_CACHE.is_on(),
            }),
            redis: None,
            mail: MailSettings {
                smtp_url: None,
                ca_file: None,
                from: defaults::SMTP_FROM.to_owned(),
                timeout: defaults::SMTP_TIMEOUT.default,
            },
            worker: Some(WorkerSettings {
                concurrency: defaults::WORKER_CONCURRENCY.default,
                batch: defaults::WORKER_BATCH.default,
                retry: RetryPolicy {
                    max_attempts: defaults::MAX_ATTEMPTS.default,
                    base: defaults::RETRY_BASE.default,
                    max_delay: defaults::RETRY_MAX.default,
                    window: defaults::RETRY_WINDOW.default,
                },
                visibility_timeout: defaults::VISIBILITY_TIMEOUT.default,
                sweep_interval: defaults::SWEEP_INTERVAL.default,
                schedule_interval: defaults::SCHEDULE_INTERVAL.default,
                event_retention: defaults::EVENT_RETENTION.default,
                idempotency_ttl: defaults::IDEMPOTENCY_TTL.default,
                prune_interval: crate::worker::PRUNE_INTERVAL,
                max_deliveries: defaults::MAX_DELIVERIES.default,
                shutdown_grace: defaults::SHUTDOWN_GRACE.default,
                clock: std::sync::Arc::new(SystemClock),
                critical_categories: Vec::new(),
                webhooks: WebhookSettings::new(
                    defaults::WEBHOOK_CONCURRENCY.default,
                    defaults::WEBHOOK_RETRY_BASE.default,
                    defaults::WEBHOOK_TIMEOUT.default,
                    false,
                ),
            }),
            cache_ttl: defaults::CACHE_TTL.default,
            shutdown_grace: defaults::SHUTDOWN_GRACE.default,
            metrics_bind: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_attempt_bound_lasts_the_default_retry_window() {
        let config = Config::embedded(String::new(), PathBuf::new(), &[0; 32]);
        let retry = config.worker.expect("a worker").retry;
        assert_eq!(retry.window, Duration::from_secs(24 * 3600));
        // Even if every delay drew its shortest jitter, the attempts span
        // the window: the count never cuts it short.
        assert!(
            retry.shortest_span() >= retry.window,
            "{:?} < {:?}",
            retry.shortest_span(),
            retry.window
        );
    }
}
