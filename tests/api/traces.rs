//! Traces (issue 14): exported over OTLP/HTTP, a send request's span and
//! the span of its delivery share one trace, the delivery a child of the
//! request, across the queue (the entry carries the request's
//! `traceparent`: a Redis stream field in services mode, the channel's
//! payload in process).
//!
//! The exporter is the process's global subscriber, installed once for
//! this test binary with a receiver of its own (a thread with its own
//! runtime, so it outlives each test's); spans of other tests running at
//! the same time reach it too, and are told apart by notification id.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use tracing_subscriber::{Layer as _, Registry, filter::Targets, layer::SubscriberExt as _};

use crate::helpers::{Backend, TestApp, unique_email};

struct Receiver {
    /// Every export request's body (OTLP/JSON).
    bodies: Arc<Mutex<Vec<Value>>>,
    provider: SdkTracerProvider,
}

/// The receiver and the exporter sending to it, made once.
fn receiver() -> &'static Receiver {
    static RECEIVER: OnceLock<Receiver> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let store = bodies.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                let app = Router::new()
                    .route(
                        "/v1/traces",
                        post(
                            |State(store): State<Arc<Mutex<Vec<Value>>>>, body: Bytes| async move {
                                if let Ok(json) = serde_json::from_slice(&body) {
                                    store.lock().expect("lock").push(json);
                                }
                                "{}"
                            },
                        ),
                    )
                    .with_state(store);
                axum::serve(listener, app).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("the receiver's address");
        // Built outside any runtime: the exporter's client blocks.
        let (layer, provider) =
            herald::telemetry::otlp::<Registry>(&format!("http://{addr}"), "http/json")
                .expect("exporter");
        let subscriber = Registry::default()
            .with(layer.with_filter(Targets::new().with_target("herald", tracing::Level::INFO)));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the test binary");
        Receiver { bodies, provider }
    })
}

/// An exported span: (trace id, span id, parent span id, name, attributes
/// as key → value text).
type Exported = (String, String, String, String, Vec<(String, String)>);

/// Every exported span.
fn spans(bodies: &[Value]) -> Vec<Exported> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut found = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let attributes = span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            let value = &a["value"];
                            let shown = ["stringValue", "intValue", "boolValue"]
                                .iter()
                                .find_map(|k| match &value[*k] {
                                    Value::Null => None,
                                    Value::String(s) => Some(s.clone()),
                                    other => Some(other.to_string()),
                                })
                                .unwrap_or_default();
                            (text(&a["key"]), shown)
                        })
                        .collect();
                    found.push((
                        text(&span["traceId"]),
                        text(&span["spanId"]),
                        text(&span["parentSpanId"]),
                        text(&span["name"]),
                        attributes,
                    ));
                }
            }
        }
    }
    found
}

async fn request_and_delivery_share_a_trace(backend: Backend) {
    let receiver = receiver();
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.token_for(&unique_email("traced")).await;
    let id = app.send_ok(&token, "Traced", "across the queue").await;
    app.wait_for_status(&token, &id, "SENT", Duration::from_secs(20))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let provider = receiver.provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .expect("flush task")
            .expect("flush");
        let all = spans(&receiver.bodies.lock().expect("lock"));
        let delivery = all.iter().find(|(_, _, _, name, attributes)| {
            name == "deliver notification"
                && attributes
                    .iter()
                    .any(|(k, v)| k == "notification_id" && *v == id)
        });
        if let Some((trace, _, parent, _, _)) = delivery {
            let request = all
                .iter()
                .find(|(t, span, _, _, _)| t == trace && span == parent)
                .unwrap_or_else(|| panic!("the delivery's parent span {parent} was not exported"));
            assert_eq!(request.3, "graphql mutation", "{request:?}");
            assert!(
                request
                    .4
                    .iter()
                    .any(|(k, v)| k == "graphql.operation.type" && v == "mutation"),
                "{request:?}"
            );
            assert!(!trace.is_empty() && trace.chars().any(|c| c != '0'));
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery span for notification {id} among {} spans",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

crate::on_backends!(request_and_delivery_share_a_trace;
    sqlite => Sqlite,
    postgres => Postgres,
);
