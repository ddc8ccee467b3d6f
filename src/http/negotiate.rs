//! Content negotiation: the media type a response is written in, and
//! GraphQL-shaped error bodies in it.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

const JSON: &str = "application/json; charset=utf-8";
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";

/// The media type a response is written in, from the request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    Json,
    GraphQLResponseJson,
}

impl MediaType {
    /// `None`: the client accepts neither (406).
    pub(super) fn negotiate(headers: &HeaderMap) -> Option<Self> {
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
pub(super) fn request_error(status: StatusCode, media: MediaType, message: &str) -> Response {
    refused(
        json_response(status, media, &error_body(message, "BAD_USER_INPUT")),
        "BAD_USER_INPUT",
    )
}

/// Marks a response as a request refused before any operation ran, with
/// the error code its body holds: `count_refused` counts it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refused(pub &'static str);

pub(super) fn refused(mut response: Response, code: &'static str) -> Response {
    response.extensions_mut().insert(Refused(code));
    response
}

/// Counts the requests refused before execution (operation `none`); the
/// operations that ran count themselves (`routes::execute_one`).
pub(super) async fn count_refused(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<crate::metrics::Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(Refused(code)) = response.extensions().get::<Refused>().copied() {
        metrics.request(
            crate::metrics::Operation::None,
            Some(code),
            started.elapsed(),
        );
        metrics.graphql_error(Some(code));
    }
    response
}

/// A GraphQL-shaped body holding one error.
pub(super) fn error_body(message: &str, code: &str) -> Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
}

pub(super) fn json_response(status: StatusCode, media: MediaType, body: &Value) -> Response {
    text_response(status, media, body.to_string())
}

/// A response whose body is serialized JSON already.
pub(super) fn text_response(status: StatusCode, media: MediaType, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    response
}

pub(super) fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
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
}
