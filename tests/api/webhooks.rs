//! Webhook endpoints and the webhook outbox (issue 12).
//!
//! - `herald webhook create URL [--events …]` prints the signing secret
//!   alone; `list` never shows one; a malformed URL or an unknown event
//!   name fails with a clear message and exit code 2.
//! - Each move to a final status writes one outbox row per enabled endpoint
//!   listening for its event, in the transaction of the move; the first
//!   READ (by read, archive or mark-all) writes `notification.read` once,
//!   however often the notification is marked unread and read again.

use std::{path::Path, process::Command};

use herald::storage::webhooks::deliveries;
use sea_orm::ConnectionTrait as _;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::delivery::delivery_test;
use crate::helpers::{Backend, TestApp};
use crate::recipients::app_key;
use crate::scheduling::{at, sent_ok, user, wait_for};
use crate::smtp_sink::{Reply, SmtpSink};

/// `herald webhook …` on `database_url`.
fn webhook_cli(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_remove("HERALD_DATA_DIR")
        .env("DATABASE_URL", database_url)
        .arg("webhook")
        .args(args)
        .output()
        .expect("herald runs")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Registers an endpoint with the CLI; its secret.
fn create(database_url: &str, args: &[&str]) -> String {
    let out = webhook_cli(database_url, &[&["create"], args].concat());
    assert!(out.status.success(), "create failed: {}", stderr(&out));
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "the secret alone: {printed:?}");
    lines[0].to_owned()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("herald.db").display())
}

#[test]
fn webhook_commands_print_the_secret_once_and_refuse_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite_url(dir.path());
    let secret = create(&db, &["https://hooks.example.com/herald"]);
    // Standard Webhooks: `whsec_` + base64 of the key (24 bytes here).
    let key = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    assert_eq!(key.len(), 32, "{secret}");
    let other = create(
        &db,
        &[
            "http://10.0.0.5:8080/hook",
            "--events",
            "notification.read,notification.sent",
            "notification.failed",
        ],
    );
    assert_ne!(secret, other);

    let out = webhook_cli(&db, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    assert!(list.contains("https://hooks.example.com/herald"), "{list}");
    assert!(
        list.contains("notification.sent,notification.failed,notification.read"),
        "{list}"
    );
    assert!(list.contains("enabled"), "{list}");
    assert!(
        !list.contains(&secret) && !list.contains(&other) && !list.contains("whsec_"),
        "a secret was listed: {list}"
    );

    for (args, says) in [
        (&["create", "ftp://example.com/x"][..], "http or https"),
        (&["create", "not a url"], "not a URL"),
        (&["create", "https://user:pw@example.com/"], "credentials"),
        (
            &[
                "create",
                "https://example.com/",
                "--events",
                "notification.opened",
            ],
            "notification.opened",
        ),
        (
            &["create", "https://example.com/", "--events", ""],
            "no event",
        ),
        (&["delete", "seven"], "invalid"),
    ] {
        let out = webhook_cli(&db, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    // Nothing was stored by the refusals.
    assert_eq!(stdout(&webhook_cli(&db, &["list"])).lines().count(), 3);

    let out = webhook_cli(&db, &["delete", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no webhook endpoint with id 999"));
    let out = webhook_cli(&db, &["delete", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "webhook endpoint 1 deleted\n");
    let list = stdout(&webhook_cli(&db, &["list"]));
    assert!(!list.contains("hooks.example.com"), "{list}");
    let out = webhook_cli(&db, &["enable", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(webhook_cli(&db, &["enable", "1"]).status.code(), Some(1));
}

#[test]
fn every_webhook_subcommand_has_help() {
    for args in [
        &["webhook", "--help"][..],
        &["webhook", "create", "--help"],
        &["webhook", "list", "--help"],
        &["webhook", "delete", "--help"],
        &["webhook", "enable", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage: herald"), "{args:?}");
    }
}

/// The outbox rows: (endpoint id, event, notification id), in order.
async fn outbox(app: &TestApp) -> Vec<(i64, String, i64)> {
    let db = herald::storage::connect(&app.database_url)
        .await
        .expect("connect");
    let rows = deliveries(&db).await.expect("outbox");
    db.close().await.expect("close");
    rows.into_iter()
        .map(|r| (r.endpoint_id, r.event_type, r.notification_id))
        .collect()
}

/// The outbox rows of `endpoint`: (event, notification id), sorted.
async fn events_of(app: &TestApp, endpoint: i64) -> Vec<(String, i64)> {
    let mut events: Vec<(String, i64)> = outbox(app)
        .await
        .into_iter()
        .filter(|(e, _, _)| *e == endpoint)
        .map(|(_, event, id)| (event, id))
        .collect();
    events.sort();
    events
}

async fn mark(app: &TestApp, token: &str, action: &str, id: &str) {
    let body = app
        .gql(
            "mutation($ids: [ID!]!, $a: InboxAction!) { markNotifications(ids: $ids, action: $a) { updated } }",
            json!({ "ids": [id], "a": action }),
            Some(token),
        )
        .await;
    assert!(body["errors"].is_null(), "{action} failed: {body}");
}

fn id_of(n: &Value) -> (String, i64) {
    let id = n["id"].as_str().expect("id").to_owned();
    let numeric = id.parse().expect("numeric id");
    (id, numeric)
}

/// Endpoints 1 (every event), 2 (`notification.read` only) and 3 (every
/// event, disabled). The listening endpoint is unreachable on purpose: only
/// the outbox is looked at here.
async fn endpoints(app: &TestApp) {
    let url = "http://127.0.0.1:9/hook";
    create(&app.database_url, &[url]);
    create(&app.database_url, &[url, "--events", "notification.read"]);
    create(&app.database_url, &[url]);
    let db = herald::storage::connect(&app.database_url)
        .await
        .expect("connect");
    db.execute_unprepared("UPDATE webhook_endpoints SET disabled_at = created_at WHERE id = 3")
        .await
        .expect("disable endpoint 3");
    db.close().await.expect("close");
}

delivery_test!(
    every_final_status_and_the_first_read_write_one_outbox_row_per_listening_endpoint,
    final_statuses
);
async fn final_statuses(app: &TestApp, sink: &SmtpSink) {
    // Before any endpoint exists: no event, now or later.
    let (_, early_token, _) = user(app, "early").await;
    let (early, early_n) = id_of(&sent_ok(app, &early_token, None, json!({})).await);
    wait_for(app, &early_token, &early, "SENT").await;
    endpoints(app).await;

    let key = app_key(app).await;
    let (_, token, user_id) = user(app, "hooked").await;
    let (failing_email, failing_token, failing_id) = user(app, "bounces").await;
    let (slow_email, slow_token, slow_id) = user(app, "slow").await;
    sink.answer(&failing_email, Reply::Permanent);
    sink.answer(&slow_email, Reply::Transient);

    let sent = sent_ok(app, &token, None, json!({})).await;
    let (sent, sent_n) = id_of(&sent);
    let (canceled, canceled_n) =
        id_of(&sent_ok(app, &key, Some(&user_id), json!({ "sendAt": at(60.0) })).await);
    let body = app
        .gql(
            "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
            json!({ "id": canceled }),
            Some(&key),
        )
        .await;
    assert_eq!(
        body["data"]["cancelNotification"]["status"], "CANCELED",
        "{body}"
    );
    let body = app
        .gql(
            "mutation { setNotificationPreference(category: \"news\", email: false) { email } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let (skipped, skipped_n) =
        id_of(&sent_ok(app, &key, Some(&user_id), json!({ "category": "news" })).await);
    let (failed, failed_n) = id_of(&sent_ok(app, &key, Some(&failing_id), json!({})).await);
    let (expired, expired_n) =
        id_of(&sent_ok(app, &key, Some(&slow_id), json!({ "expiresAt": at(1.5) })).await);
    wait_for(app, &token, &sent, "SENT").await;
    wait_for(app, &token, &skipped, "SKIPPED").await;
    wait_for(app, &failing_token, &failed, "FAILED").await;
    wait_for(app, &slow_token, &expired, "EXPIRED").await;

    let mut want = vec![
        ("notification.canceled".to_owned(), canceled_n),
        ("notification.expired".to_owned(), expired_n),
        ("notification.failed".to_owned(), failed_n),
        ("notification.sent".to_owned(), sent_n),
        ("notification.skipped".to_owned(), skipped_n),
    ];
    want.sort();
    assert_eq!(
        events_of(app, 1).await,
        want,
        "endpoint 1 hears every final move once"
    );
    assert_eq!(
        events_of(app, 2).await,
        [],
        "endpoint 2 listens for reads only"
    );

    // The first READ, however it comes, once.
    mark(app, &token, "READ", &sent).await;
    mark(app, &token, "UNREAD", &sent).await;
    mark(app, &token, "READ", &sent).await;
    mark(app, &token, "ARCHIVE", &canceled).await;
    mark(app, &token, "SEEN", &skipped).await;
    let reads = |ids: &[i64]| {
        let mut reads: Vec<(String, i64)> = ids
            .iter()
            .map(|id| ("notification.read".to_owned(), *id))
            .collect();
        reads.sort();
        reads
    };
    assert_eq!(events_of(app, 2).await, reads(&[sent_n, canceled_n]));
    let body = app
        .gql(
            "mutation { markAllNotifications(action: READ, upTo: 1000000) { updated } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    mark(app, &token, "UNREAD", &skipped).await;
    mark(app, &token, "READ", &skipped).await;
    assert_eq!(
        events_of(app, 2).await,
        reads(&[sent_n, canceled_n, skipped_n]),
        "mark-all reads what was unread, once"
    );
    assert_eq!(events_of(app, 1).await.len(), want.len() + 3);
    assert_eq!(
        events_of(app, 3).await,
        [],
        "a disabled endpoint hears nothing"
    );
    assert!(
        outbox(app).await.iter().all(|(_, _, id)| *id != early_n),
        "no event from before the endpoints existed"
    );

    // The body: versioned, Standard Webhooks' type/timestamp/data, the
    // notification as the API names it.
    let db = herald::storage::connect(&app.database_url)
        .await
        .expect("connect");
    let rows = deliveries(&db).await.expect("outbox");
    db.close().await.expect("close");
    let row = rows
        .iter()
        .find(|r| r.endpoint_id == 1 && r.event_type == "notification.sent")
        .expect("the sent event");
    let body: Value = serde_json::from_str(&row.payload).expect("JSON body");
    assert_eq!(body["v"], 1, "{body}");
    assert_eq!(body["type"], "notification.sent", "{body}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap_or("")).is_ok(),
        "{body}"
    );
    let data = &body["data"];
    assert_eq!(data["id"], sent, "{body}");
    assert_eq!(data["userId"], user_id, "{body}");
    assert_eq!(data["status"], "SENT", "{body}");
    assert_eq!(data["senderAppId"], Value::Null, "{body}");
    assert!(data["sentAt"].is_string(), "{body}");
    let failed_row = rows
        .iter()
        .find(|r| r.endpoint_id == 1 && r.event_type == "notification.failed")
        .expect("the failed event");
    let failed_body: Value = serde_json::from_str(&failed_row.payload).expect("JSON body");
    assert_eq!(failed_body["data"]["status"], "FAILED", "{failed_body}");
    assert!(failed_body["data"]["error"].is_string(), "{failed_body}");
    assert!(
        failed_body["data"]["senderAppId"].is_string(),
        "{failed_body}"
    );
    let read_row = rows
        .iter()
        .find(|r| r.endpoint_id == 2 && r.notification_id == sent_n)
        .expect("the read event");
    let read_body: Value = serde_json::from_str(&read_row.payload).expect("JSON body");
    assert!(read_body["data"]["readAt"].is_string(), "{read_body}");
    assert_eq!(read_body["data"]["status"], "SENT", "{read_body}");
}

/// Deleting an endpoint takes its waiting events with it; the others stay.
async fn delete_cascades(app: &TestApp) {
    endpoints(app).await;
    let (_, token, _) = user(app, "cascade").await;
    let (id, _) = id_of(&sent_ok(app, &token, None, json!({})).await);
    mark(app, &token, "READ", &id).await;
    assert_eq!(events_of(app, 2).await.len(), 1);
    let out = webhook_cli(&app.database_url, &["delete", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(events_of(app, 2).await, []);
    assert!(outbox(app).await.iter().all(|(e, _, _)| *e != 2));
}
crate::app_tests!(
    deleting_an_endpoint_deletes_its_waiting_events,
    delete_cascades,
    on_backends;
    sqlite => Sqlite,
    postgres => Postgres
);
