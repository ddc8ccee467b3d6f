//! Load beside a measured phase, to see what it does to everyone else:
//! - a login flood (`--flood-clients` clients logging in continuously,
//!   each login an argon2 verification): the cached page's p99 from
//!   `--flood-readers` clients during the flood against the same readers
//!   idle (issue 13: within 2x);
//! - a Prometheus-style scraper reading `/metrics` every 100 ms (issue 14:
//!   a scrape must never block or slow the API).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{Args, Client, LIST, Phase, closed_loop, figure};

const PASSWORD: &str = "benchmark password";

/// The cached page from `--flood-readers` clients, idle and then while
/// `--flood-clients` clients log in continuously; returns both phases and
/// adds a note on the ratio of their p99s.
pub async fn login_flood(
    args: &Args,
    client: &Arc<Client>,
    token: &Arc<str>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Phase>> {
    // An account per client: one account's concurrent logins would mostly
    // be refused by its failure window (attempts in flight count).
    let mut emails = Vec::new();
    for _ in 0..args.flood_clients {
        let email = format!("flood-{}@example.com", uuid::Uuid::new_v4().simple());
        client.register_as(&email).await?;
        emails.push(email);
    }
    let readers = args.flood_readers.max(1);
    let read = |name: String| {
        let (c, t) = (client.clone(), token.clone());
        closed_loop(
            name,
            args.pid,
            readers,
            Duration::from_secs(args.duration),
            |_| async {},
            move |_| {
                let (c, t) = (c.clone(), t.clone());
                async move { c.gql_ok(LIST, json!({}), Some(&t)).await }
            },
        )
    };
    let idle = read(format!("notifications, cached, {readers} clients, idle")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (logins, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flooders = Vec::new();
    for email in emails {
        let c = client.clone();
        let (stop, logins, failures) = (stop.clone(), logins.clone(), failures.clone());
        flooders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = c
                    .gql_ok(
                        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
                        json!({ "e": email, "p": PASSWORD }),
                        None,
                    )
                    .await
                    .is_ok();
                if ok { &logins } else { &failures }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the flood fill the hashing queue first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start, before) = (Instant::now(), logins.load(Ordering::Relaxed));
    let flooded = read(format!(
        "notifications, cached, {readers} clients, {} clients logging in",
        args.flood_clients
    ))
    .await;
    let login_rate =
        (logins.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.await;
    }
    let ratio = flooded.percentile(0.99) / idle.percentile(0.99);
    figure("login flood: cached page p99, flooded vs idle (x)", ratio);
    figure("login flood: logins/s", login_rate);
    notes.push(format!(
        "Login flood: the cached page's p99 {:.2} ms against {:.2} ms idle ({ratio:.1}x; target at most 2x), \
         {login_rate:.0} logins/s, {} failed logins",
        flooded.percentile(0.99),
        idle.percentile(0.99),
        failures.load(Ordering::Relaxed),
    ));
    Ok(vec![idle, flooded])
}

/// Reads `/metrics` every 100 ms until stopped.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Duration>, u64)>,
}

impl Scraper {
    pub fn start(url: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, flag) = (url.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let (mut latencies, mut failures) = (Vec::new(), 0);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                let read = async {
                    http.get(&url)
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await
                };
                match read.await {
                    Ok(body) if !body.is_empty() => latencies.push(t.elapsed()),
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        });
        Self { stop, task }
    }

    /// Stops and describes the scrapes.
    pub async fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (mut latencies, failures) = self.task.await.unwrap_or_default();
        latencies.sort();
        let p99 = latencies
            .get(((latencies.len() as f64 - 1.0) * 0.99).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        format!(
            "{} scrapes (p99 {p99:.2} ms), {failures} failed",
            latencies.len()
        )
    }
}
