//! The command line: subcommands, flags and their environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use super::defaults;

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
    /// Manage the API keys applications authenticate with.
    #[command(subcommand)]
    ApiKey(ApiKeyAction),
    /// Manage the endpoints signed status webhooks are sent to.
    #[command(subcommand)]
    Webhook(WebhookAction),
}

#[derive(Debug, Clone, Subcommand)]
pub enum ApiKeyAction {
    /// Make a key; its secret is printed alone on standard output, once.
    Create {
        /// The application's name, for `list`.
        name: String,
    },
    /// List the keys: id, name, the secret's first characters, created,
    /// last used, revoked. Never a secret.
    List,
    /// Revoke a key: it stops working on every instance within 2 s.
    Revoke {
        /// The key's id, as `list` shows it.
        id: i64,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum WebhookAction {
    /// Register an endpoint; its signing secret (`whsec_…`) is printed alone
    /// on standard output, once.
    Create {
        /// Where events are POSTed: an http or https URL. Where it points
        /// is checked at each delivery (private addresses are refused unless
        /// HERALD_WEBHOOK_ALLOW_PRIVATE=true).
        #[arg(value_parser = crate::webhooks::parse_url)]
        url: url::Url,
        /// The events to send (default: all), separated by commas or
        /// spaces: notification.sent, notification.failed,
        /// notification.skipped, notification.canceled,
        /// notification.expired, notification.read.
        #[arg(long, num_args = 1.., value_parser = crate::webhooks::EventSet::parse)]
        events: Vec<crate::webhooks::EventSet>,
    },
    /// List the endpoints: id, URL, events, state. Never a secret.
    List,
    /// Delete an endpoint, with the events still waiting for it.
    Delete {
        /// The endpoint's id, as `list` shows it.
        id: i64,
    },
    /// Enable an endpoint that was disabled after a day of failures.
    Enable {
        /// The endpoint's id, as `list` shows it.
        id: i64,
    },
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Folder for embedded-mode state: the SQLite file and jwt.key.
    #[arg(
        long,
        env = "HERALD_DATA_DIR",
        default_value = defaults::DATA_DIR,
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
    #[arg(long, env = "HERALD_BIND", default_value = defaults::BIND)]
    pub bind: SocketAddr,
    /// HS256 signing secret, at least 32 bytes. Required with Postgres; in
    /// embedded mode it defaults to <data dir>/jwt.key, created on first start.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Token lifetime: seconds, or a number with ms, s, m, h or d.
    #[arg(long, env = "JWT_TTL", default_value = defaults::JWT_TTL.text, value_parser = defaults::JWT_TTL.parser())]
    pub jwt_ttl: Duration,
    /// How long `inboxChanges` tells a polling client to wait (its
    /// `pollInterval`).
    #[arg(long, env = "HERALD_POLL_INTERVAL", default_value = defaults::POLL_INTERVAL.text, value_parser = defaults::POLL_INTERVAL.parser())]
    pub poll_interval: Duration,
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
    /// Keep whole responses of users' inbox queries (`notifications`,
    /// `inbox`, `inboxChanges`, `inboxCounts`) by the user's last seq, and
    /// serve a repeat without running it; GETs get an ETag.
    #[arg(long, env = "HERALD_RESPONSE_CACHE", value_enum, default_value_t = defaults::RESPONSE_CACHE)]
    pub response_cache: Switch,
    /// How long a persisted query (APQ) is kept after it was registered.
    #[arg(long, env = "HERALD_PERSISTED_QUERY_TTL", default_value = defaults::PERSISTED_QUERY_TTL.text, value_parser = defaults::PERSISTED_QUERY_TTL.parser())]
    pub persisted_query_ttl: Duration,
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
    #[arg(long, env = "HERALD_WS_MAX_SUBSCRIPTIONS", default_value_t = defaults::WS_MAX_SUBSCRIPTIONS.default, value_parser = defaults::WS_MAX_SUBSCRIPTIONS.parser())]
    pub ws_max_subscriptions: usize,
    /// Open websockets per user, per instance.
    #[arg(long, env = "HERALD_WS_MAX_SOCKETS_PER_USER", default_value_t = defaults::WS_MAX_SOCKETS_PER_USER.default, value_parser = defaults::WS_MAX_SOCKETS_PER_USER.parser())]
    pub ws_max_sockets_per_user: usize,
    /// Concurrent sends stored together in one transaction, with the
    /// worker's claims and outcomes of the same users (group commit; a batch
    /// holds at most this or --worker-batch changes, the larger); 1 stores
    /// each send alone.
    #[arg(long, env = "HERALD_SEND_BATCH", default_value_t = defaults::SEND_BATCH.default, value_parser = defaults::SEND_BATCH.parser())]
    pub send_batch: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// A feature turned `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Self::On
    }
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
    #[arg(long, env = "HERALD_MAX_DEPTH", default_value_t = defaults::MAX_DEPTH.default, value_parser = defaults::MAX_DEPTH.parser())]
    pub max_depth: usize,
    /// Query complexity: each field costs 1, a page of notifications its pageSize.
    #[arg(long, env = "HERALD_MAX_COMPLEXITY", default_value_t = defaults::MAX_COMPLEXITY.default, value_parser = defaults::MAX_COMPLEXITY.parser())]
    pub max_complexity: usize,
    /// Aliases in one operation document.
    #[arg(long, env = "HERALD_MAX_ALIASES", default_value_t = defaults::MAX_ALIASES.default, value_parser = defaults::MAX_ALIASES.parser())]
    pub max_aliases: usize,
    /// Directives on one field.
    #[arg(long, env = "HERALD_MAX_DIRECTIVES", default_value_t = defaults::MAX_DIRECTIVES.default, value_parser = defaults::MAX_DIRECTIVES.parser())]
    pub max_directives: usize,
    /// Recursive depth of the document (fragments included).
    #[arg(long, env = "HERALD_MAX_RECURSIVE_DEPTH", default_value_t = defaults::MAX_RECURSIVE_DEPTH.default, value_parser = defaults::MAX_RECURSIVE_DEPTH.parser())]
    pub max_recursive_depth: usize,
    /// Query text, in bytes.
    #[arg(long, env = "HERALD_MAX_QUERY_BYTES", default_value_t = defaults::MAX_QUERY_BYTES.default, value_parser = defaults::MAX_QUERY_BYTES.parser())]
    pub max_query_bytes: usize,
    /// Operations in one batched request.
    #[arg(long, env = "HERALD_MAX_BATCH", default_value_t = defaults::MAX_BATCH.default, value_parser = defaults::MAX_BATCH.parser())]
    pub max_batch: usize,
    /// Execution time of one operation.
    #[arg(long, env = "HERALD_REQUEST_TIMEOUT", default_value = defaults::REQUEST_TIMEOUT.text, value_parser = defaults::REQUEST_TIMEOUT.parser())]
    pub request_timeout: Duration,
}

/// Rate limits (see README, Security); they hold across instances through Redis.
#[derive(Debug, Args)]
pub struct RateLimitArgs {
    /// Failed logins per account per 15 minutes.
    #[arg(long, env = "HERALD_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = defaults::LOGIN_FAILURES_PER_ACCOUNT.default, value_parser = defaults::LOGIN_FAILURES_PER_ACCOUNT.parser())]
    pub login_failures_per_account: u64,
    /// Failed logins per client address per 15 minutes.
    #[arg(long, env = "HERALD_LOGIN_FAILURES_PER_IP", default_value_t = defaults::LOGIN_FAILURES_PER_IP.default, value_parser = defaults::LOGIN_FAILURES_PER_IP.parser())]
    pub login_failures_per_ip: u64,
    /// Registrations per client address per hour.
    #[arg(long, env = "HERALD_REGISTER_PER_IP", default_value_t = defaults::REGISTER_PER_IP.default, value_parser = defaults::REGISTER_PER_IP.parser())]
    pub register_per_ip: u64,
    /// Notifications a user may send per minute, steadily.
    #[arg(long, env = "HERALD_SEND_PER_MINUTE", default_value_t = defaults::SEND_PER_MINUTE.default, value_parser = defaults::SEND_PER_MINUTE.parser())]
    pub send_per_minute: u64,
    /// Notifications a user may send at once.
    #[arg(long, env = "HERALD_SEND_BURST", default_value_t = defaults::SEND_BURST.default, value_parser = defaults::SEND_BURST.parser())]
    pub send_burst: u64,
    /// Notifications an application (one API key) may send per second, steadily.
    #[arg(long, env = "HERALD_APP_SEND_PER_SECOND", default_value_t = defaults::APP_SEND_PER_SECOND.default, value_parser = defaults::APP_SEND_PER_SECOND.parser())]
    pub app_send_per_second: u64,
    /// Notifications an application (one API key) may send at once.
    #[arg(long, env = "HERALD_APP_SEND_BURST", default_value_t = defaults::APP_SEND_BURST.default, value_parser = defaults::APP_SEND_BURST.parser())]
    pub app_send_burst: u64,
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
    #[arg(long, env = "HERALD_REDIS_PREFIX", default_value = defaults::REDIS_PREFIX)]
    pub redis_prefix: String,
    /// smtp://[user:pass@]host:port[?tls=starttls] or smtps://…
    /// Unset: emails are written as .eml files to <data dir>/outbox/.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// A PEM file of CA certificates to trust for the SMTP server's TLS
    /// certificate, besides the public roots (a private CA, or a
    /// self-signed certificate).
    #[arg(long, env = "SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// The From of every email.
    #[arg(long, env = "SMTP_FROM", default_value = defaults::SMTP_FROM)]
    pub smtp_from: String,
    /// How long one send may take before it counts as a transient failure.
    #[arg(long, env = "SMTP_TIMEOUT", default_value = defaults::SMTP_TIMEOUT.text, value_parser = defaults::SMTP_TIMEOUT.parser())]
    pub smtp_timeout: Duration,
    /// Deliveries that claim and send at once, per process, and the SMTP
    /// connections kept; a job whose mail is sent gives its place up while
    /// its outcome is stored, up to 4x this many jobs in all.
    #[arg(long, env = "HERALD_WORKER_CONCURRENCY", default_value_t = defaults::WORKER_CONCURRENCY.default, value_parser = defaults::WORKER_CONCURRENCY.parser())]
    pub worker_concurrency: usize,
    /// A worker's concurrent claims and outcomes stored together in one
    /// transaction (group commit); in `serve`, with the sends of the same
    /// users, a batch holding at most this or --send-batch changes, the
    /// larger. 1 stores each alone.
    #[arg(long, env = "HERALD_WORKER_BATCH", default_value_t = defaults::WORKER_BATCH.default, value_parser = defaults::WORKER_BATCH.parser())]
    pub worker_batch: usize,
    /// Delivery attempts in all, at most: a bound under the retry window
    /// (attempts that found the mail server unreachable do not count).
    #[arg(long, env = "HERALD_MAX_ATTEMPTS", default_value_t = defaults::MAX_ATTEMPTS.default, value_parser = defaults::MAX_ATTEMPTS.parser())]
    pub max_attempts: i32,
    /// Backoff after the first failed attempt; doubles each time, with jitter.
    #[arg(long, env = "HERALD_RETRY_BASE", default_value = defaults::RETRY_BASE.text, value_parser = defaults::RETRY_BASE.parser())]
    pub retry_base: Duration,
    /// The longest backoff, and the longest wait between probes of an
    /// unreachable mail server.
    #[arg(long, env = "HERALD_RETRY_MAX", default_value = defaults::RETRY_MAX.text, value_parser = defaults::RETRY_MAX.parser())]
    pub retry_max: Duration,
    /// How long after its creation a notification refused with 4xx is
    /// still retried.
    #[arg(long, env = "HERALD_RETRY_WINDOW", default_value = defaults::RETRY_WINDOW.text, value_parser = defaults::RETRY_WINDOW.parser())]
    pub retry_window: Duration,
    /// A claim or queue entry older than this is taken to belong to a dead
    /// worker. Must exceed SMTP_TIMEOUT.
    #[arg(long, env = "HERALD_VISIBILITY_TIMEOUT", default_value = defaults::VISIBILITY_TIMEOUT.text, value_parser = defaults::VISIBILITY_TIMEOUT.parser())]
    pub visibility_timeout: Duration,
    /// How often the sweeper looks for lost or due work.
    #[arg(long, env = "HERALD_SWEEP_INTERVAL", default_value = defaults::SWEEP_INTERVAL.text, value_parser = defaults::SWEEP_INTERVAL.parser())]
    pub sweep_interval: Duration,
    /// How often the scheduler looks for SCHEDULED notifications that are
    /// due (a send goes out within about this of its sendAt).
    #[arg(long, env = "HERALD_SCHEDULE_INTERVAL", default_value = defaults::SCHEDULE_INTERVAL.text, value_parser = defaults::SCHEDULE_INTERVAL.parser())]
    pub schedule_interval: Duration,
    /// How long inbox events are kept for `inboxChanges` and `inboxEvents`
    /// to replay; older ones are pruned (each user's last stays).
    #[arg(long, env = "HERALD_EVENT_RETENTION", default_value = defaults::EVENT_RETENTION.text, value_parser = defaults::EVENT_RETENTION.parser())]
    pub event_retention: Duration,
    /// How long an idempotency key holds at least: a repeat within it
    /// returns the first send's notification. Older keys are pruned.
    #[arg(long, env = "HERALD_IDEMPOTENCY_TTL", default_value = defaults::IDEMPOTENCY_TTL.text, value_parser = defaults::IDEMPOTENCY_TTL.parser())]
    pub idempotency_ttl: Duration,
    /// Webhook deliveries in flight at once, per process: a limit of their
    /// own, so a slow or hanging receiver never holds up email.
    #[arg(long, env = "HERALD_WEBHOOK_CONCURRENCY", default_value_t = defaults::WEBHOOK_CONCURRENCY.default, value_parser = defaults::WEBHOOK_CONCURRENCY.parser())]
    pub webhook_concurrency: usize,
    /// Backoff after a webhook's first failed attempt; doubles each time,
    /// with jitter, up to an hour, for a day.
    #[arg(long, env = "HERALD_WEBHOOK_RETRY_BASE", default_value = defaults::WEBHOOK_RETRY_BASE.text, value_parser = defaults::WEBHOOK_RETRY_BASE.parser())]
    pub webhook_retry_base: Duration,
    /// How long one webhook attempt may take (connection and answer); at
    /// most HERALD_VISIBILITY_TIMEOUT, so an attempt never outlives its claim.
    #[arg(long, env = "HERALD_WEBHOOK_TIMEOUT", default_value = defaults::WEBHOOK_TIMEOUT.text, value_parser = defaults::WEBHOOK_TIMEOUT.parser())]
    pub webhook_timeout: Duration,
    /// Deliver webhooks to loopback, private and link-local addresses too
    /// (turns the SSRF protection off: for tests and trusted networks).
    #[arg(long, env = "HERALD_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Queue deliveries of one entry before it goes to the dead letters.
    #[arg(long, env = "HERALD_MAX_DELIVERIES", default_value_t = defaults::MAX_DELIVERIES.default, value_parser = defaults::MAX_DELIVERIES.parser())]
    pub max_deliveries: u64,
    /// After SIGTERM/SIGINT: how long in-flight requests and deliveries get
    /// before deliveries are put back for another worker.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", default_value = defaults::SHUTDOWN_GRACE.text, value_parser = defaults::SHUTDOWN_GRACE.parser())]
    pub shutdown_grace: Duration,
    /// Categories always mailed, whatever their recipient's preferences
    /// say (comma-separated, e.g. `security,billing`).
    #[arg(long, env = "HERALD_CRITICAL_CATEGORIES", value_delimiter = ',')]
    pub critical_categories: Vec<String>,
    /// How long a cached page of `notifications` lives.
    #[arg(long, env = "HERALD_CACHE_TTL", default_value = defaults::CACHE_TTL.text, value_parser = defaults::CACHE_TTL.parser())]
    pub cache_ttl: Duration,
    /// Serve Prometheus metrics on this address, at GET /metrics (a
    /// listener of its own). Unset: no metrics listener.
    #[arg(long, env = "HERALD_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
