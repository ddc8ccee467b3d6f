//! Reading notifications: pages, the never-stale cache, authorization, the
//! batched recipient, and status events.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, TestApp, error_code, quiet_worker, unique_email};
use crate::smtp_sink::SmtpSink;
use crate::{both_backends, every_backend};

const WITHIN: Duration = Duration::from_secs(20);

fn statuses(body: &Value) -> Vec<String> {
    body["data"]["notifications"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {body}"))
        .iter()
        .map(|n| n["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]["notifications"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {body}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

every_backend!(pages_are_newest_first_with_exact_edges, pagination);
async fn pagination(app: &TestApp) {
    let token = app.token_for(&unique_email("pages")).await;
    // Empty.
    let empty = app.page(&token, 1, 10).await;
    let page = &empty["data"]["notifications"];
    assert_eq!(page["totalCount"], 0, "{empty}");
    assert_eq!(page["hasNextPage"], false);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0));

    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(app.send_ok(&token, &format!("n{i}"), "body").await);
    }
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    // An exact multiple of the page size: two full pages, then nothing.
    let p1 = app.page(&token, 1, 3).await;
    let p2 = app.page(&token, 2, 3).await;
    let p3 = app.page(&token, 3, 3).await;
    assert_eq!(ids(&p1), newest_first[..3]);
    assert_eq!(ids(&p2), newest_first[3..]);
    assert!(ids(&p3).is_empty());
    assert_eq!(p1["data"]["notifications"]["hasNextPage"], true);
    assert_eq!(
        p2["data"]["notifications"]["hasNextPage"], false,
        "the last page"
    );
    assert_eq!(p2["data"]["notifications"]["totalCount"], 6);
    // A partial last page.
    let p = app.page(&token, 2, 4).await;
    assert_eq!(ids(&p), newest_first[4..]);
    assert_eq!(p["data"]["notifications"]["hasNextPage"], false);
    // The defaults: page 1, pageSize 10.
    let d = app
        .gql(
            "{ notifications { page pageSize totalCount } }",
            serde_json::json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(d["data"]["notifications"]["page"], 1, "{d}");
    assert_eq!(d["data"]["notifications"]["pageSize"], 10);
    // Out of bounds.
    for (page, size) in [(1, 0), (1, 101), (0, 10), (-1, 10), (1, -5)] {
        let body = app.page(&token, page, size).await;
        assert_eq!(
            error_code(&body),
            Some("BAD_USER_INPUT"),
            "page {page} size {size}: {body}"
        );
    }
    assert!(app.page(&token, 1, 100).await["data"]["notifications"].is_object());
}

both_backends!(nobody_sees_another_users_notifications, authorization);
async fn authorization(app: &TestApp) {
    let alice = app.token_for(&unique_email("alice")).await;
    let bob = app.token_for(&unique_email("bob")).await;
    let id = app.send_ok(&alice, "For Alice", "private").await;
    app.send_ok(&bob, "For Bob", "his own").await;

    let list = app.page(&bob, 1, 100).await;
    assert_eq!(list["data"]["notifications"]["totalCount"], 1, "{list}");
    assert!(!ids(&list).contains(&id));

    let by_id = app.notification(&bob, &id).await;
    assert_eq!(error_code(&by_id), Some("FORBIDDEN"), "{by_id}");
    assert!(by_id["data"].is_null());
    assert_eq!(
        app.notification(&alice, &id).await["data"]["notification"]["title"],
        "For Alice"
    );

    for (id, message) in [
        ("999999999", "notification 999999999 not found"),
        ("not-a-number", "notification ids are positive integers"),
        ("-3", "notification ids are positive integers"),
        (
            "99999999999999999999999",
            "notification ids are positive integers",
        ),
    ] {
        let body = app.notification(&alice, id).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
        assert_eq!(body["errors"][0]["message"], message, "{body}");
    }
    let anon = app
        .gql(
            "{ notifications { totalCount } }",
            serde_json::json!({}),
            None,
        )
        .await;
    assert_eq!(error_code(&anon), Some("UNAUTHENTICATED"));
}

/// No worker: the rows stay as sent, and only the test changes them.
fn no_worker(c: &mut herald::config::Config) {
    c.worker = None;
}

mod a_page_of_100_resolves_recipients_with_one_batched_query {
    crate::on_every_backend!(super::recipients_in_one_query);
}

async fn recipients_in_one_query(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, no_worker).await else {
        return;
    };
    let email = unique_email("hundred");
    let token = app.token_for(&email).await;
    // Sent without asking for `recipient`, so no user is cached yet.
    for i in 0..100 {
        let body = app
            .gql(
                "mutation($t: String!) { sendNotification(input: {title: $t, content: \"b\"}) { id } }",
                serde_json::json!({ "t": format!("n{i}") }),
                Some(&token),
            )
            .await;
        assert!(body["data"]["sendNotification"]["id"].is_string(), "{body}");
    }
    let before = app.stats.user_reads();
    let page = app.page(&token, 1, 100).await;
    let items = page["data"]["notifications"]["items"]
        .as_array()
        .expect("items");
    assert_eq!(items.len(), 100);
    assert!(
        items
            .iter()
            .all(|n| n["recipient"]["email"] == email.as_str())
    );
    assert_eq!(
        app.stats.user_reads() - before,
        1,
        "one batched users query for 100 recipients"
    );
    // And the next read takes the recipient from the cache.
    app.page(&token, 2, 50).await;
    assert_eq!(app.stats.user_reads() - before, 1);
}

/// Every cached page of every size shows a status change on the next read,
/// and an unchanged page is read again without the database.
mod the_cache_is_never_stale_and_spares_the_database {
    crate::on_every_backend!(super::never_stale);
}

async fn never_stale(backend: Backend) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    // No background sweeps: the statement count stays exact.
    let Some(app) = TestApp::spawn_with(backend, |c| quiet_worker(c, url)).await else {
        return;
    };
    sink.hold();
    let token = app.token_for(&unique_email("cache")).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(app.send_ok(&token, &format!("c{i}"), "body").await);
    }
    for id in &sent {
        app.wait_for_status(&token, id, "PROCESSING", WITHIN).await;
    }
    // The worker reads a recipient after its claim: let every one reach the
    // sink, so that nothing of the worker's falls in the counted window.
    sink.wait_held(sent.len(), WITHIN).await;
    let shapes = [
        (1, 1),
        (2, 1),
        (5, 1),
        (1, 2),
        (2, 2),
        (3, 2),
        (1, 5),
        (1, 10),
    ];
    for (page, size) in shapes {
        let body = app.page(&token, page, size).await;
        assert!(statuses(&body).iter().all(|s| s == "PROCESSING"), "{body}");
    }
    // Unchanged: served from the cache, no statement at all.
    let before = app.stats.total();
    for (page, size) in shapes {
        let body = app.page(&token, page, size).await;
        assert!(statuses(&body).iter().all(|s| s == "PROCESSING"), "{body}");
    }
    assert_eq!(
        app.stats.total(),
        before,
        "cached pages touched the database"
    );

    sink.release();
    for id in &sent {
        app.wait_for_status(&token, id, "SENT", WITHIN).await;
    }
    // Every page of every size shows SENT on the very next read.
    for (page, size) in shapes {
        let body = app.page(&token, page, size).await;
        let s = statuses(&body);
        assert!(!s.is_empty() || page > 1, "{body}");
        assert!(
            s.iter().all(|s| s == "SENT"),
            "page {page} size {size} is stale: {body}"
        );
    }
    // A new notification shows at once too.
    app.send_ok(&token, "newest", "body").await;
    let body = app.page(&token, 1, 10).await;
    assert_eq!(body["data"]["notifications"]["totalCount"], 6, "{body}");
    assert_eq!(body["data"]["notifications"]["items"][0]["title"], "newest");
}

every_backend!(every_status_change_is_published_in_order, events);
/// Every hint carries the event its commit wrote (a subscriber that keeps
/// up reads no log), the delivery status changes included.
async fn events(app: &TestApp) {
    // The Redis subscriber attaches in the background after the start.
    crate::ws_client::until_events_flow(app).await;
    let token = app.token_for(&unique_email("events")).await;
    let user_id: i64 = app.me(Some(&token)).await["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    let mut rx = app.events.subscribe_inbox(user_id);
    let id: i64 = app
        .send_ok(&token, "Watch me", "go")
        .await
        .parse()
        .expect("numeric id");
    use herald::{pubsub::InboxFeed, wire::InboxChangeV1};
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while seen.len() < 3 {
        let feed = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("events within the deadline")
            .expect("receiver open");
        let InboxFeed::Hint(hint) = feed else {
            continue;
        };
        assert_eq!(hint.user_id, user_id, "another user's hint: {hint:?}");
        let event = hint.event.as_ref().expect("the hint carries its event");
        let (notification, previous) = match &event.change {
            InboxChangeV1::NotificationCreated { notification } => (notification, None),
            InboxChangeV1::DeliveryStatusChanged {
                notification,
                previous,
            } => (notification, Some(*previous)),
            InboxChangeV1::NotificationsMarked { .. } => continue,
        };
        if notification.id == id {
            seen.push((event.seq, previous, notification.status));
        }
    }
    use herald::wire::Status::*;
    assert_eq!(
        seen,
        [
            (1, None, Pending),
            (2, Some(Pending), Processing),
            (3, Some(Processing), Sent)
        ]
    );
}

mod payloads_from_another_release_are_read_or_passed_over {
    crate::on_backends!(super::another_release; postgres => Postgres, sqlite_redis => SqliteRedis);
}

/// A rolling deploy: another release shares this Redis. Its cached pages and
/// events carry fields this one does not know (they are read), or another
/// payload version (a cache miss; an event skipped), never an error.
async fn another_release(backend: Backend) {
    // The page payloads themselves are read: no whole response cached
    // in front of them.
    let Some(app) = TestApp::spawn_with(backend, |c| {
        no_worker(c);
        if let Some(http) = c.http.as_mut() {
            http.response_cache = false;
        }
    })
    .await
    else {
        return;
    };
    let redis_prefix = app.redis.as_ref().expect("services mode").prefix.clone();
    let keys = herald::keys::Keys::new(redis_prefix);
    let client = redis::Client::open(crate::helpers::redis_url()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let body = app
        .register(&unique_email("deploy"), crate::helpers::PASSWORD)
        .await;
    let token = body["data"]["register"]["token"].as_str().expect("token");
    let user_id: i64 = body["data"]["register"]["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    let id: i64 = app
        .send_ok(token, "stored title", "body")
        .await
        .parse()
        .expect("id");
    let title = |body: &Value| body["data"]["notifications"]["items"][0]["title"].clone();
    assert_eq!(title(&app.page(token, 1, 10).await), "stored title");

    // The cached copy, as a newer release would write it: an extra field at
    // each level (and a title of its own, to tell the copy from the row).
    let page_key = keys.inbox_page(user_id, 1, 10);
    let cached: String = redis::cmd("GET")
        .arg(&page_key)
        .query_async(&mut redis)
        .await
        .expect("the page is cached");
    let mut entry: Value = serde_json::from_str(&cached).expect("json");
    entry["added_later"] = serde_json::json!({ "nested": [1, 2] });
    entry["items"][0]["added_later"] = Value::Bool(true);
    entry["items"][0]["title"] = Value::from("cached title");
    let set = |value: Value| {
        redis::cmd("SET")
            .arg(&page_key)
            .arg(value.to_string())
            .arg("EX")
            .arg(60)
            .clone()
    };
    let _: () = set(entry.clone())
        .query_async(&mut redis)
        .await
        .expect("SET");
    assert_eq!(
        title(&app.page(token, 1, 10).await),
        "cached title",
        "a cached page with unknown fields is read"
    );
    // Another payload version: a miss, read from the database.
    let next = entry["v"].as_u64().expect("v") + 1;
    entry["v"] = Value::from(next);
    let _: () = set(entry).query_async(&mut redis).await.expect("SET");
    let body = app.page(token, 1, 10).await;
    assert_eq!(title(&body), "stored title", "{body}");

    // Hints: one with unknown fields arrives; one of another version is
    // skipped, and the relay goes on (a marker after it arrives next).
    let mut hints = app.events.subscribe_inbox(user_id);
    let hint = |v: u32, title: &str| {
        serde_json::json!({
            "v": v,
            "user_id": user_id,
            "event": {
                "user_id": user_id, "seq": 2, "at": "2026-01-01T00:00:00Z",
                "counts": { "total": 1, "unread": 1, "unseen": 1, "archived": 0 },
                "change": {
                    "kind": "DeliveryStatusChanged",
                    "notification": {
                        "id": id, "user_id": user_id, "title": title, "content": "body",
                        "status": "SENT", "attempts": 1, "last_error": null,
                        "next_attempt_at": null, "sent_at": "2026-01-01T00:00:00Z",
                        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                        "priority": "high",
                    },
                    "previous": "PROCESSING",
                },
                "trace_id": "abc",
            },
            "origin": "newer release",
        })
        .to_string()
    };
    let publish = |payload: String| {
        redis::cmd("PUBLISH")
            .arg(keys.inbox_events())
            .arg(payload)
            .clone()
    };
    let title_of = |feed: herald::pubsub::InboxFeed| match feed {
        herald::pubsub::InboxFeed::Hint(hint) => match &hint.event {
            Some(herald::wire::InboxEventV1 {
                change: herald::wire::InboxChangeV1::DeliveryStatusChanged { notification, .. },
                ..
            }) => Some(notification.title.clone()),
            _ => None,
        },
        herald::pubsub::InboxFeed::Resume => None,
    };
    // The relay subscribes in the background: publish until it hears.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let heard = loop {
        let _: i64 = publish(hint(1, "newer"))
            .query_async(&mut redis)
            .await
            .expect("PUBLISH");
        if let Ok(Ok(feed)) = tokio::time::timeout(Duration::from_millis(200), hints.recv()).await
            && let Some(title) = title_of(feed)
        {
            break title;
        }
        assert!(tokio::time::Instant::now() < deadline, "no hint relayed");
    };
    assert_eq!(heard, "newer");
    // Version 1 (before the new statuses) is still read; 4 is a future one.
    for payload in [hint(4, "other version"), hint(1, "marker")] {
        let _: i64 = publish(payload)
            .query_async(&mut redis)
            .await
            .expect("PUBLISH");
    }
    // Past the copies of the first hint still on their way.
    let next = loop {
        let next = tokio::time::timeout(WITHIN, hints.recv())
            .await
            .expect("the marker arrives")
            .expect("receiver open");
        if let Some(title) = title_of(next)
            && title != "newer"
        {
            break title;
        }
    };
    assert_eq!(next, "marker");
}
