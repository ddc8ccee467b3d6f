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
    response::{IntoResponse as _, Response},
};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{
    HttpState,
    client::client_ip,
    negotiate::{
        MediaType, accepts_html, error_body, json_response, refused, request_error, text_response,
    },
    params::{cacheable, operation_type, parse_body, read_body, too_long},
};
use crate::{
    graphql::{
        RequestAuth,
        limits::Census,
        persisted::{PersistedQueryError, Registration},
    },
    metrics::{Operation, code_label, code_of},
    responses::{self, Entry, Method, Miss, Probe},
};

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
    let started = std::time::Instant::now();
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
    let auth = authorization(&headers, &state).await;
    let miss = match probe(&state, &auth, Method::Post, &bytes).await {
        Some(Probe::Hit(entry)) => return hit(&state, started, media, entry, None),
        Some(Probe::Miss(miss)) => Some(miss),
        None => None,
    };
    let batch = match parse_body(&bytes, &state.limits) {
        Ok(batch) => batch,
        Err(message) => return request_error(StatusCode::BAD_REQUEST, media, &message),
    };
    let ip = client_ip(&headers, peer, &state.trusted_proxies);
    match batch {
        BatchRequest::Single(mut request) => {
            let registration = match state.persisted.resolve(&mut request).await {
                Ok(registration) => registration,
                Err(e) => return persisted_error(&e, media),
            };
            state.documents.parse(&mut request);
            let request = request.data(auth).data(ip);
            execute(&state, request, registration, media, miss, None).await
        }
        BatchRequest::Batch(requests) => {
            // Each operation's hash on its own: one unknown hash fails only
            // its own operation. Resolved before the census sees the texts.
            let mut resolved = Vec::with_capacity(requests.len());
            for mut request in requests {
                let outcome = state.persisted.resolve(&mut request).await;
                if outcome.is_ok() {
                    state.documents.parse(&mut request);
                }
                resolved.push(outcome.map(|registration| (request, registration)));
            }
            // Batching must not multiply password guesses.
            // Parsed here once: execution reuses each document.
            let credentials: usize = resolved
                .iter_mut()
                .filter_map(|r| r.as_mut().ok())
                .filter_map(|(r, _)| r.parsed_query().ok())
                .map(|doc| Census::of(doc).credential_fields)
                .fold(0usize, usize::saturating_add);
            if credentials > 1 {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    media,
                    "login and register may appear once per request",
                );
            }
            let mut bodies = Vec::with_capacity(resolved.len());
            for item in resolved {
                let body = match item {
                    Ok((request, registration)) => {
                        let request = request.data(auth.clone()).data(ip);
                        execute_one(&state, request, registration).await.1
                    }
                    Err(e) => {
                        // Refused before execution, as a lone request's
                        // would be (see `negotiate::Refused`).
                        let metrics = &state.api.metrics;
                        metrics.request(Operation::None, Some(e.code()), Default::default());
                        metrics.graphql_error(Some(e.code()));
                        error_body(e.message(), e.code())
                    }
                };
                bodies.push(body);
            }
            json_response(StatusCode::OK, media, &Value::Array(bodies))
        }
    }
}

/// An unknown hash answers as a request that failed before execution does
/// (`200`, or `400` for `application/graphql-response+json`); a bad
/// extension is a bad request parameter (`400`).
fn persisted_error(e: &PersistedQueryError, media: MediaType) -> Response {
    let status = match e {
        PersistedQueryError::NotFound if media == MediaType::Json => StatusCode::OK,
        _ => StatusCode::BAD_REQUEST,
    };
    refused(
        json_response(status, media, &error_body(e.message(), e.code())),
        e.code(),
    )
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
    let started = std::time::Instant::now();
    // Many clients point their websocket at /graphql itself.
    if let Ok(ws) = ws {
        return crate::ws::upgrade(state, &headers, ws);
    }
    let query = query.unwrap_or_default();
    let params = || url::form_urlencoded::parse(query.as_bytes()).map(|(k, _)| k);
    let has_query = params().any(|k| k == "query");
    // A persisted query's hash (in `extensions`) may stand for the text.
    if !has_query && !params().any(|k| k == "extensions") {
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
    let auth = authorization(&headers, &state).await;
    let if_none_match = headers.get(header::IF_NONE_MATCH).cloned();
    let miss = match probe(&state, &auth, Method::Get, query.as_bytes()).await {
        Some(Probe::Hit(entry)) => {
            return hit(&state, started, media, entry, Some(if_none_match.as_ref()));
        }
        Some(Probe::Miss(miss)) => Some(miss),
        None => None,
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
    let registration = match state.persisted.resolve(&mut request).await {
        Ok(registration) => registration,
        Err(e) => return persisted_error(&e, media),
    };
    if !has_query && request.query.is_empty() {
        return request_error(
            StatusCode::BAD_REQUEST,
            media,
            "missing query parameter (GET /graphql?query=..., or extensions with a persistedQuery)",
        );
    }
    state.documents.parse(&mut request);
    // GET is safe: only query operations run over it (a hash's text too).
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
    let ip = client_ip(&headers, peer, &state.trusted_proxies);
    let request = request.data(auth).data(ip);
    execute(
        &state,
        request,
        registration,
        media,
        miss,
        Some(if_none_match.as_ref()),
    )
    .await
}

/// The response cache's answer for a user's request (`None`: not looked
/// up: the cache is off, the caller is not a user, or a POST body that
/// cannot be a cacheable query).
async fn probe(state: &HttpState, auth: &RequestAuth, method: Method, raw: &[u8]) -> Option<Probe> {
    let cache = state.responses.as_ref()?;
    let RequestAuth::User(user) = auth else {
        return None;
    };
    if method == Method::Post && !responses::candidate(raw) {
        return None;
    }
    cache.probe(user.user_id, method, raw).await
}

/// A cached response, sent as it was stored: nothing parsed, validated or
/// run. `get`: a GET's `If-None-Match`, if any (see `validated`).
fn hit(
    state: &HttpState,
    started: std::time::Instant,
    media: MediaType,
    entry: Entry,
    get: Option<Option<&HeaderValue>>,
) -> Response {
    state
        .api
        .metrics
        .request(Operation::Query, None, started.elapsed());
    match get {
        Some(if_none_match) => validated(media, entry.body, &entry.etag, if_none_match),
        None => text_response(StatusCode::OK, media, entry.body),
    }
}

/// A GET's cacheable answer with its `ETag`, to revalidate on every use
/// (`private, no-cache`: one user's, never for a shared cache); `304 Not
/// Modified` without a body when `If-None-Match` names it. POST answers
/// carry no validator.
fn validated(
    media: MediaType,
    body: String,
    etag: &str,
    if_none_match: Option<&HeaderValue>,
) -> Response {
    let unchanged = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| responses::not_modified(v, etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        text_response(StatusCode::OK, media, body)
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    headers.append(
        header::VARY,
        HeaderValue::from_static("authorization, accept"),
    );
    response
}

/// Runs a lone operation. `miss`: the response cache missed it; the answer
/// is stored when the operation is cacheable and has no error. `get`: a
/// GET's `If-None-Match`, if any, so a stored answer gets its `ETag`.
async fn execute(
    state: &HttpState,
    mut request: Request,
    registration: Option<Registration>,
    media: MediaType,
    miss: Option<Miss>,
    get: Option<Option<&HeaderValue>>,
) -> Response {
    // Parsed here once: execution reuses the document.
    let miss = miss.and_then(|miss| Some((miss, cacheable(&mut request)?)));
    let (request_error, body, code) = execute_one(state, request, registration).await;
    let status = if request_error && media == MediaType::GraphQLResponseJson {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let text = body.to_string();
    if let (Some((miss, cacheable)), Some(cache), None) = (miss, &state.responses, code)
        && cacheable.allows(&body)
    {
        let etag = cache.store(miss, &text).await;
        if let Some(if_none_match) = get {
            return validated(media, text, &etag, if_none_match);
        }
    }
    text_response(status, media, text)
}

/// Runs one operation; the flag says whether it failed before execution
/// (parse, validation, variable coercion): then the body has no `data`.
/// A persisted query's text is registered once it got past those.
/// Counted in the metrics by its type and its first error's code, which it
/// also returns (`None`: no error).
async fn execute_one(
    state: &HttpState,
    mut request: Request,
    registration: Option<Registration>,
) -> (bool, Value, Option<&'static str>) {
    let started = std::time::Instant::now();
    // Parsed once: execution reuses the document.
    let operation = match operation_type(&mut request) {
        Some(OperationType::Query) => Operation::Query,
        Some(OperationType::Mutation) => Operation::Mutation,
        Some(OperationType::Subscription) => Operation::Subscription,
        None => Operation::None,
    };
    let (request_error, body, code) = if crate::telemetry::exporting() {
        let kind = match operation {
            Operation::None => "unknown",
            known => known.label(),
        };
        let span = tracing::info_span!(
            "graphql",
            otel.name = %format_args!("graphql {kind}"),
            "graphql.operation.type" = kind,
            "graphql.operation.name" = request.operation_name.as_deref().unwrap_or_default(),
        );
        execute_untraced(state, request, registration)
            .instrument(span)
            .await
    } else {
        execute_untraced(state, request, registration).await
    };
    state
        .api
        .metrics
        .request(operation, code, started.elapsed());
    (request_error, body, code)
}

/// `execute_one` without its trace span; also the first error's code.
async fn execute_untraced(
    state: &HttpState,
    request: Request,
    registration: Option<Registration>,
) -> (bool, Value, Option<&'static str>) {
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
    state.api.metrics.graphql_errors(&response.errors);
    let code = response.errors.first().map(|e| code_label(code_of(e)));
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
    if let Some(registration) = registration
        && !request_error
    {
        state.persisted.register(registration).await;
    }
    (request_error, body, code)
}
