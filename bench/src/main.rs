//! `herald-bench`: measures a running Herald (release build, Postgres +
//! Redis + a fast SMTP sink) and prints a Markdown table.
//!
//! Every figure comes with a baseline measured in the same run, because the
//! machine is noisy: API figures against a `{ __typename }` query, the
//! worker against Postfix's `smtp-source` into the same sink.
//!
//! Phases (closed loop, `--concurrency` clients, `--duration` each):
//! 1. `{ __typename }` (baseline)
//! 2. `sendNotification`
//! 3. `notifications(page: 1, pageSize: 10)`, cached (the same page again)
//! 4. the inbox's phases (`inbox.rs`): `inboxChanges` with nothing new
//!    (also as a GET revalidated with its ETag: 304),
//!    `inbox(first: 20)` cached and uncached (small and large inboxes),
//!    the old list uncached (large inboxes), `markNotifications`
//! 5. worker: N PENDING rows inserted at once; notifications/s to SENT
//! 6. `smtp-source` into the same sink (baseline for 5)
//! 7. `--scheduled` N SCHEDULED rows falling due at once, against N PENDING
//!    rows inserted at once (7's baseline): the rates to SENT, as a ratio
//!
//! `--app-only`: application sends (`apps.rs`): with an API key to 1,000
//! `externalId`s against a user's send, and paced at `--app-rate`.
//!
//! `--live-only`: the memory of idle subscribers, send → SENT event
//! latency and the `inboxEvents` fan-out (`inbox::live_fanout`).

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

mod apps;
mod cost;
mod flood;
mod inbox;
mod seed;
mod ws;

#[derive(Debug, Parser)]
#[command(name = "herald-bench", about = "Benchmark a running Herald")]
struct Args {
    /// The GraphQL endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8000/graphql")]
    url: String,
    /// The database Herald uses (for the worker phase).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The Redis Herald uses (to drop cached page copies for the uncached phases).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Herald's key prefix.
    #[arg(long, env = "HERALD_REDIS_PREFIX", default_value = herald::config::defaults::REDIS_PREFIX)]
    redis_prefix: String,
    /// Concurrent clients per API phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of each API phase, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rows for the worker phase.
    #[arg(long, default_value_t = 5000)]
    notifications: u64,
    /// SCHEDULED rows falling due at once, against as many PENDING ones
    /// (delivery phases; 0 skips them).
    #[arg(long, default_value_t = 100_000)]
    scheduled: u64,
    /// host:port of the SMTP sink Herald sends to; runs `smtp-source` into it
    /// as the worker's baseline.
    #[arg(long)]
    smtp_sink: Option<String>,
    /// Parallel SMTP sessions for `smtp-source` (match HERALD_WORKER_CONCURRENCY).
    #[arg(long, default_value_t = 16)]
    smtp_sessions: u32,
    /// Run only the delivery phases (worker and smtp-source).
    #[arg(long)]
    delivery_only: bool,
    /// Run only the live phases: the server's memory per idle subscriber
    /// (`--pid`, `--sockets`), send → SENT event latency at `--rate`, and
    /// the inboxEvents fan-out (`--subscribers`, marks at `--rate`), both
    /// over `--live-users` users.
    #[arg(long)]
    live_only: bool,
    /// Run only the application sends (see `apps.rs`).
    #[arg(long)]
    app_only: bool,
    /// Application sends per second for the paced phase.
    #[arg(long, default_value_t = 1000)]
    app_rate: u64,
    /// Run only `{ __typename }`, the old list's cached page and the
    /// inbox's API phases.
    #[arg(long)]
    inbox_only: bool,
    /// Run only `{ __typename }` and the login flood's phases.
    #[arg(long)]
    flood_only: bool,
    /// Run only `{ __typename }` and the send phases (one user, then one
    /// user per client), each until delivered, with what it cost.
    #[arg(long)]
    send_only: bool,
    /// Sends (marks, for the fan-out) per second for the live phases.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// inboxEvents subscribers for the fan-out phase, spread evenly over
    /// `--live-users` users.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Users the live phases spread their sends and subscribers over.
    #[arg(long, default_value_t = 100)]
    live_users: usize,
    /// Notifications per user the mark phases toggle.
    #[arg(long, default_value_t = 100)]
    mark_ids: u64,
    /// Clients (each on a user of its own) for the uncached inbox phases.
    #[arg(long, default_value_t = 4)]
    uncached_clients: usize,
    /// The inbox sizes whose uncached first pages are compared.
    #[arg(long, default_value_t = 100)]
    small_inbox: u64,
    #[arg(long, default_value_t = 20_000)]
    big_inbox: u64,
    /// Herald's process id, to read its memory (VmRSS) for the socket phase.
    #[arg(long)]
    pid: Option<u32>,
    /// Idle subscribers to open for the memory phase, per kind of
    /// subscription (comma-separated counts; both kinds stay open together).
    #[arg(long, default_value = "1000,9000")]
    sockets: String,
    /// Clients logging in continuously for the login-flood phase (0 skips it).
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    /// Clients reading the cached page, idle and during the login flood.
    #[arg(long, default_value_t = 4)]
    flood_readers: usize,
    /// Herald's `/metrics` (HERALD_METRICS_BIND): the send and cached-page
    /// phases run again while a scraper reads it every 100 ms.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Appends each headline figure as `figure<TAB>value` to this file
    /// (`bench/run.sh --before-after` compares two of them).
    #[arg(long)]
    summary: Option<std::path::PathBuf>,
}

/// The headline figures (see `--summary`).
static SUMMARY: std::sync::Mutex<Vec<(String, f64)>> = std::sync::Mutex::new(Vec::new());

/// Records a headline figure for `--summary`.
fn figure(name: impl Into<String>, value: f64) {
    SUMMARY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((name.into(), value));
}

fn write_summary(args: &Args) -> anyhow::Result<()> {
    use std::io::Write as _;
    let Some(path) = &args.summary else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for (name, value) in SUMMARY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        writeln!(file, "{name}\t{value}")?;
    }
    Ok(())
}

/// Latencies of one phase.
struct Phase {
    name: String,
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
    /// CPU time the server used during the phase (with `--pid`).
    server_cpu: Option<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i].as_secs_f64() * 1000.0
    }

    /// Server CPU microseconds per successful request.
    fn cpu_per_request_us(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (!self.latencies.is_empty()).then(|| cpu.as_secs_f64() * 1e6 / self.latencies.len() as f64)
    }

    fn cpu_text(&self) -> String {
        self.cpu_per_request_us()
            .map_or("–".to_owned(), |us| format!("{us:.1}"))
    }
}

/// Prints the API phases against `base`.
fn api_table(base: &Phase, phases: &[Phase]) {
    println!(
        "| phase | requests | errors | req/s | p50 ms | p99 ms | vs `{{ __typename }}` | server CPU µs/req | per CPU second vs `{{ __typename }}` |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base_cpu = base.cpu_per_request_us();
    for phase in std::iter::once(base).chain(phases) {
        figure(
            format!("{}: req/s, % of `{{ __typename }}`'s", phase.name),
            100.0 * phase.rate() / base.rate(),
        );
        figure(format!("{}: p99 ms", phase.name), phase.percentile(0.99));
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0}% | {} | {} |",
            phase.name,
            phase.latencies.len(),
            phase.errors,
            phase.rate(),
            phase.percentile(0.50),
            phase.percentile(0.99),
            100.0 * phase.rate() / base.rate(),
            phase.cpu_text(),
            match (base_cpu, phase.cpu_per_request_us()) {
                (Some(base), Some(us)) => format!("{:.0}%", 100.0 * base / us),
                _ => "–".to_owned(),
            }
        );
    }
    println!();
}

/// CPU time (user + system) the process `pid` has used so far. Steadier
/// than requests per second on a shared machine: another process's load
/// slows the server down but hardly changes what a request costs it.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it start past ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, 100 per second on Linux.
    Some(Duration::from_millis(ticks * 10))
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn request(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A new user: their token and id.
    async fn register(&self) -> anyhow::Result<(Arc<str>, i64)> {
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        self.register_as(&email).await
    }

    /// A new user with `email` and the bench's password.
    async fn register_as(&self, email: &str) -> anyhow::Result<(Arc<str>, i64)> {
        let body = self
            .gql(
                "mutation($e: String!) { register(email: $e, password: \"benchmark password\") { token user { id } } }",
                json!({ "e": email }),
                None,
            )
            .await?;
        let token = body["data"]["register"]["token"]
            .as_str()
            .context("token")?
            .into();
        let id = body["data"]["register"]["user"]["id"]
            .as_str()
            .context("id")?
            .parse()?;
        Ok((token, id))
    }

    /// Sends and decodes; fails on GraphQL errors.
    async fn gql(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let req = self.request(query, variables, token);
        let body: Value = req.send().await?.error_for_status()?.json().await?;
        if let Some(errors) = body.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(body)
    }

    /// For timed calls: the body is checked for an `errors` entry without
    /// being parsed, so the client spends its share of the two cores on
    /// sending requests, not on decoding answers.
    async fn gql_ok(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> anyhow::Result<()> {
        self.gql_expect(query, variables, token, "").await
    }

    /// `gql_ok`, and the body must hold `needle` (a compact JSON fragment
    /// such as `"updated":1`).
    async fn gql_expect(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
        needle: &str,
    ) -> anyhow::Result<()> {
        let req = self.request(query, variables, token);
        let body = req.send().await?.error_for_status()?.bytes().await?;
        let holds = |s: &[u8]| s.is_empty() || body.windows(s.len()).any(|w| w == s);
        if holds(b"\"errors\"") {
            bail!("GraphQL errors: {}", String::from_utf8_lossy(&body));
        }
        if !holds(needle.as_bytes()) {
            bail!("no {needle} in {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

/// The old list's first page.
const LIST: &str = "{ notifications(page: 1, pageSize: 10) { totalCount hasNextPage items { id title status updatedAt recipient { email } } } }";

/// `closed_loop` numbers each client's calls from `client * SEQS_PER_WORKER`.
const SEQS_PER_WORKER: u64 = 1_000_000;

/// Runs `op` from `concurrency` clients for `duration`; `prepare` runs
/// before each timed call, outside the timing. Both get the call's number
/// (see `SEQS_PER_WORKER`).
async fn closed_loop<P, PF, O, OF>(
    name: impl Into<String>,
    server: Option<u32>,
    concurrency: usize,
    duration: Duration,
    prepare: P,
    op: O,
) -> Phase
where
    P: Fn(u64) -> PF + Send + Sync + 'static,
    PF: Future<Output = ()> + Send,
    O: Fn(u64) -> OF + Send + Sync + 'static,
    OF: Future<Output = anyhow::Result<()>> + Send,
{
    let prepare = Arc::new(prepare);
    let op = Arc::new(op);
    let cpu_before = server.and_then(cpu_time);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (prepare, op) = (prepare.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut seq = worker as u64 * SEQS_PER_WORKER;
            while Instant::now() < deadline {
                prepare(seq).await;
                let t = Instant::now();
                match op(seq).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                seq += 1;
            }
            (latencies, errors, first_error)
        }));
    }
    let mut phase = Phase {
        name: name.into(),
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        server_cpu: None,
    };
    let mut first_error = None;
    for task in tasks {
        if let Ok((l, e, first)) = task.await {
            phase.latencies.extend(l);
            phase.errors += e;
            first_error = first_error.or(first);
        }
    }
    if let Some(e) = first_error {
        eprintln!(
            "warning: {}: {} errors, the first: {e:#}",
            phase.name, phase.errors
        );
    }
    phase.elapsed = start.elapsed();
    phase.server_cpu = match (cpu_before, server.and_then(cpu_time)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    phase
}

/// The same request from `--concurrency` clients for `--duration`, as
/// `token`'s user; each answer must hold `needle` (see `gql_expect`).
async fn repeat(
    name: &str,
    args: &Args,
    client: &Arc<Client>,
    token: Option<Arc<str>>,
    (query, variables): (&'static str, Value),
    needle: &'static str,
) -> Phase {
    let c = client.clone();
    closed_loop(
        name,
        args.pid,
        args.concurrency,
        Duration::from_secs(args.duration),
        |_| async {},
        move |_| {
            let (c, t, v) = (c.clone(), token.clone(), variables.clone());
            async move { c.gql_expect(query, v, t.as_deref(), needle).await }
        },
    )
    .await
}

/// Waits (up to 10 minutes) until the worker has delivered `user_id`'s
/// notifications, so their statuses stop changing and the next phase does
/// not share the machine with the deliveries.
async fn settle(db: &DatabaseConnection, user_id: i64) -> anyhow::Result<()> {
    let open = format!(
        "{} SELECT count(*)::bigint FROM notifications WHERE user_id = {user_id} AND status IN ('PENDING', 'PROCESSING')",
        cost::MARK
    );
    let start = Instant::now();
    while scalar::<i64>(db, open.clone()).await? > 0 && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The first column of the first row of `sql`.
async fn scalar<T: sea_orm::TryGetable>(db: &DatabaseConnection, sql: String) -> anyhow::Result<T> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index::<T>(0)?)
}

/// Inserts `n` PENDING rows at once (with `Seeded::Scheduled`: SCHEDULED
/// rows a day ahead, then due all at once) and waits until all are SENT;
/// returns notifications/s between the first and the last `sent_at`, the
/// wall time, and with `probe` what the drain cost from the insert's commit.
async fn worker_phase(
    db: &DatabaseConnection,
    user_id: i64,
    n: u64,
    seeded: seed::Seeded,
    probe: Option<&cost::Probe>,
) -> anyhow::Result<(f64, Duration, Option<cost::Cost>)> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    if let Some(p) = probe {
        // Let the phase before publish its statistics first.
        p.settle().await;
    }
    seed::notifications(db, user_id, n, &format!("bench {tag}"), seeded)
        .await
        .context("inserting bench rows (the worker phase needs Postgres)")?;
    // After the insert's commit (whose statistics its backend, idle for
    // seconds before, publishes at once): the drain, not the seeding.
    let before = match probe {
        Some(p) => Some(p.snapshot().await?),
        None => None,
    };
    if matches!(seeded, seed::Seeded::Scheduled) {
        // Let the seeding's load pass, then every row falls due at once.
        tokio::time::sleep(Duration::from_secs(2)).await;
        db.execute_unprepared(&format!(
            "UPDATE notifications SET send_at = date_trunc('milliseconds', now()) WHERE user_id = {user_id} AND title LIKE 'bench {tag} %' AND status = 'SCHEDULED'"
        ))
        .await?;
    }
    let start = Instant::now();
    let pending = format!(
        "{} SELECT count(*)::bigint FROM notifications WHERE title LIKE 'bench {tag} %' AND status IN ('SCHEDULED', 'PENDING', 'PROCESSING')",
        cost::MARK
    );
    loop {
        if scalar::<i64>(db, pending.clone()).await? == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the worker did not finish {n} notifications in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = start.elapsed();
    let failed = scalar::<i64>(
        db,
        format!("SELECT count(*)::bigint FROM notifications WHERE title LIKE 'bench {tag} %' AND status = 'FAILED'"),
    )
    .await?;
    if failed > 0 {
        eprintln!("warning: {failed} bench notifications FAILED (is the SMTP sink up?)");
    }
    let spread = scalar::<f64>(
        db,
        format!(
            "SELECT EXTRACT(EPOCH FROM (max(sent_at) - min(sent_at)))::float8 FROM notifications WHERE title LIKE 'bench {tag} %' AND status = 'SENT'"
        ),
    )
    .await?;
    let cost = match (probe, before) {
        (Some(p), Some(before)) => Some(p.since("worker drain", &before, n).await?),
        _ => None,
    };
    Ok(((n as f64 - 1.0) / spread.max(1e-3), wall, cost))
}

/// `smtp-source` sending `n` messages over `sessions` sessions into `sink`.
fn smtp_source(sink: &str, n: u64, sessions: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = Command::new("smtp-source")
        .args([
            "-s",
            &sessions.to_string(),
            "-m",
            &n.to_string(),
            "-l",
            "200",
        ])
        .args(["-f", "bench@localhost", "-t", "sink@localhost", sink])
        .status()
        .context("running smtp-source (apt-get install postfix)")?;
    if !status.success() {
        bail!("smtp-source failed: {status}");
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let client = Arc::new(Client {
        http,
        url: args.url.clone(),
    });
    // The bench's own connections are told apart from Herald's (see `cost`).
    let separator = if args.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let db = Database::connect(format!(
        "{}{separator}application_name={}",
        args.database_url,
        cost::APP_NAME
    ))
    .await?;
    if let Some(pid) = args.pid {
        // Before the first request: the server as it started.
        let rss = rss_kib(pid)?;
        println!("Herald's resident memory before the first request: {rss} KiB\n");
        figure(
            "herald serve, idle after start: RSS MiB",
            rss as f64 / 1024.0,
        );
    }
    let probe = match cost::Probe::new(db.clone(), &args.redis_url, args.pid).await {
        Ok(probe) => Some(probe),
        Err(e) => {
            eprintln!("warning: no cost accounting: {e:#}");
            None
        }
    };

    // A user of the bench's own, with a page worth reading.
    let (token, user_id) = client.register().await?;

    if args.delivery_only {
        delivery_table(&args, &db, user_id, probe.as_ref(), Vec::new()).await?;
        return write_summary(&args);
    }
    if args.live_only {
        return live_table(&args, &client, &db, &token).await;
    }
    if args.app_only {
        return apps::table(&args, &client, &db, token).await;
    }

    let typename = repeat(
        "`{ __typename }` (baseline)",
        &args,
        &client,
        None,
        ("{ __typename }", json!({})),
        "",
    )
    .await;
    if args.flood_only {
        let mut notes = Vec::new();
        let phases = flood::login_flood(&args, &client, &token, &mut notes).await?;
        api_table(&typename, &phases);
        print_notes(&notes);
        return write_summary(&args);
    }
    if args.send_only {
        return send_table(
            &args,
            &client,
            &db,
            &token,
            user_id,
            probe.as_ref(),
            &typename,
        )
        .await;
    }
    if args.inbox_only {
        let (phases, notes) = inbox::api_phases(&args, &client, &db).await?;
        api_table(&typename, &phases);
        print_notes(&notes);
        return write_summary(&args);
    }

    let mut costs = Vec::new();
    let before = match &probe {
        Some(p) => Some(p.snapshot().await?),
        None => None,
    };
    let send = send_phase("sendNotification", &args, &client, &token).await;
    settle(&db, user_id).await?;
    if let (Some(p), Some(before)) = (&probe, before) {
        let name = "sendNotification, then until delivered";
        costs.push(p.since(name, &before, send.latencies.len() as u64).await?);
    }

    let cached = cached_page("notifications, cached", &args, &client, &token).await;

    let mut phases = vec![send, cached];
    let mut notes = Vec::new();
    if let Some(url) = &args.metrics_url {
        let scraper = flood::Scraper::start(url);
        let send = send_phase(
            "sendNotification, /metrics scraped every 100 ms",
            &args,
            &client,
            &token,
        )
        .await;
        let sends = scraper.stop().await;
        settle(&db, user_id).await?;
        let scraper = flood::Scraper::start(url);
        let cached = cached_page(
            "notifications, cached, /metrics scraped every 100 ms",
            &args,
            &client,
            &token,
        )
        .await;
        let pages = scraper.stop().await;
        for (plain, scraped, scrapes) in [(&phases[0], &send, sends), (&phases[1], &cached, pages)]
        {
            let ratio = scraped.rate() / plain.rate();
            figure(format!("{}: req/s scraped vs not", plain.name), ratio);
            notes.push(format!(
                "{} while /metrics was scraped: {:.0}% of its req/s unscraped, p99 {:.2} vs {:.2} ms; {scrapes}",
                plain.name,
                100.0 * ratio,
                scraped.percentile(0.99),
                plain.percentile(0.99),
            ));
        }
        phases.extend([send, cached]);
    }
    if args.flood_clients > 0 {
        phases.extend(flood::login_flood(&args, &client, &token, &mut notes).await?);
    }

    let (inbox_phases, inbox_notes) = inbox::api_phases(&args, &client, &db).await?;
    phases.extend(inbox_phases);
    notes.extend(inbox_notes);
    api_table(&typename, &phases);
    print_notes(&notes);
    delivery_table(&args, &db, user_id, probe.as_ref(), costs).await?;
    write_summary(&args)
}

/// The old list's first page, cached, from `--concurrency` clients as
/// `token`'s user.
async fn cached_page(name: &str, args: &Args, client: &Arc<Client>, token: &Arc<str>) -> Phase {
    repeat(
        name,
        args,
        client,
        Some(token.clone()),
        (LIST, json!({})),
        "",
    )
    .await
}

/// `--send-only`: `sendNotification` as one user, then from one user per
/// client, each until delivered, with what each notification cost.
async fn send_table(
    args: &Args,
    client: &Arc<Client>,
    db: &DatabaseConnection,
    token: &Arc<str>,
    user_id: i64,
    probe: Option<&cost::Probe>,
    typename: &Phase,
) -> anyhow::Result<()> {
    let mut costs = Vec::new();
    let before = match probe {
        Some(p) => Some(p.snapshot().await?),
        None => None,
    };
    let one = send_phase("sendNotification", args, client, token).await;
    settle(db, user_id).await?;
    if let (Some(p), Some(before)) = (probe, before) {
        let name = "sendNotification, then until delivered";
        costs.push(p.since(name, &before, one.latencies.len() as u64).await?);
    }
    let users = inbox::users(client, db, args.concurrency, 0).await?;
    let tokens: Vec<Arc<str>> = users.iter().map(|u| u.token.clone()).collect();
    let before = match probe {
        Some(p) => Some(p.snapshot().await?),
        None => None,
    };
    let many = send_phase_as(
        &format!("sendNotification, {} users (one per client)", tokens.len()),
        args,
        client,
        tokens,
    )
    .await;
    for user in &users {
        settle(db, user.id).await?;
    }
    if let (Some(p), Some(before)) = (probe, before) {
        let name = "sendNotification, one user per client, then until delivered";
        costs.push(p.since(name, &before, many.latencies.len() as u64).await?);
    }
    api_table(typename, &[one, many]);
    if !costs.is_empty() {
        cost::table(&costs);
        for c in &costs {
            for (name, value) in c.summary() {
                figure(name, value);
            }
        }
    }
    write_summary(args)
}

/// `sendNotification` from `--concurrency` clients as `token`'s user.
async fn send_phase(name: &str, args: &Args, client: &Arc<Client>, token: &Arc<str>) -> Phase {
    send_phase_as(name, args, client, vec![token.clone()]).await
}

/// `sendNotification` from `--concurrency` clients, client `i` as
/// `tokens[i % tokens.len()]`'s user.
async fn send_phase_as(
    name: &str,
    args: &Args,
    client: &Arc<Client>,
    tokens: Vec<Arc<str>>,
) -> Phase {
    let (client, tokens) = (client.clone(), Arc::new(tokens));
    closed_loop(name, args.pid, args.concurrency, Duration::from_secs(args.duration), |_| async {}, move |seq| {
        let (c, tokens) = (client.clone(), tokens.clone());
        async move {
            let t = tokens[usize::try_from(seq / SEQS_PER_WORKER).unwrap_or_default() % tokens.len()].clone();
            c.gql_ok(
                "mutation($t: String!) { sendNotification(input: {title: $t, content: \"bench\"}) { id status } }",
                json!({ "t": format!("load {seq}") }),
                Some(&t),
            )
            .await
        }
    })
    .await
}

fn print_notes(notes: &[String]) {
    for note in notes {
        println!("- {note}");
    }
    println!();
}

/// The worker's drain against `smtp-source`, then what each notification
/// cost (`costs`, and the drain's own), then the scheduled phases.
async fn delivery_table(
    args: &Args,
    db: &DatabaseConnection,
    user_id: i64,
    probe: Option<&cost::Probe>,
    mut costs: Vec<cost::Cost>,
) -> anyhow::Result<()> {
    let (worker_rate, worker_wall, drain) = worker_phase(
        db,
        user_id,
        args.notifications,
        seed::Seeded::Pending,
        probe,
    )
    .await?;
    costs.extend(drain);
    let source_rate = match &args.smtp_sink {
        Some(sink) => Some(smtp_source(sink, args.notifications, args.smtp_sessions)?),
        None => None,
    };
    println!("| delivery | notifications | per second | vs smtp-source |");
    println!("|---|---:|---:|---:|");
    let ratio = source_rate.map_or("n/a".to_owned(), |s| {
        format!("{:.0}%", 100.0 * worker_rate / s)
    });
    println!(
        "| worker, PENDING → SENT ({:.1} s wall) | {} | {:.0} | {} |",
        worker_wall.as_secs_f64(),
        args.notifications,
        worker_rate,
        ratio
    );
    figure("worker drain: notifications/s", worker_rate);
    if let Some(rate) = source_rate {
        figure("worker drain: % of smtp-source", 100.0 * worker_rate / rate);
        println!(
            "| smtp-source -s {} into the same sink (baseline) | {} | {:.0} | 100% |",
            args.smtp_sessions, args.notifications, rate
        );
    }
    println!();
    if !costs.is_empty() {
        if probe.is_some_and(|p| !p.counts_statements()) {
            println!(
                "pg_stat_statements is not loaded (shared_preload_libraries; `BENCH_PG_STAT_STATEMENTS=1 bench/run.sh` \
                 loads it): SQL statements are n/a, transactions and rows written come from pg_stat_database.\n"
            );
        }
        cost::table(&costs);
        for c in &costs {
            for (name, value) in c.summary() {
                figure(name, value);
            }
        }
    }
    scheduled_table(args, db, user_id).await
}

/// `--scheduled` SCHEDULED notifications falling due at the same moment,
/// against as many PENDING ones inserted at once (the worker's normal rate).
async fn scheduled_table(args: &Args, db: &DatabaseConnection, user_id: i64) -> anyhow::Result<()> {
    let n = args.scheduled;
    if n == 0 {
        return Ok(());
    }
    let (now_rate, now_wall, _) = worker_phase(db, user_id, n, seed::Seeded::Pending, None).await?;
    let (due_rate, due_wall, _) =
        worker_phase(db, user_id, n, seed::Seeded::Scheduled, None).await?;
    println!("| delivery | notifications | wall s | per second | vs sent now |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| PENDING inserted at once → SENT (the worker's normal rate) | {n} | {:.1} | {now_rate:.0} | 100% |",
        now_wall.as_secs_f64()
    );
    println!(
        "| SCHEDULED falling due at once → SENT | {n} | {:.1} | {due_rate:.0} | {:.0}% |",
        due_wall.as_secs_f64(),
        100.0 * due_rate / now_rate
    );
    Ok(())
}

/// The server's resident memory per idle subscriber: for each kind of
/// subscription, sockets opened up to each of `--sockets`; a step's figure
/// is its growth over the sockets it added. Every socket stays open to the
/// end (closed ones would leave memory for the next step to reuse, which
/// the allocator returns only lazily), so both kinds' sockets together must
/// fit the open-file limit.
async fn idle_memory(args: &Args, token: &str, pid: u32) -> anyhow::Result<()> {
    println!("| idle subscribers | subscription | server RSS before | after | per socket added |");
    println!("|---:|---|---:|---:|---:|");
    let mut open = Vec::new();
    for (name, query) in [
        ("notificationStatusChanged", ws::STATUS_CHANGES),
        ("inboxEvents", ws::INBOX_EVENTS),
    ] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut before = rss_kib(pid)?;
        let mut count = 0;
        for n in args
            .sockets
            .split(',')
            .filter_map(|n| n.trim().parse::<usize>().ok())
        {
            let added = n.saturating_sub(count).max(1);
            while count < n {
                open.push(ws::subscribe(&args.url, token, query, json!({})).await?);
                count += 1;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = rss_kib(pid)?;
            println!(
                "| {n} | {name} | {before} KiB | {after} KiB | {:.1} KiB |",
                (after.saturating_sub(before)) as f64 / added as f64
            );
            before = after;
        }
    }
    println!();
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn live_table(
    args: &Args,
    client: &Arc<Client>,
    db: &DatabaseConnection,
    token: &str,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    use std::collections::HashMap;
    use tokio_tungstenite::tungstenite::Message;

    // First, while the server is fresh: nothing freed by an earlier phase
    // for the sockets to reuse.
    if let Some(pid) = args.pid {
        idle_memory(args, token, pid).await?;
    }

    // Latency: send at a steady rate, round robin over `--live-users`
    // users (one user's writes queue on their counter row: the API
    // table's sendNotification shows that ceiling); time from the request
    // to the SENT event on the recipient's subscription.
    let users = inbox::users(client, db, args.live_users.max(1), 0).await?;
    let mut sockets = Vec::with_capacity(users.len());
    for user in &users {
        sockets.push(ws::subscribe(&args.url, &user.token, ws::STATUS_CHANGES, json!({})).await?);
    }
    let mut socket = futures_util::stream::select_all(sockets);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = args.rate * args.duration;
    let sender = {
        let tokens: Vec<Arc<str>> = users.iter().map(|u| u.token.clone()).collect();
        let (client, started) = (client.clone(), started.clone());
        let rate = args.rate;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            let mut inflight = Vec::new();
            for i in 0..total {
                tick.tick().await;
                let token = tokens[(i % tokens.len() as u64) as usize].clone();
                let (client, started) = (client.clone(), started.clone());
                inflight.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let body = client
                        .gql(
                            "mutation($t: String!) { sendNotification(input: {title: $t, content: \"live\"}) { id } }",
                            json!({ "t": format!("live {i}") }),
                            Some(&token),
                        )
                        .await;
                    if let Ok(body) = body
                        && let Some(id) = body["data"]["sendNotification"]["id"].as_str()
                    {
                        started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_owned(), t);
                    }
                }));
            }
            for task in inflight {
                let _ = task.await;
            }
        })
    };
    let mut latencies = Vec::new();
    let mut early: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(args.duration + 60);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(10), socket.next()).await
        else {
            break;
        };
        let msg: Value = serde_json::from_str(&text)?;
        let event = &msg["payload"]["data"]["notificationStatusChanged"];
        if event["status"] != "SENT" {
            continue;
        }
        let id = event["notification"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        early.insert(id, Instant::now());
        let mut started = started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        early.retain(|id, at| match started.remove(id) {
            Some(t) => {
                latencies.push(at.duration_since(t));
                false
            }
            None => true,
        });
    }
    let _ = sender.await;
    let phase = Phase {
        name: format!("send → SENT event, {} users,", users.len()),
        errors: total.saturating_sub(latencies.len() as u64),
        latencies,
        elapsed: Duration::from_secs(args.duration),
        server_cpu: None,
    };
    println!("| live | events | per second | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {} at {}/s offered | {} of {} | {:.0} | {:.2} | {:.2} |",
        phase.name,
        args.rate,
        phase.latencies.len(),
        total,
        phase.rate(),
        phase.percentile(0.50),
        phase.percentile(0.99)
    );
    drop(socket);
    println!();

    for user in &users {
        settle(db, user.id).await?;
    }
    inbox::live_fanout(args, client, db).await?;

    Ok(())
}
