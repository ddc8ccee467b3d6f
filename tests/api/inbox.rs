//! The inbox (issue 10): sequence numbers, read state, exact counts, cursor
//! pages and the change log, on SQLite and on Postgres.

use chrono::{DateTime, Duration, Utc};
use herald::domain::{Content, Title};
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{
    ConnectionTrait as _, Database, DatabaseConnection, EntityTrait as _, QueryOrder as _,
    sea_query::{Alias, Query},
};

// ---- Migration from the previous schema ----

/// The migrations before the inbox.
const BEFORE_INBOX: u32 = 3;

pub(crate) async fn insert_old(
    db: &DatabaseConnection,
    table: &str,
    columns: &[&str],
    values: Vec<sea_orm::Value>,
) -> i64 {
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(table))
        .columns(columns.iter().map(|c| Alias::new(*c)))
        .values_panic(values.into_iter().map(Into::into))
        .returning_col(Alias::new("id"));
    let statement = db.get_database_backend().build(&insert);
    let row = db
        .query_one_raw(statement)
        .await
        .expect("insert")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("id")
}

pub(crate) async fn old_user(db: &DatabaseConnection, email: &str) -> i64 {
    insert_old(
        db,
        "users",
        &["email", "password_hash", "created_at"],
        vec![email.into(), "x".into(), Utc::now().into()],
    )
    .await
}

pub(crate) async fn old_notification(
    db: &DatabaseConnection,
    user_id: i64,
    created_at: DateTime<Utc>,
) -> i64 {
    insert_old(
        db,
        "notifications",
        &[
            "user_id",
            "title",
            "content",
            "status",
            "attempts",
            "created_at",
            "updated_at",
        ],
        vec![
            user_id.into(),
            "t".into(),
            "c".into(),
            "SENT".into(),
            1.into(),
            created_at.into(),
            created_at.into(),
        ],
    )
    .await
}

/// Upgrades a database populated by the previous schema in place.
async fn upgrade_in_place(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(BEFORE_INBOX))
        .await
        .expect("previous schema");
    let t0 = Utc::now() - Duration::hours(1);
    let ann = old_user(&db, "ann@example.com").await;
    let bob = old_user(&db, "bob@example.com").await;
    let cid = old_user(&db, "cid@example.com").await;
    // Inserted out of creation order: seqs follow creation.
    let ann_third = old_notification(&db, ann, t0 + Duration::seconds(2)).await;
    let ann_first = old_notification(&db, ann, t0).await;
    let bob_first = old_notification(&db, bob, t0).await;
    let ann_second = old_notification(&db, ann, t0 + Duration::seconds(1)).await;
    let bob_second = old_notification(&db, bob, t0 + Duration::seconds(5)).await;

    Migrator::up(&db, None).await.expect("upgrade");

    let rows = entity::notification::Entity::find()
        .order_by_asc(entity::notification::Column::Id)
        .all(&db)
        .await
        .expect("rows");
    let seq_of = |id: i64| rows.iter().find(|r| r.id == id).map(|r| r.seq);
    assert_eq!(seq_of(ann_first), Some(1));
    assert_eq!(seq_of(ann_second), Some(2));
    assert_eq!(seq_of(ann_third), Some(3));
    assert_eq!(seq_of(bob_first), Some(1));
    assert_eq!(seq_of(bob_second), Some(2));
    assert!(
        rows.iter()
            .all(|r| r.seen_at.is_none() && r.read_at.is_none() && r.archived_at.is_none()),
        "existing rows are unseen and unread"
    );
    let counters = entity::inbox_counter::Entity::find()
        .order_by_asc(entity::inbox_counter::Column::UserId)
        .all(&db)
        .await
        .expect("counters");
    let counter = |user: i64| {
        counters
            .iter()
            .find(|c| c.user_id == user)
            .map(|c| (c.last_seq, c.total, c.unread, c.unseen))
    };
    assert_eq!(counter(ann), Some((3, 3, 3, 3)));
    assert_eq!(counter(bob), Some((2, 2, 2, 2)));
    assert_eq!(counter(cid), None, "no notifications, no counter row yet");

    // The next notification continues each user's sequence.
    let title = Title::parse("after").expect("title");
    let content = Content::parse("the upgrade".to_owned()).expect("content");
    let (row, event) = herald::storage::notifications::insert(
        &db,
        ann,
        &title,
        &content,
        &Default::default(),
        herald::storage::now(),
    )
    .await
    .expect("insert");
    assert_eq!((row.seq, event.seq), (4, 4));
    assert_eq!(
        (event.counts.total, event.counts.unread, event.counts.unseen),
        (4, 4, 4)
    );
    // The log starts at the upgrade: a client asking from before it resyncs.
    use herald::storage::inbox::{Changes, changes_after};
    let from_start = changes_after(&db, ann, 0, 10).await.expect("changes");
    assert!(
        matches!(from_start, Changes::Resync(s) if s.last_seq == 4),
        "{from_start:?}"
    );
    let from_upgrade = changes_after(&db, ann, 3, 10).await.expect("changes");
    assert!(
        matches!(&from_upgrade, Changes::Events { events, .. } if events.len() == 1 && events[0].seq == 4),
        "{from_upgrade:?}"
    );
    let (row, _) = herald::storage::notifications::insert(
        &db,
        cid,
        &title,
        &content,
        &Default::default(),
        herald::storage::now(),
    )
    .await
    .expect("insert");
    assert_eq!(row.seq, 1);
    db.close().await.expect("close");
}

crate::upgrade_tests!(
    migration_4_upgrades_a_populated_database_in_place,
    upgrade_in_place
);

// ---- The API ----

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::{
    both_backends,
    helpers::{TestApp, error_code, unique_email},
    without_worker,
};

pub(crate) const EVENT_FIELDS: &str = "__typename seq at counts { total unread unseen } \
    ... on NotificationCreated { notification { id seq } } \
    ... on DeliveryStatusChanged { notification { id seq status } previousStatus status } \
    ... on NotificationsMarked { action ids upTo }";

pub(crate) const NODE_FIELDS: &str = "id seq seenAt readAt archivedAt";

pub(crate) async fn ok(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let body = app.gql(query, variables, Some(token)).await;
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

pub(crate) async fn mark(app: &TestApp, token: &str, ids: &[&str], action: &str) -> Value {
    app.gql(
        "mutation($ids: [ID!]!, $a: InboxAction!) { markNotifications(ids: $ids, action: $a) { updated seq counts { total unread unseen } } }",
        json!({ "ids": ids, "a": action }),
        Some(token),
    )
    .await
}

pub(crate) async fn mark_all(app: &TestApp, token: &str, action: &str, up_to: i64) -> Value {
    app.gql(
        "mutation($a: InboxAction!, $u: Int!) { markAllNotifications(action: $a, upTo: $u) { updated seq counts { total unread unseen } } }",
        json!({ "a": action, "u": up_to }),
        Some(token),
    )
    .await
}

pub(crate) async fn changes(app: &TestApp, token: &str, after: i64, first: i64) -> Value {
    ok(
        app,
        token,
        &format!("query($a: Int!, $f: Int) {{ inboxChanges(after: $a, first: $f) {{ lastSeq hasMore pollInterval events {{ {EVENT_FIELDS} }} }} }}"),
        json!({ "a": after, "f": first }),
    )
    .await["inboxChanges"]
        .clone()
}

pub(crate) async fn inbox(
    app: &TestApp,
    token: &str,
    first: i64,
    after: Option<&str>,
    filter: Value,
) -> Value {
    ok(
        app,
        token,
        &format!("query($f: Int, $a: String, $filter: InboxFilter) {{ inbox(first: $f, after: $a, filter: $filter) {{ lastSeq counts {{ total unread unseen }} pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {NODE_FIELDS} }} }} }} }}"),
        json!({ "f": first, "a": after, "filter": filter }),
    )
    .await["inbox"]
        .clone()
}

/// Every notification of the caller's, archived or not, by id.
async fn all_rows(app: &TestApp, token: &str) -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = inbox(
            app,
            token,
            100,
            after.as_deref(),
            json!({ "archived": "INCLUDE" }),
        )
        .await;
        for edge in page["edges"].as_array().expect("edges") {
            let node = edge["node"].clone();
            rows.insert(node["id"].as_str().expect("id").to_owned(), node);
        }
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return rows;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// (seen, read, archived)
type State = (bool, bool, bool);

fn apply(action: &str, (seen, read, archived): State) -> State {
    match action {
        "SEEN" => (true, read, archived),
        "READ" => (true, true, archived),
        "UNREAD" => (seen, false, false),
        "ARCHIVE" => (true, true, true),
        "UNARCHIVE" => (seen, read, false),
        other => panic!("unknown action {other}"),
    }
}

fn recount<'a>(states: impl Iterator<Item = &'a State>) -> Value {
    let (mut total, mut unread, mut unseen) = (0, 0, 0);
    for (seen, read, archived) in states {
        if !archived {
            total += 1;
            unread += i64::from(!read);
            unseen += i64::from(!seen);
        }
    }
    json!({ "total": total, "unread": unread, "unseen": unseen })
}

/// Reads the whole log, checks its seqs are exactly 1..=lastSeq, replays
/// it and checks every event's counts against a recount at that seq, and
/// the end state against the rows. Returns the last seq.
async fn replay_and_recount(app: &TestApp, token: &str) -> i64 {
    let mut events = Vec::new();
    let mut last_seq = 0;
    loop {
        let page = changes(app, token, last_seq, 500).await;
        let batch = page["events"].as_array().expect("events");
        events.extend(batch.iter().cloned());
        last_seq = batch
            .last()
            .map_or(last_seq, |e| e["seq"].as_i64().expect("seq"));
        if page["hasMore"] != json!(true) {
            break;
        }
    }
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "gapless, no duplicates"
    );
    // id -> (seq, state)
    let mut states: BTreeMap<String, (i64, State)> = BTreeMap::new();
    for event in &events {
        match event["__typename"].as_str().expect("typename") {
            "NotificationCreated" => {
                let n = &event["notification"];
                assert_eq!(
                    n["seq"], event["seq"],
                    "a notification's seq is its creation event's"
                );
                states.insert(
                    n["id"].as_str().expect("id").to_owned(),
                    (n["seq"].as_i64().expect("seq"), (false, false, false)),
                );
            }
            "NotificationsMarked" => {
                let action = event["action"].as_str().expect("action");
                let ids: Vec<&str> = event["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|id| id.as_str().expect("id"))
                    .collect();
                let mut changed = 0;
                for (id, (seq, state)) in &mut states {
                    let hit = match event["upTo"].as_i64() {
                        Some(up_to) => *seq <= up_to,
                        None => ids.contains(&id.as_str()),
                    };
                    if hit && apply(action, *state) != *state {
                        *state = apply(action, *state);
                        changed += 1;
                    }
                }
                assert!(
                    changed > 0,
                    "a mark that changes nothing writes no event: {event}"
                );
                if event["upTo"].is_null() {
                    assert_eq!(changed, ids.len(), "ids are exactly what changed: {event}");
                }
            }
            "DeliveryStatusChanged" => {
                let n = &event["notification"];
                assert_eq!(n["status"], event["status"]);
                assert_ne!(event["previousStatus"], event["status"]);
                assert!(
                    states.contains_key(n["id"].as_str().expect("id")),
                    "created first"
                );
            }
            other => panic!("unexpected event {other}: {event}"),
        }
        assert_eq!(
            event["counts"],
            recount(states.values().map(|(_, s)| s)),
            "counts at seq {}",
            event["seq"]
        );
    }
    let rows = all_rows(app, token).await;
    assert_eq!(rows.len(), states.len());
    for (id, row) in &rows {
        let (seq, state) = states[id];
        assert_eq!(row["seq"].as_i64(), Some(seq));
        let row_state = (
            !row["seenAt"].is_null(),
            !row["readAt"].is_null(),
            !row["archivedAt"].is_null(),
        );
        assert_eq!(row_state, state, "notification {id}");
    }
    let counts = ok(
        app,
        token,
        "{ inboxCounts { total unread unseen } }",
        json!({}),
    )
    .await;
    assert_eq!(
        counts["inboxCounts"],
        recount(states.values().map(|(_, s)| s))
    );
    last_seq
}

/// 300 concurrent sends, marks, marks of all, archives and unarchives,
/// half of them on a second instance (with Redis), while the first one's
/// worker delivers. At most 50 in flight: one user's writes are serialized
/// by design, and 300 queued at once outlast the request timeout in a debug
/// build on a loaded machine.
async fn concurrent_sends_and_marks(app: &TestApp) {
    let sibling = match app.redis {
        Some(_) => Some(app.spawn_sibling(|c| c.worker = None).await),
        None => None,
    };
    let instances: Vec<&TestApp> = std::iter::once(app).chain(sibling.as_ref()).collect();
    let token = app.token_for(&unique_email("burst")).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.send_ok(&token, &format!("first {i}"), "body").await);
    }
    let marks = ["SEEN", "READ", "UNREAD"];
    let all = ["SEEN", "READ", "UNREAD", "ARCHIVE", "UNARCHIVE"];
    let operations = (0..300).map(|i| {
        let (app, token, ids) = (instances[i % instances.len()], &token, &ids);
        async move {
            let picked = [
                ids[i % ids.len()].as_str(),
                ids[(i * 7 + 3) % ids.len()].as_str(),
            ];
            let body = match i % 10 {
                0..=3 => app.send(token, &format!("burst {i}"), "body").await,
                4..=6 => mark(app, token, &picked, marks[i % marks.len()]).await,
                7 => mark_all(app, token, all[i / 10 % all.len()], 10 + i as i64).await,
                8 => mark(app, token, &picked, "ARCHIVE").await,
                _ => mark(app, token, &picked, "UNARCHIVE").await,
            };
            assert!(body.get("errors").is_none(), "{body}");
        }
    });
    futures_util::stream::iter(operations)
        .buffer_unordered(50)
        .collect::<Vec<()>>()
        .await;
    let last_seq = replay_and_recount(app, &token).await;
    assert!(last_seq >= 140, "140 creations at least, got {last_seq}");
    for other in &instances[1..] {
        let counts = ok(
            other,
            &token,
            "{ inboxCounts { total unread unseen } }",
            json!({}),
        )
        .await;
        let here = ok(
            app,
            &token,
            "{ inboxCounts { total unread unseen } }",
            json!({}),
        )
        .await;
        assert_eq!(counts, here, "both instances count alike");
    }
}
both_backends!(
    concurrent_sends_and_marks_get_gapless_seqs_and_exact_counts,
    concurrent_sends_and_marks
);

async fn foreign_ids(app: &TestApp) {
    let ann = app.token_for(&unique_email("ann")).await;
    let bob = app.token_for(&unique_email("bob")).await;
    let anns = app.send_ok(&ann, "ann's", "body").await;
    let bobs = app.send_ok(&bob, "bob's", "body").await;
    let before = changes(app, &bob, 0, 100).await["lastSeq"].clone();
    let body = mark(app, &bob, &[&bobs, &anns], "READ").await;
    assert_eq!(error_code(&body), Some("FORBIDDEN"), "{body}");
    assert_eq!(
        changes(app, &bob, 0, 100).await["lastSeq"],
        before,
        "no event"
    );
    for (token, id) in [(&bob, &bobs), (&ann, &anns)] {
        let rows = all_rows(app, token).await;
        assert!(rows[id.as_str()]["readAt"].is_null(), "{id} unchanged");
    }
    replay_and_recount(app, &bob).await;
    replay_and_recount(app, &ann).await;
}
without_worker!(
    marking_another_users_notification_is_forbidden_and_changes_nothing,
    foreign_ids
);

async fn bad_input(app: &TestApp) {
    let ann = app.token_for(&unique_email("ann")).await;
    let bob = app.token_for(&unique_email("bob")).await;
    let id = app.send_ok(&ann, "one", "body").await;
    app.send_ok(&bob, "bob's", "body").await;
    let bobs_cursor = inbox(app, &bob, 1, None, json!(null)).await["edges"][0]["cursor"].clone();
    let bad = |body: &Value| {
        assert_eq!(error_code(body), Some("BAD_USER_INPUT"), "{body}");
        assert!(body.to_string().find("internal").is_none(), "{body}");
    };
    let page = |first: i64, after: Value| {
        app.gql(
            "query($f: Int, $a: String) { inbox(first: $f, after: $a) { lastSeq } }",
            json!({ "f": first, "a": after }),
            Some(&ann),
        )
    };
    for (first, after) in [
        (0, json!(null)),
        (101, json!(null)),
        (-1, json!(null)),
        (10, json!("garbage")),
        (10, json!("")),
        (10, json!("696e626f78313a313a")),
        (10, bobs_cursor),
    ] {
        bad(&page(first, after).await);
    }
    let poll = |after: i64, first: i64| {
        app.gql(
            "query($a: Int!, $f: Int) { inboxChanges(after: $a, first: $f) { lastSeq } }",
            json!({ "a": after, "f": first }),
            Some(&ann),
        )
    };
    for (after, first) in [(-1, 10), (0, 0), (0, 501), (0, -5)] {
        bad(&poll(after, first).await);
    }
    let many: Vec<String> = (0..101).map(|_| id.clone()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for ids in [
        vec![],
        many,
        vec!["abc"],
        vec!["-3"],
        vec![id.as_str(), "999999"],
    ] {
        bad(&mark(app, &ann, &ids, "READ").await);
    }
    bad(&mark_all(app, &ann, "READ", -1).await);
    // Nothing of that changed anything.
    assert_eq!(changes(app, &ann, 0, 100).await["lastSeq"], json!(1));
    // Duplicates count once.
    let body = mark(app, &ann, &[&id, &id, &id], "READ").await;
    assert_eq!(
        body["data"]["markNotifications"]["updated"],
        json!(1),
        "{body}"
    );
    assert_eq!(body["data"]["markNotifications"]["seq"], json!(2), "{body}");
    replay_and_recount(app, &ann).await;
}
without_worker!(bad_input_is_refused_with_bad_user_input, bad_input);

async fn up_to_race(app: &TestApp) {
    let token = app.token_for(&unique_email("upto")).await;
    for i in 0..3 {
        app.send_ok(&token, &format!("seen {i}"), "body").await;
    }
    let seen_last = inbox(app, &token, 20, None, json!(null)).await["lastSeq"].clone();
    assert_eq!(seen_last, json!(3));
    // Arrives after the client read lastSeq, before it marks all as read.
    let late = app.send_ok(&token, "late", "body").await;
    let body = mark_all(app, &token, "READ", 3).await;
    let update = &body["data"]["markAllNotifications"];
    assert_eq!(update["updated"], json!(3), "{body}");
    assert_eq!(
        update["counts"],
        json!({ "total": 4, "unread": 1, "unseen": 1 })
    );
    assert_eq!(update["seq"], json!(5));
    let rows = all_rows(app, &token).await;
    assert!(
        rows[late.as_str()]["readAt"].is_null(),
        "the late one is untouched"
    );
    // Again: nothing changes, no event.
    let body = mark_all(app, &token, "READ", 3).await;
    assert_eq!(
        body["data"]["markAllNotifications"]["updated"],
        json!(0),
        "{body}"
    );
    assert_eq!(body["data"]["markAllNotifications"]["seq"], json!(null));
    // upTo past the last seq is clamped to it, and the chain holds: ARCHIVE
    // reads and sees, UNREAD on an archived one unarchives it.
    let body = mark_all(app, &token, "ARCHIVE", 1_000).await;
    assert_eq!(
        body["data"]["markAllNotifications"]["updated"],
        json!(4),
        "{body}"
    );
    let events = changes(app, &token, 5, 10).await;
    assert_eq!(events["events"][0]["upTo"], json!(5), "clamped: {events}");
    let body = mark(app, &token, &[&late], "UNREAD").await;
    assert_eq!(
        body["data"]["markNotifications"]["counts"],
        json!({ "total": 1, "unread": 1, "unseen": 0 }),
        "{body}"
    );
    let row = &all_rows(app, &token).await[late.as_str()];
    assert!(row["archivedAt"].is_null() && row["readAt"].is_null() && !row["seenAt"].is_null());
    replay_and_recount(app, &token).await;
}
without_worker!(
    mark_all_never_touches_a_notification_after_up_to,
    up_to_race
);

async fn stable_pages(app: &TestApp) {
    let token = app.token_for(&unique_email("pages")).await;
    for i in 0..5 {
        app.send_ok(&token, &format!("n{i}"), "body").await;
    }
    let seqs = |page: &Value| -> Vec<i64> {
        page["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["seq"].as_i64().expect("seq"))
            .collect()
    };
    let first = inbox(app, &token, 2, None, json!(null)).await;
    assert_eq!(seqs(&first), [5, 4]);
    assert_eq!(first["lastSeq"], json!(5));
    assert_eq!(
        first["counts"],
        json!({ "total": 5, "unread": 5, "unseen": 5 })
    );
    // New notifications arrive between pages: the next page continues
    // where the first stopped, with no repeat.
    for i in 0..3 {
        app.send_ok(&token, &format!("new {i}"), "body").await;
    }
    let cursor = first["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let second = inbox(app, &token, 2, Some(&cursor), json!(null)).await;
    assert_eq!(seqs(&second), [3, 2]);
    assert_eq!(second["lastSeq"], json!(8), "the snapshot of this page");
    assert_eq!(second["counts"]["total"], json!(8));
    let cursor = second["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let third = inbox(app, &token, 2, Some(&cursor), json!(null)).await;
    assert_eq!(seqs(&third), [1]);
    assert_eq!(third["pageInfo"]["hasNextPage"], json!(false));
    // Filters: unread only, archived only.
    let id = first["edges"][0]["node"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        mark(app, &token, &[&id], "ARCHIVE")
            .await
            .get("errors")
            .is_none()
    );
    let open = inbox(app, &token, 100, None, json!({ "unreadOnly": true })).await;
    assert_eq!(seqs(&open), [8, 7, 6, 4, 3, 2, 1]);
    let archived = inbox(app, &token, 100, None, json!({ "archived": "ONLY" })).await;
    assert_eq!(seqs(&archived), [5]);
    assert_eq!(
        archived["counts"]["total"],
        json!(7),
        "counts whatever the filter"
    );
}
without_worker!(
    cursor_pages_stay_stable_while_new_notifications_arrive,
    stable_pages
);

async fn resync(app: &TestApp) {
    let token = app.token_for(&unique_email("resync")).await;
    let empty = changes(app, &token, 0, 10).await;
    assert_eq!(empty["events"], json!([]));
    assert_eq!(empty["lastSeq"], json!(0));
    assert_eq!(empty["pollInterval"], json!(15));
    for i in 0..3 {
        app.send_ok(&token, &format!("n{i}"), "body").await;
    }
    let page = changes(app, &token, 0, 2).await;
    assert_eq!(page["hasMore"], json!(true));
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    let rest = changes(app, &token, 2, 2).await;
    assert_eq!(rest["hasMore"], json!(false));
    assert_eq!(rest["events"][0]["seq"], json!(3));
    // Past the last seq: one InboxResync at the last seq.
    let ahead = changes(app, &token, 9, 10).await;
    let events = ahead["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{ahead}");
    assert_eq!(events[0]["__typename"], json!("InboxResync"));
    assert_eq!(events[0]["seq"], json!(3));
    assert_eq!(
        events[0]["counts"],
        json!({ "total": 3, "unread": 3, "unseen": 3 })
    );
}
without_worker!(
    inbox_changes_pages_the_log_and_resyncs_past_the_last_seq,
    resync
);

async fn delivery_events(app: &TestApp) {
    let token = app.token_for(&unique_email("delivery")).await;
    let id = app.send_ok(&token, "hello", "body").await;
    app.wait_for_status(&token, &id, "SENT", std::time::Duration::from_secs(20))
        .await;
    let page = changes(app, &token, 0, 10).await;
    let moves: Vec<(Value, Value, Value)> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["seq"].clone(),
                e["previousStatus"].clone(),
                e["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            (json!(1), json!(null), json!(null)),
            (json!(2), json!("PENDING"), json!("PROCESSING")),
            (json!(3), json!("PROCESSING"), json!("SENT")),
        ],
        "{page}"
    );
    replay_and_recount(app, &token).await;
}
both_backends!(
    every_delivery_status_change_is_an_inbox_event,
    delivery_events
);

async fn cached_pages_follow_marks(app: &TestApp) {
    let token = app.token_for(&unique_email("cached")).await;
    let id = app.send_ok(&token, "hello", "body").await;
    let read_at = || async {
        ok(
            app,
            &token,
            "{ notifications(page: 1, pageSize: 10) { items { readAt } } }",
            json!({}),
        )
        .await["notifications"]["items"][0]["readAt"]
            .clone()
    };
    assert_eq!(read_at().await, json!(null));
    // Now cached; the mark makes that copy invisible.
    assert_eq!(read_at().await, json!(null));
    assert!(
        mark(app, &token, &[&id], "READ")
            .await
            .get("errors")
            .is_none()
    );
    assert!(read_at().await.is_string(), "the page shows the mark");
}
without_worker!(
    a_mark_is_visible_on_the_next_cached_page_read,
    cached_pages_follow_marks
);
