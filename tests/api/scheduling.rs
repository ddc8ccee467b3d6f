//! Scheduled sends, cancel and expiry (issue 11, last slice): a send with a
//! later `sendAt` is SCHEDULED and in the inbox at once, then delivered
//! within about a second of `sendAt` (also when it fell due while the
//! server was down); its sender can cancel it until a worker claims it
//! (exactly one of the two wins, every time); past `expiresAt` it is
//! EXPIRED and never sent. Every move is one DeliveryStatusChanged event.

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use entity::notification::Status;
use futures_util::future::join_all;
use herald::storage::notifications::{self, Canceled};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, error_code, unique_email};
use crate::recipients::app_key;
use crate::smtp_sink::{Reply, SmtpSink};

const WITHIN: Duration = Duration::from_secs(20);
const FIELDS: &str = "id status sendAt expiresAt sentAt";

/// `now + secs`, as the API takes it.
pub(crate) fn at(secs: f64) -> String {
    let when = Utc::now().trunc_subsecs(3) + chrono::Duration::milliseconds((secs * 1e3) as i64);
    when.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .with_timezone(&Utc)
}

/// A user; their token and id.
pub(crate) async fn user(app: &TestApp, tag: &str) -> (String, String, String) {
    let email = unique_email(tag);
    let token = app.token_for(&email).await;
    let id = app.me(Some(&token)).await["data"]["me"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    (email, token, id)
}

/// `sendNotification` by `token` (a key or a user's token) to `to`.
async fn send(app: &TestApp, token: &str, to: Option<&str>, extra: Value) -> Value {
    let mut input = json!({ "title": "Reminder", "content": "Your appointment" });
    if let Some(to) = to {
        input["to"] = json!({ "userId": to });
    }
    if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
        input.extend(extra.clone());
    }
    app.gql(
        &format!(
            "mutation($i: SendNotificationInput!) {{ sendNotification(input: $i) {{ {FIELDS} }} }}"
        ),
        json!({ "i": input }),
        Some(token),
    )
    .await
}

pub(crate) async fn sent_ok(app: &TestApp, token: &str, to: Option<&str>, extra: Value) -> Value {
    let body = send(app, token, to, extra).await;
    let n = body["data"]["sendNotification"].clone();
    assert!(n.is_object(), "the send failed: {body}");
    n
}

async fn cancel(app: &TestApp, token: &str, id: &str) -> Value {
    app.gql(
        &format!("mutation($id: ID!) {{ cancelNotification(id: $id) {{ {FIELDS} }} }}"),
        json!({ "id": id }),
        Some(token),
    )
    .await
}

async fn read(app: &TestApp, token: &str, id: &str) -> Value {
    app.gql(
        &format!("query($id: ID!) {{ notification(id: $id) {{ {FIELDS} }} }}"),
        json!({ "id": id }),
        Some(token),
    )
    .await
}

pub(crate) async fn status(app: &TestApp, token: &str, id: &str) -> String {
    let body = read(app, token, id).await;
    body["data"]["notification"]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status: {body}"))
        .to_owned()
}

pub(crate) async fn wait_for(app: &TestApp, token: &str, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let now = status(app, token, id).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} is {now}, not {want}, after {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of notification `id` in its recipient's log, as
/// `Created(STATUS)` and `FROM->TO`.
pub(crate) async fn moves(app: &TestApp, token: &str, id: &str) -> Vec<String> {
    let body = app
        .gql(
            "{ inboxChanges(after: 0, first: 200) { events { __typename \
             ... on NotificationCreated { notification { id status } } \
             ... on DeliveryStatusChanged { notification { id } previousStatus status } } } }",
            json!({}),
            Some(token),
        )
        .await;
    body["data"]["inboxChanges"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {body}"))
        .iter()
        .filter(|e| e["notification"]["id"] == id)
        .map(|e| match e["__typename"].as_str() {
            Some("NotificationCreated") => format!(
                "Created({})",
                e["notification"]["status"].as_str().unwrap_or_default()
            ),
            _ => format!(
                "{}->{}",
                e["previousStatus"].as_str().unwrap_or_default(),
                e["status"].as_str().unwrap_or_default()
            ),
        })
        .collect()
}

pub(crate) fn mails_to(sink: &SmtpSink, email: &str) -> usize {
    sink.received()
        .iter()
        .filter(|m| m.rcpt_to == [email.to_owned()])
        .count()
}

/// A test body on SQLite and on Postgres + Redis, with an SMTP sink.
macro_rules! with_sink {
    ($name:ident, $body:ident) => {
        with_sink!($name, $body, |_c: &mut herald::config::Config| {});
    };
    ($name:ident, $body:ident, $tweak:expr) => {
        mod $name {
            use super::*;

            async fn run(backend: Backend) {
                let sink = SmtpSink::start().await;
                let url = sink.url();
                let Some(mut app) = TestApp::spawn_with(backend, |c| {
                    c.mail.smtp_url = Some(SecretString::from(url));
                    ($tweak)(c);
                })
                .await
                else {
                    return;
                };
                super::$body(&mut app, &sink).await;
            }

            crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
        }
    };
}

// ---- Scheduling ----

with_sink!(
    a_scheduled_send_is_in_the_inbox_at_once_and_delivered_at_send_at,
    scheduled
);
async fn scheduled(app: &mut TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "later").await;
    let n = sent_ok(app, &key, Some(&user_id), json!({ "sendAt": at(2.0) })).await;
    let id = n["id"].as_str().expect("id");
    let send_at = time(&n["sendAt"]);
    assert_eq!(n["status"], "SCHEDULED", "{n}");
    assert_eq!(moves(app, &token, id).await, ["Created(SCHEDULED)"]);
    let inbox = app
        .gql(
            "{ inbox(first: 5) { edges { node { id status } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        inbox["data"]["inbox"]["edges"][0]["node"],
        json!({ "id": id, "status": "SCHEDULED" })
    );

    wait_for(app, &token, id, "SENT").await;
    let delivered = read(app, &token, id).await;
    let sent_at = time(&delivered["data"]["notification"]["sentAt"]);
    assert!(sent_at >= send_at, "sent at {sent_at}, before {send_at}");
    assert!(
        sent_at - send_at < chrono::Duration::seconds(2),
        "sent at {sent_at}, more than 2 s after {send_at}"
    );
    assert_eq!(mails_to(sink, &email), 1);
    assert_eq!(
        moves(app, &token, id).await,
        [
            "Created(SCHEDULED)",
            "SCHEDULED->PENDING",
            "PENDING->PROCESSING",
            "PROCESSING->SENT"
        ]
    );
    // The application reads what it sent.
    assert_eq!(status(app, &key, id).await, "SENT");
}

with_sink!(
    a_schedule_due_while_the_server_is_down_is_delivered_after_it_starts,
    across_a_restart
);
async fn across_a_restart(app: &mut TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "restart").await;
    let n = sent_ok(app, &key, Some(&user_id), json!({ "sendAt": at(2.0) })).await;
    let id = n["id"].as_str().expect("id").to_owned();
    app.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mails_to(sink, &email), 0, "sent while the server was down");

    let url = sink.url();
    let started = std::time::Instant::now();
    let next = app
        .spawn_sibling(|c| c.mail.smtp_url = Some(SecretString::from(url)))
        .await;
    wait_for(&next, &token, &id, "SENT").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "delivered {:?} after the start",
        started.elapsed()
    );
    assert_eq!(mails_to(sink, &email), 1);
}

// ---- Cancel ----

with_sink!(
    canceling_a_scheduled_send_makes_it_canceled_and_it_is_never_sent,
    cancel_scheduled
);
async fn cancel_scheduled(app: &mut TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "cancel").await;
    let n = sent_ok(app, &key, Some(&user_id), json!({ "sendAt": at(2.0) })).await;
    let id = n["id"].as_str().expect("id");
    let canceled = cancel(app, &key, id).await;
    assert_eq!(
        canceled["data"]["cancelNotification"]["status"], "CANCELED",
        "{canceled}"
    );
    let again = cancel(app, &key, id).await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");

    // A user's own scheduled send, canceled by that user.
    let own = sent_ok(app, &token, None, json!({ "sendAt": at(2.0) })).await;
    let own = own["id"].as_str().expect("id");
    let canceled = cancel(app, &token, own).await;
    assert_eq!(
        canceled["data"]["cancelNotification"]["status"], "CANCELED",
        "{canceled}"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status(app, &token, id).await, "CANCELED");
    assert_eq!(status(app, &token, own).await, "CANCELED");
    assert_eq!(
        mails_to(sink, &email),
        0,
        "a canceled notification was sent"
    );
    assert_eq!(
        moves(app, &token, id).await,
        ["Created(SCHEDULED)", "SCHEDULED->CANCELED"]
    );
}

with_sink!(
    canceling_after_it_was_sent_is_conflict_and_changes_nothing,
    cancel_too_late
);
async fn cancel_too_late(app: &mut TestApp, _sink: &SmtpSink) {
    let key = app_key(app).await;
    let (_, token, user_id) = user(app, "late").await;
    let n = sent_ok(app, &key, Some(&user_id), json!({})).await;
    let id = n["id"].as_str().expect("id");
    wait_for(app, &token, id, "SENT").await;
    let before = moves(app, &token, id).await;
    let body = cancel(app, &key, id).await;
    assert_eq!(error_code(&body), Some("CONFLICT"), "{body}");
    assert_eq!(status(app, &token, id).await, "SENT");
    assert_eq!(moves(app, &token, id).await, before, "an event was written");
}

async fn only_the_sender(app: &TestApp) {
    let key = app_key(app).await;
    let other_key = app_key(app).await;
    let (_, alice, alice_id) = user(app, "alice").await;
    let (_, bob, _) = user(app, "bob").await;
    let later = json!({ "sendAt": at(30.0) });
    let from_app = sent_ok(app, &key, Some(&alice_id), later.clone()).await;
    let from_app = from_app["id"].as_str().expect("id");
    let own = sent_ok(app, &alice, None, later).await;
    let own = own["id"].as_str().expect("id");

    for (who, token, id) in [
        ("another application", other_key.as_str(), from_app),
        ("the recipient of an application's send", &alice, from_app),
        ("another user", &bob, own),
        ("an application, for a user's own send", &key, own),
    ] {
        let body = cancel(app, token, id).await;
        assert_eq!(error_code(&body), Some("FORBIDDEN"), "{who}: {body}");
    }
    assert_eq!(status(app, &alice, from_app).await, "SCHEDULED");
    assert_eq!(status(app, &alice, own).await, "SCHEDULED");

    // Reading: the recipient, and the application that sent it.
    assert_eq!(status(app, &key, from_app).await, "SCHEDULED");
    for (who, token, id) in [
        ("another application", other_key.as_str(), from_app),
        ("an application, a user's own send", &key, own),
        ("another user", &bob, own),
    ] {
        let body = read(app, token, id).await;
        assert_eq!(error_code(&body), Some("FORBIDDEN"), "{who}: {body}");
    }

    for id in ["987654321", "nope", "0"] {
        let body = cancel(app, &key, id).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{id}: {body}");
    }
    let body = cancel(app, "hk_not_a_key", from_app).await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
}
crate::both_backends!(
    only_the_sender_may_cancel_and_an_application_reads_what_it_sent,
    only_the_sender
);

/// A worker's claim and a cancel, started together on one PENDING row, 200
/// times: exactly one of them wins each time.
async fn claim_race(app: &TestApp) {
    let (_, token, _) = user(app, "race").await;
    let db = herald::storage::connect(&app.database_url)
        .await
        .expect("connect");
    let (mut claims, mut cancels) = (0, 0);
    for _ in 0..200 {
        let n = sent_ok(app, &token, None, json!({})).await;
        let id: i64 = n["id"].as_str().expect("id").parse().expect("numeric");
        let row = notifications::find(&db, id)
            .await
            .expect("find")
            .expect("row");
        let now = herald::storage::now();
        let (claimed, canceled) = tokio::join!(
            notifications::claim(&db, id, now),
            notifications::cancel(&db, row, now),
        );
        let claimed = claimed.expect("claim").is_some();
        let canceled = matches!(canceled.expect("cancel"), Canceled::Now(_));
        assert!(
            claimed != canceled,
            "claimed {claimed}, canceled {canceled}"
        );
        let after = notifications::find(&db, id)
            .await
            .expect("find")
            .expect("row");
        let want = if claimed {
            Status::Processing
        } else {
            Status::Canceled
        };
        assert_eq!(after.status, want);
        if claimed {
            claims += 1;
        } else {
            cancels += 1;
        }
    }
    eprintln!("claim/cancel race: {claims} claims, {cancels} cancels");
    db.close().await.expect("close");
}
crate::without_worker!(a_cancel_and_a_claim_racing_never_both_win, claim_race);

/// The same race through the API: sends by an application, each canceled
/// at once while the worker claims them. A cancel that answers CANCELED
/// was never sent; one that answers CONFLICT was sent, once.
async fn api_race(app: &mut TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "apirace").await;
    let ids: Vec<String> = join_all((0..200).map(|_| async {
        let n = sent_ok(app, &key, Some(&user_id), json!({})).await;
        let id = n["id"].as_str().expect("id").to_owned();
        let body = cancel(app, &key, &id).await;
        match error_code(&body) {
            None => assert_eq!(body["data"]["cancelNotification"]["status"], "CANCELED"),
            Some(code) => assert_eq!(code, "CONFLICT", "{body}"),
        }
        id
    }))
    .await;
    let mut sent = 0;
    for id in &ids {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let now = status(app, &token, id).await;
            if now == "CANCELED" {
                break;
            }
            if now == "SENT" {
                sent += 1;
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} stuck at {now}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(mails_to(sink, &email), sent, "mails vs SENT rows");
    for copies in sink.copies().values() {
        assert_eq!(*copies, 1);
    }
}
with_sink!(
    canceling_while_the_worker_claims_sends_only_what_was_not_canceled,
    api_race,
    // Delivery is at least once: a claim that outlives the visibility
    // timeout, or a mail accepted after the client's timeout, goes back to
    // PENDING and a cancel may then win over a mail already sent. On a busy
    // machine the fast_worker's 5 s / 3 s are reached; this race is about
    // the claim, so give the attempt room.
    |c: &mut herald::config::Config| {
        if let Some(w) = c.worker.as_mut() {
            w.visibility_timeout = Duration::from_secs(60);
        }
        c.mail.timeout = Duration::from_secs(20);
    }
);

// ---- Expiry ----

/// Past `expiresAt`, the claim itself expires the row: no delivery.
async fn expiry_at_claim(app: &TestApp) {
    let (_, token, _) = user(app, "claimexp").await;
    let n = sent_ok(app, &token, None, json!({ "expiresAt": at(1.0) })).await;
    let id = n["id"].as_str().expect("id");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db = herald::storage::connect(&app.database_url)
        .await
        .expect("connect");
    let numeric: i64 = id.parse().expect("numeric");
    let moved = notifications::claim(&db, numeric, herald::storage::now())
        .await
        .expect("claim")
        .expect("the claim moved it");
    assert_eq!(moved.row.status, Status::Expired);
    assert_eq!(moved.row.attempts, 0, "an expired row counts no attempt");
    db.close().await.expect("close");
    assert_eq!(status(app, &token, id).await, "EXPIRED");
    assert_eq!(
        moves(app, &token, id).await,
        ["Created(PENDING)", "PENDING->EXPIRED"]
    );
    let body = cancel(app, &token, id).await;
    assert_eq!(error_code(&body), Some("CONFLICT"), "{body}");
}
crate::without_worker!(
    a_claim_after_expires_at_expires_the_notification_instead,
    expiry_at_claim
);

/// A PENDING row waiting for a retry when its `expiresAt` passes, and a
/// SCHEDULED one that fell due and expired while the server was down: the
/// sweeper expires both, and neither is sent.
async fn expiry_by_sweeper(app: &mut TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, user_id) = user(app, "sweepexp").await;
    sink.answer(&email, Reply::Transient);
    let retried = sent_ok(app, &key, Some(&user_id), json!({ "expiresAt": at(2.0) })).await;
    let retried = retried["id"].as_str().expect("id");
    wait_for(app, &token, retried, "EXPIRED").await;
    assert_eq!(
        moves(app, &token, retried).await,
        [
            "Created(PENDING)",
            "PENDING->PROCESSING",
            "PROCESSING->PENDING",
            "PENDING->EXPIRED"
        ]
    );

    let scheduled = sent_ok(
        app,
        &key,
        Some(&user_id),
        json!({ "sendAt": at(2.0), "expiresAt": at(2.5) }),
    )
    .await;
    let scheduled = scheduled["id"].as_str().expect("id").to_owned();
    app.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sink.answer(&email, Reply::Accept);
    let url = sink.url();
    let next = app
        .spawn_sibling(|c| c.mail.smtp_url = Some(SecretString::from(url)))
        .await;
    wait_for(&next, &token, &scheduled, "EXPIRED").await;
    assert_eq!(
        moves(&next, &token, &scheduled).await,
        ["Created(SCHEDULED)", "SCHEDULED->EXPIRED"]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = sink
        .received()
        .iter()
        .filter(|m| m.rcpt_to == [email.clone()])
        .count();
    assert_eq!(accepted, 0, "an expired notification was sent");
}
with_sink!(
    the_sweeper_expires_pending_and_scheduled_rows_past_expires_at,
    expiry_by_sweeper,
    |c: &mut herald::config::Config| {
        if let Some(w) = c.worker.as_mut() {
            // The retry after the refusal comes after the expiry.
            w.retry.base = Duration::from_secs(30);
            w.retry.max_delay = Duration::from_secs(60);
        }
    }
);
