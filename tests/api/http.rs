//! GraphQL over HTTP details a client notices: GET, media types, limits,
//! health and readiness.

use serde_json::{Value, json};

use crate::helpers::{Backend, PgDatabase, TestApp, error_code};

async fn app() -> TestApp {
    TestApp::spawn(Backend::Sqlite).await.expect("sqlite app")
}

#[tokio::test]
async fn get_runs_queries_with_url_encoded_variables() {
    let app = app().await;
    let token = app.token_for(&crate::helpers::unique_email("get")).await;
    let res = app
        .client
        .get(app.graphql_url())
        .query(&[
            (
                "query",
                "query Me($x: Boolean!) { me @include(if: $x) { email } }",
            ),
            ("variables", r#"{"x": true}"#),
        ])
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = crate::leaks::json_body(res).await;
    assert!(body["data"]["me"]["email"].is_string(), "{body}");
}

#[tokio::test]
async fn get_refuses_mutations_with_405() {
    let app = app().await;
    let res = app
        .client
        .get(app.graphql_url())
        .query(&[(
            "query",
            r#"mutation { register(email: "get@example.com", password: "password1") { token } }"#,
        )])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let body: Value = crate::leaks::json_body(res).await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"));
    // And nothing was registered.
    let login = app.login("get@example.com", "password1").await;
    assert_eq!(error_code(&login), Some("UNAUTHENTICATED"));
}

#[tokio::test]
async fn browsers_get_graphiql_served_entirely_by_herald() {
    let app = app().await;
    let res = app
        .client
        .get(app.graphql_url())
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let page = res.text().await.expect("body");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external reference in {page}"
    );
    // Every script and stylesheet the page names is served, with its type.
    let mut assets = 0;
    for (attr, kind) in [("src=\"", "javascript"), ("href=\"", "css")] {
        for part in page.split(attr).skip(1) {
            let path = part.split('"').next().unwrap_or_default();
            let res = app
                .client
                .get(format!("{}{path}", app.url))
                .send()
                .await
                .expect("asset");
            assert_eq!(res.status(), 200, "{path}");
            let ct = res.headers()["content-type"]
                .to_str()
                .unwrap_or_default()
                .to_owned();
            assert!(ct.contains(kind), "{path}: {ct}");
            let body = res.bytes().await.expect("asset body");
            assert!(body.len() > 100, "{path} is empty");
            assets += 1;
        }
    }
    assert_eq!(
        assets, 5,
        "react, react-dom, graphiql, init.js and the stylesheet"
    );
    let missing = app
        .client
        .get(format!("{}/graphiql/nope.js", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    // Without a browser's Accept, a GET without a query is a GraphQL error.
    let res = app
        .client
        .get(app.graphql_url())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn graphql_response_json_clients_get_400_for_invalid_documents() {
    let app = app().await;
    let res = app
        .client
        .post(app.graphql_url())
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": "{ noSuchField }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/graphql-response+json")
    );
    let body: Value = crate::leaks::json_body(res).await;
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn every_error_carries_a_contract_code() {
    let app = app().await;
    for query in [
        "{ noSuchField }",
        "{ me { ",
        "query($x: Int!) { me { id } }",
        "{ me }",
    ] {
        let body = app.gql(query, json!({}), None).await;
        let errors = body["errors"].as_array().expect("errors");
        assert!(!errors.is_empty(), "{query}: {body}");
        for e in errors {
            assert_eq!(e["extensions"]["code"], "BAD_USER_INPUT", "{query}: {body}");
        }
    }
}

#[tokio::test]
async fn malformed_json_gets_400_with_a_graphql_error() {
    let app = app().await;
    let res = app
        .client
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .body(r#"{"query": "{ me { id } }""#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let body: Value = crate::leaks::json_body(res).await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
}

#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413_and_the_server_keeps_serving() {
    let app = app().await;
    let huge =
        json!({ "query": "{ __typename }", "variables": { "pad": "x".repeat(2 * 1024 * 1024) } });
    let res = app
        .client
        .post(app.graphql_url())
        .json(&huge)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 413);
    // Chunked, without a Content-Length: the limit still holds.
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let res = app
        .client
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 413);
    let ok = app.gql("{ __typename }", json!({}), None).await;
    assert_eq!(ok["data"]["__typename"], "Query");
}

#[tokio::test]
async fn wrong_content_type_is_refused() {
    let app = app().await;
    let res = app
        .client
        .post(app.graphql_url())
        .header("content-type", "text/plain")
        .body(r#"{"query": "{ __typename }"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn a_small_batch_runs_and_an_oversized_one_is_refused() {
    let app = app().await;
    let op = json!({ "query": "{ __typename }" });
    let res = app
        .client
        .post(app.graphql_url())
        .json(&vec![op.clone(); 10])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = crate::leaks::json_body(res).await;
    assert_eq!(body.as_array().map(Vec::len), Some(10));
    let res = app
        .client
        .post(app.graphql_url())
        .json(&vec![op; 11])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_up() {
    let app = app().await;
    for path in ["/healthz", "/readyz"] {
        let res = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_naming_the_database_when_it_is_gone() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let name = app.pg_database().expect("postgres").to_owned();
    PgDatabase::drop_now(&name).await;
    let res = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 503);
    let body: Value = crate::leaks::json_body(res).await;
    assert_eq!(body["checks"]["database"], "unreachable", "{body}");
    // Liveness is not readiness: the process is still up.
    let res = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    // And a request that needs the database fails without leaking why.
    let body = app.login("someone@example.com", "password123").await;
    assert_eq!(error_code(&body), Some("INTERNAL"), "{body}");
    assert_eq!(body["errors"][0]["message"], "internal error");
}

#[tokio::test]
async fn unknown_paths_get_404() {
    let app = app().await;
    let res = app
        .client
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
}

/// A selection that matches no field of its object answers `{}`, as the
/// GraphQL spec says, not null (async-graphql's behaviour, patched in
/// vendor/async-graphql): a null in a non-null position without an error
/// breaks typed clients.
#[tokio::test]
async fn a_selection_that_matches_no_field_answers_an_empty_object() {
    let app = app().await;
    let token = app.token_for(&crate::helpers::unique_email("empty")).await;
    let skipped = app
        .gql("{ me { id @skip(if: true) } }", json!({}), Some(&token))
        .await;
    assert_eq!(skipped, json!({"data": {"me": {}}}));
    // A fresh inbox past its last seq gets one InboxResync; a fragment on
    // another event type selects nothing of it.
    let other_type = app
        .gql(
            "{ inboxChanges(after: 5) { events { ... on NotificationsMarked { upTo } } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(
        other_type,
        json!({"data": {"inboxChanges": {"events": [{}]}}})
    );
    // A field that fails still nulls its object.
    let failed = app.gql("{ me { id } }", json!({}), None).await;
    assert!(failed["data"].is_null(), "{failed}");
    assert_eq!(error_code(&failed), Some("UNAUTHENTICATED"), "{failed}");
}
