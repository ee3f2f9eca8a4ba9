//! Tidings' telemetry: what the process records about itself and where it goes.
//!
//! - [`Metrics`] installs the process's Prometheus recorder and renders it in
//!   the text exposition format. Everything else in this crate records into it
//!   through the `metrics` facade: request counts and latencies of every listener
//!   ([`http`], [`kafka`]), what consumers were handed ([`delivered`]), publish
//!   latency ([`appended`]), and, at each scrape, the broker's offsets, sizes,
//!   counters and lag ([`mirror_broker`]), read from the broker so the figures
//!   are never stale and the broker needs no metrics code.
//! - [`MeasuredSync`] is the `fdatasync` the server hands the log, timed.
//! - [`init_logging`] installs the log subscriber.
//!
//! Telemetry holds no business state: counters and histograms only, and what it
//! mirrors it reads afresh from the broker.

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tidings_broker::Broker;

mod logging;

pub use logging::{init_logging, LogFormat, LogFormatParseError};

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

    /// Everything recorded so far, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// What the HTTP listener records.
pub mod http {
    use std::time::Duration;

    /// A request to `route` (its template, such as `/v1/topics/{topic}`) ended
    /// with `status` after `elapsed`.
    pub fn request_done(method: &str, route: &str, status: u16, elapsed: Duration) {
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

/// What the Kafka listener records.
pub mod kafka {
    use std::time::Duration;

    /// A request of `api` (the Kafka API's name, such as `Produce`) was
    /// answered `elapsed` after it was read; for Produce, once its appends were
    /// durable (with `acks` 0, once they were, though no answer is sent).
    pub fn request_done(api: &'static str, elapsed: Duration) {
        metrics::counter!("tidings_kafka_requests_total", "api" => api).increment(1);
        metrics::histogram!("tidings_kafka_request_duration_seconds", "api" => api)
            .record(elapsed.as_secs_f64());
    }

    /// A client connected.
    pub fn connection_opened() {
        metrics::counter!("tidings_kafka_connections_total").increment(1);
        metrics::gauge!("tidings_kafka_connections").increment(1.0);
    }

    /// A connection closed; `refused` when it was closed for what the client
    /// sent (a malformed frame, an unknown API, an unsupported version).
    pub fn connection_closed(refused: bool) {
        metrics::gauge!("tidings_kafka_connections").decrement(1.0);
        if refused {
            metrics::counter!("tidings_kafka_connections_refused_total").increment(1);
        }
    }
}

/// An event handed to a consumer `latency_ms` after it was appended.
pub fn delivered(latency_ms: i64) {
    let seconds = latency_ms.max(0) as f64 / 1e3;
    metrics::histogram!("tidings_publish_to_deliver_seconds").record(seconds);
}

/// A publish to `topic` took `elapsed`, dedup and the durable append included.
pub fn appended(topic: &str, elapsed: Duration) {
    metrics::histogram!("tidings_append_duration_seconds", "topic" => topic.to_owned())
        .record(elapsed.as_secs_f64());
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

/// Sets the gauges and counters that mirror the broker's state: per partition
/// its offsets, size and publish counters; per stream group its members and
/// lag; per queue group its lag, leases in flight, retries waiting,
/// dead-letter depth and what it has done since the broker started. Called at
/// each scrape.
pub async fn mirror_broker(broker: &Broker) {
    mirror_topics_and_groups(broker);
    mirror_queues(broker).await;
}

fn mirror_topics_and_groups(broker: &Broker) {
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

async fn mirror_queues(broker: &Broker) {
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
