//! logout and logoutEverywhere: revoked tokens stop working on HTTP and on
//! open websockets, on every instance; other tokens keep working.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use crate::both_backends;
use crate::helpers::{PASSWORD, TestApp, error_code, unique_email};

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

/// An acknowledged, subscribed graphql-transport-ws socket.
async fn open_socket(
    app: &TestApp,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("{}/graphql/ws", app.url.replace("http://", "ws://"))
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connects");
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .expect("init");
    let ack = socket.next().await.expect("open").expect("message");
    assert!(ack.to_string().contains("connection_ack"), "{ack}");
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { notificationStatusChanged { status } }" } });
    socket
        .send(Message::Text(sub.to_string().into()))
        .await
        .expect("subscribe");
    socket
}

async fn closed_with(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

both_backends!(logout_ends_one_token_and_its_websocket, one);
async fn one(app: &TestApp) {
    let email = unique_email("logout");
    let token = app.token_for(&email).await;
    let other = second_token(app, &email).await;
    let mut socket = open_socket(app, &token).await;

    assert_eq!(logout(app, &token, false).await["data"]["logout"], true);
    let me = app.me(Some(&token)).await;
    assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");
    assert_eq!(me["errors"][0]["message"], "token revoked");
    assert_eq!(
        closed_with(&mut socket).await,
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
    let mut request = format!("{}/graphql/ws", app.url.replace("http://", "ws://"))
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connects");
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {first}") } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .expect("init");
    assert_eq!(closed_with(&mut socket).await, Some(4403));
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
