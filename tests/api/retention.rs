//! Retention of the inbox event log (issue 10): events older than
//! `HERALD_EVENT_RETENTION` are pruned in the background, in batches, and
//! never a user's last; a client from before the oldest kept event resyncs.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entity::{inbox_event, user};
use herald::{
    domain::inbox::{Counts, InboxAction},
    storage::{self, inbox},
    wire::InboxChangeV1,
    worker::{Clock, PRUNE_BATCH, prune_events},
};
use sea_orm::{
    ColumnTrait as _, Database, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, unique_email};

const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A clock that stands still where the test puts it.
#[derive(Debug)]
struct SetClock(Mutex<DateTime<Utc>>);

impl Clock for SetClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("the clock")
    }
}

impl SetClock {
    fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("the clock") = at;
    }
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

async fn user_id(db: &DatabaseConnection, email: &str) -> i64 {
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(db)
        .await
        .expect("the database")
        .expect("the user")
        .id
}

/// The seqs of the user's events still in the log.
async fn logged_seqs(db: &DatabaseConnection, user_id: i64) -> Vec<i64> {
    inbox_event::Entity::find()
        .filter(inbox_event::Column::UserId.eq(user_id))
        .order_by_asc(inbox_event::Column::Seq)
        .all(db)
        .await
        .expect("the database")
        .into_iter()
        .map(|e| e.seq)
        .collect()
}

async fn changes(app: &TestApp, token: &str, after: i64) -> Value {
    let body = app
        .gql(
            "query($a: Int!) { inboxChanges(after: $a, first: 500) { lastSeq hasMore events { __typename seq } } }",
            json!({ "a": after }),
            Some(token),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["inboxChanges"].clone()
}

pub(crate) fn seqs(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

fn is_resync_at(page: &Value, seq: i64) -> bool {
    page["events"] == json!([{ "__typename": "InboxResync", "seq": seq }])
}

/// Sends one notification and waits until it is SENT (its last event).
async fn send_sent(app: &TestApp, token: &str, title: &str) {
    let id = app.send_ok(token, title, "body").await;
    app.wait_for_status(token, &id, "SENT", Duration::from_secs(20))
        .await;
}

/// The background pruner, on the worker's clock: nothing goes while the
/// clock says the events are recent; once it says they are older than the
/// retention, they go, except the recent ones and each user's last.
async fn pruned_in_the_background(backend: Backend) {
    let clock = Arc::new(SetClock(Mutex::new(storage::now() - days(30))));
    let shared = clock.clone();
    let Some(app) = TestApp::spawn_with(backend, |c| {
        if let Some(w) = c.worker.as_mut() {
            w.clock = shared;
            w.event_retention = RETENTION;
            w.prune_interval = Duration::from_millis(50);
        }
    })
    .await
    else {
        return;
    };
    let db = Database::connect(&app.database_url).await.expect("connect");
    let (a_email, b_email) = (unique_email("keeps"), unique_email("quiet"));
    let a = app.token_for(&a_email).await;
    let b = app.token_for(&b_email).await;
    for i in 0..3 {
        send_sent(&app, &a, &format!("old {i}")).await;
    }
    send_sent(&app, &b, "old").await;
    let old_last = changes(&app, &a, 0).await["lastSeq"]
        .as_i64()
        .expect("lastSeq");
    let b_last = changes(&app, &b, 0).await["lastSeq"]
        .as_i64()
        .expect("lastSeq");
    assert!(old_last >= 3 && b_last >= 2, "{old_last} {b_last}");
    let cutoff = storage::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..2 {
        send_sent(&app, &a, &format!("new {i}")).await;
    }
    let a_id = user_id(&db, &a_email).await;
    let b_id = user_id(&db, &b_email).await;
    let last = changes(&app, &a, 0).await["lastSeq"]
        .as_i64()
        .expect("lastSeq");
    // Many passes have run on the clock 30 days back: nothing went.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(logged_seqs(&db, a_id).await, (1..=last).collect::<Vec<_>>());

    // Now the old events are past the retention.
    clock.set(cutoff + chrono::Duration::from_std(RETENTION).expect("a duration"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged_seqs(&db, a_id).await.first() != Some(&(old_last + 1)) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            logged_seqs(&db, a_id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        logged_seqs(&db, a_id).await,
        (old_last + 1..=last).collect::<Vec<_>>(),
        "the recent events stay"
    );
    // A client from before the log: InboxResync at the last seq, then it
    // continues after that; one from within the log gets the kept events.
    let from_zero = changes(&app, &a, 0).await;
    assert!(is_resync_at(&from_zero, last), "{from_zero}");
    let from_pruned = changes(&app, &a, old_last - 1).await;
    assert!(is_resync_at(&from_pruned, last), "{from_pruned}");
    let kept = changes(&app, &a, old_last).await;
    assert_eq!(seqs(&kept), (old_last + 1..=last).collect::<Vec<_>>());
    assert!(changes(&app, &a, last).await["events"] == json!([]));

    // B's events are all old: only the last stays, and it is still served.
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged_seqs(&db, b_id).await != vec![b_last] {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            logged_seqs(&db, b_id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(is_resync_at(&changes(&app, &b, 0).await, b_last));
    assert_eq!(seqs(&changes(&app, &b, b_last - 1).await), vec![b_last]);
    // And the log goes on from there.
    send_sent(&app, &b, "after").await;
    let more = changes(&app, &b, b_last).await;
    assert_eq!(seqs(&more).first(), Some(&(b_last + 1)), "{more}");
}
mod events_older_than_the_retention_are_pruned_in_the_background {
    crate::on_backends!(super::pruned_in_the_background; sqlite => Sqlite, postgres => Postgres);
}

/// 5,000 events a month old, pruned by several DELETEs of at most
/// `PRUNE_BATCH` rows while two users keep sending.
async fn large_backlog(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.worker = None).await else {
        return;
    };
    let db = Database::connect(&app.database_url).await.expect("connect");
    let email = unique_email("backlog");
    let token = app.token_for(&email).await;
    let other = app.token_for(&unique_email("neighbour")).await;
    let uid = user_id(&db, &email).await;
    let old = storage::now() - days(30);
    let txn = inbox::begin_write(&db).await.expect("a task");
    for _ in 0..5000 {
        let change = InboxChangeV1::NotificationsMarked {
            action: InboxAction::Seen,
            ids: Vec::new(),
            up_to: Some(0),
        };
        inbox::append(&txn, uid, Counts::default(), old, change)
            .await
            .expect("the database");
    }
    txn.commit().await.expect("a task");

    // One recent event before the pass: the old ones all go, 5001 stays.
    app.send_ok(&token, "before", "body").await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = |token: String, app_url: Arc<TestApp>| {
        let stop = stop.clone();
        async move {
            let mut slowest = Duration::ZERO;
            let mut sent = Vec::new();
            while !stop.load(Ordering::SeqCst) || sent.is_empty() {
                let started = Instant::now();
                sent.push(app_url.send_ok(&token, "during", "body").await);
                slowest = slowest.max(started.elapsed());
            }
            (sent, slowest)
        }
    };
    let app = Arc::new(app);
    let mine = tokio::spawn(sender(token.clone(), app.clone()));
    let theirs = tokio::spawn(sender(other.clone(), app.clone()));
    let started = Instant::now();
    let report = prune_events(&db, storage::now(), RETENTION)
        .await
        .expect("a task");
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (mine, my_slowest) = mine.await.expect("a task");
    let (theirs, their_slowest) = theirs.await.expect("a task");
    println!(
        "pruned {report:?} in {took:?}; {} sends meanwhile, the slowest {:?}",
        mine.len() + theirs.len(),
        my_slowest.max(their_slowest)
    );
    // Seqs 1..=5000 are old, by DELETEs of at most PRUNE_BATCH rows.
    assert_eq!(report.deleted, 5000, "{report:?}");
    assert!(
        report.batches >= 5000 / PRUNE_BATCH.unsigned_abs() && report.batches >= 5,
        "{report:?}"
    );

    // What is left is a gapless suffix holding every send of the meantime.
    let last = changes(&app, &token, 0).await["lastSeq"]
        .as_i64()
        .expect("lastSeq");
    let logged = logged_seqs(&db, uid).await;
    let first = 5001;
    assert_eq!(logged, (first..=last).collect::<Vec<_>>());
    assert_eq!(last, 5001 + i64::try_from(mine.len()).expect("a count"));
    let kept = changes(&app, &token, first - 1).await;
    assert_eq!(seqs(&kept), (first..=last).collect::<Vec<_>>());
    assert!(is_resync_at(&changes(&app, &token, first - 2).await, last));
    let theirs_last = changes(&app, &other, 0).await;
    assert_eq!(
        seqs(&theirs_last),
        (1..=i64::try_from(theirs.len()).expect("a count")).collect::<Vec<_>>(),
        "the neighbour's recent log is whole"
    );
}
mod a_large_backlog_is_pruned_in_batches_while_sends_go_on {
    crate::on_backends!(super::large_backlog; sqlite => Sqlite, postgres => Postgres);
}
