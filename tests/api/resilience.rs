//! Losing nothing: a worker killed mid-delivery, Redis down at send time,
//! and a queue entry that keeps coming back. Postgres + Redis, since these
//! are about several processes sharing one queue.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sea_orm::{ConnectionTrait as _, Database};
use secrecy::SecretString;

use crate::helpers::{Backend, TestApp, redis_url, unique_email};
use crate::relay::Relay;
use crate::smtp_sink::SmtpSink;

const WITHIN: Duration = Duration::from_secs(30);

/// A `herald worker` child process on the app's database and Redis prefix,
/// with quick settings; `overrides` replace any of them.
fn worker_process(app: &TestApp, smtp: &str, overrides: &[(&str, &str)]) -> Child {
    let redis = app.redis.as_ref().expect("services mode");
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("worker")
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_URL", redis_url())
        .env("HERALD_REDIS_PREFIX", &redis.prefix)
        .env("SMTP_URL", smtp)
        .env("SMTP_TIMEOUT", "2s")
        .env("HERALD_WORKER_CONCURRENCY", "4")
        .env("HERALD_VISIBILITY_TIMEOUT", "3s")
        .env("HERALD_SWEEP_INTERVAL", "200ms")
        .env("HERALD_RETRY_BASE", "100ms")
        .env("HERALD_NO_MIGRATE", "true")
        .env("HERALD_DATA_DIR", &app.data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in overrides {
        command.env(key, value);
    }
    command.spawn().expect("herald worker starts")
}

async fn count_status(app: &TestApp, token: &str, status: &str) -> usize {
    let body = app.page(token, 1, 100).await;
    body["data"]["notifications"]["items"]
        .as_array()
        .map_or(0, |items| {
            items.iter().filter(|n| n["status"] == status).count()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_nothing() {
    let Some(api) = TestApp::spawn_with(Backend::Postgres, |c| c.worker = None).await else {
        return;
    };
    let sink = SmtpSink::start().await;
    sink.hold();
    let mut first = worker_process(&api, &sink.url(), &[]);
    let token = api.token_for(&unique_email("crash")).await;
    const SENDS: usize = 40;
    for i in 0..SENDS {
        api.send_ok(&token, &format!("crash {i}"), "body").await;
    }
    // The first worker holds as many as it may (4), all stuck on the sink.
    let deadline = tokio::time::Instant::now() + WITHIN;
    while count_status(&api, &token, "PROCESSING").await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker never claimed 4 jobs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    sink.release();

    let mut second = worker_process(&api, &sink.url(), &[]);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while count_status(&api, &token, "SENT").await < SENDS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every notification was sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = second.kill();
    let _ = second.wait();

    let mut copies: HashMap<String, usize> = HashMap::new();
    for mail in sink.received() {
        *copies
            .entry(mail.header("Message-ID").unwrap_or_default())
            .or_default() += 1;
    }
    let lost = SENDS - copies.len();
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {SENDS} sent, {lost} lost, {duplicates} duplicates (4 in flight when killed)"
    );
    assert_eq!(lost, 0);
    assert!(
        duplicates <= 4,
        "{duplicates} duplicates, more than the 4 jobs in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_succeed_while_redis_is_down_and_deliver_once_it_is_back() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let Some(cut_off) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.worker = None;
        if let Some(r) = c.redis.as_mut() {
            r.url = SecretString::from(format!("redis://127.0.0.1:{closed}"));
        }
    })
    .await
    else {
        return;
    };
    let ready = cut_off
        .client
        .get(format!("{}/readyz", cut_off.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let checks: serde_json::Value = crate::leaks::json_body(ready).await;
    assert_eq!(checks["checks"]["redis"], "unreachable", "{checks}");

    let token = cut_off.token_for(&unique_email("outage")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = cut_off
            .send(&token, &format!("during outage {i}"), "body")
            .await;
        let n = &body["data"]["sendNotification"];
        assert_eq!(
            n["status"], "PENDING",
            "the send succeeds without Redis: {body}"
        );
        ids.push(n["id"].as_str().expect("id").to_owned());
    }
    // Redis is back: an instance that reaches it delivers everything.
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let healthy = cut_off
        .spawn_sibling(|c| c.mail.smtp_url = Some(SecretString::from(url)))
        .await;
    for id in &ids {
        healthy.wait_for_status(&token, id, "SENT", WITHIN).await;
    }
    assert_eq!(sink.received().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_entry_delivered_too_often_is_dead_lettered_and_fails() {
    let Some(api) = TestApp::spawn_with(Backend::Postgres, |c| c.worker = None).await else {
        return;
    };
    let keys = herald::keys::Keys::new(api.redis.as_ref().expect("redis").prefix.clone());
    let token = api.token_for(&unique_email("poison")).await;
    let id = api.send_ok(&token, "Poison", "body").await;
    // Not due for an hour: only the dead-letter path can move this row.
    let db = Database::connect(&api.database_url).await.expect("db");
    db.execute_unprepared(&format!(
        "UPDATE notifications SET next_attempt_at = CURRENT_TIMESTAMP + INTERVAL '1 hour' WHERE id = {id}"
    ))
    .await
    .expect("update");

    // A ghost consumer takes the entry again and again without acking.
    let client = redis::Client::open(redis_url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (queue, group) = (keys.queue(), keys.queue_group());
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&queue)
        .arg(&group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("ghost")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&queue)
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("read");
    assert_ne!(
        read,
        redis::Value::Nil,
        "the send put an entry on the stream"
    );
    let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(&queue)
        .arg(&group)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .expect("pending");
    let entry = pending.ids[0].id.clone();
    for _ in 0..5 {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&queue)
            .arg(&group)
            .arg("ghost")
            .arg(0)
            .arg(&entry)
            .query_async(&mut conn)
            .await
            .expect("claim");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let _worker = api
        .spawn_sibling(|c| {
            if let Some(w) = c.worker.as_mut() {
                w.visibility_timeout = Duration::from_secs(1);
                w.max_deliveries = 5;
            }
            c.mail.timeout = Duration::from_millis(500);
        })
        .await;
    let failed = api.wait_for_status(&token, &id, "FAILED", WITHIN).await;
    let error = failed["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("delivered 7 times"), "{failed}");
    let dead: Vec<redis::streams::StreamId> = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys.dead_letters())
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("dead letters");
        reply.ids
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].get::<String>("id").as_deref(), Some(id.as_str()));
}

/// Embedded mode keeps its queue in memory: after a restart the sweeper
/// finds what the old process had queued but never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_restart_delivers_what_was_queued_before_it() {
    let before = TestApp::spawn_with(Backend::Sqlite, |c| c.worker = None)
        .await
        .expect("sqlite");
    let token = before.token_for(&unique_email("restart")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(before.send_ok(&token, &format!("queued {i}"), "body").await);
    }
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let after = before
        .spawn_sibling(|c| {
            c.mail.smtp_url = Some(SecretString::from(url));
            if let Some(w) = c.worker.as_mut() {
                // Far longer than the test: only the start-up pass can find them.
                w.visibility_timeout = Duration::from_secs(3600);
            }
        })
        .await;
    drop(before);
    for id in &ids {
        after.wait_for_status(&token, id, "SENT", WITHIN).await;
    }
    assert_eq!(sink.received().len(), 3);
}

/// SIGTERM while a delivery hangs on the mail server: the worker exits 0
/// within its grace period and puts the notification back for another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_in_flight_deliveries_and_exits_cleanly() {
    let Some(api) = TestApp::spawn_with(Backend::Postgres, |c| c.worker = None).await else {
        return;
    };
    let sink = SmtpSink::start().await;
    sink.hold();
    let mut child = worker_process(
        &api,
        &sink.url(),
        &[
            ("SMTP_TIMEOUT", "30s"),
            ("HERALD_VISIBILITY_TIMEOUT", "60s"),
            ("HERALD_SHUTDOWN_GRACE", "1s"),
        ],
    );
    let token = api.token_for(&unique_email("sigterm")).await;
    let id = api.send_ok(&token, "In flight", "body").await;
    api.wait_for_status(&token, &id, "PROCESSING", WITHIN).await;

    let started = std::time::Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    let row = api.notification(&token, &id).await;
    let n = &row["data"]["notification"];
    assert_eq!(n["status"], "PENDING", "released for another worker: {row}");
    assert!(
        n["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("shut down"),
        "{row}"
    );
    sink.release();
}

/// A change made while Redis is unreachable cannot store the user's new
/// inbox snapshot; once Redis is back, it is stored after all, so no
/// instance serves a page cached before the change (and the cut-off
/// instance reads the database meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_update_lost_in_an_outage_lands_when_redis_is_back() {
    let relay = Relay::to_redis().await;
    let relayed = relay.url();
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.worker = None;
        if let Some(r) = c.redis.as_mut() {
            r.url = SecretString::from(relayed);
        }
    })
    .await
    else {
        return;
    };
    let other = app.spawn_sibling(|c| c.worker = None).await;
    let token = app.token_for(&unique_email("lost-bump")).await;
    app.send_ok(&token, "before", "body").await;
    let total = |body: serde_json::Value| body["data"]["notifications"]["totalCount"].clone();
    // Cached, by both instances, at the current last seq.
    assert_eq!(total(app.page(&token, 1, 10).await), 1);
    assert_eq!(total(other.page(&token, 1, 10).await), 1);

    relay.cut();
    app.send_ok(&token, "during", "body").await;
    assert_eq!(
        total(app.page(&token, 1, 10).await),
        2,
        "the cut-off instance reads the database"
    );

    relay.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = total(other.page(&token, 1, 10).await);
        if seen == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other instance still serves the page from before the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(total(app.page(&token, 1, 10).await), 2);
}
