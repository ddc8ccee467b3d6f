//! The HTTP edge: GraphQL over HTTP (POST and GET), health and readiness.
//!
//! Request parsing and content negotiation follow the GraphQL-over-HTTP spec
//! (checked in CI by graphql-http's audit suite): `application/json` answers
//! 200 for every GraphQL result; `application/graphql-response+json` answers
//! 400 when the request never reached execution. Every error body, even a
//! malformed-JSON one, is GraphQL-shaped with an `extensions.code`.

use std::time::Duration;

use async_graphql::{
    BatchRequest, Executor as _, Request, Variables, parser::types::OperationType,
};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{
        ConnectInfo, RawQuery, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;

use crate::{
    graphql::{
        ClientIp, HeraldSchema, RequestAuth,
        limits::{Census, QueryLimits},
    },
    storage,
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const JSON: &str = "application/json; charset=utf-8";
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";

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
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Browser origins allowed (CORS, and the websocket upgrade's Origin).
    pub cors: crate::cors::AllowedOrigins,
    /// Subscriptions per socket, sockets per user.
    pub sockets: crate::ws::SocketLimits,
    /// Open websockets' tokens, checked for revocation in one batch.
    pub revocation_watch: std::sync::Arc<crate::auth::revocation::RevocationWatch>,
}

/// The client's address: the peer's, or when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not one.
fn client_ip(
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
    trusted: &[std::net::IpAddr],
) -> ClientIp {
    let peer = peer.ip();
    if !trusted.contains(&peer) {
        return ClientIp(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
        .collect::<Vec<_>>();
    ClientIp(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(state.cors.layer())
        .route("/graphql/ws", get(graphql_ws))
        .route("/graphiql/{file}", get(crate::graphiql::asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// The media type a response is written in, from the request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    Json,
    GraphQLResponseJson,
}

impl MediaType {
    /// `None`: the client accepts neither (406).
    fn negotiate(headers: &HeaderMap) -> Option<Self> {
        let Some(accept) = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
        else {
            return Some(Self::Json);
        };
        let mut best: Option<(f32, Self)> = None;
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let range = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let media = match range.as_str() {
                "application/graphql-response+json" => Self::GraphQLResponseJson,
                "application/json" | "application/*" | "*/*" => Self::Json,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, media));
            }
        }
        best.map(|(_, media)| media)
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => JSON,
            Self::GraphQLResponseJson => GRAPHQL_RESPONSE_JSON,
        }
    }
}

/// A response with a GraphQL-shaped body holding one request error.
fn request_error(status: StatusCode, media: MediaType, message: &str) -> Response {
    let body =
        json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_USER_INPUT" } }] });
    json_response(status, media, &body)
}

fn json_response(status: StatusCode, media: MediaType, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    response
}

fn authorization(headers: &HeaderMap, state: &HttpState) -> RequestAuth {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    RequestAuth::from_authorization(header, &state.api.jwt)
}

async fn graphql_post(
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
    let auth = authorization(&headers, &state)
        .unless_revoked(&*state.api.revocations)
        .await;
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

async fn graphql_ws(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    crate::ws::upgrade(state, &headers, ws)
}

async fn graphql_get(
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
    let auth = authorization(&headers, &state)
        .unless_revoked(&*state.api.revocations)
        .await;
    let ip = client_ip(&headers, peer, &state.trusted_proxies);
    execute(&state, request.data(auth).data(ip), media).await
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The type of the operation `request` selects, when its document parses and
/// the selection is unambiguous; execution reports every other case (and
/// reuses the parsed document).
fn operation_type(request: &mut Request) -> Option<OperationType> {
    let name = request.operation_name.clone();
    let doc = request.parsed_query().ok()?;
    let op = match (&name, &doc.operations) {
        (_, async_graphql::parser::types::DocumentOperations::Single(op)) => op,
        (Some(name), async_graphql::parser::types::DocumentOperations::Multiple(ops)) => {
            ops.get(name.as_str())?
        }
        (None, async_graphql::parser::types::DocumentOperations::Multiple(ops)) => {
            if ops.len() != 1 {
                return None;
            }
            ops.values().next()?
        }
    };
    Some(op.node.ty)
}

/// Reads the body; the limit layer in front turns an oversized one into an
/// error here (or a 413 before the handler, when Content-Length says so).
async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| BodyError)
}

struct BodyError;

impl BodyError {
    fn with_media(self, media: MediaType) -> Response {
        request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            media,
            &format!("request body larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

fn too_long(bytes: usize, limits: &QueryLimits) -> String {
    format!(
        "the query text is {bytes} bytes; the limit is {}",
        limits.max_query_bytes
    )
}

/// Parses `{query, operationName, variables, extensions}` or an array of
/// them, checking each parameter's type as the spec asks, and the sizes.
fn parse_body(bytes: &[u8], limits: &QueryLimits) -> Result<BatchRequest, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("request body is empty; send {\"query\": ...}".into());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("request body is not valid JSON: {e}"))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err("a batch must hold at least one operation".into());
            }
            if items.len() > limits.max_batch {
                return Err(format!(
                    "a batch may hold at most {} operations, got {}",
                    limits.max_batch,
                    items.len()
                ));
            }
            let requests = items
                .into_iter()
                .map(|item| parse_params(item, limits))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(BatchRequest::Batch(requests))
        }
        other => parse_params(other, limits).map(BatchRequest::Single),
    }
}

fn parse_params(value: Value, limits: &QueryLimits) -> Result<Request, String> {
    let Value::Object(mut params) = value else {
        return Err("request body must be a JSON object with a query".into());
    };
    let query = match params.remove("query") {
        Some(Value::String(q)) if q.len() > limits.max_query_bytes => {
            return Err(too_long(q.len(), limits));
        }
        Some(Value::String(q)) => q,
        Some(_) => return Err("query must be a string".into()),
        None => return Err("missing query".into()),
    };
    let mut request = Request::new(query);
    match params.remove("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name),
        Some(_) => return Err("operationName must be a string or null".into()),
    }
    match params.remove("variables") {
        None | Some(Value::Null) => {}
        Some(vars @ Value::Object(_)) => request = request.variables(Variables::from_json(vars)),
        Some(_) => return Err("variables must be an object or null".into()),
    }
    match params.remove("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ext)) => {
            for (k, v) in ext {
                let v = async_graphql::Value::from_json(v)
                    .map_err(|_| "extensions must be a JSON object".to_owned())?;
                request.extensions.insert(k, v);
            }
        }
        Some(_) => return Err("extensions must be an object or null".into()),
    }
    Ok(request)
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
async fn execute_one(state: &HttpState, request: Request) -> (bool, Value) {
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

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" })))
}

/// 200 when the database and the cache backend (Redis, when configured)
/// answer within two seconds; 503 naming what failed otherwise.
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
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
    (
        status,
        axum::Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": { "database": word(db_ok), state.cache.backend(): word(cache_ok) },
        })),
    )
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({ "error": "not found", "endpoints": ["/graphql", "/healthz", "/readyz"] }),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn negotiation_prefers_what_the_client_ranks_highest() {
        assert_eq!(
            MediaType::negotiate(&HeaderMap::new()),
            Some(MediaType::Json)
        );
        assert_eq!(MediaType::negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(
            MediaType::negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphQLResponseJson)
        );
        assert_eq!(
            MediaType::negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(MediaType::negotiate(&accept("text/plain")), None);
    }

    #[test]
    fn parameters_of_the_wrong_type_are_rejected() {
        let l = QueryLimits::default();
        assert!(parse_body(br#"{"query": 1}"#, &l).is_err());
        assert!(parse_body(br#"{"query": "{a}", "variables": "x"}"#, &l).is_err());
        assert!(parse_body(br#"{"query": "{a}", "operationName": 3}"#, &l).is_err());
        assert!(parse_body(br#"{}"#, &l).is_err());
        assert!(parse_body(b"", &l).is_err());
        assert!(parse_body(b"{", &l).is_err());
        assert!(
            parse_body(
                br#"{"query": "{a}", "variables": null, "extensions": {}}"#,
                &l
            )
            .is_ok()
        );
    }

    #[test]
    fn batches_and_query_text_are_bounded() {
        let l = QueryLimits::default();
        let ok = format!("[{}]", vec![r#"{"query":"{a}"}"#; l.max_batch].join(","));
        let too_many = format!(
            "[{}]",
            vec![r#"{"query":"{a}"}"#; l.max_batch + 1].join(",")
        );
        assert!(parse_body(ok.as_bytes(), &l).is_ok());
        assert!(parse_body(too_many.as_bytes(), &l).is_err());
        assert!(parse_body(b"[]", &l).is_err());
        let at_limit = format!(r#"{{"query":"{}"}}"#, "a".repeat(l.max_query_bytes));
        let over = format!(r#"{{"query":"{}"}}"#, "a".repeat(l.max_query_bytes + 1));
        assert!(parse_body(at_limit.as_bytes(), &l).is_ok());
        assert!(parse_body(over.as_bytes(), &l).is_err());
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        let proxy: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(&h, peer, &[]).0,
            proxy,
            "untrusted peer: its own address"
        );
        assert_eq!(client_ip(&h, peer, &[proxy]).0.to_string(), "1.2.3.4");
        assert_eq!(client_ip(&HeaderMap::new(), peer, &[proxy]).0, proxy);
    }

    #[test]
    fn get_recognises_mutations() {
        let mut m = Request::new("mutation { a }");
        assert_eq!(operation_type(&mut m), Some(OperationType::Mutation));
        let mut q = Request::new("query A { a } mutation B { b }").operation_name("A");
        assert_eq!(operation_type(&mut q), Some(OperationType::Query));
    }
}
