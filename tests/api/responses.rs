//! The response cache (issue 13): a user's inbox queries answered from the
//! stored response while the user's last seq is unchanged, over POST and
//! GET. Never stale after a change (on two instances with Redis); an
//! unchanged repeat runs no SQL and counts a hit; users and application
//! keys never share an entry; a logged-out token gets no cached answer;
//! errors are not cached; GET revalidates with ETag / If-None-Match → 304,
//! through CORS too; concurrent reads during changes stay consistent.

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, Services, TestApp, error_code, unique_email},
    metrics::scrape,
};

const PAGE: &str = "query($p: Int!, $s: Int!) { notifications(page: $p, pageSize: $s) { totalCount hasNextPage items { id title status readAt seenAt archivedAt recipient { email } } } }";
const INBOX: &str = "{ inbox(first: 20) { lastSeq counts { total unread unseen } pageInfo { hasNextPage } edges { cursor node { id seq title readAt seenAt archivedAt } } } }";
const CHANGES: &str =
    "query($a: Int!) { inboxChanges(after: $a) { lastSeq hasMore events { __typename seq } } }";
const COUNTS: &str = "{ inboxCounts { total unread unseen } }";
const HITS: &str = r#"herald_cache_hits_total{cache="responses"}"#;
const MISSES: &str = r#"herald_cache_misses_total{cache="responses"}"#;

/// No worker (the test knows every seq), and the metrics listener on.
fn setup(c: &mut herald::config::Config) {
    c.worker = None;
    c.metrics_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
}

/// The app, and with Redis a second instance on the same database and
/// Redis: every check runs on both.
async fn instances(backend: Backend) -> Option<Vec<TestApp>> {
    let app = TestApp::spawn_with(backend, setup).await?;
    let mut all = vec![];
    if backend.services() == Services::Redis {
        all.push(app.spawn_sibling(setup).await);
    }
    all.insert(0, app);
    Some(all)
}

/// The inbox queries a client repeats; `after` for the poll. All are
/// cached but the log read from 0 (its events depend on the retention too).
fn queries(after: i64) -> Vec<(&'static str, Value)> {
    vec![
        (PAGE, json!({ "p": 1, "s": 10 })),
        (PAGE, json!({ "p": 2, "s": 2 })),
        (INBOX, json!({})),
        (CHANGES, json!({ "a": after })),
        (CHANGES, json!({ "a": 0 })),
        (COUNTS, json!({})),
    ]
}

/// `query` run for real: a comment no other request carries makes it a
/// request of its own, which no cached response can answer.
async fn fresh(app: &TestApp, token: &str, query: &str, variables: &Value) -> Value {
    let unique = format!("{query} # {}", uuid::Uuid::new_v4().simple());
    let body = app.gql(&unique, variables.clone(), Some(token)).await;
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body
}

/// A GET: status, ETag, Cache-Control and the body (none for a 304).
struct Got {
    status: StatusCode,
    etag: Option<String>,
    cache_control: Option<String>,
    body: Option<Value>,
}

async fn get(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: &Value,
    if_none_match: Option<&str>,
) -> Got {
    let mut req = app
        .client
        .get(app.graphql_url())
        .query(&[("query", query), ("variables", &variables.to_string())]);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let res = req.send().await.expect("GET");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, etag, cache_control) = (res.status(), header("etag"), header("cache-control"));
    let text = res.text().await.expect("body");
    let body = (!text.is_empty()).then(|| serde_json::from_str(&text).expect("JSON body"));
    Got {
        status,
        etag,
        cache_control,
        body,
    }
}

/// On every instance, every query over POST and over GET answers what
/// running it now answers.
async fn never_behind(apps: &[TestApp], token: &str, after: i64, when: &str) {
    for (i, app) in apps.iter().enumerate() {
        for (query, variables) in queries(after) {
            let truth = fresh(app, token, query, &variables).await;
            let posted = app.gql(query, variables.clone(), Some(token)).await;
            assert_eq!(
                posted, truth,
                "{when}: POST on instance {i} is stale: {query}"
            );
            let got = get(app, Some(token), query, &variables, None).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(
                got.body.as_ref(),
                Some(&truth),
                "{when}: GET on instance {i} is stale"
            );
        }
    }
}

async fn last_seq(app: &TestApp, token: &str) -> i64 {
    fresh(app, token, INBOX, &json!({})).await["data"]["inbox"]["lastSeq"]
        .as_i64()
        .expect("lastSeq")
}

mod a_cached_response_is_never_stale_after_a_change {
    crate::on_backends!(super::never_stale; sqlite => Sqlite, postgres => Postgres);
}

/// Every kind of change a user's inbox sees, each made on one instance and
/// read on every one at once; an unchanged repeat runs no SQL.
async fn never_stale(backend: Backend) {
    let Some(apps) = instances(backend).await else {
        return;
    };
    let app = &apps[0];
    let token = app.token_for(&unique_email("fresh")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.send_ok(&token, &format!("n{i}"), "body").await);
    }
    let mut seq = last_seq(app, &token).await;
    never_behind(&apps, &token, seq, "warming").await;

    // Unchanged: every repeat is a hit, and no statement runs.
    for app in &apps {
        let (before, hits) = (app.stats.total(), scrape(app).await.value(HITS));
        let cached: Vec<_> = queries(seq)
            .into_iter()
            .filter(|(q, v)| *q != CHANGES || v["a"] != 0)
            .collect();
        for (query, variables) in &cached {
            app.gql(query, variables.clone(), Some(&token)).await;
            let got = get(app, Some(&token), query, variables, None).await;
            assert!(got.etag.is_some(), "a cached GET has an ETag");
        }
        assert_eq!(app.stats.total(), before, "a cached response ran SQL");
        let n = 2.0 * cached.len() as f64;
        assert_eq!(scrape(app).await.value(HITS), hits + n);
    }

    let mark = |ids: &[&String], action: &str| json!({ "ids": ids, "a": action });
    let steps: Vec<(&str, Value)> = vec![
        ("send", json!({})),
        ("SEEN", mark(&[&ids[0]], "SEEN")),
        ("READ", mark(&[&ids[0], &ids[1]], "READ")),
        ("UNREAD", mark(&[&ids[1]], "UNREAD")),
        ("ARCHIVE", mark(&[&ids[2]], "ARCHIVE")),
        ("UNARCHIVE", mark(&[&ids[2]], "UNARCHIVE")),
        ("mark all READ", json!({})),
    ];
    for (i, (step, variables)) in steps.into_iter().enumerate() {
        // The change on one instance, alternately.
        let writer = &apps[i % apps.len()];
        let body = match step {
            "send" => writer.send(&token, "newest", "body").await,
            "mark all READ" => {
                crate::inbox::mark_all(writer, &token, "READ", seq).await
            }
            _ => {
                writer
                    .gql(
                        "mutation($ids: [ID!]!, $a: InboxAction!) { markNotifications(ids: $ids, action: $a) { updated } }",
                        variables,
                        Some(&token),
                    )
                    .await
            }
        };
        assert!(body.get("errors").is_none(), "{step}: {body}");
        // The requests cached before the change, the poll included.
        never_behind(&apps, &token, seq, step).await;
        let next = last_seq(app, &token).await;
        assert!(next > seq, "{step} moved the last seq");
        seq = next;
        never_behind(&apps, &token, seq, step).await;
    }
}

mod two_users_never_see_each_others_cached_responses {
    crate::on_backends!(super::users_apart; sqlite => Sqlite, postgres => Postgres);
}

async fn users_apart(backend: Backend) {
    let Some(apps) = instances(backend).await else {
        return;
    };
    let app = &apps[0];
    let ada = app.token_for(&unique_email("ada")).await;
    let bob = app.token_for(&unique_email("bob")).await;
    app.send_ok(&ada, "for ada", "body").await;
    // At the same last seq: only the key tells their entries apart.
    app.send_ok(&bob, "for bob", "body").await;
    for _ in 0..2 {
        for app in &apps {
            for (token, mine, theirs) in
                [(&ada, "for ada", "for bob"), (&bob, "for bob", "for ada")]
            {
                for (query, variables) in queries(0) {
                    let posted = app.gql(query, variables.clone(), Some(token)).await;
                    let got = get(app, Some(token), query, &variables, None).await;
                    let text = format!("{posted} {:?}", got.body);
                    assert!(!text.contains(theirs), "another user's data: {text}");
                    assert_eq!(posted, fresh(app, token, query, &variables).await);
                    if query == INBOX {
                        assert!(text.contains(mine), "{text}");
                    }
                }
            }
        }
    }
}

mod an_application_key_and_a_logged_out_token_never_get_a_cached_response {
    crate::on_backends!(super::callers_apart; sqlite => Sqlite, postgres => Postgres);
}

async fn callers_apart(backend: Backend) {
    let Some(apps) = instances(backend).await else {
        return;
    };
    let app = &apps[0];
    let key = crate::apikeys::create(&app.database_url, "web").await.0;
    let token = app.token_for(&unique_email("keyed")).await;
    app.send_ok(&token, "mine", "body").await;
    for app in &apps {
        for (query, variables) in queries(0) {
            // Cached for the user first, twice over.
            for _ in 0..2 {
                let body = app.gql(query, variables.clone(), Some(&token)).await;
                assert!(body.get("errors").is_none(), "{body}");
            }
            for _ in 0..2 {
                let body = app.gql(query, variables.clone(), Some(&key)).await;
                assert_eq!(error_code(&body), Some("FORBIDDEN"), "{query}: {body}");
                let got = get(app, Some(&key), query, &variables, None).await;
                let body = got.body.expect("a body");
                assert_eq!(error_code(&body), Some("FORBIDDEN"), "{body}");
                assert_eq!(got.etag, None, "an error has no ETag");
                // Anonymous, too.
                let body = app.gql(query, variables.clone(), None).await;
                assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
            }
        }
    }
    // Logged out: the cached answers stop at once, on every instance.
    let out = app
        .gql("mutation { logout }", json!({}), Some(&token))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    for app in &apps {
        for (query, variables) in queries(0) {
            let body = app.gql(query, variables.clone(), Some(&token)).await;
            assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
            let got = get(app, Some(&token), query, &variables, None).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(
                error_code(&got.body.expect("a body")),
                Some("UNAUTHENTICATED")
            );
        }
    }
}

mod a_get_revalidates_with_its_etag_and_gets_304_until_a_change {
    crate::on_backends!(super::etags; sqlite => Sqlite, postgres => Postgres);
}

async fn etags(backend: Backend) {
    let Some(apps) = instances(backend).await else {
        return;
    };
    let app = &apps[0];
    let other = apps.last().unwrap_or(app);
    let token = app.token_for(&unique_email("etag")).await;
    let id = app.send_ok(&token, "first", "body").await;
    let vars = json!({});
    let first = get(app, Some(&token), INBOX, &vars, None).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.etag.clone().expect("an ETag");
    assert_eq!(first.cache_control.as_deref(), Some("private, no-cache"));
    // The same answer from a hit, with the same validator, on every instance.
    for app in &apps {
        let again = get(app, Some(&token), INBOX, &vars, None).await;
        assert_eq!(
            (again.etag.as_ref(), again.body.as_ref()),
            (Some(&etag), first.body.as_ref())
        );
        // Revalidated: 304, no body, the same ETag.
        for tag in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
        ] {
            let unchanged = get(app, Some(&token), INBOX, &vars, Some(&tag)).await;
            assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(unchanged.body, None);
            assert_eq!(unchanged.etag.as_ref(), Some(&etag));
        }
        let other_tag = get(app, Some(&token), INBOX, &vars, Some("\"nope\"")).await;
        assert_eq!(other_tag.status, StatusCode::OK);
    }
    // POST is unaffected: no validator, If-None-Match ignored.
    let posted = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .json(&json!({ "query": INBOX }))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), StatusCode::OK);
    assert!(posted.headers().get("etag").is_none());
    assert_eq!(
        posted.json::<Value>().await.expect("JSON"),
        first.body.clone().expect("body")
    );

    // A change on the other instance: the old ETag gets 200 with the new
    // state and a new ETag, which then gets 304.
    let marked = crate::inbox::mark(other, &token, &[&id], "READ").await;
    assert!(marked.get("errors").is_none(), "{marked}");
    for app in &apps {
        let changed = get(app, Some(&token), INBOX, &vars, Some(&etag)).await;
        assert_eq!(changed.status, StatusCode::OK);
        let body = changed.body.expect("a body");
        assert!(
            body["data"]["inbox"]["edges"][0]["node"]["readAt"].is_string(),
            "{body}"
        );
        let new_etag = changed.etag.expect("an ETag");
        assert_ne!(new_etag, etag);
        let unchanged = get(app, Some(&token), INBOX, &vars, Some(&new_etag)).await;
        assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    }

    // Through CORS: a browser's revalidation gets its 304 with the CORS
    // headers, can read the ETag, and may send If-None-Match.
    let origin = "http://localhost:5173";
    let current = get(app, Some(&token), INBOX, &vars, None)
        .await
        .etag
        .expect("ETag");
    let res = app
        .client
        .get(app.graphql_url())
        .query(&[("query", INBOX)])
        .bearer_auth(&token)
        .header("origin", origin)
        .header("if-none-match", &current)
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(header("access-control-allow-origin"), origin);
    assert!(header("access-control-expose-headers").contains("etag"));
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.graphql_url())
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, if-none-match",
        )
        .send()
        .await
        .expect("preflight");
    let allowed = preflight
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed.contains("if-none-match"), "{allowed}");
}

mod errors_and_other_fields_are_not_cached {
    crate::on_backends!(super::not_cached; sqlite => Sqlite, postgres => Postgres);
}

async fn not_cached(backend: Backend) {
    let Some(apps) = instances(backend).await else {
        return;
    };
    let app = &apps[0];
    let token = app.token_for(&unique_email("errors")).await;
    app.send_ok(&token, "one", "body").await;
    let before = scrape(app).await;
    for (query, code) in [
        ("{ inbox(first: 0) { lastSeq } }", Some("BAD_USER_INPUT")),
        (
            "{ inboxCounts { total } notifications(pageSize: 101) { totalCount } }",
            Some("BAD_USER_INPUT"),
        ),
        ("{ inboxCounts { nope } }", Some("BAD_USER_INPUT")),
        ("{ inboxCounts { total } me { email } }", None),
        ("{ notificationPreferences { __typename } }", None),
        // Events listed: they also depend on the log's retention.
        ("{ inboxChanges(after: 0) { events { seq } } }", None),
    ] {
        for _ in 0..3 {
            let posted = app.gql(query, json!({}), Some(&token)).await;
            assert_eq!(error_code(&posted), code, "{query}: {posted}");
            let got = get(app, Some(&token), query, &json!({}), None).await;
            assert_eq!(got.etag, None, "{query} has an ETag");
        }
    }
    let after = scrape(app).await;
    assert_eq!(
        after.value(HITS),
        before.value(HITS),
        "a hit for an uncacheable query"
    );
    // Looked up every time, stored never.
    assert_eq!(after.value(MISSES), before.value(MISSES) + 36.0);
}

mod concurrent_reads_during_changes_are_each_consistent {
    crate::on_backends!(super::concurrent; sqlite => Sqlite, postgres => Postgres);
}

/// 40 clients (over both instances with Redis, GET and POST) read the first
/// page over and over while another marks every notification READ, then
/// UNREAD, one at a time: each answer is a consistent snapshot (its unread
/// count is its unread edges), no client sees the last seq go back, and
/// once the marks are done every instance answers the final state.
async fn concurrent(backend: Backend) {
    let Some(apps) = instances(backend).await else {
        return;
    };
    let app = &apps[0];
    let token = app.token_for(&unique_email("busy")).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(app.send_ok(&token, &format!("n{i}"), "body").await);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let marks = async {
        for action in ["READ", "UNREAD", "READ"] {
            for (i, id) in ids.iter().enumerate() {
                let writer = &apps[i % apps.len()];
                let body = crate::inbox::mark(writer, &token, &[id], action).await;
                assert!(body.get("errors").is_none(), "{body}");
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    };
    let reader = |n: usize| {
        let (app, token, done) = (&apps[n % apps.len()], &token, &done);
        async move {
            let mut seen = 0;
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || reads < 3 {
                let body = if n.is_multiple_of(2) {
                    app.gql(INBOX, json!({}), Some(token)).await
                } else {
                    get(app, Some(token), INBOX, &json!({}), None)
                        .await
                        .body
                        .expect("body")
                };
                let inbox = &body["data"]["inbox"];
                let edges = inbox["edges"].as_array().expect("edges");
                let unread = edges
                    .iter()
                    .filter(|e| e["node"]["readAt"].is_null())
                    .count();
                assert_eq!(edges.len(), 8, "{body}");
                assert_eq!(
                    inbox["counts"]["unread"],
                    json!(unread),
                    "inconsistent: {body}"
                );
                let seq = inbox["lastSeq"].as_i64().expect("lastSeq");
                assert!(seq >= seen, "the last seq went back from {seen}: {body}");
                seen = seq;
                reads += 1;
            }
            reads
        }
    };
    let readers = futures_util::future::join_all((0..40).map(reader));
    let (reads, ()) = tokio::join!(readers, marks);
    assert!(reads.iter().all(|r| *r >= 3));
    for app in &apps {
        let body = app.gql(INBOX, json!({}), Some(&token)).await;
        assert_eq!(body, fresh(app, &token, INBOX, &json!({})).await);
        assert_eq!(
            body["data"]["inbox"]["counts"]["unread"],
            json!(0),
            "{body}"
        );
        assert_eq!(body["data"]["inbox"]["lastSeq"], json!(8 + 24));
    }
}
