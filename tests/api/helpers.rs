//! Starting Herald for a test, one isolated database each, and talking to it.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use herald::{
    app,
    config::{Config, RedisSettings},
    pubsub::EventBus,
    storage::QueryStats,
};
use migration::MigratorTrait as _;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The JWT secret every test server signs with, so tests can forge tokens.
pub const TEST_SECRET: &[u8] = b"test-secret-test-secret-test-secret!!";
pub const PASSWORD: &str = "correct horse battery staple";

/// Where a test's Herald keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// What runs its queue, cache, events, rate limits and revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    InProcess,
    /// Redis, under a key prefix of the test's own.
    Redis,
}

/// The backend matrix: every database with every kind of services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded mode: SQLite, in-process services.
    Sqlite,
    /// Services mode: Postgres and Redis.
    Postgres,
    /// SQLite with Redis.
    SqliteRedis,
    /// Postgres with in-process services.
    PostgresInProcess,
}

impl Backend {
    pub fn db(self) -> Db {
        match self {
            Self::Sqlite | Self::SqliteRedis => Db::Sqlite,
            Self::Postgres | Self::PostgresInProcess => Db::Postgres,
        }
    }

    pub fn services(self) -> Services {
        match self {
            Self::Sqlite | Self::PostgresInProcess => Services::InProcess,
            Self::Postgres | Self::SqliteRedis => Services::Redis,
        }
    }
}

/// One `#[tokio::test]` per listed backend, each calling `$run(backend)`:
/// `on_backends!(run; sqlite => Sqlite, postgres => Postgres)`.
#[macro_export]
macro_rules! on_backends {
    ($run:path; $($test:ident => $backend:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $run($crate::helpers::Backend::$backend).await;
            }
        )+
    };
}

/// [`on_backends!`] on the whole matrix: `sqlite`, `postgres`,
/// `sqlite_redis` and `postgres_in_process`.
#[macro_export]
macro_rules! on_every_backend {
    ($run:path) => {
        $crate::on_backends!($run;
            sqlite => Sqlite,
            postgres => Postgres,
            sqlite_redis => SqliteRedis,
            postgres_in_process => PostgresInProcess,
        );
    };
}

/// A module `$name` of tests that each start a `TestApp` and run
/// `$body(&app)`, one per backend that `$matrix!` (`on_backends!` with its
/// list, or `on_every_backend!`) names.
#[macro_export]
macro_rules! app_tests {
    ($name:ident, $body:ident, $matrix:ident $(; $($list:tt)+)?) => {
        mod $name {
            async fn run(backend: $crate::helpers::Backend) {
                if let Some(app) = $crate::helpers::TestApp::spawn(backend).await {
                    super::$body(&app).await;
                }
            }

            $crate::$matrix!(run $(; $($list)+)?);
        }
    };
}

/// Runs one async test body on each mode: `both_backends!(name, body_fn)`
/// makes `name::sqlite` (embedded) and `name::postgres` (services).
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        $crate::app_tests!($name, $body, on_backends; sqlite => Sqlite, postgres => Postgres);
    };
}

/// A migration test on both databases: `upgrade_tests!(name, upgrade_fn)`
/// makes `name::sqlite` (a file in a temporary directory) and
/// `name::postgres` (an empty database of its own), each calling
/// `upgrade_fn(url)`.
#[macro_export]
macro_rules! upgrade_tests {
    ($name:ident, $upgrade:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
                super::$upgrade(&url).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = $crate::helpers::PgDatabase::create_empty().await {
                    super::$upgrade(&db.url).await;
                }
            }
        }
    };
}

/// [`both_backends!`] on the whole matrix (see [`on_every_backend!`]).
#[macro_export]
macro_rules! every_backend {
    ($name:ident, $body:ident) => {
        $crate::app_tests!($name, $body, on_every_backend);
    };
}

/// Like `both_backends!`, with no worker: no delivery status changes, so
/// the test knows every seq.
#[macro_export]
macro_rules! without_worker {
    ($name:ident, $body:ident) => {
        mod $name {
            async fn run(backend: $crate::helpers::Backend) {
                if let Some(app) =
                    $crate::helpers::TestApp::spawn_with(backend, |c| c.worker = None).await
                {
                    super::$body(&app).await;
                }
            }

            $crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
        }
    };
}

/// A running Herald with its own database (and, with Redis, its own key
/// prefix), stopped when dropped; the database goes with the last user.
pub struct TestApp {
    pub url: String,
    /// `http://…/metrics`, when the config set `metrics_bind`.
    pub metrics_url: Option<String>,
    pub client: reqwest::Client,
    pub stats: Arc<QueryStats>,
    pub events: Arc<dyn EventBus>,
    pub hasher: Option<herald::auth::PasswordHasher>,
    /// The rate limiter, with in-process services.
    pub limiter: Option<Arc<herald::ratelimit::InProcessRateLimiter>>,
    pub database_url: String,
    pub redis: Option<RedisPrefix>,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    storage: Arc<Storage>,
}

/// What holds the test's database; dropping it deletes the database.
enum Storage {
    Sqlite { _dir: tempfile::TempDir },
    Postgres(PgDatabase),
}

/// Delivery to the SMTP server at `smtp_url`, with no background sweeps (so
/// a test's statement counts stay exact) and a claim that outlives a held
/// message.
pub fn quiet_worker(config: &mut Config, smtp_url: String) {
    config.mail.smtp_url = Some(SecretString::from(smtp_url));
    config.mail.timeout = Duration::from_secs(15);
    if let Some(w) = config.worker.as_mut() {
        w.sweep_interval = Duration::from_secs(3600);
        w.schedule_interval = Duration::from_secs(3600);
        w.visibility_timeout = Duration::from_secs(30);
    }
}

/// Settings that make delivery observable within a test's time: quick
/// sweeps and retries, a short visibility timeout.
pub fn fast_worker(config: &mut Config) {
    if let Some(w) = config.worker.as_mut() {
        w.sweep_interval = Duration::from_millis(200);
        w.visibility_timeout = Duration::from_secs(5);
        w.retry.base = Duration::from_millis(100);
        w.retry.max_delay = Duration::from_millis(400);
        w.shutdown_grace = Duration::from_secs(2);
    }
    config.mail.timeout = Duration::from_secs(3);
    // Tests send and fail logins in bulk; the rate-limit tests set their own.
    if let Some(http) = config.http.as_mut() {
        http.rate_limits = unlimited();
    }
}

pub fn unlimited() -> herald::ratelimit::RateLimits {
    use herald::ratelimit::{Bucket, RateLimits, Window};
    let many = Window {
        limit: u64::MAX,
        window: Duration::from_secs(60),
    };
    RateLimits {
        login_failures_per_account: many,
        login_failures_per_ip: many,
        registrations_per_ip: many,
        sends_per_user: Bucket {
            per_minute: 6_000_000,
            burst: 1_000_000,
        },
        sends_per_app: Bucket {
            per_minute: 6_000_000,
            burst: 1_000_000,
        },
    }
}

impl TestApp {
    /// `None` when the backend is unavailable and the test may be skipped.
    /// Redis services run under a key prefix of the test's own.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let redis = match backend.services() {
            Services::InProcess => None,
            Services::Redis => Some(RedisPrefix::new().await?),
        };
        let (database_url, storage, data_dir) = match backend.db() {
            Db::Sqlite => {
                let data = tempfile::tempdir().expect("tempdir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    data.path().join("herald.db").display()
                );
                let dir = data.path().to_path_buf();
                (url, Storage::Sqlite { _dir: data }, dir)
            }
            Db::Postgres => {
                let db = PgDatabase::create().await?;
                let dir = std::env::temp_dir()
                    .join(format!("herald-test-{}", uuid::Uuid::new_v4().simple()));
                (db.url.clone(), Storage::Postgres(db), dir)
            }
        };
        let mut config = Config::embedded(database_url, data_dir, TEST_SECRET);
        config.redis = redis.as_ref().map(RedisPrefix::settings);
        fast_worker(&mut config);
        tweak(&mut config);
        Some(Self::start(config, Arc::new(storage), redis).await)
    }

    /// Another instance on this one's database and Redis prefix (services
    /// mode), configured by `tweak`.
    pub async fn spawn_sibling(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::embedded(
            self.database_url.clone(),
            self.data_dir.clone(),
            TEST_SECRET,
        );
        config.redis = self.redis.as_ref().map(RedisPrefix::settings);
        fast_worker(&mut config);
        tweak(&mut config);
        Self::start(config, self.storage.clone(), self.redis.clone()).await
    }

    async fn start(config: Config, storage: Arc<Storage>, redis: Option<RedisPrefix>) -> Self {
        let database_url = config.database_url.clone();
        let data_dir = config.data_dir.clone();
        let application = app::build(config).await.expect("app builds");
        let url = application
            .local_addr()
            .map(|addr| format!("http://{addr}"))
            .unwrap_or_default();
        let metrics_url = application
            .metrics_addr()
            .map(|addr| format!("http://{addr}/metrics"));
        let stats = application.query_stats();
        let events = application.events();
        let hasher = application.hasher();
        let limiter = application.in_process_limiter();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            application
                .run_until_stopped(token)
                .await
                .expect("server runs");
        });
        Self {
            url,
            metrics_url,
            client: reqwest::Client::new(),
            stats,
            events,
            hasher,
            limiter,
            database_url,
            redis,
            data_dir,
            shutdown,
            server: Some(server),
            storage,
        }
    }

    /// Stops the server (and its worker) and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.url)
    }

    /// POSTs one operation; returns the response body.
    pub async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut req = self
            .client
            .post(self.graphql_url())
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("request");
        assert_eq!(
            res.status(),
            200,
            "GraphQL over application/json answers 200"
        );
        crate::leaks::json_body(res).await
    }

    /// A fresh account named after `name`: its token and user id.
    pub async fn account(&self, name: &str) -> (String, i64) {
        let body = self.register(&unique_email(name), PASSWORD).await;
        let token = body["data"]["register"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {body}"))
            .to_owned();
        let user_id = body["data"]["register"]["user"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no user id: {body}"));
        (token, user_id)
    }

    pub async fn register(&self, email: &str, password: &str) -> Value {
        self.gql(
            "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token user { id email createdAt } } }",
            json!({ "e": email, "p": password }),
            None,
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        self.gql(
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token user { id email } } }",
            json!({ "e": email, "p": password }),
            None,
        )
        .await
    }

    /// Registers `email` and returns its token.
    pub async fn token_for(&self, email: &str) -> String {
        let body = self.register(email, PASSWORD).await;
        body["data"]["register"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("register failed: {body}"))
            .to_owned()
    }

    pub async fn me(&self, token: Option<&str>) -> Value {
        self.gql("{ me { id email } }", json!({}), token).await
    }
}

impl Drop for TestApp {
    /// Stops the server and its worker before the database and the Redis
    /// prefix are cleaned up, so nothing writes behind the cleanup.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let Some(server) = self.server.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(tokio::time::timeout(Duration::from_secs(15), server));
            });
        }
    }
}

// ---- Redis: a key prefix per test, its keys deleted afterwards ----

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis key prefix of one test's own. Never FLUSHDB: on drop, the keys
/// under the prefix are deleted (the last clone does it).
#[derive(Clone)]
pub struct RedisPrefix {
    pub prefix: String,
    _cleanup: Arc<RedisCleanup>,
}

struct RedisCleanup(String);

impl RedisPrefix {
    /// `None` when Redis is unavailable and the test may be skipped.
    pub async fn new() -> Option<Self> {
        let url = redis_url();
        let reachable = async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        if tokio::time::timeout(Duration::from_secs(5), reachable)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            skip_or_fail(&format!("Redis at {url}"), "no PONG");
            return None;
        }
        let prefix = format!("herald-test-{}:", uuid::Uuid::new_v4().simple());
        Some(Self {
            _cleanup: Arc::new(RedisCleanup(prefix.clone())),
            prefix,
        })
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: SecretString::from(redis_url()),
            prefix: self.prefix.clone(),
        }
    }
}

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(redis_url()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        })
        .join();
    }
}

/// A missing service: a loud skip on a developer machine, a failure when
/// `HERALD_REQUIRE_SERVICES=1`.
pub fn skip_or_fail(what: &str, why: &str) {
    if services_required() {
        panic!("HERALD_REQUIRE_SERVICES=1 but {what} is unreachable: {why}");
    }
    // Straight to stderr, past the test harness's output capture, so the
    // skip shows even though the test passes.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED a services test: {what} is unreachable ({why}).\n!!! Start it, or set TEST_DATABASE_URL / TEST_REDIS_URL; HERALD_REQUIRE_SERVICES=1 makes this a failure.\n"
    );
}

/// The `extensions.code` of the first error, if any.
pub fn error_code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// Asserts `body` is BAD_USER_INPUT with a message that starts with
/// `field:` (every bound names its field); `what` labels a failure.
pub fn assert_bad_input_naming(body: &Value, field: &str, what: &dyn std::fmt::Display) {
    assert_eq!(error_code(body), Some("BAD_USER_INPUT"), "{what}: {body}");
    let message = error_message(body).unwrap_or_default();
    assert!(
        message.starts_with(&format!("{field}:")),
        "{what}: names {field}: {message}"
    );
}

pub fn error_message(body: &Value) -> Option<&str> {
    body["errors"][0]["message"].as_str()
}

/// A unique, valid email for one test.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

// ---- Postgres: one database per test, cloned from a migrated template ----

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn services_required() -> bool {
    std::env::var("HERALD_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// The URL of database `name` on the admin URL's server.
pub fn database_url(name: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

/// Connects to the admin database, or reports why not: a skip on a developer
/// machine, a failure when services are required.
async fn admin() -> Option<DatabaseConnection> {
    let url = admin_url();
    let attempt = tokio::time::timeout(Duration::from_secs(5), Database::connect(&url)).await;
    match attempt {
        Ok(Ok(db)) => Some(db),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            skip_or_fail(&format!("Postgres at {url}"), &why);
            None
        }
    }
}

/// The migrated template every test database is cloned from. Its name
/// carries the migration list, so adding a migration makes a new template;
/// it is kept between runs.
async fn template(admin: &DatabaseConnection) -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    let name = NAME
        .get_or_init(|| {
            let names: Vec<String> = migration::Migrator::migrations()
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in names.join(",").bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            format!("herald_template_{hash:016x}")
        })
        .clone();
    let exists = admin
        .query_one_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        ))
        .await
        .expect("query pg_database")
        .is_some();
    if exists {
        return name;
    }
    // Build under a private name, then publish with one rename, so
    // concurrent test processes never clone a half-migrated template.
    let building = format!("herald_building_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {building}"))
        .await
        .expect("create template");
    {
        let db = Database::connect(database_url(&building))
            .await
            .expect("connect template");
        migration::Migrator::up(&db, None)
            .await
            .expect("migrate template");
        db.close().await.expect("close template");
    }
    if admin
        .execute_unprepared(&format!("ALTER DATABASE {building} RENAME TO {name}"))
        .await
        .is_err()
    {
        // Another process published it first.
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {building}"))
            .await;
    }
    name
}

/// A database of its own for one test, dropped on drop.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Option<Self> {
        let admin = admin().await?;
        let template = template(&admin).await;
        let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
        // A clone fails while anyone is connected to the template; a
        // concurrent clone briefly counts, so retry.
        let mut attempts = 0;
        loop {
            match admin
                .execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .await
            {
                Ok(_) => break,
                Err(e) if attempts < 50 && e.to_string().contains("being accessed") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("creating {name} from {template}: {e}"),
            }
        }
        let _ = admin.close().await;
        Some(Self {
            url: database_url(&name),
            name,
        })
    }

    /// An empty database, with no migration applied (migration tests).
    pub async fn create_empty() -> Option<Self> {
        let admin = admin().await?;
        let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let _ = admin.close().await;
        Some(Self {
            url: database_url(&name),
            name,
        })
    }

    /// Drops the database now, disconnecting everyone (`/readyz` tests).
    pub async fn drop_now(name: &str) {
        let admin = Database::connect(admin_url()).await.expect("admin");
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop database");
        let _ = admin.close().await;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs outside async; a short-lived runtime on its own thread
        // does the cleanup.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(PgDatabase::drop_now(&name));
        })
        .join();
    }
}

impl TestApp {
    /// The Postgres database name, for tests that break it on purpose.
    pub fn pg_database(&self) -> Option<&str> {
        match self.storage.as_ref() {
            Storage::Postgres(db) => Some(&db.name),
            Storage::Sqlite { .. } => None,
        }
    }
}

// ---- Notifications ----

pub const NOTIFICATION_FIELDS: &str = "id title content status attempts lastError nextAttemptAt sentAt createdAt updatedAt recipient { id email }";

impl TestApp {
    /// Sends a notification to the caller; returns the response body.
    pub async fn send(&self, token: &str, title: &str, content: &str) -> Value {
        self.gql(
            &format!("mutation($t: String!, $c: String!) {{ sendNotification(input: {{title: $t, content: $c}}) {{ {NOTIFICATION_FIELDS} }} }}"),
            json!({ "t": title, "c": content }),
            Some(token),
        )
        .await
    }

    /// Sends and returns the new notification's id.
    pub async fn send_ok(&self, token: &str, title: &str, content: &str) -> String {
        let body = self.send(token, title, content).await;
        body["data"]["sendNotification"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("sendNotification failed: {body}"))
            .to_owned()
    }

    pub async fn notification(&self, token: &str, id: &str) -> Value {
        self.gql(
            &format!("query($id: ID!) {{ notification(id: $id) {{ {NOTIFICATION_FIELDS} }} }}"),
            json!({ "id": id }),
            Some(token),
        )
        .await
    }

    pub async fn page(&self, token: &str, page: i64, page_size: i64) -> Value {
        self.gql(
            &format!("query($p: Int!, $s: Int!) {{ notifications(page: $p, pageSize: $s) {{ page pageSize totalCount hasNextPage items {{ {NOTIFICATION_FIELDS} }} }} }}"),
            json!({ "p": page, "s": page_size }),
            Some(token),
        )
        .await
    }

    /// Polls `notification(id)` until its status is `status`; panics after
    /// `within`, showing the last state.
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let body = self.notification(token, id).await;
            let n = &body["data"]["notification"];
            if n["status"] == status {
                return n.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("notification {id} did not reach {status} within {within:?}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
