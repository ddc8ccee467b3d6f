//! Resolution: the parsed arguments become a validated `Config`.

use super::{
    Config, Environment, GlobalArgs, HttpSettings, LimitArgs, MailSettings, RateLimitArgs,
    RedisSettings, RuntimeArgs, ServeArgs, WorkerArgs, secret::resolve_jwt_secret,
};
use crate::{
    cors::AllowedOrigins,
    graphql::{SchemaOptions, limits::QueryLimits},
    ratelimit::{Bucket, RateLimits, Window},
    storage::DatabaseKind,
    worker::{RetryPolicy, SystemClock, WorkerSettings},
    ws::SocketLimits,
};

impl From<LimitArgs> for QueryLimits {
    fn from(a: LimitArgs) -> Self {
        Self {
            max_depth: a.max_depth,
            max_complexity: a.max_complexity,
            max_aliases: a.max_aliases,
            max_directives: a.max_directives,
            max_recursive_depth: a.max_recursive_depth,
            max_query_bytes: a.max_query_bytes,
            max_batch: a.max_batch,
            timeout: a.request_timeout,
        }
    }
}

impl From<RateLimitArgs> for RateLimits {
    fn from(a: RateLimitArgs) -> Self {
        let defaults = RateLimits::default();
        Self {
            login_failures_per_account: Window {
                limit: a.login_failures_per_account,
                ..defaults.login_failures_per_account
            },
            login_failures_per_ip: Window {
                limit: a.login_failures_per_ip,
                ..defaults.login_failures_per_ip
            },
            registrations_per_ip: Window {
                limit: a.register_per_ip,
                ..defaults.registrations_per_ip
            },
            sends_per_user: Bucket {
                per_minute: a.send_per_minute,
                burst: a.send_burst,
            },
        }
    }
}

impl Config {
    /// Resolves the `serve` settings. Fails with one clear line when a
    /// Postgres deployment has no (or a short) `JWT_SECRET`.
    pub fn for_serve(global: &GlobalArgs, serve: ServeArgs) -> anyhow::Result<Self> {
        let database_url = global.database_url();
        let kind = DatabaseKind::of(&database_url)?;
        let jwt_secret = resolve_jwt_secret(serve.jwt_secret, kind, &global.data_dir)?;
        let mut config = Self::for_runtime(global, serve.runtime, !serve.no_worker)?;
        let production = serve.environment == Environment::Production;
        config.http = Some(HttpSettings {
            bind: serve.bind,
            jwt_secret,
            jwt_ttl: serve.jwt_ttl,
            schema: SchemaOptions {
                limits: serve.limits.into(),
                introspection: serve.introspection.unwrap_or(!production),
                suggestions: !production,
            },
            rate_limits: serve.rate_limits.into(),
            trusted_proxies: serve.trust_proxy,
            cors: match serve.cors_origins {
                Some(list) => AllowedOrigins::List(
                    list.into_iter()
                        .map(|o| o.trim().trim_end_matches('/').to_owned())
                        .filter(|o| !o.is_empty())
                        .collect(),
                ),
                None if production => AllowedOrigins::List(Vec::new()),
                None => AllowedOrigins::Localhost,
            },
            sockets: SocketLimits {
                max_subscriptions: serve.ws_max_subscriptions,
                max_sockets_per_user: serve.ws_max_sockets_per_user,
                ..SocketLimits::default()
            },
        });
        Ok(config)
    }

    /// Resolves the `worker` settings: no API, always a worker.
    pub fn for_worker(global: &GlobalArgs, worker: WorkerArgs) -> anyhow::Result<Self> {
        Self::for_runtime(global, worker.runtime, true)
    }

    fn for_runtime(global: &GlobalArgs, rt: RuntimeArgs, worker: bool) -> anyhow::Result<Self> {
        let database_url = global.database_url();
        DatabaseKind::of(&database_url)?;
        anyhow::ensure!(
            rt.visibility_timeout > rt.smtp_timeout,
            "HERALD_VISIBILITY_TIMEOUT ({:?}) must be longer than SMTP_TIMEOUT ({:?}), or live deliveries would be taken over",
            rt.visibility_timeout,
            rt.smtp_timeout
        );
        anyhow::ensure!(
            rt.max_attempts >= 1,
            "HERALD_MAX_ATTEMPTS must be at least 1"
        );
        anyhow::ensure!(
            rt.worker_concurrency >= 1,
            "HERALD_WORKER_CONCURRENCY must be at least 1"
        );
        Ok(Self {
            database_url,
            migrate_on_start: !rt.no_migrate,
            data_dir: global.data_dir.clone(),
            http: None,
            redis: rt.redis_url.map(|url| RedisSettings {
                url,
                prefix: rt.redis_prefix,
            }),
            mail: MailSettings {
                smtp_url: rt.smtp_url,
                from: rt.smtp_from,
                timeout: rt.smtp_timeout,
            },
            worker: worker.then_some(WorkerSettings {
                concurrency: rt.worker_concurrency,
                retry: RetryPolicy {
                    max_attempts: rt.max_attempts,
                    base: rt.retry_base,
                    max_delay: rt.retry_max,
                    window: rt.retry_window,
                },
                visibility_timeout: rt.visibility_timeout,
                sweep_interval: rt.sweep_interval,
                max_deliveries: rt.max_deliveries,
                shutdown_grace: rt.shutdown_grace,
                clock: std::sync::Arc::new(SystemClock),
            }),
            cache_ttl: rt.cache_ttl,
        })
    }
}
