//! Query limits: each just below and just above its value, and the server
//! answers a normal request right after every rejection.

use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, error_code, unique_email};

async fn app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| c.worker = None)
        .await
        .expect("sqlite")
}

/// A query whose selections nest `depth` deep (`__type`'s `ofType` chain
/// nests as far as one likes; `__schema` is exempt from the depth limit).
fn nested(depth: usize) -> String {
    assert!(depth >= 4);
    let mut q = String::from("{ __type(name: \"Query\") { fields { type { ");
    for _ in 0..depth - 4 {
        q.push_str("ofType { ");
    }
    q.push_str("name");
    q.push_str(&" }".repeat(depth));
    q
}

/// What GraphiQL, Apollo's tools and codegen send to learn the schema.
const STANDARD_INTROSPECTION: &str = include_str!("fixtures/introspection.graphql");

async fn still_serving(app: &TestApp) {
    let ok = app.gql("{ __typename }", json!({}), None).await;
    assert_eq!(ok["data"]["__typename"], "Query", "{ok}");
}

fn rejected(body: &Value, words: &[&str]) {
    assert_eq!(error_code(body), Some("BAD_USER_INPUT"), "{body}");
    assert!(
        body.get("data").is_none_or(Value::is_null),
        "not executed: {body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(
            message.contains(word),
            "{message:?} should mention {word:?}"
        );
    }
}

#[tokio::test]
async fn depth_10_runs_and_depth_11_is_rejected() {
    let app = app().await;
    let ok = app.gql(&nested(10), json!({}), None).await;
    assert!(ok["errors"].is_null(), "{ok}");
    // Twice: the second time the parsed document is a kept copy
    // (`http/documents.rs`), and the limit still applies.
    for _ in 0..2 {
        rejected(
            &app.gql(&nested(11), json!({}), None).await,
            &["depth", "10"],
        );
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn the_standard_introspection_query_runs_and_fan_out_is_rejected() {
    let app = app().await;
    let full = app.gql(STANDARD_INTROSPECTION, json!({}), None).await;
    assert!(full["errors"].is_null(), "{full}");
    let types = full["data"]["__schema"]["types"].as_array().expect("types");
    assert!(
        types.iter().any(|t| t["name"] == "NotificationStatus"),
        "{full}"
    );
    // Two nested introspection lists are fine, a third multiplies the
    // response by the schema's size once more.
    let two = "{ __schema { types { fields { type { ofType { fields { name } } } } } } }";
    assert!(app.gql(two, json!({}), None).await["errors"].is_null());
    rejected(
        &app.gql(
            "{ __schema { types { fields { type { ofType { fields { type { ofType { fields { name } } } } } } } } } }",
            json!({}),
            None,
        )
        .await,
        &["introspection", "3 deep", "limit is 2"],
    );
    still_serving(&app).await;
}

#[tokio::test]
async fn thirty_aliases_run_and_thirty_one_are_rejected() {
    let app = app().await;
    let aliases = |n: usize| {
        format!(
            "{{ {} }}",
            (0..n)
                .map(|i| format!("a{i}: __typename"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let ok = app.gql(&aliases(30), json!({}), None).await;
    assert_eq!(ok["data"]["a29"], "Query", "{ok}");
    // Twice, the second from a kept parsed document.
    for _ in 0..2 {
        rejected(
            &app.gql(&aliases(31), json!({}), None).await,
            &["31 aliases", "30"],
        );
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn complexity_past_1000_is_rejected() {
    let app = app().await;
    let token = app.token_for(&unique_email("complex")).await;
    let pages = |n: usize| {
        format!(
            "{{ {} }}",
            (0..n)
                .map(|i| format!(
                    "p{i}: notifications(pageSize: 100) {{ totalCount items {{ id status }} }}"
                ))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    // Each page costs 100 + 5; nine fit in 1000, ten do not.
    let ok = app.gql(&pages(9), json!({}), Some(&token)).await;
    assert!(ok["errors"].is_null(), "{ok}");
    rejected(
        &app.gql(&pages(10), json!({}), Some(&token)).await,
        &["complexity", "1000"],
    );
    still_serving(&app).await;
}

#[tokio::test]
async fn login_twice_in_one_request_is_rejected_alone_or_batched() {
    let app = app().await;
    let email = unique_email("guess");
    app.token_for(&email).await;
    let twice = format!(
        "mutation {{ a: login(email: \"{email}\", password: \"guess one\") {{ token }} b: login(email: \"{email}\", password: \"{PASSWORD}\") {{ token }} }}"
    );
    rejected(
        &app.gql(&twice, json!({}), None).await,
        &["once per request"],
    );
    let login = json!({ "query": format!("mutation {{ login(email: \"{email}\", password: \"{PASSWORD}\") {{ token }} }}") });
    batch_rejected(&app, &json!([login.clone(), login])).await;
    // One login, even in a batch with other operations, is fine.
    let res = app
        .client
        .post(app.graphql_url())
        .json(&json!([{ "query": format!("mutation {{ login(email: \"{email}\", password: \"{PASSWORD}\") {{ token }} }}") }, { "query": "{ __typename }" }]))
        .send()
        .await
        .expect("request");
    let body: Value = crate::leaks::json_body(res).await;
    assert!(body[0]["data"]["login"]["token"].is_string(), "{body}");
}

/// A batch refused whole (400) for holding two password checks.
async fn batch_rejected(app: &TestApp, batch: &Value) {
    let res = app
        .client
        .post(app.graphql_url())
        .json(batch)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let body: Value = crate::leaks::json_body(res).await;
    rejected(&body, &["once per request"]);
}

/// Two password checks reached through fragments, alone or in a batch,
/// are refused like two aliases: none of them runs.
#[tokio::test]
async fn login_twice_through_fragments_is_rejected_alone_or_batched() {
    let app = app().await;
    let email = unique_email("fragments");
    app.token_for(&email).await;
    let hasher = app.hasher.as_ref().expect("the API runs here");
    let login = |alias: &str, password: &str| {
        format!("{alias}: login(email: \"{email}\", password: \"{password}\") {{ token }}")
    };
    let (a, b) = (login("a", "guess one"), login("b", PASSWORD));
    let alone = [
        // A named fragment holding both.
        format!("mutation {{ ...F }} fragment F on Mutation {{ {a} {b} }}"),
        // Two named fragments, one nested in the other.
        format!(
            "mutation {{ ...F }} fragment F on Mutation {{ {a} ...G }} fragment G on Mutation {{ {b} }}"
        ),
        // One fragment spread twice.
        format!("mutation {{ ...F ...F }} fragment F on Mutation {{ {a} }}"),
        // Inline fragments, with and without a type condition.
        format!("mutation {{ ... on Mutation {{ {a} }} ... {{ {b} }} }}"),
        // A named fragment inside an inline one, next to a direct field.
        format!("mutation {{ {a} ... on Mutation {{ ...F }} }} fragment F on Mutation {{ {b} }}"),
    ];
    for query in &alone {
        let before = hasher.verifications();
        rejected(
            &app.gql(query, json!({}), None).await,
            &["once per request"],
        );
        assert_eq!(hasher.verifications(), before, "checked: {query}");
    }
    let in_fragment = format!("mutation {{ ...F }} fragment F on Mutation {{ {a} }}");
    let inline = format!("mutation {{ ... on Mutation {{ {b} }} }}");
    for batch in [
        json!([{ "query": in_fragment }, { "query": in_fragment }]),
        json!([{ "query": in_fragment }, { "query": inline }]),
    ] {
        let before = hasher.verifications();
        batch_rejected(&app, &batch).await;
        assert_eq!(hasher.verifications(), before, "checked: {batch}");
    }
    // One login through a fragment still works.
    let one = format!(
        "mutation {{ ...F }} fragment F on Mutation {{ {} }}",
        login("only", PASSWORD)
    );
    let body = app.gql(&one, json!({}), None).await;
    assert!(body["data"]["only"]["token"].is_string(), "{body}");
}

#[tokio::test]
async fn query_text_over_16_kib_is_rejected() {
    let app = app().await;
    // Padding with a comment keeps the query valid.
    let pad = |n: usize| format!("{{ __typename }}\n#{}", "x".repeat(n));
    let ok = app.gql(&pad(16 * 1024 - 17), json!({}), None).await;
    assert_eq!(ok["data"]["__typename"], "Query", "{ok}");
    let res = app
        .client
        .post(app.graphql_url())
        .json(&json!({ "query": pad(16 * 1024) }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 400);
    let body: Value = crate::leaks::json_body(res).await;
    rejected(&body, &["16384"]);
    still_serving(&app).await;
}

#[tokio::test]
async fn production_hides_the_schema_and_suggestions() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.worker = None;
        if let Some(http) = c.http.as_mut() {
            http.schema.introspection = false;
            http.schema.suggestions = false;
        }
    })
    .await
    .expect("sqlite");
    // async-graphql answers introspection with null when it is off.
    let intro = app
        .gql("{ __schema { types { name } } }", json!({}), None)
        .await;
    assert!(intro["data"]["__schema"].is_null(), "{intro}");
    let typo = app
        .gql("{ notificatons { totalCount } }", json!({}), None)
        .await;
    let message = typo["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("Did you mean"), "{message}");
    // In embedded (development) mode both are on.
    let dev = self::app().await;
    let typo = dev
        .gql("{ notificatons { totalCount } }", json!({}), None)
        .await;
    assert!(
        typo["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Did you mean"),
        "{typo}"
    );
    let intro = dev
        .gql("{ __schema { queryType { name } } }", json!({}), None)
        .await;
    assert_eq!(intro["data"]["__schema"]["queryType"]["name"], "Query");
}
