//! notificationStatusChanged over websocket: both subprotocols, auth in
//! connection_init, isolation between users, and events across instances.

use std::time::Duration;

use futures_util::StreamExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, unique_email};
use crate::smtp_sink::SmtpSink;
use crate::ws_client::{
    SUBSCRIPTION, Socket, WITHIN, acked_modern, close_code, connect, init_modern, next_event,
    next_json, refused, send, subscribe, subscribe_modern, until_events_flow, until_live,
    until_live_legacy,
};

/// (previousStatus, status) of the events for `id`, until SENT.
async fn statuses_until_sent(
    socket: &mut Socket,
    id: &str,
    data_type: &str,
) -> Vec<(Value, Value)> {
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|(_, s): &(Value, Value)| s != "SENT")
    {
        let msg = next_json(socket).await;
        assert_eq!(msg["type"], data_type, "{msg}");
        let event = &msg["payload"]["data"]["notificationStatusChanged"];
        assert!(msg["payload"]["errors"].is_null(), "{msg}");
        if event["notification"]["id"] == id {
            assert_eq!(event["notification"]["status"], event["status"]);
            assert!(event["at"].is_string());
            seen.push((event["previousStatus"].clone(), event["status"].clone()));
        }
    }
    seen
}

fn expected() -> Vec<(Value, Value)> {
    vec![
        (Value::Null, json!("PENDING")),
        (json!("PENDING"), json!("PROCESSING")),
        (json!("PROCESSING"), json!("SENT")),
    ]
}

both_backends!(graphql_transport_ws_streams_every_status_in_order, modern);
async fn modern(app: &TestApp) {
    let email = unique_email("live");
    let token = app.token_for(&email).await;
    let mut socket = subscribe_modern(app, "/graphql/ws", &token).await;
    until_live(&mut socket).await;
    until_events_flow(app).await;
    let id = app.send_ok(&token, "Live", "watch").await;
    assert_eq!(
        statuses_until_sent(&mut socket, &id, "next").await,
        expected()
    );
    // Complete from the client side: the server answers nothing, and sends
    // no more events to "1"; the next message is an event of "2".
    send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    subscribe(&mut socket, "2").await;
    until_live(&mut socket).await;
    let later = app.send_ok(&token, "Later", "watch").await;
    assert_eq!(next_event(&mut socket, &later).await["id"], "2");
}

both_backends!(legacy_graphql_ws_streams_every_status_in_order, legacy);
async fn legacy(app: &TestApp) {
    let token = app.token_for(&unique_email("legacy")).await;
    // Many clients point at /graphql itself.
    let mut socket = connect(app, "/graphql", "graphql-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "token": token } }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "7", "type": "start", "payload": { "query": SUBSCRIPTION } }),
    )
    .await;
    until_live_legacy(&mut socket).await;
    until_events_flow(app).await;
    let id = app.send_ok(&token, "Legacy", "watch").await;
    assert_eq!(
        statuses_until_sent(&mut socket, &id, "data").await,
        expected()
    );
}

both_backends!(a_subscriber_sees_only_its_own_notifications, isolation);
async fn isolation(app: &TestApp) {
    let alice = app.token_for(&unique_email("alice")).await;
    let bob = app.token_for(&unique_email("bob")).await;
    let mut alice_socket = subscribe_modern(app, "/graphql/ws", &alice).await;
    let mut bob_socket = subscribe_modern(app, "/graphql/ws", &bob).await;
    until_live(&mut alice_socket).await;
    until_live(&mut bob_socket).await;
    until_events_flow(app).await;
    let id = app.send_ok(&alice, "Private", "for alice").await;
    statuses_until_sent(&mut alice_socket, &id, "next").await;
    // Bob's first message is about his own notification, sent after
    // alice's was SENT: nothing of hers came before it.
    let his = app.send_ok(&bob, "His", "for bob").await;
    next_event(&mut bob_socket, &his).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_closes_with_4403_and_subscribe_before_ack_with_4401() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    for payload in [
        json!({ "authorization": "Bearer nope" }),
        json!({}),
        json!(null),
    ] {
        let mut socket = connect(&app, "/graphql/ws", "graphql-transport-ws").await;
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        assert_eq!(
            close_code(&mut socket, WITHIN).await,
            Some(4403),
            "{payload}"
        );
    }
    let mut socket = connect(&app, "/graphql/ws", "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION } }),
    )
    .await;
    assert_eq!(close_code(&mut socket, WITHIN).await, Some(4401));
    // A second init is refused with 4429.
    let token = app.token_for(&unique_email("twice")).await;
    let mut socket = connect(&app, "/graphql/ws", "graphql-transport-ws").await;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    send(&mut socket, init.clone()).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(&mut socket, init).await;
    assert_eq!(close_code(&mut socket, WITHIN).await, Some(4429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_init_within_10_s_closes_with_4408() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let mut socket = connect(&app, "/graphql/ws", "graphql-transport-ws").await;
    let started = std::time::Instant::now();
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(15)).await,
        Some(4408)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_a_graphql_subprotocol_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let url = format!("{}/graphql/ws", app.url.replace("http://", "ws://"));
    let err = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
}

/// Two instances on one Postgres and Redis: the worker runs on one, the
/// subscriber sits on the other, and every event of a burst arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_instances_through_redis() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let Some(worker_instance) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.mail.smtp_url = Some(SecretString::from(url));
    })
    .await
    else {
        return;
    };
    let api_instance = worker_instance.spawn_sibling(|c| c.worker = None).await;
    let token = api_instance.token_for(&unique_email("cross")).await;
    let mut socket = subscribe_modern(&api_instance, "/graphql/ws", &token).await;
    until_live(&mut socket).await;
    until_events_flow(&api_instance).await;
    const BURST: usize = 1000;
    for i in 0..BURST {
        api_instance
            .send_ok(&token, &format!("burst {i}"), "body")
            .await;
    }
    let mut sent_events = 0;
    let mut events = 0;
    while sent_events < BURST {
        let msg = next_json(&mut socket).await;
        assert_eq!(msg["type"], "next", "{msg}");
        events += 1;
        if msg["payload"]["data"]["notificationStatusChanged"]["status"] == "SENT" {
            sent_events += 1;
        }
    }
    assert_eq!(events, 3 * BURST, "PENDING, PROCESSING and SENT for each");
}

/// When the token expires the subscription completes and the socket closes
/// with 4403, so the client logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_completes_the_subscription_and_closes_4403() {
    use herald::auth::{Claims, JwtKeys};
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let token = app.token_for(&unique_email("expiring")).await;
    let me = app.me(Some(&token)).await;
    let now = chrono::Utc::now().timestamp();
    let short = JwtKeys::new(crate::helpers::TEST_SECRET, Duration::from_secs(60))
        .sign(&Claims {
            sub: me["data"]["me"]["id"].as_str().expect("id").to_owned(),
            iat: now,
            exp: now + 2,
            jti: "short-lived".into(),
            iss: "herald".into(),
            iat_ms: now * 1000,
        })
        .expect("sign");
    let mut socket = subscribe_modern(&app, "/graphql/ws", &short).await;
    let msg = next_json(&mut socket).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("complete"), Some("1")),
        "{msg}"
    );
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(5)).await,
        Some(4403)
    );
}

/// Shutdown closes open sockets (1001) instead of leaving them hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_sockets() {
    let mut app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let token = app.token_for(&unique_email("bye")).await;
    let mut socket = subscribe_modern(&app, "/graphql/ws", &token).await;
    app.stop().await;
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(5)).await,
        Some(1001)
    );
}

/// A thousand sockets on one instance, one user each: every socket gets the
/// three events of its own notification and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_receive_their_own_events() {
    use herald::auth::JwtKeys;
    use sea_orm::{ConnectionTrait as _, Database};
    const SOCKETS: usize = 1000;
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    // Users straight into the database (a thousand argon2 hashes would be
    // the slow part), with tokens signed by the test secret.
    let db = Database::connect(&app.database_url).await.expect("db");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let values: Vec<String> = (0..SOCKETS)
        .map(|i| format!("('many-{tag}-{i}@example.com', 'x', CURRENT_TIMESTAMP)"))
        .collect();
    db.execute_unprepared(&format!(
        "INSERT INTO users (email, password_hash, created_at) VALUES {}",
        values.join(",")
    ))
    .await
    .expect("users");
    let ids: Vec<i64> = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id FROM users WHERE email LIKE 'many-{tag}-%' ORDER BY id"),
        ))
        .await
        .expect("ids")
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0).expect("id"))
        .collect();
    assert_eq!(ids.len(), SOCKETS);
    let keys = JwtKeys::new(crate::helpers::TEST_SECRET, Duration::from_secs(3600));
    let tokens: Vec<String> = ids
        .iter()
        .map(|id| keys.issue(*id).expect("token"))
        .collect();

    let mut sockets = Vec::with_capacity(SOCKETS);
    for token in &tokens {
        sockets.push(subscribe_modern(&app, "/graphql/ws", token).await);
    }
    for socket in &mut sockets {
        until_live(socket).await;
    }
    let mut sent = Vec::with_capacity(SOCKETS);
    for token in &tokens {
        sent.push(app.send_ok(token, "one each", "body").await);
    }
    let mut received = 0;
    for (socket, id) in sockets.iter_mut().zip(&sent) {
        // Three messages, all about this socket's own notification.
        let mut events = Vec::new();
        for _ in 0..3 {
            let msg = next_json(socket).await;
            let event = &msg["payload"]["data"]["notificationStatusChanged"];
            assert_eq!(event["notification"]["id"], id.as_str(), "{msg}");
            events.push((event["previousStatus"].clone(), event["status"].clone()));
        }
        assert_eq!(events, expected());
        received += events.len();
    }
    assert_eq!(received, 3 * SOCKETS);
    // And nothing else: every event is out by now, and an event already
    // published reaches a socket before the answer to a later ping.
    for socket in &mut sockets {
        until_live(socket).await;
    }
}

/// Errors over the websocket carry contract codes as over HTTP: a query that
/// does not validate, one over the limits, and one that does not parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_carry_contract_codes() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let token = app.token_for(&unique_email("ws-codes")).await;
    let mut socket = acked_modern(&app, "/graphql/ws", &token).await;
    let aliases: String = (0..31).map(|i| format!("a{i}: __typename ")).collect();
    for (id, query, words) in [
        ("unknown", "subscription { nope }".to_owned(), "nope"),
        (
            "aliases",
            format!("subscription {{ {aliases} }}"),
            "31 aliases",
        ),
        ("syntax", "subscription {".to_owned(), ""),
    ] {
        send(
            &mut socket,
            json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
        )
        .await;
        // A document that fails before execution: one `next` holding only
        // errors, then `complete`.
        let refused = next_json(&mut socket).await;
        assert_eq!(
            (refused["type"].as_str(), refused["id"].as_str()),
            (Some("next"), Some(id)),
            "{refused}"
        );
        assert!(refused["payload"]["data"].is_null(), "{refused}");
        let error = &refused["payload"]["errors"][0];
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(words),
            "{refused}"
        );
        let done = next_json(&mut socket).await;
        assert_eq!(
            (done["type"].as_str(), done["id"].as_str()),
            (Some("complete"), Some(id)),
            "{done}"
        );
    }
    // The socket still serves a good subscription afterwards.
    subscribe(&mut socket, "good").await;
    until_live(&mut socket).await;
    let id = app.send_ok(&token, "after the errors", "body").await;
    assert_eq!(next_event(&mut socket, &id).await["id"], "good");
}

/// A websocket message may hold up to 64 KiB; a bigger one ends the socket,
/// and the server goes on serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_are_limited_to_64_kib() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let token = app.token_for(&unique_email("ws-size")).await;
    // Just under the limit (padding in an unused variable): it runs.
    let message = |pad: usize| {
        json!({ "id": "big", "type": "subscribe", "payload": {
            "query": SUBSCRIPTION, "variables": { "pad": "x".repeat(pad) } } })
    };
    let mut socket = acked_modern(&app, "/graphql/ws", &token).await;
    let under = message(0).to_string().len();
    send(&mut socket, message(64 * 1024 - under - 16)).await;
    until_live(&mut socket).await;
    let id = app.send_ok(&token, "a big subscribe", "body").await;
    assert_eq!(next_event(&mut socket, &id).await["id"], "big");
    // Over it: the socket closes with 1009 (message too big).
    let mut over = acked_modern(&app, "/graphql/ws", &token).await;
    send(&mut over, message(64 * 1024)).await;
    assert_eq!(close_code(&mut over, WITHIN).await, Some(1009));
    // Others are still served.
    let mut again = subscribe_modern(&app, "/graphql/ws", &token).await;
    until_live(&mut again).await;
    let id = app.send_ok(&token, "after the big one", "body").await;
    next_event(&mut again, &id).await;
}

/// A new user's token and a socket running 20 subscriptions, `s0` to `s19`.
async fn twenty_subscriptions(app: &TestApp, tag: &str) -> (String, Socket) {
    let token = app.token_for(&unique_email(tag)).await;
    let mut socket = acked_modern(app, "/graphql/ws", &token).await;
    for i in 0..20 {
        subscribe(&mut socket, &format!("s{i}")).await;
    }
    (token, socket)
}

/// At most 20 subscriptions run on one socket; a completed one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_runs_at_most_20_subscriptions() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let (token, mut socket) = twenty_subscriptions(&app, "many-subs").await;
    subscribe(&mut socket, "s20").await;
    assert!(refused(&mut socket, "s20").await.contains("20"));
    // One completes (the client's `complete` gets no answer); a new one
    // fits again and receives events.
    send(&mut socket, json!({ "id": "s0", "type": "complete" })).await;
    subscribe(&mut socket, "s21").await;
    until_live(&mut socket).await;
    let id = app.send_ok(&token, "to twenty", "body").await;
    let mut seen = std::collections::BTreeSet::new();
    // 20 subscriptions, 3 events each: s0 is not among them, s21 is.
    for _ in 0..60 {
        let msg = next_event(&mut socket, &id).await;
        seen.insert(msg["id"].as_str().unwrap_or_default().to_owned());
    }
    let expected: std::collections::BTreeSet<String> = (1..22)
        .map(|i| format!("s{i}"))
        .filter(|s| s != "s20")
        .collect();
    assert_eq!(seen, expected);
}

/// A notification titled `complete` is an event like any other: it frees no
/// subscription slot. (The server once spotted its own `complete` messages
/// by substring, so one such title let 20 more subscriptions in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_titled_complete_frees_no_subscription_slot() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let (token, mut socket) = twenty_subscriptions(&app, "complete-title").await;
    until_live(&mut socket).await;
    let id = app.send_ok(&token, "complete", "body").await;
    // PENDING, PROCESSING and SENT on each of the 20 subscriptions.
    for _ in 0..60 {
        let msg = next_event(&mut socket, &id).await;
        let event = &msg["payload"]["data"]["notificationStatusChanged"];
        assert_eq!(event["notification"]["title"], "complete", "{msg}");
    }
    // All 20 still run: a 21st is refused.
    subscribe(&mut socket, "s20").await;
    refused(&mut socket, "s20").await;
}

/// At most 10 open sockets per user on an instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_opens_at_most_10_sockets() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let token = app.token_for(&unique_email("many-sockets")).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(subscribe_modern(&app, "/graphql/ws", &token).await);
    }
    let mut eleventh = init_modern(&app, "/graphql/ws", &token).await;
    assert_eq!(close_code(&mut eleventh, WITHIN).await, Some(1008));
    // Closing one makes room, as soon as the server has seen it go: the
    // eleventh is refused (1008) until then.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let mut again = init_modern(&app, "/graphql/ws", &token).await;
        let answer = tokio::time::timeout_at(deadline, again.next()).await;
        let acked =
            matches!(&answer, Ok(Some(Ok(Message::Text(t)))) if t.contains("connection_ack"));
        if acked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room made: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The user id behind `token`.
async fn user_id(app: &TestApp, token: &str) -> i64 {
    app.me(Some(token)).await["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("id")
}

/// Stores a notification for `user_id` the way a send does, but publishes
/// nothing (as after a crash right after the commit): only the log has it.
async fn stored_unannounced(db: &sea_orm::DatabaseConnection, user_id: i64, title: &str) -> i64 {
    let (row, _event) = herald::storage::notifications::insert(
        db,
        user_id,
        &herald::domain::Title::parse(title).expect("title"),
        &herald::domain::Content::parse("body".to_owned()).expect("content"),
        &Default::default(),
        herald::storage::now(),
    )
    .await
    .expect("insert");
    row.id
}

/// An instance without a worker (only what a test does changes anything),
/// a user of it, their live notificationStatusChanged subscription, and a
/// connection to the instance's database.
async fn live_without_worker(
    tag: &str,
) -> (TestApp, String, i64, Socket, sea_orm::DatabaseConnection) {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.worker = None)
        .await
        .expect("sqlite");
    let token = app.token_for(&unique_email(tag)).await;
    let user_id = user_id(&app, &token).await;
    let mut socket = subscribe_modern(&app, "/graphql/ws", &token).await;
    until_live(&mut socket).await;
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("db");
    (app, token, user_id, socket, db)
}

/// A subscriber whose hints overflow (its user's buffer holds 128) catches
/// up from the log: it gets the change no hint announced, and no error.
///
/// On a current-thread runtime the flood below runs to its end before the
/// socket's task is polled again, so the subscriber falls behind for sure.
#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_that_falls_behind_catches_up_from_the_log() {
    let (app, token, user_id, mut socket, db) = live_without_worker("behind").await;
    let flood = herald::wire::InboxHintV1 {
        user_id,
        event: None,
    };
    for _ in 0..herald::pubsub::USER_CAPACITY * 4 {
        app.events.publish_inbox(&flood).await.expect("publish");
    }
    let unannounced = stored_unannounced(&db, user_id, "only in the log").await;
    for _ in 0..herald::pubsub::USER_CAPACITY * 4 {
        app.events.publish_inbox(&flood).await.expect("publish");
    }
    let msg = next_event(&mut socket, &unannounced.to_string()).await;
    assert!(msg["payload"]["errors"].is_null(), "{msg}");
    let event = &msg["payload"]["data"]["notificationStatusChanged"];
    assert_eq!(
        (&event["previousStatus"], &event["status"]),
        (&Value::Null, &json!("PENDING")),
        "{msg}"
    );
    // And the next change comes next, once.
    let later = app.send_ok(&token, "later", "body").await;
    next_event(&mut socket, &later).await;
    until_live(&mut socket).await;
    db.close().await.expect("close");
}

/// A subscriber that the log can no longer continue (the events it had not
/// read yet were pruned) gets one final error (INTERNAL, reason LAGGED, with
/// how many it missed) and its subscription completes; the socket stays
/// open for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_the_log_cannot_continue_gets_lagged_and_its_subscription_completes() {
    use sea_orm::ConnectionTrait as _;
    let (app, token, user_id, mut socket, db) = live_without_worker("lagged").await;
    for title in ["one", "two", "three"] {
        stored_unannounced(&db, user_id, title).await;
    }
    db.execute_unprepared(&format!(
        "DELETE FROM inbox_events WHERE user_id = {user_id}"
    ))
    .await
    .expect("prune");
    // "Something changed": the subscriber reads the log, which lacks it.
    app.events
        .publish_inbox(&herald::wire::InboxHintV1 {
            user_id,
            event: None,
        })
        .await
        .expect("publish");
    let lagged = next_json(&mut socket).await;
    assert_eq!(
        (lagged["type"].as_str(), lagged["id"].as_str()),
        (Some("next"), Some("1")),
        "{lagged}"
    );
    let error = &lagged["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{lagged}");
    assert_eq!(error["extensions"]["reason"], "LAGGED", "{lagged}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missed 3 events"),
        "{lagged}"
    );
    let done = next_json(&mut socket).await;
    assert_eq!(
        (done["type"].as_str(), done["id"].as_str()),
        (Some("complete"), Some("1")),
        "{done}"
    );
    // Subscribing again works, and starts from what comes next.
    subscribe(&mut socket, "2").await;
    until_live(&mut socket).await;
    let next = app.send_ok(&token, "next", "body").await;
    let again = next_event(&mut socket, &next).await;
    assert_eq!(again["id"], "2", "{again}");
    db.close().await.expect("close");
}

/// graphql-transport-ws: a `subscribe` whose id still runs closes 4409, and
/// a message of the other protocol is invalid (4400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_id_again_closes_4409_and_a_legacy_message_4400() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let token = app.token_for(&unique_email("dup-id")).await;
    let mut socket = acked_modern(&app, "/graphql/ws", &token).await;
    subscribe(&mut socket, "same").await;
    subscribe(&mut socket, "same").await;
    assert_eq!(close_code(&mut socket, WITHIN).await, Some(4409));
    let mut socket = acked_modern(&app, "/graphql/ws", &token).await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "start", "payload": { "query": SUBSCRIPTION } }),
    )
    .await;
    assert_eq!(close_code(&mut socket, WITHIN).await, Some(4400));
}

/// graphql-ws: a refused `connection_init` gets `connection_error`, then
/// the close; `stop` is confirmed with `complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_refusals_and_stops_are_answered() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let mut socket = connect(&app, "/graphql/ws", "graphql-ws").await;
    let init = |token: &str| json!({ "type": "connection_init", "payload": { "token": token } });
    send(&mut socket, init("nope")).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_error");
    assert_eq!(close_code(&mut socket, WITHIN).await, Some(4403));

    let token = app.token_for(&unique_email("legacy-stop")).await;
    let mut socket = connect(&app, "/graphql/ws", "graphql-ws").await;
    send(&mut socket, init(&token)).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "7", "type": "start", "payload": { "query": SUBSCRIPTION } }),
    )
    .await;
    send(&mut socket, json!({ "id": "7", "type": "stop" })).await;
    let done = next_json(&mut socket).await;
    assert_eq!(
        (done["type"].as_str(), done["id"].as_str()),
        (Some("complete"), Some("7")),
        "{done}"
    );
}
