//! graphql-transport-ws subscriptions, as a browser client opens them.

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Every status change of the caller's notifications.
pub const STATUS_CHANGES: &str =
    "subscription { notificationStatusChanged { status notification { id } } }";

/// The caller's inbox events after `$after` (see `next_event`).
pub const INBOX_EVENTS: &str =
    "subscription($after: Int) { inboxEvents(after: $after) { __typename seq } }";

/// Opens a socket on the GraphQL endpoint `url`, authenticated with
/// `token`, and subscribes (id "1") to `query` with `variables`.
pub async fn subscribe(
    url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Socket> {
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let mut request = ws_url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await?;
    match socket.next().await {
        Some(Ok(Message::Text(t))) if t.contains("connection_ack") => {}
        other => bail!("no connection_ack: {other:?}"),
    }
    let sub = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": query, "variables": variables } });
    socket.send(Message::Text(sub.to_string().into())).await?;
    Ok(socket)
}

/// What an `INBOX_EVENTS` subscription received.
#[derive(Debug)]
pub enum Received {
    /// An event with its seq; `resync` for an InboxResync.
    Event { seq: i64, resync: bool },
    /// An `error` or `complete` message, or a payload with errors.
    Failed(String),
    /// Pings and other protocol messages.
    Other,
}

/// Reads one text message of an `INBOX_EVENTS` subscription.
pub fn inbox_event(text: &str) -> Received {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return Received::Failed(format!("not JSON: {text}"));
    };
    match msg["type"].as_str() {
        Some("next") => {
            let event = &msg["payload"]["data"]["inboxEvents"];
            match event["seq"].as_i64() {
                Some(seq) if msg["payload"].get("errors").is_none() => Received::Event {
                    seq,
                    resync: event["__typename"] == "InboxResync",
                },
                _ => Received::Failed(text.to_owned()),
            }
        }
        Some("error" | "complete") => Received::Failed(text.to_owned()),
        _ => Received::Other,
    }
}
