//! The `inboxEvents` subscription (issue 10): replay then live without a
//! gap or a repeat, reconnects that continue exactly, InboxResync, isolation
//! between users, and repair of a lost publish.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{TestApp, error_code, unique_email};
use crate::ws_client::{Socket, acked_modern, next_json, send, until_live};

const EVENTS: &str = "subscription($after: Int) { inboxEvents(after: $after) { __typename seq counts { total unread unseen } ... on NotificationCreated { notification { id } } } }";

/// An `inboxEvents(after:)` subscription as "1". With `after: None` it is
/// live on return; with `Some` its replay may already be on its way.
async fn follow(app: &TestApp, token: &str, after: Option<i64>) -> Socket {
    let mut socket = acked_modern(app, "/graphql/ws", token).await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe",
                "payload": { "query": EVENTS, "variables": { "after": after } } }),
    )
    .await;
    if after.is_none() {
        until_live(&mut socket).await;
    }
    socket
}

/// The next inbox event on `socket`.
pub(crate) async fn next_inbox(socket: &mut Socket) -> Value {
    let msg = next_json(socket).await;
    assert_eq!(msg["type"], "next", "{msg}");
    assert!(msg["payload"]["errors"].is_null(), "{msg}");
    msg["payload"]["data"]["inboxEvents"].clone()
}

fn seq(event: &Value) -> i64 {
    event["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("no seq: {event}"))
}

fn created_id(event: &Value) -> Option<&str> {
    (event["__typename"] == "NotificationCreated")
        .then(|| event["notification"]["id"].as_str())
        .flatten()
}

/// Events until (and with) the NotificationCreated of `id`.
async fn until_created(socket: &mut Socket, id: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = next_inbox(socket).await;
        let done = created_id(&event) == Some(id);
        events.push(event);
        if done {
            return events;
        }
    }
}

/// Asserts each event's seq is the previous one's + 1, starting at `first`.
fn assert_consecutive(events: &[Value], first: i64) {
    let seqs: Vec<i64> = events.iter().map(seq).collect();
    let expected: Vec<i64> = (first..first + seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "events: {events:?}");
}

pub(crate) async fn last_seq(app: &TestApp, token: &str) -> i64 {
    let body = app
        .gql("{ inbox(first: 1) { lastSeq } }", json!({}), Some(token))
        .await;
    body["data"]["inbox"]["lastSeq"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"))
}

both_backends!(replay_then_live_without_gap_or_repeat, replay_then_live);
async fn replay_then_live(app: &TestApp) {
    let token = app.token_for(&unique_email("replay")).await;
    let first = app.send_ok(&token, "one", "c").await;
    let second = app.send_ok(&token, "two", "c").await;
    let mut socket = follow(app, &token, Some(0)).await;
    let third = app.send_ok(&token, "three", "c").await;
    let events = until_created(&mut socket, &third).await;
    assert_consecutive(&events, 1);
    let created: Vec<&str> = events.iter().filter_map(created_id).collect();
    assert_eq!(created, [first.as_str(), second.as_str(), third.as_str()]);
}

both_backends!(an_after_past_the_last_seq_resyncs_then_continues, resync);
async fn resync(app: &TestApp) {
    let token = app.token_for(&unique_email("resync")).await;
    app.send_ok(&token, "one", "c").await;
    let mut socket = follow(app, &token, Some(1_000)).await;
    let resync = next_inbox(&mut socket).await;
    assert_eq!(resync["__typename"], "InboxResync", "{resync}");
    assert!(seq(&resync) >= 1 && seq(&resync) <= last_seq(app, &token).await);
    let later = app.send_ok(&token, "two", "c").await;
    let events = until_created(&mut socket, &later).await;
    assert_consecutive(&events, seq(&resync) + 1);

    // A negative `after` is bad input.
    let mut bad = acked_modern(app, "/graphql/ws", &token).await;
    send(
        &mut bad,
        json!({ "id": "1", "type": "subscribe",
                "payload": { "query": EVENTS, "variables": { "after": -1 } } }),
    )
    .await;
    let msg = next_json(&mut bad).await;
    let code = msg["payload"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| error_code(&msg["payload"]));
    assert_eq!(code, Some("BAD_USER_INPUT"), "{msg}");
}

both_backends!(a_user_never_sees_another_users_events, isolation);
async fn isolation(app: &TestApp) {
    let alice = app.token_for(&unique_email("alice")).await;
    let bob = app.token_for(&unique_email("bob")).await;
    let mut bobs = follow(app, &bob, None).await;
    let alices = app.send_ok(&alice, "for alice", "c").await;
    app.send_ok(&alice, "for alice again", "c").await;
    let his = app.send_ok(&bob, "for bob", "c").await;
    let events = until_created(&mut bobs, &his).await;
    // Bob's own numbering, from his first change: nothing of Alice's.
    assert_consecutive(&events, 1);
    let created: Vec<&str> = events.iter().filter_map(created_id).collect();
    assert_eq!(created, [his.as_str()], "not {alices}");
}

/// Without a worker, so no delivery status change brings the log read: only
/// the seq jump of the next hint does.
mod a_lost_publish_is_repaired_from_the_log {
    async fn run(backend: crate::helpers::Backend) {
        let app = crate::helpers::TestApp::spawn_with(backend, |c| c.worker = None).await;
        if let Some(app) = app {
            super::lost_publish(&app).await;
        }
    }

    crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
}

async fn lost_publish(app: &TestApp) {
    let token = app.token_for(&unique_email("lost")).await;
    let me = app.me(Some(&token)).await;
    let user_id: i64 = me["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{me}"));
    let mut socket = follow(app, &token, None).await;
    let first = app.send_ok(&token, "one", "c").await;
    // A change committed with its event but never published (as after a
    // crash right after the commit): written with storage directly.
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    let marked = herald::storage::inbox::mark(
        &db,
        user_id,
        herald::domain::inbox::InboxAction::Read,
        herald::storage::inbox::Target::Ids(vec![first.parse().expect("id")]),
        herald::storage::now(),
    )
    .await
    .expect("mark");
    let unpublished = marked.event.expect("the mark changed something").seq;
    let second = app.send_ok(&token, "two", "c").await;
    let events = until_created(&mut socket, &second).await;
    assert_consecutive(&events, 1);
    assert_eq!(events.len(), 3, "created, marked, created: {events:?}");
    let marked_at = events
        .iter()
        .position(|e| seq(e) == unpublished)
        .expect("the unpublished event is delivered");
    assert_eq!(events[marked_at]["__typename"], "NotificationsMarked");
    assert_eq!(events[marked_at]["counts"]["unread"], 0);
    db.close().await.expect("close");
}

both_backends!(
    reconnects_with_the_last_seen_seq_continue_exactly,
    reconnects
);
async fn reconnects(app: &TestApp) {
    let token = app.token_for(&unique_email("reconnect")).await;
    // With Redis, the subscriber is on a second instance: events cross
    // instances through Pub/Sub (and the log).
    let sibling = match app.redis {
        Some(_) => Some(app.spawn_sibling(|_| {}).await),
        None => None,
    };
    let reader = sibling.as_ref().unwrap_or(app);
    // Sends and marks on `app`, concurrently with the reconnects below.
    let writer = {
        let (url, token) = (app.graphql_url(), token.clone());
        tokio::spawn(async move { sends_and_marks(&url, &token, 25).await })
    };
    let mut connections: Vec<Vec<i64>> = Vec::new();
    let mut last = 0;
    for _ in 0..3 {
        let mut socket = follow(reader, &token, Some(last)).await;
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(seq(&next_inbox(&mut socket).await));
        }
        last = *seen.last().expect("events");
        connections.push(seen);
        socket.close(None).await.expect("close");
    }
    writer.await.expect("the writer");
    let end = last_seq(app, &token).await;
    let mut socket = follow(reader, &token, Some(last)).await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|s| *s < end) {
        seen.push(seq(&next_inbox(&mut socket).await));
    }
    connections.push(seen);

    let mut union = BTreeSet::new();
    let mut expected_first = 1;
    for seqs in &connections {
        let expected: Vec<i64> = (expected_first..expected_first + seqs.len() as i64).collect();
        assert_eq!(seqs, &expected, "each connection continues exactly");
        expected_first += seqs.len() as i64;
        for s in seqs {
            assert!(union.insert(*s), "seq {s} seen twice");
        }
    }
    let max = *union.last().expect("events");
    assert!(max >= end);
    assert_eq!(union, (1..=max).collect::<BTreeSet<i64>>());
}

/// `n` sends, each followed by a READ mark of it, over plain HTTP.
async fn sends_and_marks(url: &str, token: &str, n: usize) {
    let client = reqwest::Client::new();
    let gql = |query: &'static str, variables: Value| {
        let request = client
            .post(url)
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }));
        async move {
            let body: Value = request
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
            assert!(body["errors"].is_null(), "{body}");
            body
        }
    };
    for i in 0..n {
        let body = gql(
            "mutation($t: String!) { sendNotification(input: {title: $t, content: \"c\"}) { id } }",
            json!({ "t": format!("n{i}") }),
        )
        .await;
        let id = body["data"]["sendNotification"]["id"].clone();
        gql(
            "mutation($id: ID!) { markNotifications(ids: [$id], action: READ) { updated } }",
            json!({ "id": id }),
        )
        .await;
    }
}
