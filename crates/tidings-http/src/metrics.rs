//! Prometheus metrics: what requests cost, counted as they happen, and what the
//! broker holds (offsets, sizes, lag, publish counters), read from it at each
//! scrape so the figures are never stale and the broker needs no metrics code.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Api;

/// Latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// The process's metrics registry and its text rendering.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the process-wide recorder that every `metrics` call in Tidings
    /// reports to. Once per process: a second call fails.
    pub fn install() -> Result<Metrics, String> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)
            .map_err(|e| e.to_string())?
            .install_recorder()
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        Ok(Metrics { handle })
    }

    pub(crate) fn request_done(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        metrics::counter!("tidings_http_requests_total", &labels).increment(1);
        metrics::histogram!(
            "tidings_http_request_duration_seconds",
            "method" => method.to_owned(),
            "route" => route.to_owned()
        )
        .record(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// An event handed to a consumer `latency_ms` after it was appended.
    pub(crate) fn delivered(&self, latency_ms: i64) {
        let seconds = latency_ms.max(0) as f64 / 1e3;
        metrics::histogram!("tidings_publish_to_deliver_seconds").record(seconds);
    }
}

/// Sets the gauges and counters that mirror the broker's state.
fn mirror_broker(api: &Api) {
    let broker = api.broker();
    for topic in broker.list_topics() {
        let name = topic.name.to_string();
        metrics::counter!("tidings_published_events_total", "topic" => name.clone())
            .absolute(topic.published);
        metrics::counter!("tidings_published_bytes_total", "topic" => name.clone())
            .absolute(topic.published_bytes);
        for p in &topic.partitions {
            let labels = [
                ("topic", name.clone()),
                ("partition", p.partition.0.to_string()),
            ];
            metrics::gauge!("tidings_partition_high_watermark", &labels)
                .set(p.high_watermark.0 as f64);
            metrics::gauge!("tidings_partition_log_start_offset", &labels)
                .set(p.log_start.0 as f64);
            metrics::gauge!("tidings_partition_size_bytes", &labels).set(p.size_bytes as f64);
        }
    }
    for group in broker.list_groups() {
        let Ok(description) = broker.describe_group(&group) else {
            continue;
        };
        metrics::gauge!("tidings_group_members", "group" => group.clone())
            .set(description.members.len() as f64);
        for p in &description.partitions {
            let labels = [
                ("group", group.clone()),
                ("topic", description.topic.to_string()),
                ("partition", p.partition.0.to_string()),
            ];
            metrics::gauge!("tidings_group_lag", &labels).set(p.lag as f64);
        }
    }
}

/// `GET /metrics`, in the Prometheus text exposition format.
pub(crate) async fn render(State(api): State<Api>) -> Response {
    mirror_broker(&api);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.inner.metrics.handle.render(),
    )
        .into_response()
}
