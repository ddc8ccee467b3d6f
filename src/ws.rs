//! GraphQL over websocket: `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws) subprotocols, at `/graphql/ws`
//! and as an upgrade of `GET /graphql`.
//!
//! async-graphql speaks the protocol; this module authenticates the
//! `connection_init` payload and gives the closes the codes the
//! graphql-transport-ws spec defines (async-graphql uses 1002/1011):
//! 4403 bad or missing token, 4401 subscribe before the ack, 4400 an invalid
//! message, 4408 no `connection_init` within 10 s, 4429 a second init,
//! 1009 (RFC 6455) a message over 64 KiB;
//! and 4403 again when the token expires (its subscriptions complete first)
//! or is logged out (checked every 2 s, for all of an instance's sockets in
//! one batch: `auth::revocation::RevocationWatch`).

use std::{
    collections::{HashMap, HashSet},
    str::FromStr as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_graphql::{
    Data,
    http::{ALL_WEBSOCKET_PROTOCOLS, WebSocket as GraphQLWebSocket, WebSocketProtocols, WsMessage},
};
use axum::{
    extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt as _, StreamExt as _, future};
use serde_json::Value;

use crate::{
    auth::{AuthUser, JwtKeys, revocation::Watched},
    graphql::RequestAuth,
    http::HttpState,
};

/// How long a client has to send `connection_init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle socket gets a ping frame, so proxies keep it open.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// How often an open socket checks whether its token was logged out.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(2);
/// Largest websocket message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const FORBIDDEN: &str =
    "Forbidden: connection_init needs {\"authorization\": \"Bearer <token>\"} with a valid token";

/// Upgrades to a GraphQL websocket, or refuses a request without a
/// GraphQL subprotocol.
pub fn upgrade(state: HttpState, headers: &HeaderMap, ws: WebSocketUpgrade) -> Response {
    // Browsers send Origin on every websocket and apply no CORS to it: the
    // server must. Clients that send none (not browsers) are let through.
    // A page served by Herald itself (GraphiQL) is always welcome.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| state.cors.allows(o) || same_origin(o, headers))
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        });
    let Some(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Idle sockets hold little: the read buffer is allocated up front
        // for every connection (128 KiB by default) while clients send a few
        // hundred bytes at a time; longer messages are read in several
        // chunks, up to MAX_MESSAGE_BYTES.
        .read_buffer_size(2 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| serve(socket, state, protocol))
}

/// Whether `origin` names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    url::Url::parse(origin).is_ok_and(|url| {
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return false,
        };
        authority.eq_ignore_ascii_case(host)
    })
}

/// `{"authorization": "Bearer <token>"}` (any case of the key) or
/// `{"token": "<token>"}`.
fn authenticate(payload: &Value, jwt: &JwtKeys) -> Option<RequestAuth> {
    let map = payload.as_object()?;
    let header = map
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str().map(str::to_owned))
        .or_else(|| {
            map.get("token")
                .and_then(Value::as_str)
                .map(|t| format!("Bearer {t}"))
        })?;
    match RequestAuth::from_authorization(Some(&header), jwt) {
        auth @ RequestAuth::User(_) => Some(auth),
        _ => None,
    }
}

/// Per-instance bounds on websockets.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Active subscriptions on one socket.
    pub max_subscriptions: usize,
    /// Open sockets of one user on one instance.
    pub max_sockets_per_user: usize,
    /// Open sockets per user id, on this instance.
    pub open: Arc<Mutex<HashMap<i64, usize>>>,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_subscriptions: crate::config::defaults::WS_MAX_SUBSCRIPTIONS.default,
            max_sockets_per_user: crate::config::defaults::WS_MAX_SOCKETS_PER_USER.default,
            open: Arc::default(),
        }
    }
}

/// One open socket counted against its user until dropped.
struct SocketSlot {
    open: Arc<Mutex<HashMap<i64, usize>>>,
    user_id: i64,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

/// The subscriptions one socket runs, by id, and the ids refused over the
/// limit that still need their error sent. (Shared by the input filter and
/// the socket loop; a `Notify` rather than a channel wakes the loop, which
/// spares every idle socket a channel's eager allocation.)
#[derive(Default)]
struct SubscriptionBook {
    ids: Mutex<BookIds>,
    refused: tokio::sync::Notify,
}

#[derive(Default)]
struct BookIds {
    active: HashSet<String>,
    refused: Vec<String>,
    /// The client sent a message over MAX_MESSAGE_BYTES (the read failed).
    oversized: bool,
}

/// Whether a read failed because the message was over the size limit.
fn too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

impl SubscriptionBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, BookIds> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error a client gets for a subscription over the per-socket limit.
fn too_many_subscriptions(id: &str, protocol: WebSocketProtocols, max: usize) -> String {
    let error = serde_json::json!({
        "message": format!("at most {max} active subscriptions per socket"),
        "extensions": { "code": "BAD_USER_INPUT" },
    });
    let payload = match protocol {
        WebSocketProtocols::GraphQLWS => serde_json::json!([error]),
        WebSocketProtocols::SubscriptionsTransportWS => error,
    };
    serde_json::json!({ "id": id, "type": "error", "payload": payload }).to_string()
}

async fn serve(socket: WebSocket, state: HttpState, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    // Subscriptions this socket has running, by id; over the limit, a new
    // one is answered with an error instead of reaching the executor.
    let book: Arc<SubscriptionBook> = Arc::default();
    let max_subscriptions = state.sockets.max_subscriptions;
    let counted = book.clone();
    let input = stream
        .take_while({
            let book = book.clone();
            move |msg| {
                if let Err(e) = msg
                    && too_big(e)
                {
                    book.lock().oversized = true;
                }
                future::ready(msg.is_ok())
            }
        })
        .filter_map(move |msg| {
            let bytes = match msg {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            };
            let bytes = bytes.and_then(|bytes| {
                let message: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let id = message["id"].as_str().unwrap_or_default().to_owned();
                let mut ids = counted.lock();
                match message["type"].as_str() {
                    Some("subscribe" | "start") => {
                        if ids.active.len() >= max_subscriptions && !ids.active.contains(&id) {
                            ids.refused.push(id);
                            counted.refused.notify_one();
                            return None;
                        }
                        ids.active.insert(id);
                    }
                    Some("complete" | "stop") => {
                        ids.active.remove(&id);
                    }
                    _ => {}
                }
                Some(bytes)
            });
            future::ready(bytes)
        });
    let jwt = state.api.jwt.clone();
    let revocations = state.api.revocations.clone();
    // The caller, once connection_init has been accepted.
    let caller = Arc::new(Mutex::new(None::<AuthUser>));
    let caller_cell = caller.clone();
    let protocol_messages = GraphQLWebSocket::new(state.schema.clone(), input, protocol)
        .on_connection_init(move |payload| {
            let auth = authenticate(&payload, &jwt);
            let revocations = revocations.clone();
            let caller_cell = caller_cell.clone();
            async move {
                let auth = match auth {
                    Some(auth) => auth.unless_revoked(&*revocations).await,
                    None => return Err(async_graphql::Error::new(FORBIDDEN)),
                };
                let RequestAuth::User(user) = &auth else {
                    return Err(async_graphql::Error::new(FORBIDDEN));
                };
                *caller_cell.lock().unwrap_or_else(PoisonError::into_inner) = Some(user.clone());
                let mut data = Data::default();
                data.insert(auth);
                Ok(data)
            }
        })
        .keepalive_timeout(None);
    futures_util::pin_mut!(protocol_messages);

    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mut pings =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    // The token, watched for revocation from the ack on.
    let mut watched: Option<Watched> = None;
    let mut acked = false;
    let mut _slot: Option<SocketSlot> = None;
    // Until the ack, a deadline far away; then the token's expiry.
    let token_expiry = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(token_expiry);
    loop {
        let next = tokio::select! {
            () = &mut token_expiry, if acked => {
                let _ = sink.send(close(4403, "Forbidden: token expired")).await;
                break;
            }
            () = state.shutdown.cancelled() => {
                let _ = sink.send(close(1001, "server shutting down")).await;
                break;
            }
            () = &mut init_deadline, if !acked => {
                let _ = sink.send(close(4408, "Connection initialisation timeout")).await;
                break;
            }
            () = book.refused.notified() => {
                let refused = std::mem::take(&mut book.lock().refused);
                let mut failed = false;
                for id in refused {
                    let text = too_many_subscriptions(&id, protocol, max_subscriptions);
                    failed = sink.send(Message::Text(text.into())).await.is_err();
                    if failed {
                        break;
                    }
                }
                if failed {
                    break;
                }
                continue;
            }
            () = revoked(watched.as_ref()) => {
                let _ = sink.send(close(4403, "Forbidden: token revoked")).await;
                break;
            }
            _ = pings.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
                continue;
            }
            next = protocol_messages.next() => next,
        };
        let sent = match next {
            Some(WsMessage::Text(text)) => {
                // A subscription the server completed no longer counts.
                if text.contains("\"complete\"")
                    && let Ok(message) = serde_json::from_str::<Value>(&text)
                    && let Some(id) = message["id"].as_str()
                {
                    book.lock().active.remove(id);
                }
                if !acked && text.contains("\"connection_ack\"") {
                    acked = true;
                    let user = caller
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    let user_id = user.as_ref().map(|u| u.user_id);
                    let exp = user.as_ref().map(|u| u.claims.exp);
                    watched = user.map(|user| state.revocation_watch.watch(user));
                    if let Some(user_id) = user_id {
                        let open = state.sockets.open.clone();
                        let count = {
                            let mut map = open.lock().unwrap_or_else(PoisonError::into_inner);
                            let n = map.entry(user_id).or_insert(0);
                            *n += 1;
                            *n
                        };
                        _slot = Some(SocketSlot { open, user_id });
                        if count > state.sockets.max_sockets_per_user {
                            let reason = format!(
                                "at most {} open sockets per user",
                                state.sockets.max_sockets_per_user
                            );
                            let _ = sink.send(close(1008, &reason)).await;
                            break;
                        }
                    }
                    let left = exp.map_or(0, |exp| exp - chrono::Utc::now().timestamp());
                    // A second after the subscriptions complete at expiry.
                    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1);
                    token_expiry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + left);
                }
                sink.send(Message::Text(text.into())).await
            }
            Some(WsMessage::Close(code, reason)) => {
                let code = match code {
                    1002 if reason.starts_with("Forbidden") => 4403,
                    1002 => 4400,
                    1011 => 4401,
                    other => other,
                };
                let _ = sink.send(close(code, &reason)).await;
                break;
            }
            None => {
                if book.lock().oversized {
                    let reason = format!("message over {MAX_MESSAGE_BYTES} bytes");
                    let _ = sink.send(close(1009, &reason)).await;
                }
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Resolves when the watched token is found revoked; never without one.
async fn revoked(watched: Option<&Watched>) {
    match watched {
        Some(watched) => watched.revoked.notified().await,
        None => future::pending().await,
    }
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes.
    let mut reason = reason.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
