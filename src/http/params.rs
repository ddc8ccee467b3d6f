//! Request parameters: the body (`{query, operationName, variables,
//! extensions}` or a batch of them), its size, and the operation a GET selects.

use async_graphql::{
    BatchRequest, Request, Variables,
    parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType},
};
use axum::{
    body::{Body, Bytes},
    http::StatusCode,
    response::Response,
};
use serde_json::Value;

use super::negotiate::{MediaType, request_error};
use crate::{
    graphql::{limits::QueryLimits, persisted},
    responses,
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `f` of the operation `request` selects and its document, when the
/// document parses and the selection is unambiguous; execution reports
/// every other case (and reuses the parsed document).
fn with_operation<T>(
    request: &mut Request,
    f: impl FnOnce(&OperationDefinition, &ExecutableDocument) -> T,
) -> Option<T> {
    let name = request.operation_name.clone();
    let doc = request.parsed_query().ok()?;
    let op = match (&name, &doc.operations) {
        (_, DocumentOperations::Single(op)) => op,
        (Some(name), DocumentOperations::Multiple(ops)) => ops.get(name.as_str())?,
        (None, DocumentOperations::Multiple(ops)) => {
            if ops.len() != 1 {
                return None;
            }
            ops.values().next()?
        }
    };
    Some(f(&op.node, doc))
}

/// The type of the operation `request` selects (see `with_operation`).
pub(super) fn operation_type(request: &mut Request) -> Option<OperationType> {
    with_operation(request, |op, _| op.ty)
}

/// Whether `request`'s response may be cached, and what its answer must
/// then show: a query whose root fields the response cache covers
/// (`responses::covered`).
pub(super) fn cacheable(request: &mut Request) -> Option<responses::Cacheable> {
    with_operation(request, |op, doc| {
        (op.ty == OperationType::Query)
            .then(|| responses::covered(&op.selection_set.node, doc))
            .flatten()
    })
    .flatten()
}

/// Reads the body; the limit layer in front turns an oversized one into an
/// error here (or a 413 before the handler, when Content-Length says so).
pub(super) async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| BodyError)
}

pub(super) struct BodyError;

impl BodyError {
    pub(super) fn with_media(self, media: MediaType) -> Response {
        request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            media,
            &format!("request body larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

pub(super) fn too_long(bytes: usize, limits: &QueryLimits) -> String {
    format!(
        "the query text is {bytes} bytes; the limit is {}",
        limits.max_query_bytes
    )
}

/// Parses `{query, operationName, variables, extensions}` or an array of
/// them, checking each parameter's type as the spec asks, and the sizes.
pub(super) fn parse_body(bytes: &[u8], limits: &QueryLimits) -> Result<BatchRequest, String> {
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
    let extensions = match params.remove("extensions") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(ext)) => ext,
        Some(_) => return Err("extensions must be an object or null".into()),
    };
    let query = match params.remove("query") {
        Some(Value::String(q)) if q.len() > limits.max_query_bytes => {
            return Err(too_long(q.len(), limits));
        }
        Some(Value::String(q)) => q,
        // A persisted query's hash stands for its text.
        None | Some(Value::Null) if persisted::requested(&extensions) => String::new(),
        Some(Value::Null) | None => return Err("missing query".into()),
        Some(_) => return Err("query must be a string".into()),
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
    for (k, v) in extensions {
        let v = async_graphql::Value::from_json(v)
            .map_err(|_| "extensions must be a JSON object".to_owned())?;
        request.extensions.insert(k, v);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_persisted_query_hash_may_stand_in_for_the_query() {
        let l = QueryLimits::default();
        let hashed = br#"{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "x"}}}"#;
        assert!(parse_body(hashed, &l).is_ok());
        assert!(
            parse_body(
                br#"{"query": null, "extensions": {"persistedQuery": null}}"#,
                &l
            )
            .is_err()
        );
        assert!(parse_body(br#"{"extensions": {"other": 1}}"#, &l).is_err());
        let over = format!(
            r#"{{"query":"{}","extensions":{{"persistedQuery":{{"version":1,"sha256Hash":"x"}}}}}}"#,
            "a".repeat(l.max_query_bytes + 1)
        );
        assert!(parse_body(over.as_bytes(), &l).is_err());
    }

    #[test]
    fn get_recognises_mutations() {
        let mut m = Request::new("mutation { a }");
        assert_eq!(operation_type(&mut m), Some(OperationType::Mutation));
        let mut q = Request::new("query A { a } mutation B { b }").operation_name("A");
        assert_eq!(operation_type(&mut q), Some(OperationType::Query));
    }
}
