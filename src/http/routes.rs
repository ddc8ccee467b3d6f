//! The GraphQL handlers: POST (single and batched), GET, and the websocket
//! upgrade; authorization and the execution timeout.

use async_graphql::{BatchRequest, Executor as _, Request, parser::types::OperationType};
use axum::{
    body::Body,
    extract::{
        ConnectInfo, RawQuery, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{
    HttpState,
    client::client_ip,
    negotiate::{MediaType, accepts_html, json_response, request_error},
    params::{operation_type, parse_body, read_body, too_long},
};
use crate::graphql::{RequestAuth, limits::Census};

async fn authorization(headers: &HeaderMap, state: &HttpState) -> RequestAuth {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    RequestAuth::authenticate(header, &state.api).await
}

pub(super) async fn graphql_post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = MediaType::negotiate(&headers) else {
        return request_error(
            StatusCode::NOT_ACCEPTABLE,
            MediaType::Json,
            "Accept must allow application/json or application/graphql-response+json",
        );
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            "Content-Type must be application/json",
        );
    }
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(response) => return response.with_media(media),
    };
    let batch = match parse_body(&bytes, &state.limits) {
        Ok(batch) => batch,
        Err(message) => return request_error(StatusCode::BAD_REQUEST, media, &message),
    };
    let auth = authorization(&headers, &state).await;
    let ip = client_ip(&headers, peer, &state.trusted_proxies);
    match batch {
        BatchRequest::Single(request) => execute(&state, request.data(auth).data(ip), media).await,
        BatchRequest::Batch(requests) => {
            // Batching must not multiply password guesses.
            // Parsed here once: execution reuses each document.
            let mut requests = requests;
            let credentials: usize = requests
                .iter_mut()
                .filter_map(|r| r.parsed_query().ok())
                .map(|doc| Census::of(doc).credential_fields)
                .fold(0usize, usize::saturating_add);
            if credentials > 1 {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    media,
                    "login and register may appear once per request",
                );
            }
            let mut bodies = Vec::with_capacity(requests.len());
            for request in requests {
                let (_, body) = execute_one(&state, request.data(auth.clone()).data(ip)).await;
                bodies.push(body);
            }
            json_response(StatusCode::OK, media, &Value::Array(bodies))
        }
    }
}

pub(super) async fn graphql_ws(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    crate::ws::upgrade(state, &headers, ws)
}

pub(super) async fn graphql_get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    // Many clients point their websocket at /graphql itself.
    if let Ok(ws) = ws {
        return crate::ws::upgrade(state, &headers, ws);
    }
    let query = query.unwrap_or_default();
    let has_query = url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "query");
    if !has_query {
        if accepts_html(&headers) {
            return crate::graphiql::page();
        }
        let media = MediaType::negotiate(&headers).unwrap_or(MediaType::Json);
        return request_error(
            StatusCode::BAD_REQUEST,
            media,
            "missing query parameter (GET /graphql?query=...)",
        );
    }
    let Some(media) = MediaType::negotiate(&headers) else {
        return request_error(
            StatusCode::NOT_ACCEPTABLE,
            MediaType::Json,
            "Accept must allow application/json or application/graphql-response+json",
        );
    };
    let mut request = match async_graphql::http::parse_query_string(&query) {
        Ok(request) if request.query.len() > state.limits.max_query_bytes => {
            return request_error(
                StatusCode::BAD_REQUEST,
                media,
                &too_long(request.query.len(), &state.limits),
            );
        }
        Ok(request) => request,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                media,
                &format!("invalid request parameters: {e}"),
            );
        }
    };
    // GET is safe: only query operations run over it.
    if let Some(kind) = operation_type(&mut request)
        && kind != OperationType::Query
    {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            "only query operations can be sent with GET; use POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let auth = authorization(&headers, &state).await;
    let ip = client_ip(&headers, peer, &state.trusted_proxies);
    execute(&state, request.data(auth).data(ip), media).await
}

async fn execute(state: &HttpState, request: Request, media: MediaType) -> Response {
    let (request_error, body) = execute_one(state, request).await;
    let status = if request_error && media == MediaType::GraphQLResponseJson {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    json_response(status, media, &body)
}

/// Runs one operation; the flag says whether it failed before execution
/// (parse, validation, variable coercion): then the body has no `data`.
async fn execute_one(state: &HttpState, mut request: Request) -> (bool, Value) {
    if !crate::telemetry::exporting() {
        return execute_untraced(state, request).await;
    }
    let kind = match operation_type(&mut request) {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    };
    let span = tracing::info_span!(
        "graphql",
        otel.name = %format_args!("graphql {kind}"),
        "graphql.operation.type" = kind,
        "graphql.operation.name" = request.operation_name.as_deref().unwrap_or_default(),
    );
    execute_untraced(state, request).instrument(span).await
}

/// `execute_one` without its trace span.
async fn execute_untraced(state: &HttpState, request: Request) -> (bool, Value) {
    let timeout = state.limits.timeout;
    let response = match tokio::time::timeout(timeout, state.schema.execute(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "a request hit the execution timeout");
            let error = async_graphql::ServerError::new(
                format!(
                    "the request took longer than {} s and was stopped",
                    timeout.as_secs_f32()
                ),
                None,
            );
            let mut response = async_graphql::Response::from_errors(vec![error]);
            if let Some(e) = response.errors.first_mut() {
                e.extensions
                    .get_or_insert_with(Default::default)
                    .set("code", "INTERNAL");
            }
            response
        }
    };
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let mut body = serde_json::to_value(&response).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serializing a GraphQL response");
        json!({ "errors": [{ "message": "internal error", "extensions": { "code": "INTERNAL" } }] })
    });
    if request_error && let Value::Object(map) = &mut body {
        map.remove("data");
    }
    (request_error, body)
}
