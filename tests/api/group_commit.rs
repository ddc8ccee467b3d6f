//! Group commit (`HERALD_SEND_BATCH`): concurrent sends stored together
//! keep every user's log gapless and every event's counts exact, on two
//! instances at once, with marks running between them.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, unique_email},
    without_worker,
};

const USERS: usize = 3;
const SENDS_PER_USER: usize = 30;

async fn post(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let body = app.gql(query, variables, Some(token)).await;
    assert!(body["errors"].is_null(), "{body}");
    body
}

/// Every user's events, oldest first, read with `inboxChanges`.
async fn log_of(app: &TestApp, token: &str) -> Vec<Value> {
    let body = post(
        app,
        token,
        "{ inboxChanges(after: 0, first: 500) { hasMore events { __typename seq \
         counts { total unread unseen } \
         ... on NotificationCreated { notification { id } } \
         ... on DeliveryStatusChanged { notification { id } previousStatus status } \
         ... on NotificationsMarked { action ids } } } }",
        json!({}),
    )
    .await;
    assert_eq!(body["data"]["inboxChanges"]["hasMore"], false);
    body["data"]["inboxChanges"]["events"]
        .as_array()
        .expect("events")
        .clone()
}

/// 90 sends at once (30 for each of 3 users, alternately on two instances),
/// each of every other one followed by a READ mark on the other instance.
/// Each user's log is 1..=n without a gap, holds each send once, and each
/// event's counts are those its own replay gives.
async fn concurrent_sends_keep_each_log_gapless_and_exact(app: &TestApp) {
    sends_marks_and_moves_keep_each_log_gapless(app, false).await;
}

/// The same with `app`'s worker delivering meanwhile: its claims and
/// outcomes share the sends' batches (one lane per user), and each
/// notification's log also holds PENDING → PROCESSING → SENT, each move
/// once and in order, the counts unchanged by it.
async fn sends_and_deliveries_keep_each_log_gapless_and_exact(app: &TestApp) {
    sends_marks_and_moves_keep_each_log_gapless(app, true).await;
}

async fn sends_marks_and_moves_keep_each_log_gapless(app: &TestApp, delivering: bool) {
    let sibling = app.spawn_sibling(|c| c.worker = None).await;
    let instances = [app, &sibling];
    let mut tokens = Vec::new();
    for u in 0..USERS {
        tokens.push(app.token_for(&unique_email(&format!("group{u}"))).await);
    }
    let tasks = (0..USERS * SENDS_PER_USER).map(|i| {
        let token = &tokens[i % USERS];
        let (here, there) = (instances[i % 2], instances[(i + 1) % 2]);
        async move {
            let sent = post(
                here,
                token,
                "mutation($t: String!) { sendNotification(input: {title: $t, content: \"c\"}) { id } }",
                json!({ "t": format!("g{i}") }),
            )
            .await;
            let id = sent["data"]["sendNotification"]["id"].clone();
            if i % 2 == 0 {
                post(
                    there,
                    token,
                    "mutation($id: ID!) { markNotifications(ids: [$id], action: READ) { updated } }",
                    json!({ "id": id }),
                )
                .await;
            }
            (i % USERS, id.as_str().expect("id").to_owned())
        }
    });
    let mut sent: HashMap<usize, Vec<String>> = HashMap::new();
    for (user, id) in futures_util::future::join_all(tasks).await {
        sent.entry(user).or_default().push(id);
    }
    for (user, token) in tokens.iter().enumerate() {
        let mut log = log_of(instances[user % 2], token).await;
        // Until every send's outcome is in the log (3 events per send, and
        // the marks').
        let marks = SENDS_PER_USER.div_ceil(2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while delivering && log.len() < 3 * SENDS_PER_USER + marks {
            assert!(std::time::Instant::now() < deadline, "undelivered: {log:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            log = log_of(instances[user % 2], token).await;
        }
        let seqs: Vec<i64> = log
            .iter()
            .map(|e| e["seq"].as_i64().expect("seq"))
            .collect();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "user {user}'s log has a gap or a repeat");
        // Replays the log: each notification's (seen, read), the counts.
        let mut state: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut statuses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let (mut total, mut unread, mut unseen) = (0, 0, 0);
        for event in &log {
            match event["__typename"].as_str() {
                Some("NotificationCreated") => {
                    let id = event["notification"]["id"].as_str().expect("id").to_owned();
                    assert!(
                        state.insert(id.clone(), (false, false)).is_none(),
                        "created twice"
                    );
                    statuses.insert(id, vec!["PENDING".to_owned()]);
                    (total, unread, unseen) = (total + 1, unread + 1, unseen + 1);
                }
                Some("DeliveryStatusChanged") => {
                    let id = event["notification"]["id"].as_str().expect("id");
                    let seen = statuses.get_mut(id).expect("moved before created");
                    assert_eq!(
                        seen.last().map(String::as_str),
                        event["previousStatus"].as_str(),
                        "{event}"
                    );
                    seen.push(event["status"].as_str().expect("status").to_owned());
                }
                Some("NotificationsMarked") => {
                    assert_eq!(event["action"], "READ");
                    for id in event["ids"].as_array().expect("ids") {
                        let flags = state.get_mut(id.as_str().expect("id")).expect("known id");
                        assert!(!flags.1, "marked read twice");
                        unread -= 1;
                        if !flags.0 {
                            unseen -= 1;
                        }
                        *flags = (true, true);
                    }
                }
                other => panic!("unexpected event {other:?}: {event}"),
            }
            assert_eq!(
                event["counts"],
                json!({ "total": total, "unread": unread, "unseen": unseen }),
                "user {user}'s counts after seq {}",
                event["seq"]
            );
        }
        let mut created: Vec<&String> = state.keys().collect();
        let mut ids: Vec<&String> = sent[&user].iter().collect();
        created.sort();
        ids.sort();
        assert_eq!(created, ids, "user {user}: each send created once");
        assert_eq!(total, SENDS_PER_USER as i64);
        assert_eq!(unread, (SENDS_PER_USER / 2) as i64);
        let delivered = if delivering {
            vec!["PENDING", "PROCESSING", "SENT"]
        } else {
            vec!["PENDING"]
        };
        for (id, seen) in &statuses {
            assert_eq!(seen, &delivered, "user {user}, notification {id}");
        }
    }
}
without_worker!(
    concurrent_sends_keep_each_log_gapless_and_exact,
    concurrent_sends_keep_each_log_gapless_and_exact
);
crate::both_backends!(
    sends_and_deliveries_keep_each_log_gapless_and_exact,
    sends_and_deliveries_keep_each_log_gapless_and_exact
);
