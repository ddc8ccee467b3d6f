//! The inbox's figures (issue 10), each against a baseline or target from
//! the same run:
//! - `inboxChanges(after: <last seq>)` with nothing new, and `inbox(first:
//!   20)` cached: requests per second against `{ __typename }`;
//! - the uncached first page of a 20,000-notification inbox against a
//!   100-notification one (the user's cached page copies deleted before
//!   each request, each client on a user of its own);
//! - `markNotifications`: one id per request, toggled READ / UNREAD so that
//!   every mark changes something; each client on a user of its own, then
//!   every client on one user;
//! - live: subscribers of `inboxEvents` on many users while marks arrive at
//!   a steady rate: latency from the mark's request to each subscriber's
//!   event, InboxResync received, events missed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use sea_orm::DatabaseConnection;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    Args, Client, Phase, closed_loop, repeat,
    seed::{self, Seeded},
    ws::{self, Received},
};

/// A registered user with a seeded inbox.
pub struct User {
    pub id: i64,
    pub token: Arc<str>,
    /// Their notifications, oldest first.
    pub ids: Vec<i64>,
    /// The seq of their newest event.
    pub last_seq: i64,
}

/// `count` new users, each with `notifications` delivered ones.
pub async fn users(
    client: &Client,
    db: &DatabaseConnection,
    count: usize,
    notifications: u64,
) -> anyhow::Result<Vec<User>> {
    stream::iter(0..count)
        .map(|_| async move {
            let (token, user_id) = client.register().await?;
            let ids =
                seed::notifications(db, user_id, notifications, "seeded", Seeded::Sent).await?;
            let last_seq = i64::try_from(ids.len())?;
            Ok::<_, anyhow::Error>(User {
                id: user_id,
                token,
                ids,
                last_seq,
            })
        })
        // Registration hashes a password: a few at a time keep both cores busy.
        .buffered(4)
        .try_collect()
        .await
}

const CHANGES: &str = "query($after: Int!) { inboxChanges(after: $after) { lastSeq hasMore pollInterval events { __typename seq } } }";

/// The first page as an inbox UI reads it.
const PAGE: &str = "{ inbox(first: 20) { edges { cursor node { id seq title content status createdAt seenAt readAt } } pageInfo { hasNextPage endCursor } counts { total unread unseen } lastSeq } }";

const MARK: &str = "mutation($ids: [ID!]!, $action: InboxAction!) { markNotifications(ids: $ids, action: $action) { updated seq } }";

/// The `k`-th mark of a round robin over `n` unread notifications: which
/// one, and READ on the first pass, UNREAD on the next, and so on, so each
/// mark changes its notification.
fn toggle(k: u64, n: usize) -> (usize, &'static str) {
    let n = n.max(1) as u64;
    let action = if (k / n).is_multiple_of(2) {
        "READ"
    } else {
        "UNREAD"
    };
    ((k % n) as usize, action)
}

/// Keys `closed_loop` hands out per client: the client's index.
fn worker(seq: u64) -> usize {
    (seq / crate::SEQS_PER_WORKER) as usize
}

/// The cached page copies of `user_id`'s inbox (after one read of their
/// inbox, so its first page is cached): every key Herald names
/// `inbox:<user>:…` or `inbox:{<user>}:…` but the entry that says which
/// copies count (the user's last seq or inbox version), which stays, as it
/// is right after a change.
async fn cached_pages(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    user_id: i64,
) -> anyhow::Result<Vec<String>> {
    let pattern = format!("{prefix}inbox:*");
    let user = user_id.to_string();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        keys.extend(batch.into_iter().filter(|key| {
            let Some(rest) = key.strip_prefix(&pattern[..pattern.len() - 1]) else {
                return false;
            };
            let (owner, what) = rest.split_once(':').unwrap_or_default();
            owner.trim_start_matches('{').trim_end_matches('}') == user
                && !matches!(what, "snapshot" | "version")
        }));
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// The API phases; the notes say how to read them.
pub async fn api_phases(
    args: &Args,
    client: &Arc<Client>,
    db: &DatabaseConnection,
) -> anyhow::Result<(Vec<Phase>, Vec<String>)> {
    let mut phases = Vec::new();
    let mut notes = Vec::new();

    let clients = args.uncached_clients.max(1);
    let small = users(client, db, clients, args.small_inbox).await?;
    let reader = &small[0];

    let token = Some(reader.token.clone());
    phases.push(
        repeat(
            "inboxChanges(after: last seq), nothing new",
            args,
            client,
            token.clone(),
            (CHANGES, json!({ "after": reader.last_seq })),
            "\"events\":[]",
        )
        .await,
    );
    if let Some(phase) = revalidated(
        "inboxChanges(after: last seq), nothing new, GET + If-None-Match (304)",
        args,
        client,
        &reader.token,
        (CHANGES, json!({ "after": reader.last_seq })),
    )
    .await?
    {
        phases.push(phase);
    } else {
        notes.push("no ETag on GET (HERALD_RESPONSE_CACHE=off): the 304 phase was skipped".into());
    }
    phases.push(
        repeat(
            "inbox(first: 20), cached",
            args,
            client,
            token,
            (PAGE, json!({})),
            "\"edges\":[{",
        )
        .await,
    );

    // Uncached first pages: each client reads a user of its own, whose
    // cached inbox keys it deletes before each request (outside the
    // timing), so no other client's read can refill them in between.
    let big = users(client, db, clients, args.big_inbox).await?;
    // As autovacuum would before long (see `seed::analyze`).
    seed::analyze(db).await?;
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut uncached = Vec::new();
    for (size, group) in [(args.small_inbox, &small), (args.big_inbox, &big)] {
        let name = format!("inbox(first: 20), uncached, {size} notifications ({clients} clients)");
        let (phase, keys) = uncached_phase(name, args, client, &mut conn, group, PAGE).await?;
        notes.push(format!(
            "uncached inbox of {size}: {keys} cached page copies per user deleted before each request"
        ));
        uncached.push(phase);
    }
    if let [small_page, big_page] = &uncached[..] {
        notes.push(format!(
            "uncached first page, {} vs {} notifications: {:.0} vs {:.0} req/s ({:.0} %), p50 {:.2} vs {:.2} ms, server CPU {} vs {} µs/req (target: within 2x)",
            args.big_inbox,
            args.small_inbox,
            big_page.rate(),
            small_page.rate(),
            100.0 * big_page.rate() / small_page.rate(),
            big_page.percentile(0.5),
            small_page.percentile(0.5),
            big_page.cpu_text(),
            small_page.cpu_text(),
        ));
    }
    phases.extend(uncached);
    // The old list, which now takes totalCount from the counter row.
    let name = format!(
        "notifications, uncached, {} notifications ({clients} clients)",
        args.big_inbox
    );
    phases.push(
        uncached_phase(name, args, client, &mut conn, &big, crate::LIST)
            .await?
            .0,
    );

    // Marks: each client on a user of its own, then all on one user.
    let own = users(client, db, args.concurrency, args.mark_ids).await?;
    let marks: Arc<Vec<(Arc<str>, Vec<i64>)>> =
        Arc::new(own.into_iter().map(|u| (u.token, u.ids)).collect());
    phases.push(
        mark_phase(
            format!(
                "markNotifications, {} users (one per client)",
                args.concurrency
            ),
            args,
            client,
            marks,
        )
        .await,
    );
    let one = users(client, db, 1, args.mark_ids * args.concurrency as u64)
        .await?
        .pop()
        .context("no user")?;
    let slices: Arc<Vec<(Arc<str>, Vec<i64>)>> = Arc::new(
        one.ids
            .chunks(usize::try_from(args.mark_ids)?.max(1))
            .map(|ids| (one.token.clone(), ids.to_vec()))
            .collect(),
    );
    phases.push(
        mark_phase(
            "markNotifications, one user (a slice of ids per client)".to_owned(),
            args,
            client,
            slices,
        )
        .await,
    );
    Ok((phases, notes))
}

/// A client polling over GET that sends back the `ETag` of its first
/// answer, as a browser revalidates: every answer must be `304 Not
/// Modified` (the response cache's idle poll). `None` when the server
/// gives no `ETag` (its response cache is off).
async fn revalidated(
    name: &str,
    args: &Args,
    client: &Arc<Client>,
    token: &Arc<str>,
    (query, variables): (&'static str, serde_json::Value),
) -> anyhow::Result<Option<Phase>> {
    let params: Arc<[(&str, String)]> = Arc::new([
        ("query", query.to_owned()),
        ("variables", variables.to_string()),
    ]);
    let get = {
        let (client, params, token) = (client.clone(), params.clone(), token.clone());
        move |etag: Option<reqwest::header::HeaderValue>| {
            let mut req = client
                .http
                .get(&client.url)
                .query(&params[..])
                .bearer_auth(&token);
            if let Some(etag) = etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            req.send()
        }
    };
    // Twice: the first answer may come before the user's snapshot is cached.
    get(None).await?;
    let Some(etag) = get(None)
        .await?
        .headers()
        .get(reqwest::header::ETAG)
        .cloned()
    else {
        return Ok(None);
    };
    let phase = closed_loop(
        name,
        args.pid,
        args.concurrency,
        Duration::from_secs(args.duration),
        |_| async {},
        move |_| {
            let (get, etag) = (get.clone(), etag.clone());
            async move {
                let res = get(Some(etag)).await?;
                anyhow::ensure!(
                    res.status() == reqwest::StatusCode::NOT_MODIFIED,
                    "{} instead of 304",
                    res.status()
                );
                Ok(())
            }
        },
    )
    .await;
    Ok(Some(phase))
}

/// `query` from one client per user of `group`, each deleting its user's
/// cached page copies before each request (outside the timing), so no
/// other client's read can refill them in between. Also returns how many
/// copies a user had after one read.
async fn uncached_phase(
    name: String,
    args: &Args,
    client: &Arc<Client>,
    conn: &mut redis::aio::MultiplexedConnection,
    group: &[User],
    query: &'static str,
) -> anyhow::Result<(Phase, usize)> {
    let mut keys = Vec::new();
    for user in group {
        // Twice: the first read caches the user's snapshot, by which the
        // second one's whole response is cached too (when the response
        // cache is on); each copy is deleted before each request.
        client.gql_ok(query, json!({}), Some(&user.token)).await?;
        client.gql_ok(query, json!({}), Some(&user.token)).await?;
        keys.push(cached_pages(conn, &args.redis_prefix, user.id).await?);
    }
    let copies = keys.first().map_or(0, Vec::len);
    let keys = Arc::new(keys);
    let tokens: Arc<Vec<Arc<str>>> = Arc::new(group.iter().map(|u| u.token.clone()).collect());
    let (c, conn) = (client.clone(), conn.clone());
    let phase = closed_loop(
        name,
        args.pid,
        group.len(),
        Duration::from_secs(args.duration),
        move |seq| {
            let (keys, mut conn) = (keys.clone(), conn.clone());
            async move {
                let keys = &keys[worker(seq)];
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("DEL")
                        .arg(&keys[..])
                        .query_async(&mut conn)
                        .await;
                }
            }
        },
        move |seq| {
            let (c, tokens) = (c.clone(), tokens.clone());
            async move { c.gql_ok(query, json!({}), Some(&tokens[worker(seq)])).await }
        },
    )
    .await;
    Ok((phase, copies))
}

/// Client `w` toggles the notifications `targets[w]` names, as that user.
async fn mark_phase(
    name: String,
    args: &Args,
    client: &Arc<Client>,
    targets: Arc<Vec<(Arc<str>, Vec<i64>)>>,
) -> Phase {
    let c = client.clone();
    closed_loop(
        name,
        args.pid,
        args.concurrency,
        Duration::from_secs(args.duration),
        |_| async {},
        move |seq| {
            let (c, targets) = (c.clone(), targets.clone());
            async move {
                let (token, ids) = &targets[worker(seq)];
                let (i, action) = toggle(seq % crate::SEQS_PER_WORKER, ids.len());
                c.gql_expect(
                    MARK,
                    json!({ "ids": [ids[i].to_string()], "action": action }),
                    Some(token),
                    "\"updated\":1",
                )
                .await
            }
        },
    )
    .await
}

/// What one subscriber saw.
struct Seen {
    user: usize,
    /// Seqs received (`true`: an InboxResync) and when.
    events: Vec<(i64, Instant, bool)>,
    /// An error or an early end of the subscription.
    failure: Option<String>,
}

/// Live: `--subscribers` sockets on `--live-users` users, marks offered at
/// `--rate` for `--duration`, round robin over the users.
pub async fn live_fanout(
    args: &Args,
    client: &Arc<Client>,
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let users = users(client, db, args.live_users, args.mark_ids).await?;
    let per_user = (args.subscribers / args.live_users.max(1)).max(1);
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for _ in 0..per_user {
            let mut socket = ws::subscribe(
                &args.url,
                &user.token,
                ws::INBOX_EVENTS,
                json!({ "after": user.last_seq }),
            )
            .await?;
            let (mut stopped, received) = (stopped.clone(), received.clone());
            readers.push(tokio::spawn(async move {
                let mut seen = Seen {
                    user: u,
                    events: Vec::new(),
                    failure: None,
                };
                loop {
                    let msg = tokio::select! {
                        _ = stopped.changed() => break,
                        msg = socket.next() => msg,
                    };
                    let at = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(text))) => match ws::inbox_event(&text) {
                            Received::Event { seq, resync } => {
                                seen.events.push((seq, at, resync));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Received::Failed(e) => {
                                seen.failure = Some(e);
                                break;
                            }
                            Received::Other => {}
                        },
                        Some(Ok(_)) => {}
                        other => {
                            seen.failure = Some(format!("socket ended: {other:?}"));
                            break;
                        }
                    }
                }
                seen
            }));
        }
    }
    let subscribers = readers.len();
    // Each subscription has read its (empty) replay and gone live.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started: Arc<Mutex<HashMap<(usize, i64), Instant>>> = Arc::default();
    let failed_marks = Arc::new(AtomicU64::new(0));
    let total = args.rate * args.duration;
    let targets: Arc<Vec<(Arc<str>, Vec<i64>)>> = Arc::new(
        users
            .iter()
            .map(|u| (u.token.clone(), u.ids.clone()))
            .collect(),
    );
    let send_start = Instant::now();
    {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        let mut inflight = Vec::new();
        for i in 0..total {
            tick.tick().await;
            let (client, targets, started, failed) = (
                client.clone(),
                targets.clone(),
                started.clone(),
                failed_marks.clone(),
            );
            inflight.push(tokio::spawn(async move {
                let u = (i % targets.len() as u64) as usize;
                let (token, ids) = &targets[u];
                let (n, action) = toggle(i / targets.len() as u64, ids.len());
                let t = Instant::now();
                let body = client
                    .gql(
                        MARK,
                        json!({ "ids": [ids[n].to_string()], "action": action }),
                        Some(token),
                    )
                    .await;
                match body
                    .ok()
                    .and_then(|b| b["data"]["markNotifications"]["seq"].as_i64())
                {
                    Some(seq) => {
                        started
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert((u, seq), t);
                    }
                    None => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in inflight {
            let _ = task.await;
        }
    }
    let send_elapsed = send_start.elapsed();
    let marks = started.lock().unwrap_or_else(PoisonError::into_inner).len();
    let expected = (marks * per_user) as u64;
    let wait_start = Instant::now();
    while received.load(Ordering::Relaxed) < expected
        && wait_start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);

    let started = std::mem::take(&mut *started.lock().unwrap_or_else(PoisonError::into_inner));
    let mut latencies = Vec::new();
    let (mut resyncs, mut out_of_order, mut failures) = (0u64, 0u64, Vec::new());
    for reader in readers {
        let seen = reader.await?;
        let mut expected_seq = users[seen.user].last_seq + 1;
        for (seq, at, resync) in seen.events {
            if resync {
                resyncs += 1;
                expected_seq = seq + 1;
                continue;
            }
            if seq != expected_seq {
                out_of_order += 1;
            }
            expected_seq = seq + 1;
            if let Some(t) = started.get(&(seen.user, seq)) {
                latencies.push(at.duration_since(*t));
            }
        }
        failures.extend(seen.failure);
    }
    let delivered = latencies.len() as u64;
    let phase = Phase {
        name: String::new(),
        latencies,
        errors: 0,
        elapsed: send_elapsed,
        server_cpu: None,
    };
    println!(
        "| inboxEvents fan-out | marks (per second) | events delivered | missed | p50 ms | p99 ms | max ms | InboxResync | out of order | failed marks | subscriptions ended |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {subscribers} subscribers of {} users, {}/s offered | {marks} ({:.0}) | {delivered} of {expected} | {} | {:.2} | {:.2} | {:.2} | {resyncs} | {out_of_order} | {} | {} |",
        users.len(),
        args.rate,
        marks as f64 / send_elapsed.as_secs_f64(),
        expected.saturating_sub(delivered),
        phase.percentile(0.50),
        phase.percentile(0.99),
        phase.percentile(1.0),
        failed_marks.load(Ordering::Relaxed),
        failures.len(),
    );
    if let Some(first) = failures.first() {
        eprintln!(
            "warning: {} subscriptions ended early, first: {first}",
            failures.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggling_alternates_read_and_unread_per_pass_over_the_ids() {
        let marks: Vec<_> = (0..6).map(|k| toggle(k, 3)).collect();
        assert_eq!(
            marks,
            [
                (0, "READ"),
                (1, "READ"),
                (2, "READ"),
                (0, "UNREAD"),
                (1, "UNREAD"),
                (2, "UNREAD")
            ]
        );
    }
}
