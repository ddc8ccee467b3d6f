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

/// The next JSON text message, skipping pings and keep-alives, within
/// [`WITHIN`] (for the whole wait: the server pings idle sockets every 15 s).
pub async fn next_json(socket: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let value = next_text(socket, deadline).await;
        if value["type"] != "ka" && value["type"] != "ping" && value["type"] != "pong" {
            return value;
        }
    }
}

/// The next JSON text message before `deadline`.
async fn next_text(socket: &mut Socket, deadline: tokio::time::Instant) -> Value {
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(text) = msg {
            let value: Value = serde_json::from_str(&text).expect("json");
            crate::leaks::assert_value_clean(&value);
            return value;
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
    subscribe(&mut socket, "1").await;
    socket
}

/// Sends a graphql-transport-ws `subscribe` to [`SUBSCRIPTION`] as `id`.
pub async fn subscribe(socket: &mut Socket, id: &str) {
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": SUBSCRIPTION } }),
    )
    .await;
}

/// Reads the `error` that refuses subscription `id` over the per-socket
/// limit; returns its message.
pub async fn refused(socket: &mut Socket, id: &str) -> String {
    let refused = next_json(socket).await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some(id)),
        "{refused}"
    );
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    refused["payload"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Returns once every subscription sent earlier on this graphql-transport-ws
/// socket is live: the server reads a socket's messages in order and starts
/// each subscription before it reads the next message, so the `pong` to a
/// `ping` sent now proves it. Fails on any other message meanwhile.
pub async fn until_live(socket: &mut Socket) {
    send(socket, json!({ "type": "ping" })).await;
    let value = next_text(socket, tokio::time::Instant::now() + WITHIN).await;
    assert_eq!(value["type"], "pong", "a message before the pong: {value}");
}

/// The next message, which must be a `next` about notification `id`.
pub async fn next_event(socket: &mut Socket, id: &str) -> Value {
    let msg = next_json(socket).await;
    assert_eq!(msg["type"], "next", "{msg}");
    assert_eq!(
        msg["payload"]["data"]["notificationStatusChanged"]["notification"]["id"], id,
        "{msg}"
    );
    msg
}

/// [`until_live`] for graphql-ws, which has no ping: the answer to a query
/// sent now (its `data`, then `complete`) proves the earlier subscriptions
/// live. Fails on any other message meanwhile.
pub async fn until_live_legacy(socket: &mut Socket) {
    send(
        socket,
        json!({ "id": "live", "type": "start", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    for expected in ["data", "complete"] {
        let msg = next_json(socket).await;
        assert_eq!(
            (msg["type"].as_str(), msg["id"].as_str()),
            (Some(expected), Some("live")),
            "{msg}"
        );
    }
}

/// Returns once `app` receives the inbox hints it publishes: in services
/// mode its Redis Pub/Sub subscription attaches in the background after the
/// start. Publishes a marker hint (of no user, so no subscriber sees it)
/// every 100 ms until one comes back (a failed publish, as right after
/// Redis comes back, is tried again).
pub async fn until_events_flow(app: &TestApp) {
    use tokio::sync::broadcast::error::RecvError;
    const MARKER: i64 = -1;
    let marker = herald::wire::InboxHintV1 {
        user_id: MARKER,
        event: None,
    };
    let mut hints = app.events.subscribe_inbox(MARKER);
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut failed = None;
    loop {
        if let Err(e) = app.events.publish_inbox(&marker).await {
            failed = Some(e);
        }
        let back = tokio::time::timeout(Duration::from_millis(100), async {
            loop {
                match hints.recv().await {
                    Ok(herald::pubsub::InboxFeed::Hint(_)) => break,
                    Ok(herald::pubsub::InboxFeed::Resume) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => panic!("the event bus closed"),
                }
            }
        });
        if back.await.is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "published events never came back (last failed publish: {failed:?})"
        );
    }
}
