//! The websocket upgrade: the browser origin check and the choice of
//! subprotocol. Nothing here reads or writes a message.

use axum::{
    extract::ws::WebSocketUpgrade,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{MAX_MESSAGE_BYTES, protocol::Protocol, session};
use crate::http::HttpState;

/// Upgrades to a GraphQL websocket, or refuses a request from a foreign
/// origin (403) or without a GraphQL subprotocol (400).
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
    // The first of the client's offers that Herald speaks.
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| Protocol::from_name(p.trim())));
    let Some(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    ws.protocols([protocol.name()])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Idle sockets hold little: the read buffer is allocated up front
        // for every connection (128 KiB by default) while clients send a few
        // hundred bytes at a time; longer messages are read in several
        // chunks, up to MAX_MESSAGE_BYTES.
        .read_buffer_size(2 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| session::serve(socket, state, protocol))
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
