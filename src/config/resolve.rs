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
    worker::{RetryPolicy, SystemClock, WebhookSettings, WorkerSettings},
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
            sends_per_app: Bucket::per_second(a.app_send_per_second, a.app_send_burst),
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
            poll_interval: serve.poll_interval,
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
            persisted_query_ttl: serve.persisted_query_ttl,
            send_batch: serve.send_batch,
            response_cache: serve.response_cache.is_on(),
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
        let mut critical_categories = Vec::new();
        for raw in &rt.critical_categories {
            let category = raw.trim();
            if category.is_empty() {
                continue;
            }
            crate::domain::send::Category::parse(category).map_err(|e| {
                anyhow::anyhow!("HERALD_CRITICAL_CATEGORIES: {category:?} {}", e.reason)
            })?;
            critical_categories.push(category.to_owned());
        }
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
                ca_file: rt.smtp_ca_file,
                from: rt.smtp_from,
                timeout: rt.smtp_timeout,
            },
            worker: worker.then_some(WorkerSettings {
                concurrency: rt.worker_concurrency,
                batch: rt.worker_batch,
                retry: RetryPolicy {
                    max_attempts: rt.max_attempts,
                    base: rt.retry_base,
                    max_delay: rt.retry_max,
                    window: rt.retry_window,
                },
                visibility_timeout: rt.visibility_timeout,
                sweep_interval: rt.sweep_interval,
                schedule_interval: rt.schedule_interval,
                event_retention: rt.event_retention,
                idempotency_ttl: rt.idempotency_ttl,
                prune_interval: crate::worker::PRUNE_INTERVAL,
                max_deliveries: rt.max_deliveries,
                shutdown_grace: rt.shutdown_grace,
                clock: std::sync::Arc::new(SystemClock),
                critical_categories,
                webhooks: WebhookSettings::new(
                    rt.webhook_concurrency,
                    rt.webhook_retry_base,
                    // An attempt never outlives its claim.
                    rt.webhook_timeout.min(rt.visibility_timeout),
                    rt.webhook_allow_private,
                ),
            }),
            cache_ttl: rt.cache_ttl,
            shutdown_grace: rt.shutdown_grace,
            metrics_bind: rt.metrics_bind,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Cli, Command, defaults};

    fn serve(args: &[&str]) -> Result<Box<ServeArgs>, clap::Error> {
        let line = ["herald", "serve"].iter().chain(args);
        match Cli::try_parse_from(line)?.command {
            Some(Command::Serve(serve)) => Ok(serve),
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn embedded_defaults_are_the_command_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = "s".repeat(32);
        let data_dir = dir.path().to_str().expect("utf-8");
        let cli = Cli::try_parse_from([
            "herald",
            "--data-dir",
            data_dir,
            "serve",
            "--jwt-secret",
            &secret,
        ])
        .expect("parses");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve");
        };
        assert_eq!(args.bind.to_string(), defaults::BIND);
        let parsed = Config::for_serve(&cli.global, *args).expect("resolves");
        let embedded = Config::embedded(
            cli.global.database_url(),
            dir.path().to_owned(),
            secret.as_bytes(),
        );
        let debug = |c: &Config| {
            let http = c.http.as_ref().expect("http");
            format!(
                "{} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {:?} {:?} {} {}",
                c.database_url,
                c.migrate_on_start,
                c.data_dir,
                c.redis.as_ref().map(|r| &r.prefix),
                c.mail.from,
                c.mail.timeout,
                c.worker,
                c.cache_ttl,
                c.shutdown_grace,
                (http.jwt_ttl, http.poll_interval),
                http.schema,
                http.rate_limits,
                http.trusted_proxies,
                (&http.cors, &http.sockets),
                c.mail.smtp_url.is_none(),
                http.persisted_query_ttl,
                c.metrics_bind,
                http.send_batch,
                http.response_cache,
            )
        };
        assert_eq!(debug(&parsed), debug(&embedded));
    }

    #[test]
    fn huge_values_are_refused_naming_the_setting() {
        for (flag, value) in [
            ("--visibility-timeout", u64::MAX.to_string()),
            ("--visibility-timeout", "2d".to_owned()),
            ("--send-burst", (1u64 << 33).to_string()),
            ("--send-per-minute", "0".to_owned()),
            ("--app-send-per-second", "1000001".to_owned()),
            ("--app-send-burst", "0".to_owned()),
            ("--max-attempts", "3000000000".to_owned()),
            ("--cache-ttl", "100000d".to_owned()),
            ("--persisted-query-ttl", "31d".to_owned()),
            ("--max-query-bytes", "2000000".to_owned()),
        ] {
            let err = serve(&[flag, &value]).expect_err(&format!("{flag} {value}"));
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            assert_eq!(err.exit_code(), 2);
            let message = err.to_string();
            assert!(message.contains(flag), "{message}");
        }
        let edge = serve(&["--send-burst", "1000000000", "--jwt-ttl", "365d"]).expect("in range");
        assert_eq!(edge.rate_limits.send_burst, 1_000_000_000);
    }
}
