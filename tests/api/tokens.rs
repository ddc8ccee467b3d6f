//! Tokens a client might send to `me`: good, expired, tampered, unsigned,
//! foreign; and tokens surviving a restart.

use std::time::Duration;

use base64::Engine as _;
use herald::auth::{Claims, JwtKeys};

use crate::both_backends;
use crate::helpers::{TEST_SECRET, TestApp, error_code, unique_email};

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The claims of a token the server issued.
fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&b64().decode(payload).expect("base64")).expect("claims")
}

async fn assert_rejected(app: &TestApp, token: &str, why: &str) {
    let body = app.me(Some(token)).await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{why}: {body}");
    assert!(body["data"].is_null(), "{why}: {body}");
}

both_backends!(me_accepts_the_token_register_returned, valid);
async fn valid(app: &TestApp) {
    let email = unique_email("valid");
    let token = app.token_for(&email).await;
    let claims = claims_of(&token);
    assert_eq!(claims.iss, "herald");
    assert!(claims.exp > claims.iat && !claims.jti.is_empty());
    let body = app.me(Some(&token)).await;
    assert_eq!(body["data"]["me"]["email"], email);
    assert_eq!(body["data"]["me"]["id"], claims.sub);
}

both_backends!(me_rejects_an_expired_token, expired);
async fn expired(app: &TestApp) {
    let token = app.token_for(&unique_email("expired")).await;
    let mut claims = claims_of(&token);
    // Past the 5 s leeway.
    claims.exp = chrono::Utc::now().timestamp() - 10;
    claims.iat = claims.exp - 3600;
    let keys = JwtKeys::new(TEST_SECRET, Duration::from_secs(3600));
    let expired = keys.sign(&claims).expect("sign");
    assert_rejected(app, &expired, "expired").await;
    let body = app.me(Some(&expired)).await;
    assert_eq!(body["errors"][0]["message"], "token expired");
}

both_backends!(me_rejects_a_tampered_token, tampered);
async fn tampered(app: &TestApp) {
    let victim = app.token_for(&unique_email("victim")).await;
    let attacker = app.token_for(&unique_email("attacker")).await;
    // The attacker swaps in the victim's payload under its own signature.
    let parts: Vec<&str> = attacker.split('.').collect();
    let victim_payload = victim.split('.').nth(1).expect("payload");
    let forged = format!("{}.{}.{}", parts[0], victim_payload, parts[2]);
    assert_rejected(app, &forged, "payload swapped").await;
    // Or edits its own `sub`.
    let mut claims = claims_of(&attacker);
    claims.sub = claims_of(&victim).sub;
    let edited = b64().encode(serde_json::to_vec(&claims).expect("json"));
    let forged = format!("{}.{}.{}", parts[0], edited, parts[2]);
    assert_rejected(app, &forged, "sub edited").await;
}

both_backends!(me_rejects_an_unsigned_alg_none_token, alg_none);
async fn alg_none(app: &TestApp) {
    let token = app.token_for(&unique_email("none")).await;
    let header = b64().encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = token.split('.').nth(1).expect("payload");
    assert_rejected(app, &format!("{header}.{payload}."), "alg none").await;
    // Also with an HS512 header over a real payload.
    let header = b64().encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let sig = token.split('.').nth(2).expect("sig");
    assert_rejected(app, &format!("{header}.{payload}.{sig}"), "alg swapped").await;
}

both_backends!(me_rejects_a_token_signed_with_another_key, wrong_key);
async fn wrong_key(app: &TestApp) {
    let token = app.token_for(&unique_email("wrongkey")).await;
    let other = JwtKeys::new(
        b"some-other-secret-some-other-secret!",
        Duration::from_secs(60),
    );
    let forged = other.sign(&claims_of(&token)).expect("sign");
    assert_rejected(app, &forged, "wrong key").await;
}

both_backends!(me_rejects_malformed_authorization_headers, malformed);
async fn malformed(app: &TestApp) {
    let token = app.token_for(&unique_email("malformed")).await;
    for header in [
        format!("Basic {token}"),
        token.clone(),
        "Bearer".into(),
        "Bearer x.y.z".into(),
    ] {
        let res = app
            .client
            .post(app.graphql_url())
            .header("authorization", &header)
            .json(&serde_json::json!({ "query": "{ me { id } }" }))
            .send()
            .await
            .expect("request");
        let body: serde_json::Value = crate::leaks::json_body(res).await;
        assert_eq!(
            error_code(&body),
            Some("UNAUTHENTICATED"),
            "{header}: {body}"
        );
    }
    // The scheme is case-insensitive.
    let res = app
        .client
        .post(app.graphql_url())
        .header("authorization", format!("bearer {token}"))
        .json(&serde_json::json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("request");
    let body: serde_json::Value = crate::leaks::json_body(res).await;
    assert!(body["data"]["me"]["id"].is_string(), "{body}");
}
