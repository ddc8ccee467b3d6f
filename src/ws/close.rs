//! Why the server closes a socket, each reason with the close code the
//! graphql-transport-ws spec (or RFC 6455) gives it. No I/O here.

use axum::extract::ws::{CloseFrame, Message};
use serde_json::json;

use super::protocol::{Protocol, ServerMessage};

/// Why the server closes a socket; each reason has its close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// 1001: the server shuts down.
    GoingAway,
    /// 1008: the user has this many sockets open on this instance already.
    TooManySockets(usize),
    /// 1009 (RFC 6455): a message over this many bytes.
    TooBig(usize),
    /// 1011.
    Internal,
    /// 4400: a message that is not one of the protocol's.
    Invalid(String),
    /// 4401: `subscribe` before the `connection_ack`.
    Unauthorized,
    /// 4403: `connection_init` without a valid token.
    Forbidden,
    /// 4403: the token expired.
    Expired,
    /// 4403: the token was logged out.
    Revoked,
    /// 4408: no `connection_init` in time.
    InitTimeout,
    /// 4409 (graphql-transport-ws): `subscribe` with an id still running.
    DuplicateId(String),
    /// 4429: a second `connection_init`.
    TooManyInits,
}

impl Close {
    pub fn code(&self) -> u16 {
        match self {
            Self::GoingAway => 1001,
            Self::TooManySockets(_) => 1008,
            Self::TooBig(_) => 1009,
            Self::Internal => 1011,
            Self::Invalid(_) => 4400,
            Self::Unauthorized => 4401,
            Self::Forbidden | Self::Expired | Self::Revoked => 4403,
            Self::InitTimeout => 4408,
            Self::DuplicateId(_) => 4409,
            Self::TooManyInits => 4429,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Self::GoingAway => "server shutting down".to_owned(),
            Self::TooManySockets(max) => format!("at most {max} open sockets per user"),
            Self::TooBig(max) => format!("message over {max} bytes"),
            Self::Internal => "internal error".to_owned(),
            Self::Invalid(why) => format!("Invalid message received: {why}"),
            Self::Unauthorized => "Unauthorized".to_owned(),
            Self::Forbidden => "Forbidden: connection_init needs {\"authorization\": \"Bearer <token>\"} with a valid token".to_owned(),
            Self::Expired => "Forbidden: token expired".to_owned(),
            Self::Revoked => "Forbidden: token revoked".to_owned(),
            Self::InitTimeout => "Connection initialisation timeout".to_owned(),
            Self::DuplicateId(id) => format!("Subscriber for {id} already exists"),
            Self::TooManyInits => "Too many initialisation requests".to_owned(),
        }
    }

    /// graphql-ws answers a refused `connection_init` with a message before
    /// the close.
    pub fn connection_error(&self, protocol: Protocol) -> Option<ServerMessage<'static>> {
        let answers_init = matches!(self, Self::Forbidden | Self::TooManyInits);
        (protocol == Protocol::LegacyWs && answers_init).then(|| ServerMessage::ConnectionError {
            payload: json!({ "message": self.reason() }),
        })
    }

    pub fn frame(&self) -> Message {
        let mut reason = self.reason();
        // A close reason holds at most 123 bytes.
        while reason.len() > 123 {
            reason.pop();
        }
        Message::Close(Some(CloseFrame {
            code: self.code(),
            reason: reason.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_in_a_close_frame() {
        let Message::Close(Some(frame)) = Close::DuplicateId("x".repeat(500)).frame() else {
            panic!("a close frame");
        };
        assert_eq!(frame.code, 4409);
        assert!(frame.reason.len() <= 123);
    }
}
