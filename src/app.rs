//! Wiring: `build` turns a `Config` into a ready `Application` (database
//! migrated, backends chosen, listener bound); `run_until_stopped` runs the
//! API and the worker until the shutdown token fires.
//!
//! This is the one place that picks a backend per concern (DESIGN.md,
//! invariant 6): Redis when `REDIS_URL` is set, in-process otherwise.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use async_graphql::dataloader::DataLoader;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{ApiKeys, InProcessRevocations, JwtKeys, PasswordHasher, RedisRevocations, Revocations},
    cache::{Cache, InProcessCache, RedisCache},
    config::Config,
    directory::Directory,
    graphql::{ApiState, build_schema, loaders::UserLoader, persisted::PersistedQueries},
    http::{HttpState, router},
    inbox::{Inbox, LostBumps},
    keys::Keys,
    mailer::{Mailer, MailerConfig},
    metrics::{Metrics, QueueName},
    notify::Notifications,
    preferences::Preferences,
    pubsub::{EventBus, InProcessEventBus, RedisEventBus},
    queue::{
        Queue,
        in_process::InProcessQueue,
        redis_streams::{QueueNames, RedisStreamQueue},
    },
    ratelimit::{InProcessRateLimiter, RateLimiter, RedisRateLimiter},
    shutdown::{Deadline, serve_then_join, wind_down},
    storage::{self, QueryStats},
    worker::Delivery,
};

/// Entries the in-process queue and cache hold at most.
const IN_PROCESS_CAPACITY: usize = 100_000;

/// Bytes of query text the in-process persisted-query store holds at most.
const IN_PROCESS_PERSISTED_BYTES: usize = 32 * 1024 * 1024;

pub struct Application {
    http: Option<(TcpListener, axum::Router, SocketAddr)>,
    delivery: Option<Delivery>,
    db: DatabaseConnection,
    stats: Arc<QueryStats>,
    events: Arc<dyn EventBus>,
    /// Stops background tasks that `build` started (the event subscriber).
    background: CancellationToken,
    /// Closes open websockets when shutdown starts (the HTTP server does not
    /// wait for upgraded connections).
    sockets: CancellationToken,
    /// How long in-flight requests and send tasks get, together, after
    /// shutdown is asked for.
    shutdown_grace: Duration,
    /// Work that must outlive the request that started it (a send's
    /// announce and enqueue); waited for at shutdown, before `background`
    /// is cancelled and the database closes.
    sends: TaskTracker,
    /// Background loops (lost bumps, revocation checks), ended by
    /// `background` and `sockets`; waited for after the sends.
    tasks: TaskTracker,
    hasher: Option<PasswordHasher>,
    in_process_limiter: Option<Arc<InProcessRateLimiter>>,
    /// Every series of this application, whether or not it serves them.
    metrics: Arc<Metrics>,
    /// `GET /metrics`, on a listener of its own (`HERALD_METRICS_BIND`).
    metrics_http: Option<(TcpListener, axum::Router, SocketAddr)>,
}

struct Backends {
    queue: Arc<dyn Queue>,
    /// Webhook jobs: the same kind of queue, its own stream.
    webhook_queue: Arc<dyn Queue>,
    cache: Arc<dyn Cache>,
    /// Persisted queries' texts: Redis's cache, or an LRU of their own.
    persisted: Arc<dyn Cache>,
    events: Arc<dyn EventBus>,
    limiter: Arc<dyn RateLimiter>,
    /// The same limiter in embedded mode, for tests to look into.
    in_process_limiter: Option<Arc<InProcessRateLimiter>>,
    /// For the stores built later, from the API's settings.
    redis: Option<ConnectionManager>,
}

fn backends(
    config: &Config,
    keys: &Keys,
    background: &CancellationToken,
) -> anyhow::Result<Backends> {
    let Some(redis) = &config.redis else {
        let limiter = Arc::new(InProcessRateLimiter::default());
        return Ok(Backends {
            queue: Arc::new(InProcessQueue::new(IN_PROCESS_CAPACITY)),
            webhook_queue: Arc::new(InProcessQueue::new(IN_PROCESS_CAPACITY)),
            cache: Arc::new(InProcessCache::new(IN_PROCESS_CAPACITY)),
            persisted: Arc::new(
                InProcessCache::new(IN_PROCESS_CAPACITY).with_max_bytes(IN_PROCESS_PERSISTED_BYTES),
            ),
            events: Arc::new(InProcessEventBus::default()),
            limiter: limiter.clone(),
            in_process_limiter: Some(limiter),
            redis: None,
        });
    };
    let client = redis::Client::open(redis.url.expose_secret()).context("REDIS_URL")?;
    // Lazy: Herald starts (and takes notifications) while Redis is down;
    // every Redis use fails fast and falls back until it is back.
    let manager = ConnectionManager::new_lazy_with_config(
        client.clone(),
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500)),
    )
    .context("creating the Redis connection manager")?;
    // Only a worker consumes the queue, and only a consumer reclaims.
    let visibility = config.worker.as_ref().map(|w| w.visibility_timeout);
    let cache: Arc<dyn Cache> = Arc::new(RedisCache::new(manager.clone()));
    Ok(Backends {
        queue: Arc::new(RedisStreamQueue::new(
            client.clone(),
            manager.clone(),
            QueueNames::notifications(keys),
            visibility,
        )),
        webhook_queue: Arc::new(RedisStreamQueue::new(
            client.clone(),
            manager.clone(),
            QueueNames::webhooks(keys),
            visibility,
        )),
        persisted: cache.clone(),
        cache,
        limiter: Arc::new(RedisRateLimiter::new(manager.clone())),
        in_process_limiter: None,
        events: Arc::new(RedisEventBus::new(
            client,
            manager.clone(),
            keys.inbox_events(),
            background.clone(),
        )),
        redis: Some(manager),
    })
}

/// Revoked tokens: a revocation lives as long as the token it names.
fn revocations(
    redis: Option<ConnectionManager>,
    keys: &Keys,
    jwt_ttl: Duration,
) -> Arc<dyn Revocations> {
    match redis {
        Some(manager) => Arc::new(RedisRevocations::new(manager, keys.clone(), jwt_ttl)),
        None => Arc::new(InProcessRevocations::default()),
    }
}

/// Connects and migrates the database, picks the backends, builds the API
/// and binds its listener (port 0 picks a free port: see `local_addr`).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let (db, stats) = storage::connect_with_stats(&config.database_url).await?;
    if config.migrate_on_start {
        storage::migrate(&db).await?;
    }
    // One group commit for sends and the worker's moves (each side may
    // leave it with a batch of 1), so a user's changes share its lane.
    let worker_batch = config.worker.as_ref().map_or(1, |w| w.batch);
    let send_batch = config.http.as_ref().map_or(1, |h| h.send_batch);
    let batch = worker_batch.max(send_batch);
    let writers = crate::group_commit::Writers::start(&db, &config.database_url, batch > 1).await?;
    // In process, names need no namespace.
    let keys = Keys::new(
        config
            .redis
            .as_ref()
            .map_or_else(String::new, |r| r.prefix.clone()),
    );
    let background = CancellationToken::new();
    let sockets = CancellationToken::new();
    let tasks = TaskTracker::new();
    let sends = TaskTracker::new();
    let metrics = Arc::new(Metrics::new());
    let Backends {
        queue,
        webhook_queue,
        cache,
        persisted,
        events,
        limiter,
        in_process_limiter,
        redis,
    } = backends(&config, &keys, &background)?;
    metrics.watch_queue(QueueName::Email, queue.clone());
    metrics.watch_queue(QueueName::Webhooks, webhook_queue.clone());
    let directory = Arc::new(Directory::new(
        db.clone(),
        cache.clone(),
        keys.clone(),
        config.cache_ttl,
        metrics.clone(),
    ));
    let preferences = Arc::new(Preferences::new(
        db.clone(),
        cache.clone(),
        keys.clone(),
        config.cache_ttl,
        metrics.clone(),
    ));
    let inbox = Inbox {
        cache: cache.clone(),
        events: events.clone(),
        keys: keys.clone(),
        ttl: config.cache_ttl,
        lost_bumps: Arc::new(LostBumps::new(background.clone(), tasks.clone())),
        webhooks: crate::webhooks::Wake::default(),
        metrics: metrics.clone(),
    };

    let writes = (batch > 1)
        .then(|| crate::group_commit::InboxWrites::start(&writers, batch, inbox.clone()));
    let delivery = match &config.worker {
        Some(settings) => {
            let mailer = Mailer::new(MailerConfig {
                smtp_url: config.mail.smtp_url.clone(),
                smtp_ca_file: config.mail.ca_file.clone(),
                from: config.mail.from.clone(),
                timeout: config.mail.timeout,
                outbox: config.data_dir.join("outbox"),
                pool_size: settings.concurrency,
            })?;
            let mailer = Arc::new(mailer);
            metrics.watch_mailer(mailer.clone());
            Some(Delivery {
                db: db.clone(),
                queue: queue.clone(),
                webhook_queue,
                mailer,
                inbox: inbox.clone(),
                directory: directory.clone(),
                preferences: preferences.clone(),
                breaker: Arc::new(settings.breaker()),
                settings: settings.clone(),
                metrics: metrics.clone(),
                moves: crate::worker::Moves::new(
                    db.clone(),
                    writes.clone().filter(|_| settings.batch > 1),
                    inbox.clone(),
                ),
            })
        }
        None => None,
    };

    let mut hasher = None;
    let http = match &config.http {
        Some(settings) => {
            let users = DataLoader::new(UserLoader(directory.clone()), tokio::spawn);
            let api_keys = ApiKeys::new(db.clone(), tasks.clone());
            api_keys.watch_revocations(crate::auth::api_key::REVOKE_POLL, background.clone());
            let api = ApiState {
                db: db.clone(),
                jwt: Arc::new(JwtKeys::new(
                    settings.jwt_secret.expose_secret(),
                    settings.jwt_ttl,
                )),
                hasher: hasher
                    .insert(PasswordHasher::per_core().observed_by(metrics.argon2_wait()))
                    .clone(),
                notifications: Notifications::new(
                    db.clone(),
                    inbox.clone(),
                    queue,
                    sends.clone(),
                    writes.clone().filter(|_| settings.send_batch > 1),
                ),
                inbox,
                users: Arc::new(users),
                limiter,
                rate_limits: settings.rate_limits.clone(),
                revocations: revocations(redis, &keys, settings.jwt_ttl),
                api_keys,
                poll_interval: settings.poll_interval,
                preferences,
                metrics: metrics.clone(),
            };
            let schema = build_schema(api.clone(), &settings.schema);
            let revocation_watch = crate::auth::revocation::RevocationWatch::new(
                api.revocations.clone(),
                crate::ws::REVOCATION_CHECK,
                sockets.clone(),
                tasks.clone(),
            );
            let responses = settings
                .response_cache
                .then(|| Arc::new(crate::responses::Responses::new(api.inbox.clone())));
            let router = router(HttpState {
                responses,
                schema,
                revocation_watch,
                api,
                cache,
                shutdown: sockets.clone(),
                limits: settings.schema.limits.clone(),
                documents: Arc::default(),
                persisted: Arc::new(PersistedQueries::new(
                    persisted,
                    keys.clone(),
                    settings.persisted_query_ttl,
                    metrics.clone(),
                )),
                trusted_proxies: settings.trusted_proxies.clone(),
                cors: settings.cors.clone(),
                sockets: settings.sockets.clone(),
                mail: delivery.as_ref().map(|d| d.breaker.clone()),
            });
            let listener = TcpListener::bind(settings.bind)
                .await
                .with_context(|| format!("binding {}", settings.bind))?;
            let addr = listener.local_addr()?;
            Some((listener, router, addr))
        }
        None => None,
    };
    let metrics_http = match config.metrics_bind {
        Some(bind) => {
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding HERALD_METRICS_BIND {bind}"))?;
            let addr = listener.local_addr()?;
            Some((listener, crate::metrics::router(metrics.clone()), addr))
        }
        None => None,
    };
    Ok(Application {
        http,
        delivery,
        db,
        stats,
        events,
        background,
        sockets,
        shutdown_grace: config.shutdown_grace,
        sends,
        tasks,
        hasher,
        in_process_limiter,
        metrics,
        metrics_http,
    })
}

impl Application {
    /// Where the API listens; `None` for a worker-only process.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, _, addr)| *addr)
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Statements run so far on this application's database pool.
    pub fn query_stats(&self) -> Arc<QueryStats> {
        self.stats.clone()
    }

    pub fn events(&self) -> Arc<dyn EventBus> {
        self.events.clone()
    }

    /// The API's password hasher (its counters), when this process serves it.
    pub fn hasher(&self) -> Option<PasswordHasher> {
        self.hasher.clone()
    }

    /// Where `GET /metrics` is served, when `HERALD_METRICS_BIND` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_http.as_ref().map(|(_, _, addr)| *addr)
    }

    /// This application's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The rate limiter in embedded mode (its windows), for tests.
    pub fn in_process_limiter(&self) -> Option<Arc<InProcessRateLimiter>> {
        self.in_process_limiter.clone()
    }

    /// Serves (and delivers) until `shutdown` is cancelled; then in-flight
    /// requests and sends share `HERALD_SHUTDOWN_GRACE` (and deliveries get
    /// as much). When the server fails, the worker is stopped too before
    /// the error is returned.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let worker = self.delivery.map(|delivery| {
            tracing::info!(
                concurrency = delivery.settings.concurrency,
                "delivery worker started"
            );
            tokio::spawn(delivery.run_until_stopped(shutdown.clone()))
        });
        // Scrapes need no grace: the listener stops with the signal.
        let metrics_server = self.metrics_http.map(|(listener, router, addr)| {
            tracing::info!(addr = %addr, "serving metrics on http://{addr}/metrics");
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .into_future(),
            )
        });
        let deadline = Deadline::new(self.shutdown_grace);
        let sockets = self.sockets.clone();
        let stop = shutdown.clone();
        let clock = deadline.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            clock.start();
            sockets.cancel();
        });
        let server = self.http.map(|(listener, router, addr)| {
            tracing::info!(addr = %addr, "serving GraphQL on http://{addr}/graphql");
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future()
        });
        let result = serve_then_join(server, worker, &shutdown, &deadline).await;
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        wind_down(&self.sends, &self.background, &self.tasks, &deadline).await;
        self.db.close().await.context("closing the database pool")?;
        result
    }
}
