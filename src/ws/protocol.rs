//! The two subprotocols' messages as types: every client message is parsed
//! once into a [`ClientMessage`], every server message is written from a
//! [`ServerMessage`]. No I/O here.

use async_graphql::{Request, Response};
use axum::extract::ws::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::close::Close;

/// The subprotocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (graphql-ws, Apollo Client, urql).
    TransportWs,
    /// `graphql-ws`: the legacy subscriptions-transport-ws.
    LegacyWs,
}

impl Protocol {
    /// The `Sec-WebSocket-Protocol` name, matched in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::TransportWs, Self::LegacyWs]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TransportWs => "graphql-transport-ws",
            Self::LegacyWs => "graphql-ws",
        }
    }

    /// One result of operation `id`.
    pub fn next(self, id: &str, payload: Response) -> ServerMessage<'_> {
        match self {
            Self::TransportWs => ServerMessage::Next { id, payload },
            Self::LegacyWs => ServerMessage::Data { id, payload },
        }
    }

    /// Operation `id` refused before it ran: the spec's `error` message
    /// (a list of errors in graphql-transport-ws, one error in graphql-ws).
    pub fn error<'a>(self, id: &'a str, message: &str, code: &str) -> ServerMessage<'a> {
        let error = json!({ "message": message, "extensions": { "code": code } });
        let payload = match self {
            Self::TransportWs => json!([error]),
            Self::LegacyWs => error,
        };
        ServerMessage::Error { id, payload }
    }
}

/// What a client sends, in either subprotocol.
#[derive(Debug)]
pub enum ClientMessage {
    /// `connection_init` and its payload (`null` when absent).
    Init(Value),
    /// `subscribe` (`start` in graphql-ws): run an operation.
    Subscribe { id: String, request: Box<Request> },
    /// `complete` (`stop` in graphql-ws): the client stops listening.
    Complete { id: String },
    /// `ping` (graphql-transport-ws), answered with a `pong`.
    Ping,
    /// `pong` (graphql-transport-ws): nothing to do.
    Pong,
    /// `connection_terminate` (graphql-ws): the client leaves.
    Terminate,
}

/// Every message type of both protocols, as JSON spells it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    ConnectionInit {
        #[serde(default)]
        payload: Value,
    },
    Subscribe {
        id: String,
        payload: Box<Request>,
    },
    Start {
        id: String,
        payload: Box<Request>,
    },
    Complete {
        id: String,
    },
    Stop {
        id: String,
    },
    Ping {},
    Pong {},
    ConnectionTerminate {},
}

impl ClientMessage {
    /// Parses one message; a message of the other protocol is invalid too.
    pub fn parse(bytes: &[u8], protocol: Protocol) -> Result<Self, String> {
        use Protocol::{LegacyWs, TransportWs};
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(match (protocol, wire) {
            (_, Wire::ConnectionInit { payload }) => Self::Init(payload),
            (TransportWs, Wire::Subscribe { id, payload })
            | (LegacyWs, Wire::Start { id, payload }) => Self::Subscribe {
                id,
                request: payload,
            },
            (TransportWs, Wire::Complete { id }) | (LegacyWs, Wire::Stop { id }) => {
                Self::Complete { id }
            }
            (TransportWs, Wire::Ping {}) => Self::Ping,
            (TransportWs, Wire::Pong {}) => Self::Pong,
            (LegacyWs, Wire::ConnectionTerminate {}) => Self::Terminate,
            (protocol, _) => return Err(format!("not a {} message", protocol.name())),
        })
    }
}

/// What the server sends, in either subprotocol.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    ConnectionAck,
    /// graphql-ws: `connection_init` refused (the socket closes next).
    ConnectionError {
        payload: Value,
    },
    /// graphql-transport-ws: a result.
    Next {
        id: &'a str,
        payload: Response,
    },
    /// graphql-ws: a result.
    Data {
        id: &'a str,
        payload: Response,
    },
    Error {
        id: &'a str,
        payload: Value,
    },
    /// The operation is over: no more results for `id`.
    Complete {
        id: &'a str,
    },
    Pong,
}

impl ServerMessage<'_> {
    pub fn frame(&self) -> Message {
        match serde_json::to_string(self) {
            Ok(text) => Message::Text(text.into()),
            // Not expected (every map key is a string): close rather than panic.
            Err(e) => {
                tracing::error!(error = %e, "a websocket message did not serialise");
                Close::Internal.frame()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_reads_only_its_own_message_types() {
        let subscribe = br#"{"id":"1","type":"subscribe","payload":{"query":"{ __typename }"}}"#;
        let start = br#"{"id":"1","type":"start","payload":{"query":"{ __typename }"}}"#;
        assert!(matches!(
            ClientMessage::parse(subscribe, Protocol::TransportWs),
            Ok(ClientMessage::Subscribe { id, .. }) if id == "1"
        ));
        assert!(matches!(
            ClientMessage::parse(start, Protocol::LegacyWs),
            Ok(ClientMessage::Subscribe { id, .. }) if id == "1"
        ));
        assert!(ClientMessage::parse(start, Protocol::TransportWs).is_err());
        assert!(ClientMessage::parse(subscribe, Protocol::LegacyWs).is_err());
        assert!(matches!(
            ClientMessage::parse(br#"{"type":"stop","id":"9"}"#, Protocol::LegacyWs),
            Ok(ClientMessage::Complete { id }) if id == "9"
        ));
        assert!(matches!(
            ClientMessage::parse(br#"{"type":"connection_init"}"#, Protocol::LegacyWs),
            Ok(ClientMessage::Init(Value::Null))
        ));
        for bad in [&b"{}"[..], b"[]", b"not json", br#"{"type":"subscribe"}"#] {
            assert!(ClientMessage::parse(bad, Protocol::TransportWs).is_err());
        }
    }

    #[test]
    fn a_result_is_a_next_or_a_data_message_whatever_it_holds() {
        let payload = || Response::new(async_graphql::Value::from("complete"));
        let text = |m: Message| m.into_text().expect("text").to_string();
        let next: Value =
            serde_json::from_str(&text(Protocol::TransportWs.next("1", payload()).frame()))
                .expect("json");
        assert_eq!(
            next,
            json!({ "type": "next", "id": "1", "payload": { "data": "complete" } })
        );
        let data: Value =
            serde_json::from_str(&text(Protocol::LegacyWs.next("1", payload()).frame()))
                .expect("json");
        assert_eq!(data["type"], "data");
    }
}
