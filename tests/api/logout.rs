//! logout and logoutEverywhere: revoked tokens stop working on HTTP and on
//! open websockets, on every instance; other tokens keep working.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{PASSWORD, TestApp, error_code, unique_email};
use crate::ws_client::{close_code, init_modern, subscribe_modern};

async fn logout(app: &TestApp, token: &str, everywhere: bool) -> Value {
    let field = if everywhere {
        "logoutEverywhere"
    } else {
        "logout"
    };
    app.gql(&format!("mutation {{ {field} }}"), json!({}), Some(token))
        .await
}

async fn second_token(app: &TestApp, email: &str) -> String {
    let body = app.login(email, PASSWORD).await;
    body["data"]["login"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

both_backends!(logout_ends_one_token_and_its_websocket, one);
async fn one(app: &TestApp) {
    let email = unique_email("logout");
    let token = app.token_for(&email).await;
    let other = second_token(app, &email).await;
    let mut socket = subscribe_modern(app, "/graphql/ws", &token).await;

    assert_eq!(logout(app, &token, false).await["data"]["logout"], true);
    let me = app.me(Some(&token)).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");
    assert_eq!(me["errors"][0]["message"], "token revoked");
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(6)).await,
        Some(4403),
        "the socket closes within a few seconds"
    );
    // The user's other token is untouched.
    assert!(app.me(Some(&other)).await["data"]["me"]["email"].is_string());
}

both_backends!(logout_everywhere_ends_every_token_issued_before, everywhere);
async fn everywhere(app: &TestApp) {
    let email = unique_email("everywhere");
    let first = app.token_for(&email).await;
    let second = second_token(app, &email).await;
    assert_eq!(
        logout(app, &second, true).await["data"]["logoutEverywhere"],
        true
    );
    for token in [&first, &second] {
        assert_eq!(
            error_code(&app.me(Some(token)).await),
            Some("UNAUTHENTICATED")
        );
    }
    // Logging in again works.
    let fresh = second_token(app, &email).await;
    assert!(app.me(Some(&fresh)).await["data"]["me"]["email"].is_string());
    // And a logged-out token cannot open a websocket.
    let mut socket = init_modern(app, "/graphql/ws", &first).await;
    assert_eq!(
        close_code(&mut socket, Duration::from_secs(6)).await,
        Some(4403)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_holds_on_every_instance() {
    let Some(first) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let second = first.spawn_sibling(|c| c.worker = None).await;
    let token = first.token_for(&unique_email("across")).await;
    assert!(second.me(Some(&token)).await["data"]["me"].is_object());
    logout(&first, &token, false).await;
    assert_eq!(
        error_code(&second.me(Some(&token)).await),
        Some("UNAUTHENTICATED")
    );
}

both_backends!(
    revocations_close_exactly_the_sockets_of_revoked_tokens,
    many_sockets
);
/// The open sockets of an instance are checked in one batch: the answer for
/// each must reach its own socket. Tokens A and B of one user and C of
/// another hold three sockets each, opened interleaved; logging out A closes
/// A's, logging out everywhere for C's user closes C's, and B's live on.
async fn many_sockets(app: &TestApp) {
    use crate::ws_client::{next_json, subscribe_modern as open};
    let ada = unique_email("ada");
    let bob = unique_email("bob");
    let (a, c) = (app.token_for(&ada).await, app.token_for(&bob).await);
    let b = second_token(app, &ada).await;
    let (mut of_a, mut of_b, mut of_c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        of_a.push(open(app, "/graphql/ws", &a).await);
        of_b.push(open(app, "/graphql/ws", &b).await);
        of_c.push(open(app, "/graphql/ws", &c).await);
    }
    logout(app, &a, false).await;
    for socket in &mut of_a {
        assert_eq!(close_code(socket, Duration::from_secs(6)).await, Some(4403));
    }
    logout(app, &c, true).await;
    for socket in &mut of_c {
        assert_eq!(close_code(socket, Duration::from_secs(6)).await, Some(4403));
    }
    let id = app.send_ok(&b, "still here", "body").await;
    for socket in &mut of_b {
        let event = next_json(socket).await;
        assert_eq!(
            event["payload"]["data"]["notificationStatusChanged"]["notification"]["id"],
            id.as_str(),
            "{event}"
        );
    }
}

/// Revocation checks fail open: while Redis is unreachable a valid token
/// keeps working, over HTTP and for a new websocket, and an open socket is
/// still served; once Redis is back, a logout closes both sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_checks_fail_open_while_redis_is_unreachable() {
    use crate::relay::Relay;
    use crate::ws_client::{acked_modern, until_live};
    let relay = Relay::to_redis().await;
    let relayed = relay.url();
    let Some(app) = TestApp::spawn_with(crate::helpers::Backend::Postgres, |c| {
        c.worker = None;
        if let Some(r) = c.redis.as_mut() {
            r.url = secrecy::SecretString::from(relayed);
        }
    })
    .await
    else {
        return;
    };
    let token = app.token_for(&unique_email("fail-open")).await;
    let mut open = subscribe_modern(&app, "/graphql/ws", &token).await;
    until_live(&mut open).await;

    relay.cut();
    let me = app.me(Some(&token)).await;
    assert!(me["data"]["me"]["email"].is_string(), "{me}");
    let mut fresh = acked_modern(&app, "/graphql/ws", &token).await;
    until_live(&mut open).await;

    relay.restore();
    // The first commands after the outage may still fail while the
    // connection comes back; the logout lands within the deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while logout(&app, &token, false).await["data"]["logout"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "logout never landed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for socket in [&mut open, &mut fresh] {
        assert_eq!(close_code(socket, Duration::from_secs(6)).await, Some(4403));
    }
}
