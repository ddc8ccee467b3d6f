//! A graphql-ws client for the tests: connect with a subprotocol, send and
//! read JSON messages, wait for the close code.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use crate::helpers::TestApp;

pub const WITHIN: Duration = Duration::from_secs(20);
pub const SUBSCRIPTION: &str = "subscription { notificationStatusChanged { previousStatus status at notification { id title status recipient { email } } } }";

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(app: &TestApp, path: &str, protocol: &str) -> Socket {
    let url = format!("{}{path}", app.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        protocol,
        "the server speaks the offered subprotocol"
    );
    socket
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON text message, skipping pings and keep-alives.
pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(WITHIN, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(text) = msg {
            let value: Value = serde_json::from_str(&text).expect("json");
            crate::leaks::assert_value_clean(&value);
            if value["type"] != "ka" && value["type"] != "ping" && value["type"] != "pong" {
                return value;
            }
        }
    }
}

/// The close code the server ends with.
pub async fn close_code(socket: &mut Socket, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                let frame = frame?;
                crate::leaks::assert_clean("a close reason", &frame.reason);
                return Some(u16::from(frame.code));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    }
}

/// A graphql-transport-ws socket that has sent `connection_init` with
/// `token` (no answer read yet).
pub async fn init_modern(app: &TestApp, path: &str, token: &str) -> Socket {
    let mut socket = connect(app, path, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    socket
}

/// A graphql-transport-ws socket, authenticated and acknowledged.
pub async fn acked_modern(app: &TestApp, path: &str, token: &str) -> Socket {
    let mut socket = init_modern(app, path, token).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

/// A graphql-transport-ws subscription, acknowledged and started.
pub async fn subscribe_modern(app: &TestApp, path: &str, token: &str) -> Socket {
    let mut socket = acked_modern(app, path, token).await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION } }),
    )
    .await;
    socket
}
