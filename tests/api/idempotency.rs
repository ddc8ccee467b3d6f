//! Idempotent sends (issue 11): a repeat with the same key and input
//! returns the first send's notification and sends nothing again; a
//! different input is CONFLICT; concurrent repeats on two instances store
//! one; keys are per sender; keys older than `HERALD_IDEMPOTENCY_TTL` are
//! pruned and then create anew.

use std::{collections::HashSet, time::Duration};

use futures_util::future::join_all;
use herald::worker::{PRUNE_BATCH, prune_idempotency_records};
use sea_orm::{ConnectionTrait as _, Database, EntityTrait as _, Statement};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, TestApp, assert_bad_input_naming, error_code, error_message, unique_email},
    recipients::{app_key, count},
    smtp_sink::SmtpSink,
};

const WITHIN: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(24 * 3600);

/// `sendNotification(input: $input)` with `input` as given; the body.
async fn send(app: &TestApp, token: &str, input: Value) -> Value {
    app.gql(
        "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { id title status category data sendAt } }",
        json!({ "input": input }),
        Some(token),
    )
    .await
}

fn id_of(body: &Value) -> String {
    body["data"]["sendNotification"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the send failed: {body}"))
        .to_owned()
}

/// A user, by email: their token and id.
async fn user(app: &TestApp, tag: &str) -> (String, String, String) {
    let email = unique_email(tag);
    let token = app.token_for(&email).await;
    let id = app.me(Some(&token)).await["data"]["me"]["id"]
        .as_str()
        .expect("the user's id")
        .to_owned();
    (email, token, id)
}

/// How many NotificationCreated events the user's log holds.
async fn created_events(app: &TestApp, token: &str) -> usize {
    let body = app
        .gql(
            "{ inboxChanges(after: 0, first: 500) { events { __typename } } }",
            json!({}),
            Some(token),
        )
        .await;
    body["data"]["inboxChanges"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {body}"))
        .iter()
        .filter(|e| e["__typename"] == "NotificationCreated")
        .count()
}

async fn notifications(app: &TestApp) -> i64 {
    count(&app.database_url, "SELECT COUNT(*) AS n FROM notifications").await
}

// ---- A repeat ----

async fn repeat_returns_the_first(app: &TestApp, sink: &SmtpSink) {
    let key = app_key(app).await;
    let (email, token, bob) = user(app, "repeat").await;
    let input = |data: Value| {
        json!({
            "to": { "userId": bob },
            "title": "Invoice 7",
            "content": "Due soon",
            "idempotencyKey": "invoice-7",
            "category": "billing",
            "data": data,
        })
    };
    let first = send(
        app,
        &key,
        input(json!({ "b": [1, { "y": 2, "x": 1 }], "a": "one" })),
    )
    .await;
    let id = id_of(&first);
    app.wait_for_status(&token, &id, "SENT", WITHIN).await;

    // The same input, its data's keys in another order: the same
    // notification, as it is now (SENT), and nothing new.
    let again = send(
        app,
        &key,
        input(json!({ "a": "one", "b": [1, { "x": 1, "y": 2 }] })),
    )
    .await;
    assert_eq!(id_of(&again), id, "{again}");
    assert_eq!(again["data"]["sendNotification"]["status"], "SENT");
    assert_eq!(
        again["data"]["sendNotification"]["data"],
        first["data"]["sendNotification"]["data"]
    );
    for _ in 0..3 {
        let body = send(
            app,
            &key,
            input(json!({ "a": "one", "b": [1, { "x": 1, "y": 2 }] })),
        )
        .await;
        assert_eq!(id_of(&body), id);
    }
    // Long enough for a second delivery to show, had one been queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = sink
        .received()
        .iter()
        .filter(|m| m.rcpt_to == [email.clone()])
        .count();
    assert_eq!(mails, 1, "one email");
    assert_eq!(
        created_events(app, &token).await,
        1,
        "one NotificationCreated"
    );
    assert_eq!(notifications(app).await, 1);
    assert_eq!(
        count(
            &app.database_url,
            "SELECT COUNT(*) AS n FROM idempotency_records"
        )
        .await,
        1
    );
}

mod a_repeat_with_the_same_input_returns_the_same_notification_and_sends_once {
    use super::*;

    async fn run(backend: Backend) {
        if let Some((sink, app)) = SmtpSink::with_app(backend).await {
            repeat_returns_the_first(&app, &sink).await;
        }
    }

    crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
}

// ---- A different input ----

async fn different_input_conflicts(app: &TestApp) {
    let key = app_key(app).await;
    let (bob_email, bob_token, bob) = user(app, "conflict").await;
    let (_, _, carol) = user(app, "other").await;
    let input = json!({
        "to": { "userId": bob },
        "title": "Invoice 8",
        "content": "Due soon",
        "idempotencyKey": "invoice-8",
        "data": { "n": 1 },
    });
    let id = id_of(&send(app, &key, input.clone()).await);
    let before = notifications(app).await;
    let changed = |field: &str, value: Value| {
        let mut other = input.clone();
        other[field] = value;
        other
    };
    for other in [
        changed("title", json!("Invoice 9")),
        changed("content", json!("Due now")),
        changed("to", json!({ "userId": carol })),
        // The same user, named another way: a different input as given.
        changed("to", json!({ "email": bob_email })),
        changed("data", json!({ "n": 2 })),
        changed("data", Value::Null),
        changed("category", json!("billing")),
        changed("sendAt", json!("2099-01-01T00:00:00Z")),
    ] {
        let body = send(app, &key, other.clone()).await;
        assert_eq!(error_code(&body), Some("CONFLICT"), "{other}: {body}");
        assert!(
            error_message(&body).is_some_and(|m| m.contains("idempotencyKey")),
            "{body}"
        );
    }
    assert_eq!(notifications(app).await, before, "nothing stored");
    assert_eq!(created_events(app, &bob_token).await, 1);
    // The first input still answers.
    assert_eq!(id_of(&send(app, &key, input).await), id);
}

crate::both_backends!(
    the_same_key_with_a_different_input_is_conflict_and_changes_nothing,
    different_input_conflicts
);

// ---- Concurrent repeats ----

async fn concurrent_repeats(app: &TestApp) {
    let sibling = app.spawn_sibling(|c| c.worker = None).await;
    let key = app_key(app).await;
    let (_, token, bob) = user(app, "race").await;
    let input = json!({
        "to": { "userId": bob },
        "title": "Once",
        "content": "Only once",
        "idempotencyKey": "race-1",
    });
    let sends = (0..20).map(|i| {
        let instance = if i % 2 == 0 { app } else { &sibling };
        send(instance, &key, input.clone())
    });
    let bodies = join_all(sends).await;
    let ids: HashSet<String> = bodies.iter().map(id_of).collect();
    assert_eq!(ids.len(), 1, "one notification for all 20: {ids:?}");
    assert_eq!(notifications(app).await, 1);
    assert_eq!(created_events(app, &token).await, 1);
    let id = ids.into_iter().next().expect("an id");
    app.wait_for_status(&token, &id, "SENT", WITHIN).await;
}

crate::both_backends!(
    twenty_concurrent_sends_with_one_key_on_two_instances_store_one,
    concurrent_repeats
);

// ---- Senders ----

async fn keys_per_sender(app: &TestApp) {
    let (key_a, key_b) = (app_key(app).await, app_key(app).await);
    let (_, token, bob) = user(app, "senders").await;
    let input = json!({
        "to": { "userId": bob },
        "title": "Hello",
        "content": "Same key, three senders",
        "idempotencyKey": "shared",
    });
    let by_user = id_of(&send(app, &token, input.clone()).await);
    let by_a = id_of(&send(app, &key_a, input.clone()).await);
    let by_b = id_of(&send(app, &key_b, input.clone()).await);
    let all: HashSet<&String> = [&by_user, &by_a, &by_b].into_iter().collect();
    assert_eq!(all.len(), 3, "each sender its own: {all:?}");
    assert_eq!(id_of(&send(app, &token, input.clone()).await), by_user);
    assert_eq!(id_of(&send(app, &key_a, input.clone()).await), by_a);
    assert_eq!(id_of(&send(app, &key_b, input).await), by_b);
    assert_eq!(notifications(app).await, 3);
}

crate::both_backends!(
    a_key_belongs_to_its_sender_an_api_key_or_a_user,
    keys_per_sender
);

// ---- A retry after its sendAt ----

async fn retry_after_send_at(app: &TestApp) {
    let (_, token, _) = user(app, "later").await;
    let send_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let input = json!({
        "title": "Soon",
        "content": "In a moment",
        "idempotencyKey": "soon-1",
        "sendAt": send_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let id = id_of(&send(app, &token, input.clone()).await);
    // Now sendAt lies over 5 s in the past: new, it would be refused.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let again = send(app, &token, input).await;
    assert_eq!(id_of(&again), id, "{again}");
    assert_eq!(notifications(app).await, 1);
}

crate::both_backends!(
    a_retry_whose_send_at_has_passed_still_returns_the_first,
    retry_after_send_at
);

// ---- Pruning ----

async fn pruned_keys(app: &TestApp) {
    let (_, token, _) = user(app, "prune").await;
    let input = json!({ "title": "Daily", "content": "Digest", "idempotencyKey": "digest" });
    let first = id_of(&send(app, &token, input.clone()).await);
    let db = Database::connect(&app.database_url).await.expect("connect");
    let now = herald::storage::now();

    // Within the TTL: kept, and the key still answers.
    let hour = chrono::Duration::hours(1);
    let report = prune_idempotency_records(&db, now + chrono::Duration::hours(23), TTL)
        .await
        .expect("prune");
    assert_eq!(report.deleted, 0);
    assert_eq!(id_of(&send(app, &token, input.clone()).await), first);

    // Past it: gone, and the key creates anew.
    let report = prune_idempotency_records(&db, now + chrono::Duration::hours(24) + hour, TTL)
        .await
        .expect("prune");
    assert_eq!(report.deleted, 1);
    let second = id_of(&send(app, &token, input.clone()).await);
    assert_ne!(second, first);
    assert_eq!(notifications(app).await, 2);
    assert_eq!(id_of(&send(app, &token, input).await), second);

    // Many old records go in batches of PRUNE_BATCH.
    let old = now - chrono::Duration::days(2);
    let many = PRUNE_BATCH * 2 + 500;
    let records = (0..many).map(|i| entity::idempotency_record::ActiveModel {
        sender: sea_orm::Set("app:0".to_owned()),
        key: sea_orm::Set(format!("old-{i}")),
        request_hash: sea_orm::Set("0".repeat(64)),
        notification_id: sea_orm::Set(0),
        created_at: sea_orm::Set(old),
    });
    let records: Vec<_> = records.collect();
    for chunk in records.chunks(500) {
        entity::idempotency_record::Entity::insert_many(chunk.to_vec())
            .exec(&db)
            .await
            .expect("old records");
    }
    let report = prune_idempotency_records(&db, now, TTL)
        .await
        .expect("prune");
    assert_eq!(report.deleted, u64::try_from(many).expect("a count"));
    assert_eq!(report.batches, 3);
    assert_eq!(
        count(
            &app.database_url,
            "SELECT COUNT(*) AS n FROM idempotency_records"
        )
        .await,
        1,
        "the recent one stays"
    );
    db.close().await.expect("close");
}

crate::both_backends!(
    keys_older_than_the_ttl_are_pruned_in_batches_and_then_create_anew,
    pruned_keys
);

// ---- A record whose notification is gone ----

async fn orphaned_key(app: &TestApp) {
    let key = app_key(app).await;
    let input = json!({
        "to": { "externalId": "gone-1", "email": unique_email("gone") },
        "title": "Welcome",
        "content": "Hello",
        "idempotencyKey": "welcome-gone-1",
    });
    let first = id_of(&send(app, &key, input.clone()).await);
    // Its row goes (as when its recipient is deleted, rows and all).
    let db = Database::connect(&app.database_url).await.expect("connect");
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("DELETE FROM notifications WHERE id = {first}"),
    ))
    .await
    .expect("delete");
    db.close().await.expect("close");
    let second = id_of(&send(app, &key, input.clone()).await);
    assert_ne!(second, first, "the key is free again");
    assert_eq!(id_of(&send(app, &key, input).await), second);
}

crate::both_backends!(
    a_key_whose_notification_was_deleted_sends_anew,
    orphaned_key
);

// ---- Bad keys ----

async fn bad_keys(app: &TestApp) {
    let (_, token, _) = user(app, "badkey").await;
    for bad in [
        String::new(),
        "k".repeat(256),
        "é".repeat(256),
        "a\0b".to_owned(),
    ] {
        let body = send(
            app,
            &token,
            json!({ "title": "t", "content": "c", "idempotencyKey": bad }),
        )
        .await;
        assert_bad_input_naming(&body, "idempotencyKey", &bad.len());
    }
    assert_eq!(notifications(app).await, 0);
    let longest = "é".repeat(255);
    let body = send(
        app,
        &token,
        json!({ "title": "t", "content": "c", "idempotencyKey": longest }),
    )
    .await;
    id_of(&body);
    assert_eq!(
        id_of(
            &send(
                app,
                &token,
                json!({ "title": "t", "content": "c", "idempotencyKey": longest })
            )
            .await
        ),
        id_of(&body)
    );
}

crate::both_backends!(
    an_empty_or_overlong_idempotency_key_is_bad_user_input,
    bad_keys
);
