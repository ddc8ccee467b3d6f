//! `GET /metrics` on the metrics listener: reads the states (queues, the
//! SMTP pool), then writes every series. OpenMetrics to a client that asks
//! for it (Prometheus does), else the Prometheus text format 0.0.4 (what
//! `promtool check metrics` and `curl` read).
//!
//! A scrape never holds up the API: it runs on its own listener, takes no
//! lock a request takes (the registry's series are atomics), and each
//! queue read is a single Redis command bounded by `SAMPLE_TIMEOUT`.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{Metrics, QueueLabels, StateLabels};

/// How long a scrape waits for one queue's depth; past it that queue's
/// series are left out of this scrape.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics listener's routes: `/metrics`, nothing else.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

/// The text formats `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    /// Prometheus' text format 0.0.4.
    Text,
}

async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    metrics.sample().await;
    let format = match headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"))
    {
        true => Exposition::OpenMetrics,
        false => Exposition::Text,
    };
    match metrics.encode(format) {
        Ok(body) => {
            let content_type = match format {
                Exposition::OpenMetrics => OPENMETRICS,
                Exposition::Text => PROMETHEUS_TEXT,
            };
            let mut response = body.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

impl Metrics {
    /// Reads what is a state rather than a count: each queue's depth and
    /// oldest entry (concurrently, each bounded), the SMTP pool.
    async fn sample(&self) {
        let (queues, mailer) = {
            let sources = self.sources();
            (sources.queues.clone(), sources.mailer.clone())
        };
        let reads = queues.iter().map(|(name, queue)| async move {
            let depth = tokio::time::timeout(SAMPLE_TIMEOUT, queue.depth()).await;
            (*name, depth)
        });
        for (name, depth) in futures_util::future::join_all(reads).await {
            let labels = QueueLabels {
                queue: name.label(),
            };
            match depth {
                Ok(Ok(depth)) => {
                    self.queue_depth
                        .get_or_create(&labels)
                        .set(i64::try_from(depth.entries).unwrap_or(i64::MAX));
                    self.queue_oldest
                        .get_or_create(&labels)
                        .set(depth.oldest.unwrap_or_default().as_secs_f64());
                }
                // No value is better than an old one.
                Ok(Err(e)) => {
                    tracing::debug!(error = ?e, queue = name.label(), "reading the queue's depth failed");
                    self.queue_depth.remove(&labels);
                    self.queue_oldest.remove(&labels);
                }
                Err(_) => {
                    tracing::debug!(queue = name.label(), "reading the queue's depth timed out");
                    self.queue_depth.remove(&labels);
                    self.queue_oldest.remove(&labels);
                }
            }
        }
        if let Some(pool) = mailer.as_ref().and_then(|m| m.pool()) {
            for (state, count) in [("idle", pool.idle), ("in_use", pool.in_use)] {
                self.smtp_connections
                    .get_or_create(&StateLabels { state })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }

    /// Every series, in `format`.
    pub fn encode(&self, format: Exposition) -> Result<String, std::fmt::Error> {
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry)?;
        Ok(match format {
            Exposition::OpenMetrics => open_metrics,
            Exposition::Text => to_prometheus_text(&open_metrics),
        })
    }
}

/// OpenMetrics text as Prometheus' text format 0.0.4: a counter's family is
/// named by its samples (`x_total`, where OpenMetrics says `x`), and the
/// `# UNIT` and `# EOF` lines go (0.0.4 has neither).
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len() + 256);
    // The last `# HELP` line written: its family may turn out a counter.
    let mut help: Option<(usize, String)> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default().to_owned();
            help = Some((out.len(), name));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            if words.next() == Some("counter") && !name.ends_with("_total") {
                if let Some((at, help_name)) = &help
                    && help_name == name
                {
                    // "# HELP " is 7 bytes; the name follows it.
                    out.insert_str(at + 7 + name.len(), "_total");
                }
                out.push_str("# TYPE ");
                out.push_str(name);
                out.push_str("_total counter\n");
                help = None;
                continue;
            }
            help = None;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_text_format() {
        let open_metrics = "# HELP a_things Things.\n# TYPE a_things counter\na_things_total 3\n\
             # HELP b_seconds Time.\n# TYPE b_seconds histogram\n# UNIT b_seconds seconds\n\
             b_seconds_sum 1.0\nb_seconds_count 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(open_metrics),
            "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total 3\n\
             # HELP b_seconds Time.\n# TYPE b_seconds histogram\n\
             b_seconds_sum 1.0\nb_seconds_count 1\n"
        );
    }
}
