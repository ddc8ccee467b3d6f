//! Prometheus metrics on their own listener: the counters move exactly as
//! deliveries, errors, rate limits, sockets and cache reads happen; the
//! exposition passes `promtool check metrics`; scraping while sends run
//! fails neither. Each test's app has its own registry, so counts are exact.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use secrecy::SecretString;
use serde_json::json;

use crate::{
    helpers::{TestApp, error_code, skip_or_fail, unique_email},
    smtp_sink::{Reply, SmtpSink},
    ws_client,
};

const WITHIN: Duration = Duration::from_secs(30);

/// One scrape: every sample by its series (`name{labels}`, as written).
pub struct Scrape {
    samples: HashMap<String, f64>,
    pub text: String,
}

impl Scrape {
    /// The sample's value; 0 when the series is not there (yet).
    pub fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self { samples, text }
    }
}

/// `GET /metrics` on the app's metrics listener.
pub async fn scrape(app: &TestApp) -> Scrape {
    let url = app.metrics_url.as_deref().expect("the metrics listener");
    let response = app.client.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    Scrape::parse(response.text().await.expect("body"))
}

/// Scrapes until `series` reads `expected` (it moves right after what the
/// test waited for: a status read from the database); fails after
/// [`WITHIN`] with the value it had.
async fn settles(app: &TestApp, series: &str, expected: f64) -> Scrape {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let scrape = scrape(app).await;
        let value = scrape.value(series);
        if value == expected || tokio::time::Instant::now() > deadline {
            assert_eq!(value, expected, "{series}\n{}", scrape.text);
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test on SQLite (in-process services) and on Postgres + Redis, with
/// the metrics listener on and delivery to an SMTP sink.
macro_rules! metrics_test {
    ($name:ident, $body:ident) => {
        metrics_test!($name, $body, |_c: &mut herald::config::Config| {});
    };
    ($name:ident, $body:ident, $tweak:expr) => {
        mod $name {
            use super::*;

            async fn run(backend: crate::helpers::Backend) {
                let sink = SmtpSink::start().await;
                let url = sink.url();
                let Some(app) = TestApp::spawn_with(backend, |c| {
                    c.mail.smtp_url = Some(SecretString::from(url));
                    c.metrics_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
                    ($tweak)(c);
                })
                .await
                else {
                    return;
                };
                super::$body(&app, &sink).await;
            }

            crate::on_backends!(run; sqlite => Sqlite, postgres => Postgres);
        }
    };
}

metrics_test!(
    deliveries_are_counted_by_outcome_as_they_happen,
    deliveries_counted
);
async fn deliveries_counted(app: &TestApp, sink: &SmtpSink) {
    const N: usize = 4;
    let token = app.token_for(&unique_email("metrics")).await;
    // The first message is refused for now: one retry, then sent.
    sink.script(&[Reply::Transient]);
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(app.send_ok(&token, &format!("n{i}"), "body").await);
    }
    for id in &ids {
        app.wait_for_status(&token, id, "SENT", WITHIN).await;
    }
    let scrape = settles(app, r#"herald_deliveries_total{outcome="sent"}"#, N as f64).await;
    assert_eq!(
        scrape.value("herald_delivery_latency_seconds_count"),
        N as f64
    );
    assert_eq!(
        scrape.value(r#"herald_deliveries_total{outcome="retry"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"herald_deliveries_total{outcome="failed"}"#),
        0.0
    );
    assert!(scrape.value("herald_delivery_latency_seconds_sum") > 0.0);
    // The pool kept the connection it sent on; nothing sends now.
    assert!(
        scrape.value(r#"herald_smtp_pool_connections{state="idle"}"#) >= 1.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value(r#"herald_smtp_pool_connections{state="in_use"}"#),
        0.0
    );
    assert_eq!(
        scrape.value(r#"herald_worker_in_flight{queue="email"}"#),
        0.0
    );

    // A mailbox the server refuses for good: failed.
    let refused = unique_email("refused");
    sink.answer(&refused, Reply::Permanent);
    let other = app.token_for(&refused).await;
    let id = app.send_ok(&other, "no", "such mailbox").await;
    app.wait_for_status(&other, &id, "FAILED", WITHIN).await;
    let scrape = settles(app, r#"herald_deliveries_total{outcome="failed"}"#, 1.0).await;
    assert_eq!(
        scrape.value(r#"herald_deliveries_total{outcome="sent"}"#),
        N as f64
    );
    assert_eq!(
        scrape.value("herald_delivery_latency_seconds_count"),
        N as f64
    );

    // Email turned off: skipped, and not sent.
    let quiet = app.token_for(&unique_email("quiet")).await;
    let set = app
        .gql(
            "mutation { setNotificationPreference(email: false) { email } }",
            json!({}),
            Some(&quiet),
        )
        .await;
    assert!(set["errors"].is_null(), "{set}");
    let id = app.send_ok(&quiet, "kept", "in the inbox").await;
    app.wait_for_status(&quiet, &id, "SKIPPED", WITHIN).await;
    settles(app, r#"herald_deliveries_total{outcome="skipped"}"#, 1.0).await;
}

metrics_test!(
    errors_and_requests_are_counted_by_operation_and_code,
    errors_counted
);
async fn errors_counted(app: &TestApp, _sink: &SmtpSink) {
    let body = app
        .gql(
            "mutation { sendNotification(input: {title: \"t\", content: \"c\"}) { id } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
    let body = app.gql("{ __typename }", json!({}), None).await;
    assert!(body["errors"].is_null(), "{body}");
    // Refused before any operation ran: no query at all.
    let refused = app
        .client
        .get(app.graphql_url())
        .header("Accept", "application/json")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 400);

    let scrape = scrape(app).await;
    for (series, expected) in [
        (
            r#"herald_http_requests_total{operation="mutation",code="UNAUTHENTICATED"}"#,
            1.0,
        ),
        (
            r#"herald_http_requests_total{operation="query",code="ok"}"#,
            1.0,
        ),
        (
            r#"herald_http_requests_total{operation="none",code="BAD_USER_INPUT"}"#,
            1.0,
        ),
        (
            r#"herald_graphql_errors_total{code="UNAUTHENTICATED"}"#,
            1.0,
        ),
        (r#"herald_graphql_errors_total{code="BAD_USER_INPUT"}"#, 1.0),
        (
            r#"herald_http_request_duration_seconds_count{operation="mutation"}"#,
            1.0,
        ),
        (
            r#"herald_http_request_duration_seconds_count{operation="query"}"#,
            1.0,
        ),
    ] {
        assert_eq!(scrape.value(series), expected, "{series}\n{}", scrape.text);
    }
}

metrics_test!(
    rate_limit_rejections_are_counted_by_limit,
    rate_limits_counted,
    |c: &mut herald::config::Config| {
        let limits = &mut c.http.as_mut().expect("http").rate_limits;
        limits.sends_per_user = herald::ratelimit::Bucket {
            per_minute: 1,
            burst: 1,
        };
        limits.login_failures_per_account = herald::ratelimit::Window {
            limit: 1,
            window: Duration::from_secs(600),
        };
    }
);
async fn rate_limits_counted(app: &TestApp, _sink: &SmtpSink) {
    let email = unique_email("limited");
    let token = app.token_for(&email).await;
    app.send_ok(&token, "one", "fits the burst").await;
    let body = app.send(&token, "two", "over it").await;
    assert_eq!(error_code(&body), Some("RATE_LIMITED"), "{body}");
    for expected in ["UNAUTHENTICATED", "RATE_LIMITED"] {
        let body = app.login(&email, "not the password").await;
        assert_eq!(error_code(&body), Some(expected), "{body}");
    }
    let scrape = scrape(app).await;
    for (series, expected) in [
        (
            r#"herald_rate_limit_rejections_total{limit="sends_per_user"}"#,
            1.0,
        ),
        (
            r#"herald_rate_limit_rejections_total{limit="login_failures_per_account"}"#,
            1.0,
        ),
        (r#"herald_graphql_errors_total{code="RATE_LIMITED"}"#, 2.0),
    ] {
        assert_eq!(scrape.value(series), expected, "{series}\n{}", scrape.text);
    }
    // The registration and the first login hashed; the refused login did not.
    assert_eq!(scrape.value("herald_argon2_wait_seconds_count"), 2.0);
}

metrics_test!(
    websockets_subscriptions_and_live_events_are_counted,
    sockets_counted
);
async fn sockets_counted(app: &TestApp, _sink: &SmtpSink) {
    ws_client::until_events_flow(app).await;
    let token = app.token_for(&unique_email("live")).await;
    let mut socket = ws_client::subscribe_modern(app, "/graphql/ws", &token).await;
    ws_client::until_live(&mut socket).await;
    let scrape = scrape(app).await;
    assert_eq!(
        scrape.value("herald_websockets_open"),
        1.0,
        "{}",
        scrape.text
    );
    assert_eq!(scrape.value("herald_subscriptions_active"), 1.0);

    let id = app.send_ok(&token, "live", "to the socket").await;
    // Created, then taken, then sent: three events, the last one SENT.
    loop {
        let event = ws_client::next_event(&mut socket, &id).await;
        if event["payload"]["data"]["notificationStatusChanged"]["status"] == "SENT" {
            break;
        }
    }
    let scrape = settles(app, "herald_events_published_total", 3.0).await;
    assert_eq!(scrape.value("herald_events_delivered_total"), 3.0);
    assert_eq!(scrape.value("herald_event_lag_seconds_count"), 3.0);
    assert_eq!(scrape.value("herald_resyncs_total"), 0.0);

    drop(socket);
    settles(app, "herald_websockets_open", 0.0).await;
    settles(app, "herald_subscriptions_active", 0.0).await;
}

metrics_test!(cache_hits_and_misses_are_counted_by_cache, caches_counted);
async fn caches_counted(app: &TestApp, _sink: &SmtpSink) {
    let token = app.token_for(&unique_email("pages")).await;
    let hits = r#"herald_cache_hits_total{cache="inbox_pages"}"#;
    let misses = r#"herald_cache_misses_total{cache="inbox_pages"}"#;
    let responses = (
        r#"herald_cache_hits_total{cache="responses"}"#,
        r#"herald_cache_misses_total{cache="responses"}"#,
    );
    let counts = |scrape: &Scrape| {
        [hits, misses, responses.0, responses.1].map(|series| scrape.value(series))
    };
    let page = app.page(&token, 1, 10).await;
    assert!(page["errors"].is_null(), "{page}");
    // A miss of both; the page's read fills the user's snapshot, which the
    // response cache needs to store the next answer by.
    assert_eq!(counts(&scrape(app).await), [0.0, 1.0, 0.0, 1.0]);
    app.page(&token, 1, 10).await;
    assert_eq!(counts(&scrape(app).await), [1.0, 1.0, 0.0, 2.0]);
    // Now the whole response is cached: the page cache is not asked.
    app.page(&token, 1, 10).await;
    assert_eq!(counts(&scrape(app).await), [1.0, 1.0, 1.0, 2.0]);
}

metrics_test!(
    queue_depth_and_oldest_entry_are_read_when_scraped,
    queue_depth,
    |c: &mut herald::config::Config| c.worker = None
);
async fn queue_depth(app: &TestApp, _sink: &SmtpSink) {
    let token = app.token_for(&unique_email("queued")).await;
    for i in 0..3 {
        app.send_ok(&token, &format!("q{i}"), "waits").await;
    }
    // Queued after the commit, in the background: within moments.
    settles(app, r#"herald_queue_depth{queue="email"}"#, 3.0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let scrape = scrape(app).await;
    assert!(
        scrape.value(r#"herald_queue_oldest_age_seconds{queue="email"}"#) > 0.0,
        "{}",
        scrape.text
    );
    assert_eq!(scrape.value(r#"herald_queue_depth{queue="webhooks"}"#), 0.0);
    assert!(
        scrape
            .text
            .contains(r#"herald_queue_depth{queue="webhooks"} 0"#)
    );
}

metrics_test!(the_exposition_passes_promtool_check_metrics, promtool);
async fn promtool(app: &TestApp, _sink: &SmtpSink) {
    // Every kind of series present: a delivery, an error, a socket.
    let token = app.token_for(&unique_email("promtool")).await;
    let id = app.send_ok(&token, "checked", "by promtool").await;
    app.wait_for_status(&token, &id, "SENT", WITHIN).await;
    app.gql("{ me { nope } }", json!({}), Some(&token)).await;
    let _socket = ws_client::subscribe_modern(app, "/graphql/ws", &token).await;
    let scrape = settles(app, r#"herald_deliveries_total{outcome="sent"}"#, 1.0).await;
    let Some(report) = promtool_check(&scrape.text) else {
        return;
    };
    assert!(
        report.passed,
        "promtool check metrics: {}\n{}",
        report.said, scrape.text
    );
    // And in OpenMetrics, which Prometheus asks for.
    let url = app.metrics_url.as_deref().expect("metrics");
    let open_metrics = app
        .client
        .get(url)
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .expect("scrape");
    assert!(
        open_metrics.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/openmetrics-text"),
    );
    assert!(
        open_metrics
            .text()
            .await
            .expect("body")
            .ends_with("# EOF\n")
    );
}

/// `promtool check metrics` on `text`: `None` (a loud skip, or a failure
/// when services are required) when promtool is not installed.
fn promtool_check(text: &str) -> Option<PromtoolReport> {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            skip_or_fail(
                "promtool (Debian's prometheus package; .ci/promtool installs it)",
                &e.to_string(),
            );
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    Some(PromtoolReport {
        passed: output.status.success(),
        said: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// What `promtool check metrics` said, and whether it passed.
struct PromtoolReport {
    passed: bool,
    said: String,
}

metrics_test!(
    scraping_during_sends_fails_neither_and_blocks_no_send,
    scrape_under_load
);
async fn scrape_under_load(app: &TestApp, _sink: &SmtpSink) {
    const SENDS: usize = 60;
    let token = app.token_for(&unique_email("load")).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let scraper = {
        let url = app.metrics_url.clone().expect("metrics");
        let client = app.client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut scrapes = 0usize;
            while !stop.is_cancelled() {
                let response = client.get(&url).send().await.expect("a scrape answers");
                assert_eq!(response.status(), 200);
                let body = response.text().await.expect("body");
                assert!(body.contains("# TYPE herald_queue_depth gauge"), "{body}");
                scrapes += 1;
            }
            scrapes
        })
    };
    let sends = (0..SENDS).map(|i| {
        let token = token.clone();
        async move { app.send(&token, &format!("load {i}"), "under scrape").await }
    });
    let bodies = futures_util::future::join_all(sends).await;
    for body in &bodies {
        assert!(body["data"]["sendNotification"]["id"].is_string(), "{body}");
    }
    settles(
        app,
        r#"herald_deliveries_total{outcome="sent"}"#,
        SENDS as f64,
    )
    .await;
    stop.cancel();
    let scrapes = scraper.await.expect("the scraper ran");
    assert!(scrapes >= 1, "no scrape answered");
    let scrape = scrape(app).await;
    assert_eq!(
        scrape.value(r#"herald_http_requests_total{operation="mutation",code="ok"}"#),
        (SENDS + 1) as f64,
        "every send and the registration: {}",
        scrape.text
    );
}
