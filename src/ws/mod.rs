//! GraphQL over websocket: `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws) subprotocols, at `/graphql/ws`
//! and as an upgrade of `GET /graphql`.
//!
//! Herald speaks both protocols itself: every client message is parsed once
//! into a typed message (`protocol`), each socket runs one loop that reads
//! them in order and polls its subscriptions (`session`), and the
//! subscriptions of a socket are counted by their streams (`book`), never by
//! the text sent. The upgrade checks the origin and the subprotocol
//! (`upgrade`). Close codes are those the graphql-transport-ws spec defines
//! (see `close::Close`); a token that expires or is logged out (checked
//! every 2 s, for all of an instance's sockets in one batch:
//! `auth::revocation::RevocationWatch`) closes the socket with 4403, and so
//! does an application's key once revoked (`auth::api_key`).

mod book;
mod close;
mod protocol;
mod session;
mod upgrade;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use upgrade::upgrade;

/// How long a client has to send `connection_init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle socket gets a ping frame, so proxies keep it open.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// How often an open socket checks whether its token was logged out.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(2);
/// Largest websocket message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

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
