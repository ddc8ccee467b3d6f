//! Automatic persisted queries (Apollo's protocol): a hash sent with its
//! text registers it, then stands for it over POST and GET; an unknown hash
//! is `PERSISTED_QUERY_NOT_FOUND`; bad extensions, texts over the size limit
//! and texts that do not run are refused and not registered; in services
//! mode every instance shares the store (Redis, under the prefix, with the
//! configured TTL).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{
    both_backends,
    helpers::{Backend, TestApp, error_code, error_message, redis_url, unique_email},
};

const QUERY: &str = "query TypeName($n: String!) { __type(name: $n) { name } }";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// The hash alone, as Apollo Client and urql send it first.
fn hashed(text: &str) -> Value {
    json!({ "variables": { "n": "Query" }, "extensions": extension(&sha256(text)) })
}

/// The text with its hash, as they send it after a miss.
fn registering(text: &str) -> Value {
    json!({ "query": text, "variables": { "n": "Query" }, "extensions": extension(&sha256(text)) })
}

async fn post(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.graphql_url())
        .json(body)
        .send()
        .await
        .expect("request");
    (res.status(), crate::leaks::json_body(res).await)
}

/// GET with `variables` and `extensions` as URL-encoded JSON.
async fn get(app: &TestApp, params: &[(&str, String)], accept: &str) -> (StatusCode, Value) {
    let res = app
        .client
        .get(app.graphql_url())
        .query(params)
        .header("accept", accept)
        .send()
        .await
        .expect("request");
    (res.status(), crate::leaks::json_body(res).await)
}

fn get_params(hash: &str) -> Vec<(&'static str, String)> {
    vec![
        ("operationName", "TypeName".to_owned()),
        ("variables", json!({ "n": "Query" }).to_string()),
        ("extensions", extension(hash).to_string()),
    ]
}

fn not_found(body: &Value) {
    assert_eq!(
        error_message(body),
        Some("PersistedQueryNotFound"),
        "{body}"
    );
    assert_eq!(
        error_code(body),
        Some("PERSISTED_QUERY_NOT_FOUND"),
        "{body}"
    );
    assert!(body.get("data").is_none(), "not executed: {body}");
}

fn ran(body: &Value) {
    assert_eq!(body["data"]["__type"]["name"], "Query", "{body}");
    assert!(body["errors"].is_null(), "{body}");
}

both_backends!(
    a_hash_registers_with_its_text_then_stands_for_it_over_post_and_get,
    register_then_hit
);
async fn register_then_hit(app: &TestApp) {
    let hash = sha256(QUERY);
    let (status, body) = post(app, &hashed(QUERY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    not_found(&body);
    let (status, body) = get(app, &get_params(&hash), "application/json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    not_found(&body);
    // A request error under the GraphQL-over-HTTP media type: 400.
    let (status, body) = get(app, &get_params(&hash), "application/graphql-response+json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    not_found(&body);

    let (status, body) = post(app, &registering(QUERY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ran(&body);
    let (_, body) = post(app, &hashed(QUERY)).await;
    ran(&body);
    // GET by the hash alone: no `query` parameter at all.
    let (status, body) = get(app, &get_params(&hash), "application/json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ran(&body);
    // The same hash in upper case is the same hash.
    let (_, body) = get(app, &get_params(&hash.to_uppercase()), "*/*").await;
    ran(&body);
}

both_backends!(
    bad_persisted_query_extensions_are_bad_user_input,
    bad_extensions
);
async fn bad_extensions(app: &TestApp) {
    let hash = sha256(QUERY);
    let cases = [
        (
            json!({ "version": 1, "sha256Hash": sha256("{ other }") }),
            "is not the SHA-256 of the query text",
        ),
        (
            json!({ "version": 1, "sha256Hash": &hash[..63] }),
            "sha256Hash: must be 64 hexadecimal digits",
        ),
        (
            json!({ "version": 1, "sha256Hash": format!("{hash}a") }),
            "sha256Hash: must be 64 hexadecimal digits",
        ),
        (
            json!({ "version": 1, "sha256Hash": "z".repeat(64) }),
            "sha256Hash: must be 64 hexadecimal digits",
        ),
        (
            json!({ "version": 1, "sha256Hash": 7 }),
            "sha256Hash: must be 64 hexadecimal digits",
        ),
        (
            json!({ "version": 2, "sha256Hash": &hash }),
            "version: must be 1, got 2",
        ),
        (json!({ "sha256Hash": &hash }), "version: missing"),
        (json!("v1"), "persistedQuery: must be an object"),
    ];
    for (persisted, words) in cases {
        for with_text in [true, false] {
            let mut body = json!({ "variables": { "n": "Query" }, "extensions": { "persistedQuery": persisted } });
            if with_text {
                body["query"] = json!(QUERY);
            }
            if !with_text && words.contains("SHA-256 of the query") {
                continue;
            }
            let (status, res) = post(app, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{persisted}: {res}");
            assert_eq!(
                error_code(&res),
                Some("BAD_USER_INPUT"),
                "{persisted}: {res}"
            );
            let message = error_message(&res).unwrap_or_default();
            assert!(message.contains(words), "{persisted}: {message}");
            assert!(res.get("data").is_none(), "not executed: {res}");
        }
        let mut params = vec![(
            "extensions",
            json!({ "persistedQuery": persisted }).to_string(),
        )];
        params.push(("query", QUERY.to_owned()));
        params.push(("variables", json!({ "n": "Query" }).to_string()));
        let (status, res) = get(app, &params, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {persisted}: {res}");
        assert_eq!(
            error_code(&res),
            Some("BAD_USER_INPUT"),
            "GET {persisted}: {res}"
        );
    }
    // Nothing of that registered the text.
    not_found(&post(app, &hashed(QUERY)).await.1);
}

both_backends!(
    texts_over_the_size_limit_or_that_do_not_run_are_not_registered,
    refused_texts
);
async fn refused_texts(app: &TestApp) {
    let limit = herald::config::defaults::MAX_QUERY_BYTES.default;
    let long = format!("{{ __typename {} }}", " ".repeat(limit));
    let (status, body) = post(app, &registering(&long)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert!(
        error_message(&body).is_some_and(|m| m.contains(&limit.to_string())),
        "{body}"
    );
    let params = [
        ("query", long.clone()),
        ("extensions", extension(&sha256(&long)).to_string()),
    ];
    let (status, body) = get(app, &params, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    not_found(&post(app, &hashed(&long)).await.1);

    // A syntax error, a field the schema lacks, a depth over the limit:
    // answered as without a hash, and not kept.
    let deep = format!(
        "{{ __type(name: \"Query\") {{ fields {{ type {{ {} name {} }} }} }} }}",
        "ofType { ".repeat(10),
        "}".repeat(10)
    );
    for text in ["{ __typename ", "{ noSuchField }", deep.as_str()] {
        let (_, body) = post(app, &registering(text)).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{text}: {body}");
        not_found(&post(app, &hashed(text)).await.1);
    }
}

both_backends!(
    a_hashed_mutation_does_not_run_over_get,
    hashed_mutation_over_get
);
async fn hashed_mutation_over_get(app: &TestApp) {
    let email = unique_email("apq");
    let text = format!(
        "mutation SignIn {{ login(email: \"{email}\", password: \"wrong password\") {{ token }} }}"
    );
    // Registered over POST (it ran: wrong credentials are a field error).
    let body = json!({ "query": text, "extensions": extension(&sha256(&text)) });
    let (_, res) = post(app, &body).await;
    assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{res}");
    let (_, res) = post(app, &json!({ "extensions": extension(&sha256(&text)) })).await;
    assert_eq!(
        error_code(&res),
        Some("UNAUTHENTICATED"),
        "POST by hash: {res}"
    );
    let res = app
        .client
        .get(app.graphql_url())
        .query(&[("extensions", extension(&sha256(&text)).to_string())])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST");
    // Without a query and without a hash, a GET still names what is missing.
    let (status, res) = get(app, &[("extensions", "{}".to_owned())], "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert!(
        error_message(&res).is_some_and(|m| m.contains("missing query")),
        "{res}"
    );
}

both_backends!(batched_operations_resolve_their_hashes_one_by_one, batched);
async fn batched(app: &TestApp) {
    post(app, &registering(QUERY)).await;
    let batch = json!([hashed(QUERY), hashed("{ __typename }"), { "query": "{ __typename }" }]);
    let (status, body) = post(app, &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ran(&body[0]);
    not_found(&body[1]);
    assert_eq!(body[2]["data"]["__typename"], "Query", "{body}");

    // Two logins behind hashes are still two logins in one request.
    let login = "mutation { login(email: \"a@example.com\", password: \"guess one\") { token } }";
    let (_, res) = post(
        app,
        &json!({ "query": login, "extensions": extension(&sha256(login)) }),
    )
    .await;
    assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{res}");
    let by_hash = json!({ "extensions": extension(&sha256(login)) });
    let (status, res) = post(app, &json!([by_hash, by_hash])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert!(
        error_message(&res).is_some_and(|m| m.contains("once per request")),
        "{res}"
    );
}

/// Services mode: one instance registers, another answers by the hash
/// alone; the text lives in Redis under the prefix with the configured TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_shares_the_store_in_services_mode() {
    let ttl = Duration::from_secs(600);
    let Some(a) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.worker = None;
        if let Some(http) = c.http.as_mut() {
            http.persisted_query_ttl = ttl;
        }
    })
    .await
    else {
        return;
    };
    let b = a
        .spawn_sibling(|c| {
            c.worker = None;
            if let Some(http) = c.http.as_mut() {
                http.persisted_query_ttl = ttl;
            }
        })
        .await;
    let hash = sha256(QUERY);
    not_found(&post(&b, &hashed(QUERY)).await.1);
    ran(&post(&a, &registering(QUERY)).await.1);
    ran(&post(&b, &hashed(QUERY)).await.1);
    let (status, body) = get(&b, &get_params(&hash), "application/json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ran(&body);

    let prefix = &a.redis.as_ref().expect("redis").prefix;
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{prefix}apq:{hash}");
    let stored: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(stored.as_deref(), Some(QUERY));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(pttl > 0 && pttl <= 600_000, "PTTL {pttl}");

    // Evicted (or expired) on the store, the hash is unknown everywhere:
    // the client sends the text again.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    not_found(&post(&a, &hashed(QUERY)).await.1);
    ran(&post(&b, &registering(QUERY)).await.1);
    ran(&post(&a, &hashed(QUERY)).await.1);
}
