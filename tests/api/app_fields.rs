//! A send's `category` and `data` (issue 11): stored, and returned by every
//! read and every live payload (the wire payload carries them); `data` as
//! an inline object literal or as a variable, an explicit `null` being
//! absent; every bound of a send's own fields refused as BAD_USER_INPUT
//! naming the field, with nothing stored. (Recipients' bounds: recipients.rs;
//! malformed and revoked keys: apikeys.rs.)

use chrono::{Duration as Span, Utc};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{TestApp, assert_bad_input_naming, error_code};
use crate::recipients::app_key;
use crate::ws_client::{Socket, acked_modern, next_json, send, until_live};

const FIELDS: &str = "id status category data sendAt expiresAt";

/// The `data` every send here carries: nesting, an array, a null member,
/// text that is not ASCII.
fn payload() -> Value {
    json!({ "invoice": 42, "lines": [{ "sku": "a-1", "qty": 2 }], "paid": false,
            "note": null, "name": "Zoë" })
}

/// A send by `key` to `user_id` with `category` and [`payload`] written
/// inline as an object literal in the query.
async fn send_inline(app: &TestApp, key: &str, user_id: i64) -> Value {
    app.gql(
        &format!(
            "mutation($to: RecipientInput) {{ sendNotification(input: {{ title: \"Invoice\", content: \"Due\", to: $to, category: \"billing.invoice\",
               data: {{ invoice: 42, lines: [{{ sku: \"a-1\", qty: 2 }}], paid: false, note: null, name: \"Zoë\" }} }}) {{ {FIELDS} }} }}"
        ),
        json!({ "to": { "userId": user_id.to_string() } }),
        Some(key),
    )
    .await
}

/// A send by `token` with every other input field given as variables.
async fn send_with(app: &TestApp, token: &str, input: Value) -> Value {
    let mut full = json!({ "title": "Invoice", "content": "Due" });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), input.as_object()) {
        full.extend(extra.clone());
    }
    app.gql(
        &format!(
            "mutation($input: SendNotificationInput!) {{ sendNotification(input: $input) {{ {FIELDS} }} }}"
        ),
        json!({ "input": full }),
        Some(token),
    )
    .await
}

fn sent(body: &Value) -> &Value {
    let n = &body["data"]["sendNotification"];
    assert!(n["id"].is_string(), "the send failed: {body}");
    n
}

fn assert_fields(n: &Value, category: &str, what: &str) {
    assert_eq!(n["category"], category, "{what}: {n}");
    assert_eq!(n["data"], payload(), "{what}: {n}");
}

/// A socket following the user's `inboxEvents` ("1") and
/// `notificationStatusChanged` ("2"), both asking for category and data.
async fn follow(app: &TestApp, token: &str) -> Socket {
    let mut socket = acked_modern(app, "/graphql/ws", token).await;
    let events = format!(
        "subscription {{ inboxEvents {{ __typename seq ... on NotificationCreated {{ notification {{ {FIELDS} }} }} ... on DeliveryStatusChanged {{ status notification {{ {FIELDS} }} }} }} }}"
    );
    let changes = format!(
        "subscription {{ notificationStatusChanged {{ status notification {{ {FIELDS} }} }} }}"
    );
    for (id, query) in [("1", events), ("2", changes)] {
        send(
            &mut socket,
            json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
        )
        .await;
    }
    until_live(&mut socket).await;
    socket
}

/// Reads the socket until notification `id` is SENT on both subscriptions,
/// checking its category and data in every payload about it.
async fn follow_to_sent(socket: &mut Socket, id: &str, category: &str) {
    let (mut created, mut sent_event, mut sent_change) = (false, false, false);
    while !(created && sent_event && sent_change) {
        let msg = next_json(socket).await;
        assert_eq!(msg["type"], "next", "{msg}");
        assert!(msg["payload"]["errors"].is_null(), "{msg}");
        let data = &msg["payload"]["data"];
        let (n, kind, status) = if msg["id"] == "1" {
            let event = &data["inboxEvents"];
            (
                &event["notification"],
                event["__typename"].as_str().unwrap_or_default(),
                event["status"].as_str().unwrap_or_default(),
            )
        } else {
            let change = &data["notificationStatusChanged"];
            (
                &change["notification"],
                "notificationStatusChanged",
                change["status"].as_str().unwrap_or_default(),
            )
        };
        if n["id"] != id {
            continue;
        }
        assert_fields(n, category, kind);
        match (kind, status) {
            ("NotificationCreated", _) => created = true,
            ("DeliveryStatusChanged", "SENT") => sent_event = true,
            ("notificationStatusChanged", "SENT") => sent_change = true,
            _ => {}
        }
    }
}

async fn stored_and_returned(app: &TestApp) {
    let key = app_key(app).await;
    let (token, user_id) = app.account("fields").await;
    let mut socket = follow(app, &token).await;

    // Inline, by an application.
    let inline = send_inline(app, &key, user_id).await;
    let first = sent(&inline);
    assert_fields(first, "billing.invoice", "inline");
    let first_id = first["id"].as_str().expect("id").to_owned();
    follow_to_sent(&mut socket, &first_id, "billing.invoice").await;

    // As a variable, by the user for themselves.
    let by_variable = send_with(
        app,
        &token,
        json!({ "category": "security.sign-in_2", "data": payload() }),
    )
    .await;
    let second = sent(&by_variable);
    assert_fields(second, "security.sign-in_2", "variable");
    let second_id = second["id"].as_str().expect("id").to_owned();
    follow_to_sent(&mut socket, &second_id, "security.sign-in_2").await;

    let expected = [
        (first_id.as_str(), "billing.invoice"),
        (second_id.as_str(), "security.sign-in_2"),
    ];
    // Twice each: a read from storage, then (the inbox unchanged) one
    // from the cache.
    for round in ["storage", "cache"] {
        for (id, category) in expected {
            let body = app
                .gql(
                    &format!("query($id: ID!) {{ notification(id: $id) {{ {FIELDS} }} }}"),
                    json!({ "id": id }),
                    Some(&token),
                )
                .await;
            assert_fields(&body["data"]["notification"], category, round);
        }
        let page = app
            .gql(
                &format!("{{ notifications(page: 1, pageSize: 10) {{ items {{ {FIELDS} }} }} }}"),
                json!({}),
                Some(&token),
            )
            .await;
        let inbox = app
            .gql(
                &format!("{{ inbox(first: 10) {{ edges {{ node {{ {FIELDS} }} }} }} }}"),
                json!({}),
                Some(&token),
            )
            .await;
        let items = page["data"]["notifications"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"));
        let nodes: Vec<&Value> = inbox["data"]["inbox"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{inbox}"))
            .iter()
            .map(|e| &e["node"])
            .collect();
        for (list, name) in [
            (items.iter().collect::<Vec<_>>(), "notifications"),
            (nodes, "inbox"),
        ] {
            assert_eq!(list.len(), 2, "{name} ({round}): {list:?}");
            for (id, category) in expected {
                let n = list
                    .iter()
                    .find(|n| n["id"] == id)
                    .unwrap_or_else(|| panic!("{name} ({round}) lacks {id}"));
                assert_fields(n, category, name);
            }
        }
    }

    // Without them, and with an explicit null: absent, not an empty value.
    for input in [json!({}), json!({ "data": null, "category": null })] {
        let body = send_with(app, &token, input.clone()).await;
        let n = sent(&body);
        assert!(
            n["category"].is_null() && n["data"].is_null(),
            "{input}: {n}"
        );
    }
    let body = app
        .gql(
            "mutation { sendNotification(input: { title: \"t\", content: \"c\", data: null }) { data } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert!(sent_data_is_null(&body), "{body}");
}

fn sent_data_is_null(body: &Value) -> bool {
    body["errors"].is_null() && body["data"]["sendNotification"]["data"].is_null()
}

both_backends!(
    category_and_data_are_stored_and_returned_by_every_read_and_live_payload,
    stored_and_returned
);

async fn notifications_count(app: &TestApp, token: &str) -> i64 {
    let body = app
        .gql(
            "{ notifications(page: 1, pageSize: 1) { totalCount } }",
            json!({}),
            Some(token),
        )
        .await;
    body["data"]["notifications"]["totalCount"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"))
}

async fn bad_input(app: &TestApp) {
    let key = app_key(app).await;
    let (token, user_id) = app.account("bad-fields").await;
    let to = json!({ "userId": user_id.to_string() });
    let now = Utc::now();
    let rfc = |span: Span| (now + span).to_rfc3339();
    let big = "a".repeat(8 * 1024);
    let cases = [
        (json!({ "data": [1, 2] }), "data"),
        (json!({ "data": "text" }), "data"),
        (json!({ "data": 5 }), "data"),
        (json!({ "data": true }), "data"),
        (json!({ "data": { "big": big } }), "data"),
        (json!({ "category": "Billing" }), "category"),
        (json!({ "category": "" }), "category"),
        (json!({ "category": ".dot-first" }), "category"),
        (json!({ "category": "with space" }), "category"),
        (json!({ "category": "a".repeat(65) }), "category"),
        (json!({ "sendAt": rfc(Span::seconds(-10)) }), "sendAt"),
        (json!({ "sendAt": rfc(Span::days(91)) }), "sendAt"),
        (json!({ "expiresAt": rfc(Span::seconds(-1)) }), "expiresAt"),
        (
            json!({ "sendAt": rfc(Span::hours(1)), "expiresAt": rfc(Span::minutes(30)) }),
            "expiresAt",
        ),
        (
            json!({ "sendAt": rfc(Span::hours(1)), "expiresAt": rfc(Span::hours(1)) }),
            "expiresAt",
        ),
    ];
    let before = notifications_count(app, &token).await;
    for (input, field) in &cases {
        // By the application (to the user) and by the user (to themselves).
        let mut by_app = input.clone();
        by_app["to"] = to.clone();
        for (caller, input) in [(key.as_str(), by_app), (token.as_str(), input.clone())] {
            let body = send_with(app, caller, input.clone()).await;
            assert_bad_input_naming(&body, field, &input);
        }
    }
    // The same bound written inline: a literal list is no object either.
    let body = app
        .gql(
            "mutation { sendNotification(input: { title: \"t\", content: \"c\", data: [1] }) { id } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert_eq!(
        notifications_count(app, &token).await,
        before,
        "nothing was stored"
    );
    // Just inside every bound: accepted.
    let fits = "a".repeat(8 * 1024 - r#"{"big":""}"#.len());
    let body = send_with(
        app,
        &key,
        json!({ "to": to, "data": { "big": fits }, "category": "a".repeat(64),
                "sendAt": rfc(Span::seconds(-3)), "expiresAt": rfc(Span::days(100)),
                "idempotencyKey": "k".repeat(255) }),
    )
    .await;
    sent(&body);
}

both_backends!(
    a_sends_own_fields_out_of_bounds_are_bad_user_input_naming_the_field,
    bad_input
);
