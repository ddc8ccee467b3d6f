//! Fan-out by user (issue 10; DESIGN.md, invariant 9): while one user
//! produces a burst of events, another user's subscription on the same
//! instance gets its own events at once and never resyncs, and the noisy
//! user's subscriber still gets every event of the burst, in order.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::helpers::{TestApp, unique_email};
use crate::inbox_events::{last_seq, next_inbox};
use crate::ws_client::{Socket, acked_modern, send, until_live};

const EVENTS: &str = "subscription($after: Int) { inboxEvents(after: $after) { __typename seq ... on NotificationsMarked { ids } } }";

/// Events of the noisy user's burst: READ/UNREAD toggles, each a change.
const BURST: usize = 5_000;
/// Concurrent writers of the burst, each toggling a notification of its own.
const WRITERS: usize = 8;
/// How long the quiet user's event may take to reach its socket after its
/// mark was answered (the hint is published before the answer, so it is
/// usually there first).
const PROMPT: Duration = Duration::from_millis(500);
/// And after its mark was sent, the mark's own commit included (generous:
/// a debug build, two shared cores, and on SQLite one writer at a time,
/// the burst's included).
const PROMPT_FROM_REQUEST: Duration = Duration::from_secs(2);

async fn follow(app: &TestApp, token: &str, after: Option<i64>) -> Socket {
    let mut socket = acked_modern(app, "/graphql/ws", token).await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe",
                "payload": { "query": EVENTS, "variables": { "after": after } } }),
    )
    .await;
    until_live(&mut socket).await;
    socket
}

/// Posts a mutation as `token` over a client of its own, asserting success.
async fn gql(client: &reqwest::Client, url: &str, token: &str, query: &str, variables: Value) {
    let body: Value = client
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(body["errors"].is_null(), "{body}");
}

const MARK: &str = "mutation($id: ID!, $a: InboxAction!) { markNotifications(ids: [$id], action: $a) { updated } }";

mod a_quiet_user_is_not_held_up_by_a_noisy_users_burst {
    /// Without a worker: the burst is the marks alone, so its size is known.
    async fn run(backend: crate::helpers::Backend) {
        let app = crate::helpers::TestApp::spawn_with(backend, |c| c.worker = None).await;
        if let Some(app) = app {
            super::quiet_and_noisy(&app).await;
        }
    }

    crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
}

async fn quiet_and_noisy(app: &TestApp) {
    let noisy = app.token_for(&unique_email("noisy")).await;
    let quiet = app.token_for(&unique_email("quiet")).await;
    let mut toggled = Vec::new();
    for i in 0..WRITERS {
        toggled.push(app.send_ok(&noisy, &format!("noisy {i}"), "c").await);
    }
    let mine = app.send_ok(&quiet, "quiet", "c").await;
    let start = last_seq(app, &noisy).await;

    // The noisy user's subscriber reads everything, concurrently.
    let mut noisy_socket = follow(app, &noisy, Some(start)).await;
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(BURST);
        while seen.len() < BURST {
            let event = next_inbox(&mut noisy_socket).await;
            assert_ne!(event["__typename"], "InboxResync", "{event}");
            seen.push(event["seq"].as_i64().expect("seq"));
        }
        seen
    });
    let mut quiet_socket = follow(app, &quiet, None).await;

    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = toggled
        .into_iter()
        .map(|id| {
            let (url, token, done) = (app.graphql_url(), noisy.clone(), done.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for n in 0..BURST / WRITERS {
                    let action = if n % 2 == 0 { "READ" } else { "UNREAD" };
                    gql(
                        &client,
                        &url,
                        &token,
                        MARK,
                        json!({ "id": id, "a": action }),
                    )
                    .await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Three marks of the quiet user's while the burst runs.
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    for (i, action) in ["READ", "UNREAD", "READ"].into_iter().enumerate() {
        let at = BURST * (i + 1) / 4;
        while done.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let url = app.graphql_url();
        let asked = Instant::now();
        let answered = async {
            gql(
                &client,
                &url,
                &quiet,
                MARK,
                json!({ "id": mine, "a": action }),
            )
            .await;
            Instant::now()
        };
        let arrives = async {
            let event = next_inbox(&mut quiet_socket).await;
            (event, Instant::now())
        };
        let (answered, (event, arrived)) = tokio::join!(answered, arrives);
        assert_eq!(event["__typename"], "NotificationsMarked", "{event}");
        assert_eq!(event["ids"], json!([mine]), "{event}");
        assert!(
            done.load(Ordering::Relaxed) < BURST,
            "the burst still runs (else the test proves nothing)"
        );
        latencies.push((arrived.saturating_duration_since(answered), arrived - asked));
    }
    for writer in writers {
        writer.await.expect("a writer");
    }
    let seen = reader.await.expect("the noisy reader");
    let expected: Vec<i64> = (start + 1..=start + BURST as i64).collect();
    if let Some(i) = (0..BURST).find(|&i| seen.get(i) != expected.get(i)) {
        panic!(
            "the noisy subscriber's event {i} is seq {:?}, not {}",
            seen.get(i),
            expected[i]
        );
    }
    eprintln!("quiet user's events (after the answer, after the request): {latencies:?}");
    for (after_answer, after_request) in &latencies {
        assert!(
            *after_answer < PROMPT && *after_request < PROMPT_FROM_REQUEST,
            "the quiet user's event came {after_answer:?} after its mark was answered, \
             {after_request:?} after it was sent"
        );
    }
    // Nothing else came to the quiet user (no resync, no one else's event).
    until_live(&mut quiet_socket).await;
}
