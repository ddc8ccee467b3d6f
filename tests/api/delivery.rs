//! sendNotification → queue → worker → mail server → status, on every
//! database with every kind of services, against a real SMTP server over TCP.

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use herald::wire::Status;
use secrecy::SecretString;

use crate::helpers::{Backend, TestApp, error_code, unique_email};
use crate::smtp_sink::{Reply, SmtpSink};

const WITHIN: Duration = Duration::from_secs(20);

/// Runs a delivery test body on every backend combination with an SMTP sink.
macro_rules! delivery_test {
    ($name:ident, $body:ident) => {
        delivery_test!($name, $body, |_c: &mut herald::config::Config| {});
    };
    ($name:ident, $body:ident, $tweak:expr) => {
        mod $name {
            use super::*;

            async fn run(backend: Backend) {
                let sink = SmtpSink::start().await;
                let url = sink.url();
                let Some(app) = TestApp::spawn_with(backend, |c| {
                    c.mail.smtp_url = Some(SecretString::from(url));
                    ($tweak)(c);
                })
                .await
                else {
                    return;
                };
                super::$body(&app, &sink).await;
            }

            crate::on_every_backend!(run);
        }
    };
}
pub(crate) use delivery_test;

delivery_test!(a_sent_notification_arrives_by_email_and_reads_sent, arrives);

delivery_test!(
    the_worker_sends_over_at_most_its_concurrency_and_claims_no_more,
    two_at_a_time,
    |c: &mut herald::config::Config| {
        if let Some(w) = c.worker.as_mut() {
            w.concurrency = 2;
        }
    }
);
/// `HERALD_WORKER_CONCURRENCY` bounds the messages being sent at once, and
/// the claims: the worker has more jobs in flight than that (a job whose
/// mail is sent gives its place to the next while its outcome is stored),
/// but a job waiting for a place leaves its row PENDING.
async fn two_at_a_time(app: &TestApp, sink: &SmtpSink) {
    sink.hold();
    let token = app.token_for(&unique_email("two")).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(app.send_ok(&token, &format!("two {i}"), "body").await);
    }
    sink.wait_held(2, WITHIN).await;
    // Time enough for a third message or claim, if anything let one through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.held(), 2, "messages being sent at once");
    let mut statuses = HashMap::<String, usize>::new();
    for id in &ids {
        let body = app.notification(&token, id).await;
        let status = body["data"]["notification"]["status"].to_string();
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses.get("\"PROCESSING\""), Some(&2), "{statuses:?}");
    assert_eq!(statuses.get("\"PENDING\""), Some(&6), "{statuses:?}");
    sink.release();
    for id in &ids {
        app.wait_for_status(&token, id, "SENT", WITHIN).await;
    }
    let copies = sink.copies();
    assert_eq!(copies.len(), ids.len(), "one message per notification");
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}
async fn arrives(app: &TestApp, sink: &SmtpSink) {
    let email = unique_email("inbox");
    let token = app.token_for(&email).await;
    let body = app
        .send(
            &token,
            "  Your order shipped ",
            "Line one.\r\n.Line two starts with a dot.\n",
        )
        .await;
    let sent = &body["data"]["sendNotification"];
    assert_eq!(sent["status"], "PENDING", "{body}");
    assert_eq!(sent["title"], "Your order shipped");
    assert_eq!(sent["recipient"]["email"], email);
    let id = sent["id"].as_str().expect("id");

    let done = app.wait_for_status(&token, id, "SENT", WITHIN).await;
    assert_eq!(done["attempts"], 1);
    assert!(
        done["sentAt"].is_string() && done["lastError"].is_null(),
        "{done}"
    );

    let mail = sink.received();
    assert_eq!(mail.len(), 1);
    let mail = &mail[0];
    assert_eq!(mail.rcpt_to, std::slice::from_ref(&email));
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Your order shipped")
    );
    assert_eq!(mail.header("To").as_deref(), Some(email.as_str()));
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(format!("<notification-{id}@localhost>").as_str())
    );
    assert!(mail.body().contains("Line one."), "{}", mail.data);
    assert!(
        mail.body().contains(".Line two starts with a dot."),
        "{}",
        mail.data
    );
}

delivery_test!(
    two_transient_failures_then_success_is_sent_on_attempt_three,
    transient
);
async fn transient(app: &TestApp, sink: &SmtpSink) {
    sink.script(&[Reply::Transient, Reply::Transient]);
    let token = app.token_for(&unique_email("flaky")).await;
    let id = app.send_ok(&token, "Flaky", "server").await;
    let done = app.wait_for_status(&token, &id, "SENT", WITHIN).await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(sink.rejected(), 2);
    assert_eq!(sink.received().len(), 1);
}

delivery_test!(a_permanent_failure_fails_at_once_with_the_reason, permanent);
async fn permanent(app: &TestApp, sink: &SmtpSink) {
    sink.script(&[Reply::Permanent]);
    let token = app.token_for(&unique_email("bounce")).await;
    let id = app.send_ok(&token, "Bounce", "nobody home").await;
    let done = app.wait_for_status(&token, &id, "FAILED", WITHIN).await;
    assert_eq!(done["attempts"], 1, "no retry after a 5xx: {done}");
    let error = done["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("550"), "{done}");
    // And it stays failed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = app.notification(&token, &id).await;
    assert_eq!(again["data"]["notification"]["status"], "FAILED");
    assert_eq!(sink.rejected(), 1);
}

delivery_test!(
    a_hanging_mail_server_times_out_and_other_mail_keeps_flowing,
    hangs,
    |c: &mut herald::config::Config| {
        c.mail.timeout = Duration::from_secs(10);
        if let Some(w) = c.worker.as_mut() {
            w.visibility_timeout = Duration::from_secs(20);
        }
    }
);
async fn hangs(app: &TestApp, sink: &SmtpSink) {
    sink.script(&[Reply::Hang]);
    let token = app.token_for(&unique_email("hang")).await;
    let stuck = app.send_ok(&token, "Stuck", "first").await;
    // Let the worker open the hanging connection first: the others, sent
    // before it is taken, could race it to the sink and take the hang
    // themselves (seen under CI load).
    sink.wait_hanging(1, WITHIN).await;
    app.wait_for_status(&token, &stuck, "PROCESSING", WITHIN)
        .await;
    // The others go out while it still hangs (within the 10 s timeout,
    // with room for a loaded CI machine).
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(app.send_ok(&token, &format!("Other {i}"), "flows").await);
    }
    for id in &others {
        let done = app
            .wait_for_status(&token, id, "SENT", Duration::from_secs(8))
            .await;
        assert_eq!(done["attempts"], 1);
    }
    // The stuck one times out, is retried, and gets through. A server that
    // never greets is unavailable, not refusing the message: the attempt
    // that timed out does not count.
    let done = app.wait_for_status(&token, &stuck, "SENT", WITHIN).await;
    assert_eq!(done["attempts"], 1, "{done}");
}

// ---- A client that hangs up mid-request ----

/// Sends cut short, each at its own moment.
const SENDS: usize = 100;

/// Writes one `sendNotification` request over a raw socket, waits `after`,
/// and closes the connection, whether or not an answer came.
fn send_and_hang_up(addr: SocketAddr, token: &str, title: &str, after: Duration) {
    let body = serde_json::json!({
        "query": "mutation($t: String!) { sendNotification(input: {title: $t, content: \"cut\"}) { id } }",
        "variables": { "t": title },
    })
    .to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    std::thread::sleep(after);
    drop(stream);
}

delivery_test!(
    a_client_that_hangs_up_does_not_delay_delivery,
    hung_up,
    |c: &mut herald::config::Config| {
        if let Some(w) = c.worker.as_mut() {
            w.visibility_timeout = Duration::from_secs(600);
        }
    }
);
/// Every notification whose request was cut off after its INSERT is still
/// announced and queued at once: SENT within 30 s, with its events, while
/// the visibility timeout (which would let the sweeper cover a lost
/// enqueue) is 600 s. (30 s, not less: the 100 sends are one user's, and
/// their 300 inbox events queue on that user's counter row; in a debug
/// build on a loaded 2-core machine that alone took over 5 s.)
async fn hung_up(app: &TestApp, _sink: &SmtpSink) {
    crate::ws_client::until_events_flow(app).await;
    let token = app.token_for(&unique_email("hang-up")).await;
    let user_id: i64 = app.me(Some(&token)).await["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    let mut events = status_changes(app.events.subscribe_inbox(user_id));
    // A positive marker: once its creation event arrives, the event relay
    // is attached and every later event will be seen.
    let started = std::time::Instant::now();
    let marker: i64 = app
        .send_ok(&token, "marker", "body")
        .await
        .parse()
        .expect("id");
    let one_send = started.elapsed();
    let mut seen: HashMap<i64, HashSet<Option<Status>>> = HashMap::new();
    loop {
        let (id, previous) = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("the marker's event")
            .expect("no hint lost to lag");
        seen.entry(id).or_default().insert(previous);
        if id == marker {
            break;
        }
    }

    let addr: SocketAddr = app
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    // Hang-ups spread over twice the time a send takes, ten at a time, so
    // some land between the INSERT and what follows it.
    let mut clients = Vec::new();
    for i in 0..SENDS {
        let token = token.clone();
        let after = one_send * 2 * ((i as u32 * 37) % 100) / 100;
        clients.push(std::thread::spawn(move || {
            send_and_hang_up(addr, &token, &format!("cut {i}"), after);
        }));
        if clients.len() % 10 == 0 {
            for client in clients.drain(..) {
                client.join().expect("client thread");
            }
        }
    }
    for client in clients {
        client.join().expect("client thread");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let body = app.page(&token, 1, 100).await;
        let items = body["data"]["notifications"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no page: {body}"))
            .clone();
        let stuck: Vec<_> = items.iter().filter(|n| n["status"] != "SENT").collect();
        if stuck.is_empty() {
            break items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} stored notifications are not SENT 30 s after their clients hung up: {stuck:?}",
            stuck.len(),
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(stored.len() > 1, "some sends were stored");

    // Each one's creation and its SENT reached the event bus.
    let wanted: HashSet<i64> = stored
        .iter()
        .map(|n| n["id"].as_str().and_then(|id| id.parse().ok()).expect("id"))
        .collect();
    // Ids whose creation (previous: none) or SENT (previous: PROCESSING)
    // has not been seen yet.
    let missing = |seen: &HashMap<i64, HashSet<Option<Status>>>| -> Vec<i64> {
        wanted
            .iter()
            .filter(|id| {
                !seen.get(id).is_some_and(|previous| {
                    previous.contains(&None) && previous.contains(&Some(Status::Processing))
                })
            })
            .copied()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing(&seen).is_empty() {
        let (id, previous) = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("events missing for {:?}", missing(&seen)))
            .expect("no hint lost to lag");
        seen.entry(id).or_default().insert(previous);
    }
}

/// The (notification id, previous status) of each status change `feed`
/// announces, read as they come (so the per-user buffer never overflows);
/// ends at the first lag.
fn status_changes(
    mut feed: herald::pubsub::UserFeed,
) -> tokio::sync::mpsc::UnboundedReceiver<(i64, Option<Status>)> {
    use herald::{pubsub::InboxFeed, wire::InboxChangeV1};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(feed) = feed.recv().await {
            let InboxFeed::Hint(hint) = feed else {
                continue;
            };
            let change = hint.event.as_ref().map(|e| &e.change);
            let announced = match change {
                Some(InboxChangeV1::NotificationCreated { notification }) => {
                    (notification.id, None)
                }
                Some(InboxChangeV1::DeliveryStatusChanged {
                    notification,
                    previous,
                }) => (notification.id, Some(*previous)),
                _ => continue,
            };
            if tx.send(announced).is_err() {
                return;
            }
        }
    });
    rx
}

/// Embedded mode end to end: no SMTP, the email is an .eml file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_writes_an_eml_file_to_the_outbox() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let email = unique_email("eml");
    let token = app.token_for(&email).await;
    let id = app
        .send_ok(&token, "Hello from the outbox", "Written to disk.")
        .await;
    app.wait_for_status(&token, &id, "SENT", WITHIN).await;
    let outbox = app.data_dir.join("outbox");
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(files.len(), 1, "{outbox:?}");
    let text = std::fs::read_to_string(files[0].path()).expect("read eml");
    assert!(text.contains("Subject: Hello from the outbox"), "{text}");
    assert!(text.contains(&format!("To: {email}")), "{text}");
    assert!(text.contains("Written to disk."), "{text}");
}

crate::both_backends!(send_validates_its_input, send_validation);
async fn send_validation(app: &TestApp) {
    let token = app.token_for(&unique_email("validate")).await;
    let too_long = "t".repeat(256);
    let too_big = "c".repeat(65_537);
    for (title, content, field) in [
        ("", "body", "title"),
        ("   ", "body", "title"),
        (too_long.as_str(), "body", "title"),
        ("ok", "", "content"),
        ("ok", too_big.as_str(), "content"),
    ] {
        let body = app.send(&token, title, content).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{field}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field)
        );
    }
    // The bounds themselves are fine.
    let edge = app
        .send(&token, &"t".repeat(255), &"c".repeat(65_536))
        .await;
    assert_eq!(
        edge["data"]["sendNotification"]["status"], "PENDING",
        "{edge}"
    );
    // Anonymous callers cannot send.
    let anon = app
        .gql(
            "mutation { sendNotification(input: {title: \"a\", content: \"b\"}) { id } }",
            serde_json::json!({}),
            None,
        )
        .await;
    assert_eq!(error_code(&anon), Some("UNAUTHENTICATED"));
}

/// What the worker reads of a queue read's rows before it claims them
/// (`notifications::pending_many`, one query): every id asked for is
/// answered, with the owner and category only where the row is PENDING; a
/// claimed row, a scheduled one and an id with no row answer `None`.
async fn pending_rows_of_a_queue_read(app: &TestApp) {
    use herald::{
        domain::{
            Content, Title,
            send::{Category, SendOptions, Timing},
        },
        storage::notifications,
    };
    let (_, user_id) = app.account("pending-read").await;
    let db = herald::storage::connect(&app.database_url)
        .await
        .expect("connect");
    let now = herald::storage::now();
    let insert = async |options: SendOptions| {
        let title = Title::parse("t").expect("title");
        let content = Content::parse("c".to_owned()).expect("content");
        notifications::insert(&db, user_id, &title, &content, &options, now)
            .await
            .expect("insert")
            .0
            .id
    };
    let plain = insert(SendOptions::default()).await;
    let billing = insert(SendOptions {
        category: Some(Category::parse("billing").expect("category")),
        ..SendOptions::default()
    })
    .await;
    let claimed = insert(SendOptions::default()).await;
    let scheduled = insert(SendOptions {
        timing: Timing::parse(Some(now + chrono::TimeDelta::hours(1)), None, now).expect("timing"),
        ..SendOptions::default()
    })
    .await;
    assert!(
        notifications::claim(&db, claimed, now)
            .await
            .expect("claim")
            .is_some()
    );
    let gone = scheduled + 1000;
    let read = notifications::pending_many(&db, &[plain, billing, claimed, scheduled, gone])
        .await
        .expect("read");
    assert_eq!(read.len(), 5, "{read:?}");
    assert_eq!(read[&plain], Some((user_id, None)));
    assert_eq!(read[&billing], Some((user_id, Some("billing".to_owned()))));
    for id in [claimed, scheduled, gone] {
        assert_eq!(read[&id], None, "{id}: {read:?}");
    }
    assert!(
        notifications::pending_many(&db, &[])
            .await
            .expect("none asked")
            .is_empty()
    );
    db.close().await.expect("close");
}

crate::without_worker!(
    the_worker_reads_only_pending_rows_of_a_queue_read,
    pending_rows_of_a_queue_read
);
