//! Prometheus metrics: what requests cost, counted as they happen, and what the
//! broker holds (offsets, sizes, lag, publish counters), read from it at each
//! scrape so the figures are never stale and the broker needs no metrics code.

use std::time::{Duration, Instant};

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

/// `fdatasync` through the operating system, timed into the histogram
/// `tidings_fsync_duration_seconds`. The server gives it to the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct MeasuredSync;

impl tidings_broker::FileSync for MeasuredSync {
    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        let started = Instant::now();
        let result = tidings_broker::OsFileSync.sync_data(file);
        metrics::histogram!("tidings_fsync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }
}

impl Metrics {
    /// A publish to `topic` took `elapsed`, dedup and the
    /// durable append included.
    pub(crate) fn appended(&self, topic: &str, elapsed: Duration) {
        metrics::histogram!("tidings_append_duration_seconds", "topic" => topic.to_owned())
            .record(elapsed.as_secs_f64());
    }
}

/// Sets the gauges and counters that mirror the broker's state.
fn mirror_broker(api: &Api) {
    let broker = api.broker();
    for topic in broker.list_topics() {
        let name = topic.name.to_string();
        for p in &topic.partitions {
            let labels = [
                ("topic", name.clone()),
                ("partition", p.partition.0.to_string()),
            ];
            metrics::counter!("tidings_published_events_total", &labels)
                .absolute(p.published_events);
            metrics::counter!("tidings_published_bytes_total", &labels).absolute(p.published_bytes);
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

/// Queue groups: lag, leases in flight, retries waiting, dead-letter depth and
/// what each group has done since the broker started.
async fn mirror_queues(api: &Api) {
    let broker = api.broker();
    for group in broker.list_queue_groups() {
        let Ok(stats) = broker.queue_stats(&group).await else {
            continue;
        };
        let topic = stats.topic.to_string();
        let labels = [("group", group.clone()), ("topic", topic.clone())];
        let c = stats.counters;
        for (name, value) in [
            ("tidings_queue_delivered_total", c.delivered),
            ("tidings_queue_redelivered_total", c.redelivered),
            ("tidings_queue_acked_total", c.acked),
            ("tidings_queue_nacked_total", c.nacked),
            ("tidings_queue_expired_total", c.expired),
            ("tidings_queue_dead_lettered_total", c.dead_lettered),
        ] {
            metrics::counter!(name, &labels).absolute(value);
        }
        metrics::gauge!("tidings_queue_dead_letters", &labels).set(stats.dead_letters as f64);
        for p in &stats.partitions {
            let labels = [
                ("group", group.clone()),
                ("topic", topic.clone()),
                ("partition", p.partition.0.to_string()),
            ];
            metrics::gauge!("tidings_queue_lag", &labels).set(p.lag as f64);
            metrics::gauge!("tidings_queue_in_flight", &labels).set(p.in_flight as f64);
            metrics::gauge!("tidings_queue_retrying", &labels).set(p.retrying as f64);
        }
    }
}

/// `GET /metrics`, in the Prometheus text exposition format.
pub(crate) async fn render(State(api): State<Api>) -> Response {
    mirror_broker(&api);
    mirror_queues(&api).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.inner.metrics.handle.render(),
    )
        .into_response()
}
