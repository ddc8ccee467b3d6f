//! Liveness, readiness and the 404 answer.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use super::HttpState;
use crate::{storage, worker::Circuit};

pub(super) async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" })))
}

/// 200 when the database and the cache backend (Redis, when configured)
/// answer within two seconds; 503 naming what failed otherwise. In a
/// process that delivers, `checks.mail` shows the mail server's circuit
/// (`ok`, or `circuit open` with `mailCircuit` saying since when and when
/// the next probe is due); an open circuit does not fail readiness.
pub(super) async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let limit = Duration::from_secs(2);
    let (db_ok, cache_ok) = tokio::join!(
        tokio::time::timeout(limit, storage::db::ping(&state.api.db)),
        tokio::time::timeout(limit, state.cache.ping()),
    );
    let db_ok = db_ok.unwrap_or(false);
    let cache_ok = matches!(cache_ok, Ok(Ok(())));
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let ready = db_ok && cache_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": { "database": word(db_ok), state.cache.backend(): word(cache_ok) },
    });
    match state.mail.as_ref().map(|breaker| breaker.circuit()) {
        None => {}
        Some(Circuit::Closed) => body["checks"]["mail"] = json!("ok"),
        Some(Circuit::Open { since, next_probe }) => {
            body["checks"]["mail"] = json!("circuit open");
            body["mailCircuit"] = json!({ "openSince": since, "nextProbe": next_probe });
        }
    }
    (status, axum::Json(body))
}

pub(super) async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({ "error": "not found", "endpoints": ["/graphql", "/healthz", "/readyz"] }),
        ),
    )
}
