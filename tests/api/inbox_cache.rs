//! The inbox cache (issue 10): pages and the poll keyed by the user's last
//! seq. Polling with nothing new costs no SQL; a change shows at once;
//! the cached snapshot only ever moves forward; `totalCount` comes from the
//! counter row.

use std::time::Duration;

use chrono::Utc;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectionTrait as _, Database, EntityTrait as _};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, TestApp, quiet_worker, unique_email},
    inbox::{changes, inbox, insert_old, mark, mark_all, ok, old_user},
    retention::seqs,
    smtp_sink::SmtpSink,
    without_worker,
};

const WITHIN: Duration = Duration::from_secs(20);

async fn counts(app: &TestApp, token: &str) -> Value {
    ok(
        app,
        token,
        "{ inboxCounts { total unread unseen } }",
        json!({}),
    )
    .await["inboxCounts"]
        .clone()
}

async fn polling(app: &TestApp) {
    let token = app.token_for(&unique_email("poll")).await;
    let first = app.send_ok(&token, "one", "body").await;
    app.send_ok(&token, "two", "body").await;
    assert_eq!(seqs(&changes(app, &token, 0, 10).await), [1, 2]);

    // Nothing new: one cache read each, no statement at all.
    let before = app.stats.total();
    for _ in 0..5 {
        let page = changes(app, &token, 2, 10).await;
        assert_eq!(page["events"], json!([]), "{page}");
        assert_eq!(page["lastSeq"], json!(2));
        assert_eq!(page["hasMore"], json!(false));
        assert_eq!(page["pollInterval"], json!(15));
    }
    assert_eq!(
        counts(app, &token).await,
        json!({ "total": 2, "unread": 2, "unseen": 2 })
    );
    assert_eq!(
        app.stats.total(),
        before,
        "an idle poll or inboxCounts ran SQL"
    );

    // A change shows on the very next poll, never a stale empty page.
    assert!(
        mark(app, &token, &[&first], "READ")
            .await
            .get("errors")
            .is_none()
    );
    let page = changes(app, &token, 2, 10).await;
    assert_eq!(seqs(&page), [3], "{page}");
    assert_eq!(
        page["events"][0]["__typename"],
        json!("NotificationsMarked")
    );
    assert_eq!(page["lastSeq"], json!(3));
    assert_eq!(counts(app, &token).await["unread"], json!(1));
    app.send_ok(&token, "three", "body").await;
    let page = changes(app, &token, 3, 10).await;
    assert_eq!(seqs(&page), [4], "{page}");
    assert_eq!(
        page["events"][0]["__typename"],
        json!("NotificationCreated")
    );
    assert_eq!(counts(app, &token).await["total"], json!(3));
    // And idle again at the new seq.
    let before = app.stats.total();
    assert_eq!(changes(app, &token, 4, 10).await["events"], json!([]));
    assert_eq!(app.stats.total(), before);
    // Past the last seq: still a resync at the last seq.
    let ahead = changes(app, &token, 5, 10).await;
    assert_eq!(
        ahead["events"][0]["__typename"],
        json!("InboxResync"),
        "{ahead}"
    );
    assert_eq!(ahead["events"][0]["seq"], json!(4));
}
without_worker!(
    an_idle_poll_costs_no_sql_and_a_change_shows_at_once,
    polling
);

async fn cursor_pages(app: &TestApp) {
    let token = app.token_for(&unique_email("pages")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.send_ok(&token, &format!("n{i}"), "body").await);
    }
    let page = |after: Option<String>| {
        let token = token.clone();
        async move { inbox(app, &token, 2, after.as_deref(), Value::Null).await }
    };
    let first = page(None).await;
    let cursor = first["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    let second = page(cursor.clone()).await;
    // Cached now: the same pages (and counts) again, without the database.
    let before = app.stats.total();
    assert_eq!(page(None).await, first);
    assert_eq!(page(cursor.clone()).await, second);
    assert_eq!(app.stats.total(), before, "cached inbox pages ran SQL");
    assert_eq!(first["lastSeq"], json!(3));
    assert_eq!(second["edges"][0]["node"]["id"], json!(ids[0]));

    // A mark shows on the next read of either page, with its counts.
    let newest = ids[2].as_str();
    assert!(
        mark(app, &token, &[newest], "READ")
            .await
            .get("errors")
            .is_none()
    );
    let marked = page(None).await;
    assert!(marked["edges"][0]["node"]["readAt"].is_string(), "{marked}");
    assert_eq!(marked["lastSeq"], json!(4));
    assert_eq!(
        marked["counts"],
        json!({ "total": 3, "unread": 2, "unseen": 2 })
    );
    assert_eq!(page(cursor.clone()).await["lastSeq"], json!(4));
    // A send, too.
    let fourth = app.send_ok(&token, "n3", "body").await;
    let sent = page(None).await;
    assert_eq!(sent["edges"][0]["node"]["id"], json!(fourth), "{sent}");
    assert_eq!(sent["lastSeq"], json!(5));
    assert_eq!(sent["counts"]["total"], json!(4));
    // Archived: gone from the default filter, kept by INCLUDE.
    assert!(
        mark(app, &token, &[&fourth], "ARCHIVE")
            .await
            .get("errors")
            .is_none()
    );
    let after_archive = page(None).await;
    assert_eq!(after_archive["edges"][0]["node"]["id"], json!(newest));
    assert_eq!(after_archive["counts"]["total"], json!(3));
    let all = inbox(app, &token, 2, None, json!({ "archived": "INCLUDE" })).await;
    assert_eq!(all["edges"][0]["node"]["id"], json!(fourth), "{all}");
    // markAll too: every page of the cache follows.
    assert!(
        mark_all(app, &token, "READ", 6)
            .await
            .get("errors")
            .is_none()
    );
    let all_read = page(None).await;
    assert_eq!(all_read["counts"]["unread"], json!(0), "{all_read}");
    let unread_only = inbox(app, &token, 2, None, json!({ "unreadOnly": true })).await;
    assert_eq!(unread_only["edges"], json!([]), "{unread_only}");
}
without_worker!(
    a_cached_inbox_page_shows_a_mark_or_send_on_the_next_read,
    cursor_pages
);

mod a_cached_inbox_page_shows_a_delivery_on_the_next_read {
    crate::on_backends!(super::delivery; sqlite => Sqlite, postgres => Postgres);
}

async fn delivery(backend: Backend) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let Some(app) = TestApp::spawn_with(backend, |c| quiet_worker(c, url)).await else {
        return;
    };
    sink.hold();
    let token = app.token_for(&unique_email("delivered")).await;
    let id = app.send_ok(&token, "hello", "body").await;
    app.wait_for_status(&token, &id, "PROCESSING", WITHIN).await;
    sink.wait_held(1, WITHIN).await;
    let status = || async {
        ok(
            &app,
            &token,
            "{ inbox(first: 5) { lastSeq edges { node { status } } } }",
            json!({}),
        )
        .await["inbox"]
            .clone()
    };
    let processing = status().await;
    assert_eq!(
        processing["edges"][0]["node"]["status"],
        json!("PROCESSING")
    );
    assert_eq!(status().await, processing, "now cached");
    sink.release();
    app.wait_for_status(&token, &id, "SENT", WITHIN).await;
    let sent = status().await;
    assert_eq!(sent["edges"][0]["node"]["status"], json!("SENT"), "{sent}");
    assert_eq!(sent["lastSeq"], json!(3));
}

/// `totalCount` counts every notification the old list pages through,
/// archived ones too (the counter's `total` leaves those out).
async fn total_count(app: &TestApp) {
    let token = app.token_for(&unique_email("total")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.send_ok(&token, &format!("n{i}"), "body").await);
    }
    let list = || async {
        ok(
            app,
            &token,
            "{ notifications(page: 1, pageSize: 2) { totalCount hasNextPage items { id } } }",
            json!({}),
        )
        .await["notifications"]
            .clone()
    };
    assert_eq!(list().await["totalCount"], json!(3));
    let archived = mark(app, &token, &[&ids[0], &ids[1]], "ARCHIVE").await;
    assert_eq!(
        archived["data"]["markNotifications"]["counts"]["total"],
        json!(1)
    );
    let page = list().await;
    assert_eq!(
        page["totalCount"],
        json!(3),
        "archived ones are listed: {page}"
    );
    assert_eq!(page["hasNextPage"], json!(true));
    let last = ok(
        app,
        &token,
        "{ notifications(page: 2, pageSize: 2) { totalCount items { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        last["notifications"]["items"],
        json!([{ "id": ids[0] }]),
        "{last}"
    );
    app.send_ok(&token, "n3", "body").await;
    assert_eq!(list().await["totalCount"], json!(4));
}
without_worker!(total_count_counts_archived_notifications_too, total_count);

// ---- The snapshot entry in Redis ----

/// A snapshot payload as the cache holds it.
fn snapshot_json(seq: i64) -> String {
    json!({ "v": 1, "last_seq": seq, "counts": { "total": seq, "unread": 0, "unseen": 0 } })
        .to_string()
}

/// The Redis script behind `set_if_newer`: a late writer with an older
/// snapshot never moves the entry back, and every write sets a TTL (which
/// bounds what an update lost with its instance can leave stale).
#[tokio::test]
async fn the_redis_snapshot_entry_only_moves_forward_and_expires() {
    use herald::cache::{Cache as _, RedisCache};
    let Some(prefix) = crate::helpers::RedisPrefix::new().await else {
        return;
    };
    let client = redis::Client::open(crate::helpers::redis_url()).expect("redis url");
    let manager = redis::aio::ConnectionManager::new(client)
        .await
        .expect("redis");
    let mut conn = manager.clone();
    let cache = RedisCache::new(manager);
    let key = herald::keys::Keys::new(prefix.prefix.clone()).inbox_snapshot(7);
    let ttl = Duration::from_secs(60);
    assert!(
        cache
            .set_if_newer(&key, &snapshot_json(5), 5, ttl)
            .await
            .expect("set")
    );
    assert!(
        !cache
            .set_if_newer(&key, &snapshot_json(4), 4, ttl)
            .await
            .expect("set")
    );
    assert_eq!(cache.get(&key).await.expect("get"), Some(snapshot_json(5)));
    assert!(
        cache
            .set_if_newer(&key, &snapshot_json(6), 6, ttl)
            .await
            .expect("set")
    );
    assert_eq!(cache.get(&key).await.expect("get"), Some(snapshot_json(6)));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    // What is not a snapshot (another format) is replaced.
    cache.set(&key, "garbage", ttl).await.expect("set");
    assert!(
        cache
            .set_if_newer(&key, &snapshot_json(1), 1, ttl)
            .await
            .expect("set")
    );
}

mod a_lagging_cached_snapshot_never_answers_a_resync {
    crate::on_backends!(super::lagging; postgres => Postgres, sqlite_redis => SqliteRedis);
}

/// The cache lags the database (an instance died between a commit and its
/// cache update): a poll past the cached last seq confirms against the
/// database, so it gets events or an empty page, never a false resync; and
/// a page read from the database moves the cached snapshot forward.
async fn lagging(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.worker = None).await else {
        return;
    };
    let (token, user_id) = app.account("lag").await;
    let token = token.as_str();
    for i in 0..3 {
        app.send_ok(token, &format!("n{i}"), "body").await;
    }
    let key = herald::keys::Keys::new(app.redis.as_ref().expect("redis").prefix.clone())
        .inbox_snapshot(user_id);
    let client = redis::Client::open(crate::helpers::redis_url()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert!(pttl > 0, "the snapshot entry expires: {pttl}");
    // Seq 3 is committed; the cache still says 1.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(snapshot_json(1))
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .expect("SET");
    let page = changes(&app, token, 3, 10).await;
    assert_eq!(page["events"], json!([]), "{page}");
    assert_eq!(page["lastSeq"], json!(3));
    assert_eq!(seqs(&changes(&app, token, 2, 10).await), [3]);
    // An inbox page read from the database brings the snapshot forward.
    let first = inbox(&app, token, 10, None, Value::Null).await;
    assert_eq!(first["lastSeq"], json!(3));
    let cached: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert!(cached.contains("\"last_seq\":3"), "{cached}");
}

// ---- Migration 5: the counter row counts every notification ----

/// Upgrades a database populated by the schema of migration 4 in place:
/// `inbox_counters.notifications` is backfilled with every notification,
/// archived ones too, and sends keep it up.
async fn upgrade_counters(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(4)).await.expect("schema 4");
    let ann = old_user(&db, "ann@example.com").await;
    let bob = old_user(&db, "bob@example.com").await;
    let now = Utc::now();
    for (user, seq, archived) in [
        (ann, 1, false),
        (ann, 2, true),
        (ann, 3, false),
        (bob, 1, true),
    ] {
        insert_old(
            &db,
            "notifications",
            &[
                "user_id",
                "title",
                "content",
                "status",
                "attempts",
                "created_at",
                "updated_at",
                "seq",
                "seen_at",
                "read_at",
                "archived_at",
            ],
            vec![
                user.into(),
                "t".into(),
                "c".into(),
                "SENT".into(),
                1.into(),
                now.into(),
                now.into(),
                i64::from(seq).into(),
                archived.then_some(now).into(),
                archived.then_some(now).into(),
                archived.then_some(now).into(),
            ],
        )
        .await;
    }
    db.execute_unprepared(&format!(
        "INSERT INTO inbox_counters (user_id, last_seq, total, unread, unseen) \
         VALUES ({ann}, 3, 2, 2, 2), ({bob}, 1, 0, 0, 0)"
    ))
    .await
    .expect("counters");

    Migrator::up(&db, None).await.expect("upgrade");

    let every = |user: i64| {
        let db = &db;
        async move {
            entity::inbox_counter::Entity::find_by_id(user)
                .one(db)
                .await
                .expect("counter")
                .map(|c| (c.last_seq, c.total, c.notifications))
        }
    };
    assert_eq!(every(ann).await, Some((3, 2, 3)));
    assert_eq!(every(bob).await, Some((1, 0, 1)));
    let title = herald::domain::Title::parse("after").expect("title");
    let content = herald::domain::Content::parse("the upgrade".to_owned()).expect("content");
    herald::storage::notifications::insert(
        &db,
        bob,
        &title,
        &content,
        &Default::default(),
        herald::storage::now(),
    )
    .await
    .expect("insert");
    assert_eq!(every(bob).await, Some((2, 1, 2)));
    let page = herald::storage::notifications::page(&db, bob, 1, 10)
        .await
        .expect("page");
    assert_eq!((page.total, page.items.len()), (2, 2));
    db.close().await.expect("close");
}

crate::upgrade_tests!(migration_5_backfills_every_notification, upgrade_counters);
