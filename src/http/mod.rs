//! The HTTP edge: GraphQL over HTTP (POST and GET), health and readiness.
//!
//! Request parsing and content negotiation follow the GraphQL-over-HTTP spec
//! (checked in CI by graphql-http's audit suite): `application/json` answers
//! 200 for every GraphQL result; `application/graphql-response+json` answers
//! 400 when the request never reached execution. Every error body, even a
//! malformed-JSON one, is GraphQL-shaped with an `extensions.code`.
//!
//! `routes` holds the handlers (and the batch policy), `negotiate` the media
//! types, `params` the request parameters, `client` the client's address and
//! `health` the probes. A request may name its query by a persisted query's
//! hash instead (`graphql::persisted`), over POST and GET alike.

mod client;
pub mod documents;
mod health;
mod negotiate;
mod params;
mod routes;

use axum::{Router, http::StatusCode, routing::get};
use tower_http::limit::RequestBodyLimitLayer;

use crate::graphql::{HeraldSchema, limits::QueryLimits};

pub use params::MAX_BODY_BYTES;

#[derive(Clone)]
pub struct HttpState {
    pub schema: HeraldSchema,
    pub api: crate::graphql::ApiState,
    /// Checked by `/readyz` (Redis in services mode).
    pub cache: std::sync::Arc<dyn crate::cache::Cache>,
    /// Cancelled when shutdown starts: open websockets close (1001).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Query size, batch size and execution time.
    pub limits: QueryLimits,
    /// Whole responses of users' inbox queries (`None`: the cache is off,
    /// `HERALD_RESPONSE_CACHE=off`).
    pub responses: Option<std::sync::Arc<crate::responses::Responses>>,
    /// Parsed documents by their text (`documents.rs`).
    pub documents: std::sync::Arc<documents::Documents>,
    /// Automatic persisted queries: texts by their SHA-256.
    pub persisted: std::sync::Arc<crate::graphql::persisted::PersistedQueries>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Browser origins allowed (CORS, and the websocket upgrade's Origin).
    pub cors: crate::cors::AllowedOrigins,
    /// Subscriptions per socket, sockets per user.
    pub sockets: crate::ws::SocketLimits,
    /// Open websockets' tokens, checked for revocation in one batch.
    pub revocation_watch: std::sync::Arc<crate::auth::revocation::RevocationWatch>,
    /// The mail server's circuit breaker, when this process delivers:
    /// `/readyz` shows it without failing on it (the API still works).
    pub mail: Option<std::sync::Arc<crate::worker::Breaker>>,
}

pub fn router(state: HttpState) -> Router {
    let metrics = state.api.metrics.clone();
    Router::new()
        .route(
            "/graphql",
            get(routes::graphql_get).post(routes::graphql_post),
        )
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            negotiate::count_refused,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(state.cors.layer())
        .route("/graphql/ws", get(routes::graphql_ws))
        .route("/graphiql/{file}", get(crate::graphiql::asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(health::not_found)
        .with_state(state)
}
