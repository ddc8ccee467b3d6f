//! Command line and configuration: every setting is a flag and an environment
//! variable, with defaults that run with nothing installed.
//!
//! `Config` is the resolved form `app::build` takes; tests build it directly.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::{
    auth::jwt::MIN_SECRET_LEN,
    cors::AllowedOrigins,
    graphql::{SchemaOptions, limits::QueryLimits},
    ratelimit::{Bucket, RateLimits, Window},
    storage::DatabaseKind,
    worker::{
        DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_WINDOW, RetryPolicy, SystemClock, WorkerSettings,
    },
    ws::SocketLimits,
};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a notification center server (GraphQL API, delivery worker, live status)",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API, with a delivery worker unless --no-worker (the default).
    Serve(Box<ServeArgs>),
    /// Run a delivery worker (and sweeper) without the API.
    Worker(Box<WorkerArgs>),
    /// Apply database migrations, or show their status.
    Migrate(MigrateArgs),
    /// Print the GraphQL schema (SDL) to standard output.
    Schema,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Folder for embedded-mode state: the SQLite file and jwt.key.
    #[arg(
        long,
        env = "HERALD_DATA_DIR",
        default_value = "./herald-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// sqlite://… or postgres://…; default: sqlite://<data dir>/herald.db?mode=rwc.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HERALD_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// HS256 signing secret, at least 32 bytes. Required with Postgres; in
    /// embedded mode it defaults to <data dir>/jwt.key, created on first start.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Token lifetime: seconds, or a number with ms, s, m, h or d.
    #[arg(long, env = "JWT_TTL", default_value = "1h", value_parser = parse_duration)]
    pub jwt_ttl: Duration,
    /// Serve the API only; run workers elsewhere (`herald worker`).
    #[arg(long, env = "HERALD_NO_WORKER")]
    pub no_worker: bool,
    /// `production` turns off field suggestions and (unless
    /// HERALD_INTROSPECTION=true) introspection.
    #[arg(long = "env", env = "HERALD_ENV", value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,
    /// Allow introspection queries; default: on, off in production.
    #[arg(long, env = "HERALD_INTROSPECTION")]
    pub introspection: Option<bool>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub rate_limits: RateLimitArgs,
    /// Proxies (comma-separated IPs) whose X-Forwarded-For names the client.
    #[arg(long, env = "HERALD_TRUST_PROXY", value_delimiter = ',')]
    pub trust_proxy: Vec<std::net::IpAddr>,
    /// Browser origins allowed to call the API and open websockets
    /// (comma-separated, exact). Default: any localhost origin; none in production.
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Active subscriptions on one websocket.
    #[arg(long, env = "HERALD_WS_MAX_SUBSCRIPTIONS", default_value_t = 20)]
    pub ws_max_subscriptions: usize,
    /// Open websockets per user, per instance.
    #[arg(long, env = "HERALD_WS_MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub ws_max_sockets_per_user: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// Bounds on one request (see README, Security).
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Deepest selection nesting.
    #[arg(long, env = "HERALD_MAX_DEPTH", default_value_t = 10)]
    pub max_depth: usize,
    /// Query complexity: each field costs 1, a page of notifications its pageSize.
    #[arg(long, env = "HERALD_MAX_COMPLEXITY", default_value_t = 1000)]
    pub max_complexity: usize,
    /// Aliases in one operation document.
    #[arg(long, env = "HERALD_MAX_ALIASES", default_value_t = 30)]
    pub max_aliases: usize,
    /// Directives on one field.
    #[arg(long, env = "HERALD_MAX_DIRECTIVES", default_value_t = 50)]
    pub max_directives: usize,
    /// Recursive depth of the document (fragments included).
    #[arg(long, env = "HERALD_MAX_RECURSIVE_DEPTH", default_value_t = 32)]
    pub max_recursive_depth: usize,
    /// Query text, in bytes.
    #[arg(long, env = "HERALD_MAX_QUERY_BYTES", default_value_t = 16 * 1024)]
    pub max_query_bytes: usize,
    /// Operations in one batched request.
    #[arg(long, env = "HERALD_MAX_BATCH", default_value_t = 10)]
    pub max_batch: usize,
    /// Execution time of one operation.
    #[arg(long, env = "HERALD_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

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

/// Rate limits (see README, Security); they hold across instances through Redis.
#[derive(Debug, Args)]
pub struct RateLimitArgs {
    /// Failed logins per account per 15 minutes.
    #[arg(long, env = "HERALD_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 10)]
    pub login_failures_per_account: u64,
    /// Failed logins per client address per 15 minutes.
    #[arg(long, env = "HERALD_LOGIN_FAILURES_PER_IP", default_value_t = 50)]
    pub login_failures_per_ip: u64,
    /// Registrations per client address per hour.
    #[arg(long, env = "HERALD_REGISTER_PER_IP", default_value_t = 10)]
    pub register_per_ip: u64,
    /// Notifications a user may send per minute, steadily.
    #[arg(long, env = "HERALD_SEND_PER_MINUTE", default_value_t = 60)]
    pub send_per_minute: u64,
    /// Notifications a user may send at once.
    #[arg(long, env = "HERALD_SEND_BURST", default_value_t = 20)]
    pub send_burst: u64,
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

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Settings `serve` and `worker` share: backends, delivery, cache.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Do not apply migrations on start (run `herald migrate` instead).
    #[arg(long, env = "HERALD_NO_MIGRATE")]
    pub no_migrate: bool,
    /// redis://host:port[/db]: queue (Streams), cache and events (Pub/Sub).
    /// Unset: in-process backends (embedded mode, one instance).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key, stream and channel Herald uses.
    #[arg(long, env = "HERALD_REDIS_PREFIX", default_value = "herald:")]
    pub redis_prefix: String,
    /// smtp://[user:pass@]host:port[?tls=starttls] or smtps://…
    /// Unset: emails are written as .eml files to <data dir>/outbox/.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// The From of every email.
    #[arg(long, env = "SMTP_FROM", default_value = "Herald <herald@localhost>")]
    pub smtp_from: String,
    /// How long one send may take before it counts as a transient failure.
    #[arg(long, env = "SMTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub smtp_timeout: Duration,
    /// Deliveries in flight at once, per process.
    #[arg(long, env = "HERALD_WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,
    /// Delivery attempts in all, at most: a bound under the retry window
    /// (attempts that found the mail server unreachable do not count).
    #[arg(long, env = "HERALD_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: i32,
    /// Backoff after the first failed attempt; doubles each time, with jitter.
    #[arg(long, env = "HERALD_RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// The longest backoff.
    #[arg(long, env = "HERALD_RETRY_MAX", default_value = "15m", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// A claim or queue entry older than this is taken to belong to a dead
    /// worker. Must exceed SMTP_TIMEOUT.
    #[arg(long, env = "HERALD_VISIBILITY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// How often the sweeper looks for lost or due work.
    #[arg(long, env = "HERALD_SWEEP_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Queue deliveries of one entry before it goes to the dead letters.
    #[arg(long, env = "HERALD_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u64,
    /// After SIGTERM/SIGINT: how long in-flight requests and deliveries get
    /// before deliveries are put back for another worker.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How long a cached page of `notifications` lives.
    #[arg(long, env = "HERALD_CACHE_TTL", default_value = "300s", value_parser = parse_duration)]
    pub cache_ttl: Duration,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub action: Option<MigrateAction>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// List migrations and whether each is applied.
    Status,
}

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
}

pub struct HttpSettings {
    pub bind: SocketAddr,
    /// The HS256 key, at least 32 bytes.
    pub jwt_secret: SecretBox<[u8]>,
    pub jwt_ttl: Duration,
    /// Limits, introspection, suggestions.
    pub schema: SchemaOptions,
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Origins allowed by CORS and on the websocket upgrade.
    pub cors: AllowedOrigins,
    /// Subscriptions per socket and sockets per user.
    pub sockets: SocketLimits,
}

pub struct RedisSettings {
    pub url: SecretString,
    pub prefix: String,
}

pub struct MailSettings {
    /// `None`: `.eml` files in `<data dir>/outbox/`.
    pub smtp_url: Option<SecretString>,
    pub from: String,
    pub timeout: Duration,
}

impl Config {
    /// Embedded defaults around a database URL, for tests and tools:
    /// in-process backends, .eml outbox, a worker with the default settings.
    pub fn embedded(database_url: String, data_dir: PathBuf, jwt_secret: &[u8]) -> Self {
        Self {
            database_url,
            migrate_on_start: true,
            data_dir,
            http: Some(HttpSettings {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                jwt_secret: SecretBox::new(jwt_secret.into()),
                jwt_ttl: Duration::from_secs(3600),
                schema: SchemaOptions::default(),
                rate_limits: RateLimits::default(),
                trusted_proxies: Vec::new(),
                cors: AllowedOrigins::Localhost,
                sockets: SocketLimits::default(),
            }),
            redis: None,
            mail: MailSettings {
                smtp_url: None,
                from: "Herald <herald@localhost>".to_owned(),
                timeout: Duration::from_secs(10),
            },
            worker: Some(WorkerSettings {
                concurrency: 16,
                retry: RetryPolicy::default(),
                visibility_timeout: Duration::from_secs(60),
                sweep_interval: Duration::from_secs(2),
                max_deliveries: 5,
                shutdown_grace: Duration::from_secs(10),
                clock: Arc::new(SystemClock),
            }),
            cache_ttl: Duration::from_secs(300),
        }
    }

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
                    window: DEFAULT_RETRY_WINDOW,
                },
                visibility_timeout: rt.visibility_timeout,
                sweep_interval: rt.sweep_interval,
                max_deliveries: rt.max_deliveries,
                shutdown_grace: rt.shutdown_grace,
                clock: Arc::new(SystemClock),
            }),
            cache_ttl: rt.cache_ttl,
        })
    }
}

impl Cli {
    /// Parses the command line; no subcommand means `serve` with its
    /// environment variables and defaults applied.
    pub fn parse_with_default() -> Self {
        let cli = Self::parse();
        if cli.command.is_some() {
            return cli;
        }
        Self::parse_from(std::env::args_os().chain([std::ffi::OsString::from("serve")]))
    }
}

impl GlobalArgs {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("herald.db").display()
            )
        })
    }
}

/// The JWT key: `JWT_SECRET` when set; required for Postgres; otherwise the
/// embedded key file, created once so tokens survive restarts.
fn resolve_jwt_secret(
    given: Option<SecretString>,
    kind: DatabaseKind,
    data_dir: &Path,
) -> anyhow::Result<SecretBox<[u8]>> {
    match (given, kind) {
        (Some(secret), _) => {
            let bytes = secret.expose_secret().as_bytes();
            anyhow::ensure!(
                bytes.len() >= MIN_SECRET_LEN,
                "JWT_SECRET is {} bytes; it must be at least {MIN_SECRET_LEN} (try: openssl rand -hex 32)",
                bytes.len()
            );
            Ok(SecretBox::new(bytes.into()))
        }
        (None, DatabaseKind::Postgres) => anyhow::bail!(
            "JWT_SECRET is required when DATABASE_URL is Postgres: set it to at least {MIN_SECRET_LEN} random bytes (try: openssl rand -hex 32)"
        ),
        (None, DatabaseKind::Sqlite) => load_or_create_key_file(&data_dir.join("jwt.key")),
    }
}

/// Reads the hex key in `path`, or creates it with 32 random bytes, mode 0600.
/// Two processes starting at once agree: only one `create_new` wins.
fn load_or_create_key_file(path: &Path) -> anyhow::Result<SecretBox<[u8]>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let mut key = [0u8; MIN_SECRET_LEN];
            rand::Rng::fill(&mut rand::rng(), &mut key[..]);
            file.write_all(hex::encode(key).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new JWT signing key");
            Ok(SecretBox::new(Box::new(key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let key = hex::decode(text.trim())
                .ok()
                .filter(|k| k.len() >= MIN_SECRET_LEN)
                .with_context(|| {
                    format!(
                        "{} must hold at least {MIN_SECRET_LEN} hex-encoded bytes; delete it to make a new key (all tokens become invalid)",
                        path.display()
                    )
                })?;
            Ok(SecretBox::new(key.into_boxed_slice()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Parses `90`, `250ms`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (e.g. 3600, 90s, 15m, 1h, 7d)"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "{raw:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if duration.is_zero() {
        return Err("a duration must be positive".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn postgres_without_a_secret_is_refused() {
        let dir = std::env::temp_dir();
        let err = resolve_jwt_secret(None, DatabaseKind::Postgres, &dir).expect_err("refused");
        assert!(err.to_string().contains("JWT_SECRET is required"));
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = std::env::temp_dir();
        let short = SecretString::from("too short");
        assert!(resolve_jwt_secret(Some(short), DatabaseKind::Sqlite, &dir).is_err());
    }

    #[test]
    fn the_embedded_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = resolve_jwt_secret(None, DatabaseKind::Sqlite, dir.path()).expect("created");
        let second = resolve_jwt_secret(None, DatabaseKind::Sqlite, dir.path()).expect("read");
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), MIN_SECRET_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("jwt.key"))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_cli_defaults_to_serve_and_reads_flags() {
        let cli = Cli::try_parse_from(["herald"]).expect("parses");
        assert!(cli.command.is_none());
        let cli =
            Cli::try_parse_from(["herald", "serve", "--bind", "0.0.0.0:9000", "--no-migrate"])
                .expect("parses");
        match cli.command {
            Some(Command::Serve(args)) => {
                assert_eq!(args.bind, SocketAddr::from(([0, 0, 0, 0], 9000)));
                assert_eq!(args.jwt_ttl, Duration::from_secs(3600));
                assert!(args.runtime.no_migrate);
                assert_eq!(args.runtime.redis_prefix, "herald:");
                assert_eq!(args.runtime.worker_concurrency, 16);
            }
            other => panic!("expected serve, got {other:?}"),
        }
    }
}
