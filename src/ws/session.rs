//! One socket's life: authenticate `connection_init`, then read the client's
//! messages in order while the socket's subscriptions run, until one side
//! closes, the token expires or is logged out, or the server shuts down.

use std::{ops::ControlFlow, sync::Arc, time::Duration};

use async_graphql::{Data, Executor as _};
use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _, future, stream::SplitSink};
use serde_json::Value;
use tokio::time::{Instant, Sleep};

use super::{
    INIT_TIMEOUT, MAX_MESSAGE_BYTES, PING_INTERVAL,
    book::{Book, Event, SocketSlot},
    close::Close,
    protocol::{ClientMessage, Protocol, ServerMessage},
};
use crate::{
    auth::{api_key::KeyWatch, revocation::Watched},
    graphql::RequestAuth,
    http::HttpState,
};

/// How long an application's socket may stay open (its key never expires).
const KEY_SOCKET_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// `Continue`, or stop: with a close, or without (the socket is gone).
type Step = ControlFlow<Option<Close>>;
type Sink = SplitSink<WebSocket, Message>;

/// What the accepted `connection_init` established.
struct Caller {
    /// The caller's `RequestAuth`, for every operation of this socket.
    data: Arc<Data>,
    /// Notified when the token is found logged out, or the key revoked.
    watched: Watch,
    _slot: SocketSlot,
}

struct Session {
    state: HttpState,
    protocol: Protocol,
    book: Book,
    /// Whether `connection_init` came (accepted or not).
    init_seen: bool,
    caller: Option<Caller>,
}

/// What watches the caller's credential.
enum Watch {
    Token(Watched),
    Key(KeyWatch),
}

impl Watch {
    fn revoked(&self) -> &tokio::sync::Notify {
        match self {
            Self::Token(watched) => &watched.revoked,
            Self::Key(watch) => &watch.revoked,
        }
    }
}

/// What woke the loop.
enum Input {
    Client(Option<Result<Message, axum::Error>>),
    Event(Event),
    PingDue,
    Close(Close),
}

pub async fn serve(socket: WebSocket, state: HttpState, protocol: Protocol) {
    let (mut sink, mut input) = socket.split();
    let metrics = state.api.metrics.clone();
    let _open = metrics.websocket();
    // Subscriptions this socket has added to the gauge.
    let mut counted = 0i64;
    let book = Book::new(state.sockets.max_subscriptions);
    let mut session = Session {
        state,
        protocol,
        book,
        init_seen: false,
        caller: None,
    };
    // Until the ack, the init deadline; then the token's expiry.
    let deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(deadline);
    let mut pings = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let close = loop {
        // Biased: the subscriptions are polled before the next client
        // message is read, so a subscription is live (its resolver has run)
        // before any later message of the client is answered.
        let woke = tokio::select! {
            biased;
            () = session.state.shutdown.cancelled() => Input::Close(Close::GoingAway),
            () = &mut deadline => Input::Close(match session.caller {
                Some(_) => Close::Expired,
                None => Close::InitTimeout,
            }),
            () = revoked(session.caller.as_ref()) => Input::Close(Close::Revoked),
            event = session.book.next() => Input::Event(event),
            message = input.next() => Input::Client(message),
            _ = pings.tick() => Input::PingDue,
        };
        let step = match woke {
            Input::Close(close) => Step::Break(Some(close)),
            Input::PingDue => send(&mut sink, Message::Ping(Default::default())).await,
            Input::Event(Event::Next(id, response)) => {
                metrics.graphql_errors(&response.errors);
                send(&mut sink, protocol.next(&id, response).frame()).await
            }
            Input::Event(Event::Completed(id)) => {
                send(&mut sink, ServerMessage::Complete { id: &id }.frame()).await
            }
            Input::Client(message) => match read(message, protocol) {
                ControlFlow::Continue(Some(message)) => {
                    session
                        .on_message(message, &mut sink, deadline.as_mut())
                        .await
                }
                ControlFlow::Continue(None) => Step::Continue(()),
                ControlFlow::Break(close) => Step::Break(close),
            },
        };
        let running = i64::try_from(session.book.len()).unwrap_or(i64::MAX);
        if running != counted {
            metrics.subscriptions_changed(running - counted);
            counted = running;
        }
        if let Step::Break(close) = step {
            break close;
        }
    };
    metrics.subscriptions_changed(-counted);
    if let Some(close) = close {
        if let Some(error) = close.connection_error(protocol) {
            let _ = sink.send(error.frame()).await;
        }
        let _ = sink.send(close.frame()).await;
    }
    let _ = sink.close().await;
}

/// A frame from the client as a protocol message: `Continue(None)` for
/// control frames, `Break` when the socket ends.
fn read(
    frame: Option<Result<Message, axum::Error>>,
    protocol: Protocol,
) -> ControlFlow<Option<Close>, Option<ClientMessage>> {
    let bytes = match frame {
        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {
            return ControlFlow::Continue(None);
        }
        Some(Err(e)) if too_big(&e) => {
            return ControlFlow::Break(Some(Close::TooBig(MAX_MESSAGE_BYTES)));
        }
        Some(Err(_)) | None => return ControlFlow::Break(None),
    };
    match ClientMessage::parse(&bytes, protocol) {
        Ok(message) => ControlFlow::Continue(Some(message)),
        Err(why) => ControlFlow::Break(Some(Close::Invalid(why))),
    }
}

impl Session {
    async fn on_message(
        &mut self,
        message: ClientMessage,
        sink: &mut Sink,
        deadline: std::pin::Pin<&mut Sleep>,
    ) -> Step {
        match message {
            ClientMessage::Init(payload) => {
                if std::mem::replace(&mut self.init_seen, true) {
                    return Step::Break(Some(Close::TooManyInits));
                }
                if let Err(close) = self.accept(&payload, deadline).await {
                    return Step::Break(Some(close));
                }
                send(sink, ServerMessage::ConnectionAck.frame()).await
            }
            ClientMessage::Subscribe { id, request } => {
                let Some(caller) = &self.caller else {
                    return Step::Break(Some(Close::Unauthorized));
                };
                if self.book.contains(&id) {
                    match self.protocol {
                        Protocol::TransportWs => return Step::Break(Some(Close::DuplicateId(id))),
                        // subscriptions-transport-ws replaces the operation.
                        Protocol::LegacyWs => {
                            self.book.stop(&id);
                        }
                    }
                }
                if self.book.is_full() {
                    let why = format!(
                        "at most {} active subscriptions per socket",
                        self.book.max()
                    );
                    self.state.api.metrics.graphql_error(Some("BAD_USER_INPUT"));
                    let refusal = self.protocol.error(&id, &why, "BAD_USER_INPUT");
                    return send(sink, refusal.frame()).await;
                }
                let responses = self
                    .state
                    .schema
                    .execute_stream(*request, Some(caller.data.clone()));
                self.book.start(id, responses);
                Step::Continue(())
            }
            ClientMessage::Complete { id } => {
                // graphql-transport-ws expects no answer; graphql-ws
                // (subscriptions-transport-ws) confirms.
                if self.book.stop(&id) && self.protocol == Protocol::LegacyWs {
                    return send(sink, ServerMessage::Complete { id: &id }.frame()).await;
                }
                Step::Continue(())
            }
            ClientMessage::Ping => send(sink, ServerMessage::Pong.frame()).await,
            ClientMessage::Pong => Step::Continue(()),
            ClientMessage::Terminate => Step::Break(None),
        }
    }

    /// Authenticates `connection_init`, claims the user's socket slot,
    /// watches the token, and moves the deadline to its expiry.
    async fn accept(
        &mut self,
        payload: &Value,
        deadline: std::pin::Pin<&mut Sleep>,
    ) -> Result<(), Close> {
        let header = authorization(payload).ok_or(Close::Forbidden)?;
        let auth = RequestAuth::authenticate(Some(&header), &self.state.api).await;
        let limits = &self.state.sockets;
        let (slot, watched) = match &auth {
            RequestAuth::User(user) => {
                let slot = SocketSlot::claim(limits, user.user_id)
                    .ok_or(Close::TooManySockets(limits.max_sockets_per_user))?;
                let left =
                    u64::try_from(user.claims.exp - chrono::Utc::now().timestamp()).unwrap_or(0);
                // A second after the subscriptions complete at expiry.
                deadline.reset(Instant::now() + Duration::from_secs(left.saturating_add(1)));
                let watched = self.state.revocation_watch.watch(user.clone());
                (slot, Watch::Token(watched))
            }
            RequestAuth::App(app) => {
                // An application's sockets count under its key id negated,
                // apart from every user's (ids are positive).
                let slot = SocketSlot::claim(limits, -app.key_id)
                    .ok_or(Close::TooManySockets(limits.max_sockets_per_user))?;
                // A key does not expire; the socket lasts until revoked.
                deadline.reset(Instant::now() + KEY_SOCKET_LIFETIME);
                (slot, Watch::Key(self.state.api.api_keys.watch(app)))
            }
            _ => return Err(Close::Forbidden),
        };
        let mut data = Data::default();
        data.insert(auth);
        self.caller = Some(Caller {
            data: Arc::new(data),
            watched,
            _slot: slot,
        });
        Ok(())
    }
}

/// `{"authorization": "Bearer <token>"}` (any case of the key) or
/// `{"token": "<token>"}`, as an `Authorization` header value.
fn authorization(payload: &Value) -> Option<String> {
    let map = payload.as_object()?;
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str().map(str::to_owned))
        .or_else(|| {
            map.get("token")
                .and_then(Value::as_str)
                .map(|t| format!("Bearer {t}"))
        })
}

async fn send(sink: &mut Sink, message: Message) -> Step {
    match sink.send(message).await {
        Ok(()) => Step::Continue(()),
        Err(_) => Step::Break(None),
    }
}

/// Resolves when the caller's token is found revoked; never before the ack.
async fn revoked(caller: Option<&Caller>) {
    match caller {
        Some(caller) => caller.watched.revoked().notified().await,
        None => future::pending().await,
    }
}

/// Whether a read failed because the message was over the size limit.
fn too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
