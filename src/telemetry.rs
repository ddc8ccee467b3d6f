//! Logging and traces.
//!
//! - Logs: `tracing` to stderr, filtered by `RUST_LOG`, pretty or JSON.
//! - Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the same spans go to an
//!   OTLP/HTTP collector (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//!   default, or `http/json`), batched on a thread of their own. Unset, no
//!   exporter exists and no span carries an OpenTelemetry context: nothing
//!   is exported, propagated or paid for.
//! - A send's queue entry carries the W3C `traceparent` of its request
//!   (`traceparent`), and the delivery's span continues that trace
//!   (`continue_trace`), so one trace follows a notification from the
//!   request through the queue to the mail server.

use std::{
    collections::HashMap,
    io::IsTerminal as _,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    propagation::TextMapPropagator as _,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, Tracer},
};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, layer::SubscriberExt as _};

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn";

/// Keeps the trace exporter (if any) until the process ends: dropping it
/// sends the spans still batched. Create and drop it outside the async
/// runtime (the exporter's HTTP client blocks).
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("herald: flushing traces: {e}");
        }
    }
}

/// Installs the global subscriber: logs, and traces when an OTLP endpoint
/// is configured. A second call (tests) installs nothing.
pub fn init(format: LogFormat) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour codes only for a terminal, not for a file or a pipe.
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Pretty => Box::new(logs),
        LogFormat::Json => Box::new(logs.json().flatten_event(true)),
    };
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()));
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default();
    let (traces, provider) = match endpoint.map(|e| otlp(&e, &protocol)) {
        Some(Ok((layer, provider))) => (Some(layer), Some(provider)),
        Some(Err(e)) => {
            eprintln!("herald: traces are off: {e:#}");
            (None, None)
        }
        None => (None, None),
    };
    let subscriber = Registry::default().with(logs.and_then(traces).with_filter(filter));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return Telemetry { provider: None };
    }
    Telemetry { provider }
}

/// Whether an exporter was made: spans that exist only for traces (one
/// per GraphQL operation) are made only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// An OpenTelemetry layer exporting to the OTLP/HTTP collector at
/// `endpoint` (its base URL, `/v1/traces` added unless it is the traces
/// endpoint already), and the provider that flushes it. `protocol`:
/// `http/json`, else protobuf. Call it outside the async runtime.
pub fn otlp<S>(
    endpoint: &str,
    protocol: &str,
) -> anyhow::Result<(OpenTelemetryLayer<S, Tracer>, SdkTracerProvider)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let protocol = match protocol.trim() {
        "http/json" => Protocol::HttpJson,
        "" | "http/protobuf" => Protocol::HttpBinary,
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: Herald exports http/protobuf or http/json"
        ),
    };
    let endpoint = endpoint.trim_end_matches('/');
    let endpoint = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("herald").build())
        .build();
    EXPORTING.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("herald"));
    Ok((layer, provider))
}

/// The W3C `traceparent` of the current span; `None` when traces are not
/// exported (the span has no OpenTelemetry context).
pub fn traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span `traceparent` names (from a queue
/// entry or a request header). A malformed or absent one leaves it a root.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}
