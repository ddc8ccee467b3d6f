//! Application sends (issue 11), against today's send in the same run:
//! - `sendNotification` with an API key, round robin over 1,000 different
//!   `externalId`s (the first send to each creates its user), closed loop,
//!   against `sendNotification` with a user's token to themselves;
//! - the same application send paced at `--app-rate` per second (open
//!   loop): the latency of each request, p50 and p99.
//!
//! The key is stored in the database the way `herald api-key create`
//! stores it. Herald's per-application limit must be raised for the closed
//! loop (`bench/run.sh` does).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sea_orm::DatabaseConnection;
use serde_json::json;

use crate::{Args, Client, Phase, closed_loop, scalar};

/// Different recipients the application sends to.
const RECIPIENTS: u64 = 1000;

const SEND_TO: &str = "mutation($t: String!, $to: RecipientInput) { sendNotification(input: {title: $t, content: \"bench\", to: $to}) { id status } }";
const SEND_SELF: &str = "mutation($t: String!) { sendNotification(input: {title: $t, content: \"bench\"}) { id status } }";

/// The variables of send `seq` of run `tag`: recipient `seq % 1000`.
fn to(tag: &str, seq: u64) -> serde_json::Value {
    let n = seq % RECIPIENTS;
    json!({ "t": format!("app {seq}"),
            "to": { "externalId": format!("{tag}-{n}"), "email": format!("{tag}-{n}@example.com") } })
}

/// A new application key; its secret.
async fn app_key(db: &DatabaseConnection) -> anyhow::Result<Arc<str>> {
    let key = herald::auth::api_key::generate();
    herald::storage::api_keys::insert(db, "bench", &key.prefix, &key.hash, herald::storage::now())
        .await?;
    Ok(key.secret.into())
}

/// Waits (up to 10 minutes) until no notification is PENDING or
/// PROCESSING, so the next phase does not share the machine with the
/// deliveries of this one.
async fn settle_all(db: &DatabaseConnection) -> anyhow::Result<()> {
    let start = Instant::now();
    while scalar::<i64>(
        db,
        "SELECT count(*)::bigint FROM notifications WHERE status IN ('PENDING', 'PROCESSING')"
            .to_owned(),
    )
    .await?
        > 0
        && start.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Sends with `token` at `rate` per second for `duration`, each request
/// on its own task; the latencies of those that succeeded.
async fn paced(
    client: &Arc<Client>,
    token: Arc<str>,
    tag: Arc<str>,
    rate: u64,
    duration: Duration,
) -> Phase {
    let total = rate * duration.as_secs();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let start = Instant::now();
    let mut inflight = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for seq in 0..total {
        tick.tick().await;
        let (client, token, tag) = (client.clone(), token.clone(), tag.clone());
        inflight.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = client
                .gql_ok(SEND_TO, to(&tag, SEQS_PACED + seq), Some(&token))
                .await;
            result.map(|()| t.elapsed())
        }));
    }
    let mut phase = Phase {
        name: format!("application send, paced at {rate}/s"),
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        server_cpu: None,
    };
    let mut first_error = None;
    for task in inflight {
        match task.await {
            Ok(Ok(latency)) => phase.latencies.push(latency),
            Ok(Err(e)) => {
                phase.errors += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => phase.errors += 1,
        }
    }
    phase.elapsed = start.elapsed();
    if let Some(e) = first_error {
        eprintln!(
            "warning: {}: {} errors, the first: {e:#}",
            phase.name, phase.errors
        );
    }
    phase
}

/// The paced phase's titles start after the closed loop's.
const SEQS_PACED: u64 = 1 << 40;

/// Prints the application table.
pub async fn table(
    args: &Args,
    client: &Arc<Client>,
    db: &DatabaseConnection,
    token: Arc<str>,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    let key = app_key(db).await?;
    let tag: Arc<str> = format!("bench-{}", uuid::Uuid::new_v4().simple()).into();

    // Every recipient exists before the timed phases: a first send creates
    // one, a later one finds it (the steady state of an application).
    for seq in 0..RECIPIENTS {
        client.gql_ok(SEND_TO, to(&tag, seq), Some(&key)).await?;
    }
    settle_all(db).await?;

    let (c, t) = (client.clone(), token.clone());
    let user = closed_loop(
        "sendNotification, a user's token (to themselves)",
        args.pid,
        args.concurrency,
        duration,
        |_| async {},
        move |seq| {
            let (c, t) = (c.clone(), t.clone());
            async move {
                c.gql_ok(SEND_SELF, json!({ "t": format!("load {seq}") }), Some(&t))
                    .await
            }
        },
    )
    .await;
    settle_all(db).await?;

    let (c, k, g) = (client.clone(), key.clone(), tag.clone());
    let app = closed_loop(
        format!("sendNotification, an API key (to {RECIPIENTS} externalIds)"),
        args.pid,
        args.concurrency,
        duration,
        |_| async {},
        move |seq| {
            let (c, k, g) = (c.clone(), k.clone(), g.clone());
            async move { c.gql_ok(SEND_TO, to(&g, seq), Some(&k)).await }
        },
    )
    .await;
    settle_all(db).await?;

    let paced = paced(client, key, tag, args.app_rate, duration).await;
    settle_all(db).await?;

    println!(
        "| application sends ({} clients, {} s each) | requests | errors | req/s | p50 ms | p99 ms | vs a user's send | server CPU µs/req |",
        args.concurrency, args.duration
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (phase, ratio) in [
        (&user, "100 %".to_owned()),
        (&app, format!("{:.0} %", 100.0 * app.rate() / user.rate())),
        (&paced, "—".to_owned()),
    ] {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {ratio} | {} |",
            phase.name,
            phase.latencies.len(),
            phase.errors,
            phase.rate(),
            phase.percentile(0.50),
            phase.percentile(0.99),
            phase.cpu_text(),
        );
    }
    println!();
    Ok(())
}
