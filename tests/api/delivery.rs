//! sendNotification → queue → worker → mail server → status, on Postgres +
//! Redis and on SQLite + in-process, against a real SMTP server over TCP.

use std::time::Duration;

use secrecy::SecretString;

use crate::helpers::{Backend, TestApp, error_code, unique_email};
use crate::smtp_sink::{Reply, SmtpSink};

const WITHIN: Duration = Duration::from_secs(20);

/// Runs a delivery test body on both backends with an SMTP sink.
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(Backend::Postgres).await;
            }
        }
    };
}

delivery_test!(a_sent_notification_arrives_by_email_and_reads_sent, arrives);
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
        c.mail.timeout = Duration::from_secs(5);
        if let Some(w) = c.worker.as_mut() {
            w.visibility_timeout = Duration::from_secs(10);
        }
    }
);
async fn hangs(app: &TestApp, sink: &SmtpSink) {
    sink.script(&[Reply::Hang]);
    let token = app.token_for(&unique_email("hang")).await;
    let stuck = app.send_ok(&token, "Stuck", "first").await;
    // Let the worker open the hanging connection first.
    app.wait_for_status(&token, &stuck, "PROCESSING", WITHIN)
        .await;
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(app.send_ok(&token, &format!("Other {i}"), "flows").await);
    }
    for id in &others {
        let done = app
            .wait_for_status(&token, id, "SENT", Duration::from_secs(2))
            .await;
        assert_eq!(done["attempts"], 1);
    }
    // The stuck one times out, is retried, and gets through. A server that
    // never greets is unavailable, not refusing the message: the attempt
    // that timed out does not count.
    let done = app.wait_for_status(&token, &stuck, "SENT", WITHIN).await;
    assert_eq!(done["attempts"], 1, "{done}");
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
