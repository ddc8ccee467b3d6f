//! The `inboxEvents` subscription (issue 10): replay then live without a
//! gap or a repeat, reconnects that continue exactly, InboxResync, isolation
//! between users, and repair of a lost publish.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, unique_email};
use crate::ws_client::{Socket, acked_modern, next_json, send, until_live};
use crate::{both_backends, without_worker};

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

// Without a worker, so the test knows every seq.
without_worker!(
    an_after_older_than_the_log_resyncs_then_continues,
    older_than_the_log
);
async fn older_than_the_log(app: &TestApp) {
    let token = app.token_for(&unique_email("pruned")).await;
    for i in 0..3 {
        app.send_ok(&token, &format!("old {i}"), "c").await;
    }
    // Pruned as the retention would a week on: all but the last event.
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    let retention = std::time::Duration::from_secs(3600);
    herald::worker::prune_events(
        &db,
        herald::storage::now() + chrono::Duration::days(8),
        retention,
    )
    .await
    .expect("prune");
    db.close().await.expect("close");
    // From before the oldest kept event (seq 3): resync at the last seq.
    let mut resynced = Vec::new();
    for after in [0, 1] {
        let mut socket = follow(app, &token, Some(after)).await;
        let resync = next_inbox(&mut socket).await;
        assert_eq!(
            resync["__typename"], "InboxResync",
            "after {after}: {resync}"
        );
        assert_eq!(seq(&resync), 3, "at the last seq: {resync}");
        assert_eq!(
            resync["counts"],
            json!({ "total": 3, "unread": 3, "unseen": 3 })
        );
        resynced.push(socket);
    }
    // From the oldest kept event on: the kept events, no resync.
    let mut kept = follow(app, &token, Some(2)).await;
    let later = app.send_ok(&token, "later", "c").await;
    let events = until_created(&mut kept, &later).await;
    assert_consecutive(&events, 3);
    // The resynced ones continue after the seq they were given.
    for socket in &mut resynced {
        let events = until_created(socket, &later).await;
        assert_consecutive(&events, 4);
    }
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

// Without a worker, so no delivery status change brings the log read: only
// the seq jump of the next hint does.
without_worker!(a_lost_publish_is_repaired_from_the_log, lost_publish);
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
/// While 200 sends and 200 marks run on the first instance, a client on the
/// second (with Redis; the same one on SQLite) drops its socket three times
/// and resubscribes with the last seq it saw: what it saw is exactly
/// 1..=last, each connection consecutive, nothing twice.
async fn reconnects(app: &TestApp) {
    const SENDS: usize = 200;
    let token = app.token_for(&unique_email("reconnect")).await;
    // With Redis, the subscriber is on a second instance: events cross
    // instances through Pub/Sub (and the log).
    let sibling = match app.redis {
        Some(_) => Some(app.spawn_sibling(|c| c.worker = None).await),
        None => None,
    };
    let reader = sibling.as_ref().unwrap_or(app);
    // Sends and marks on `app`, concurrently with the reconnects below;
    // `done` counts the sends so far.
    let (done, mut progress) = tokio::sync::watch::channel(0);
    let writer = {
        let (url, token) = (app.graphql_url(), token.clone());
        tokio::spawn(async move { sends_and_marks(&url, &token, SENDS, &done).await })
    };
    let mut connections: Vec<Vec<i64>> = Vec::new();
    let mut last = 0;
    // Each connection ends at its quarter of the writes: three drops while
    // the writes go on, alternately a clean close and a cut-off socket.
    for quarter in 1..=3 {
        let mut socket = follow(reader, &token, Some(last)).await;
        let mut seen = Vec::new();
        let target = SENDS * quarter / 4;
        loop {
            tokio::select! {
                event = next_inbox(&mut socket) => seen.push(seq(&event)),
                _ = progress.wait_for(|n| *n >= target) => break,
            }
        }
        if let Some(s) = seen.last() {
            last = *s;
        }
        connections.push(seen);
        if quarter % 2 == 1 {
            socket.close(None).await.expect("close");
        } else {
            drop(socket);
        }
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
    assert!(max >= end && end >= 2 * SENDS as i64, "{max} {end}");
    assert_eq!(union, (1..=max).collect::<BTreeSet<i64>>());
}

/// `n` sends, each followed by a READ mark of it, over plain HTTP; `done`
/// counts the sends.
async fn sends_and_marks(
    url: &str,
    token: &str,
    n: usize,
    done: &tokio::sync::watch::Sender<usize>,
) {
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
        done.send_replace(i + 1);
    }
}

// ---- A request cancelled right after its commit ----

/// A `sendNotification` of `user_id`'s over a raw HTTP/1.1 connection to
/// `addr`, hung up as soon as its row is committed (visible in `db`) and
/// the newest of the user's. Returns the row's id, whether the answer had
/// come by the hang-up (then nothing was cancelled), and when it hung up.
async fn send_and_hang_up_after_commit(
    addr: &str,
    token: &str,
    db: &sea_orm::DatabaseConnection,
    user_id: i64,
    previous: Option<i64>,
) -> (i64, bool, tokio::time::Instant) {
    use entity::notification::{Column, Entity};
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
    use tokio::io::AsyncWriteExt as _;
    let body = json!({
        "query": "mutation { sendNotification(input: {title: \"cut\", content: \"c\"}) { id } }",
    })
    .to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let id = loop {
        let newest = Entity::find()
            .filter(Column::UserId.eq(user_id))
            .order_by_desc(Column::Id)
            .one(db)
            .await
            .expect("the database")
            .map(|n| n.id);
        if let Some(id) = newest.filter(|id| Some(*id) != previous) {
            break id;
        }
        assert!(tokio::time::Instant::now() < deadline, "never committed");
    };
    let mut byte = [0_u8; 1];
    let answered =
        !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    drop(stream);
    (id, answered, tokio::time::Instant::now())
}

/// Sends hung up right after their commit, one at a time, until five of
/// them were cut off before their answer: each one's creation reaches a
/// subscriber (on the other instance, with Redis) within a second, and
/// each one is delivered within seconds, while the visibility timeout
/// (which would let the sweeper cover a lost enqueue) is far longer than
/// the test, and the subscriber's own re-read of the log comes only after
/// five quiet seconds.
async fn cancelled_after_commit(backend: crate::helpers::Backend) {
    use std::time::Duration;

    use crate::smtp_sink::SmtpSink;
    use crate::ws_client::until_events_flow;

    const CANCELLED: usize = 5;
    const ATTEMPTS: usize = 60;
    let sink = SmtpSink::start().await;
    let smtp = sink.url();
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.mail.smtp_url = Some(secrecy::SecretString::from(smtp));
        if let Some(w) = c.worker.as_mut() {
            w.visibility_timeout = Duration::from_secs(600);
        }
    })
    .await
    else {
        return;
    };
    let sibling = match app.redis {
        Some(_) => Some(app.spawn_sibling(|c| c.worker = None).await),
        None => None,
    };
    let reader = sibling.as_ref().unwrap_or(&app);
    until_events_flow(reader).await;
    let email = unique_email("cancelled");
    let token = app.token_for(&email).await;
    let me = app.me(Some(&token)).await;
    let user_id: i64 = me["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{me}"));
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut socket = follow(reader, &token, None).await;

    let (mut cancelled, mut sent) = (0, 0);
    let mut previous = None;
    while cancelled < CANCELLED {
        assert!(
            sent < ATTEMPTS,
            "only {cancelled} of {sent} hang-ups came between the commit and the answer"
        );
        let (id, answered, hung_up) =
            send_and_hang_up_after_commit(&addr, &token, &db, user_id, previous).await;
        previous = Some(id);
        sent += 1;
        cancelled += usize::from(!answered);
        let id = id.to_string();
        let within = hung_up + Duration::from_secs(1);
        loop {
            let event = tokio::time::timeout_at(within, next_inbox(&mut socket))
                .await
                .unwrap_or_else(|_| {
                    panic!("notification {id} (answered: {answered}) committed, its creation not delivered within 1 s")
                });
            if created_id(&event) == Some(id.as_str()) {
                break;
            }
        }
    }
    // Every one of them is delivered within seconds: at the mail server,
    // and SENT.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mails = sink
            .received()
            .iter()
            .filter(|m| m.rcpt_to.iter().any(|to| to.contains(&email)))
            .count();
        let page = app.page(&token, 1, 100).await;
        let items = page["data"]["notifications"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .clone();
        assert_eq!(items.len(), sent, "{page}");
        if mails == sent && items.iter().all(|n| n["status"] == "SENT") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{mails} of {sent} mailed 5 s after the last hang-up: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await.expect("close");
}

mod a_request_cancelled_after_its_commit_still_gets_its_event_and_delivery {
    crate::on_backends!(super::cancelled_after_commit; sqlite => Sqlite, postgres => Postgres);
}

// ---- Redis Pub/Sub cut ----

/// Two instances on Postgres + Redis without workers, the second's Redis
/// through a relay the test can cut; an account named after `name`
/// followed live on the second. `None` without the services.
async fn relayed_follower(
    name: &str,
) -> Option<(TestApp, crate::relay::Relay, TestApp, String, Socket)> {
    let app = TestApp::spawn_with(crate::helpers::Backend::Postgres, |c| c.worker = None).await?;
    let (relay, reader) = crate::relay::sibling_through_relay(&app).await;
    crate::ws_client::until_events_flow(&reader).await;
    let token = app.token_for(&unique_email(name)).await;
    let socket = follow(&reader, &token, None).await;
    Some((app, relay, reader, token, socket))
}

/// The second instance's Redis (Pub/Sub included) goes through a relay
/// that is cut twice (black-holed, then refusing) while the first instance
/// writes: its subscriber gets every seq exactly once and in order, the
/// missed ones within a second of the feed coming back (the follower
/// re-reads the log when its Redis subscription is back, not only after
/// five quiet seconds), and later events live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscriber_misses_an_event_while_pubsub_is_cut() {
    use std::time::Duration;

    use crate::relay::Relay;

    let Some((app, relay, reader, token, mut socket)) = relayed_follower("cut").await else {
        return;
    };
    let mut seen = Vec::new();
    let mut read_until = async |socket: &mut Socket, end: i64, within: Duration| {
        let deadline = tokio::time::Instant::now() + within;
        while seen.last().is_none_or(|s| *s < end) {
            let event = tokio::time::timeout_at(deadline, next_inbox(socket))
                .await
                .unwrap_or_else(|_| panic!("seq {end} not delivered in time: {seen:?}"));
            seen.push(seq(&event));
        }
    };
    let url = app.graphql_url();
    let (done, _) = tokio::sync::watch::channel(0);
    sends_and_marks(&url, &token, 5, &done).await;
    read_until(&mut socket, 10, Duration::from_secs(2)).await;

    for cut in [Relay::black_hole, Relay::cut] {
        cut(&relay);
        // Writes for about three seconds; the server keeps writing what
        // its follower has to the socket.
        let writes = sends_and_marks(&url, &token, 15, &done);
        let pacing = tokio::time::sleep(Duration::from_secs(3));
        let (_, _) = tokio::join!(writes, pacing);
        relay.restore();
        crate::ws_client::until_events_flow(&reader).await;
        let end = last_seq(&app, &token).await;
        read_until(&mut socket, end, Duration::from_secs(1)).await;
        // Live again: the next change arrives at once.
        sends_and_marks(&url, &token, 1, &done).await;
        read_until(&mut socket, end + 2, Duration::from_secs(1)).await;
    }
    let end = last_seq(&app, &token).await;
    assert_eq!(
        seen,
        (1..=end).collect::<Vec<_>>(),
        "every seq once, in order"
    );
}

mod an_idle_subscriber_runs_no_sql_and_finds_a_lost_hint_by_the_cached_seq {
    crate::on_backends!(super::idle; sqlite => Sqlite, postgres => Postgres);
}
/// An idle `inboxEvents` subscriber compares its position with the user's
/// cached last seq every few seconds, not with the log: while nothing
/// changes it runs no SQL. With Redis, a change committed whose hint and
/// cache update were lost (its instance died right after the commit) is
/// found once the snapshot entry is gone (here deleted, as its short TTL
/// would): the next check reads the counter row, then the log.
async fn idle(backend: crate::helpers::Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.worker = None).await else {
        return;
    };
    let (token, user_id) = app.account("idle").await;
    let token = token.as_str();
    let first = app.send_ok(token, "one", "c").await;
    let mut socket = follow(&app, token, Some(0)).await;
    assert_eq!(seq(&next_inbox(&mut socket).await), 1);

    let before = app.stats.total();
    tokio::time::sleep(herald::follow::RECHECK * 2 + std::time::Duration::from_secs(1)).await;
    assert_eq!(
        app.stats.total(),
        before,
        "an idle subscriber ran SQL over two checks"
    );

    let Some(redis) = app.redis.as_ref() else {
        return;
    };
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
    let unannounced = marked.event.expect("the mark changed something").seq;
    let key = herald::keys::Keys::new(redis.prefix.clone()).inbox_snapshot(user_id);
    let client = redis::Client::open(crate::helpers::redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let started = std::time::Instant::now();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let event = next_inbox(&mut socket).await;
    assert_eq!(seq(&event), unannounced, "{event}");
    assert_eq!(event["__typename"], "NotificationsMarked");
    assert!(
        started.elapsed() < herald::follow::RECHECK + std::time::Duration::from_secs(3),
        "found after {:?}",
        started.elapsed()
    );
    db.close().await.expect("close");
}

/// With Redis: the second instance's Redis connections go silent without
/// closing (a dropped NAT entry). Its Pub/Sub subscription notices by its
/// PINGs, subscribes again and goes on: hints from the first instance
/// arrive live again within seconds, and the subscriber misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_pubsub_connection_is_replaced() {
    use std::time::Duration;

    let Some((app, relay, reader, token, mut socket)) = relayed_follower("frozen").await else {
        return;
    };
    let url = app.graphql_url();
    let (done, _) = tokio::sync::watch::channel(0);
    sends_and_marks(&url, &token, 1, &done).await;
    let mut seen = vec![seq(&next_inbox(&mut socket).await)];
    seen.push(seq(&next_inbox(&mut socket).await));

    relay.freeze();
    // Hints the first instance publishes reach the second again.
    const MARKER: i64 = -2;
    let mut hints = reader.events.subscribe_inbox(MARKER);
    let marker = herald::wire::InboxHintV1 {
        user_id: MARKER,
        event: None,
    };
    let started = std::time::Instant::now();
    loop {
        app.events.publish_inbox(&marker).await.expect("publish");
        if let Ok(Ok(herald::pubsub::InboxFeed::Hint(_))) =
            tokio::time::timeout(Duration::from_millis(200), hints.recv()).await
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the frozen subscription was never replaced"
        );
    }
    // Live: each change arrives at once, with nothing skipped.
    for _ in 0..3 {
        sends_and_marks(&url, &token, 1, &done).await;
        for _ in 0..2 {
            let event = tokio::time::timeout(Duration::from_millis(1500), next_inbox(&mut socket))
                .await
                .expect("a live event within 1.5 s");
            seen.push(seq(&event));
        }
    }
    assert_eq!(seen, (1..=8).collect::<Vec<_>>());
}
