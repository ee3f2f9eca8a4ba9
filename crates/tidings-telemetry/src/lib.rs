//! Tidings' telemetry: what the process records about itself and where it goes.
//!
//! - [`Metrics`] installs the process's Prometheus recorder and renders it in
//!   the text exposition format. Everything else in this crate records into it
//!   through the `metrics` facade: request counts and latencies of every listener
//!   ([`http`], [`kafka`]), what consumers were handed ([`delivered`]), publish
//!   latency ([`appended`]), each with its `# HELP` line.
//! - [`render_broker`] renders, at each scrape, the broker's offsets, sizes,
//!   counters and lag, read from the broker so the figures are never stale,
//!   a deleted topic or group leaves no series behind, and the broker needs no
//!   metrics code.
//! - [`MeasuredSync`] is the `fdatasync` the server hands the log, timed.
//! - [`init_logging`] installs the log subscriber.
//!
//! Telemetry holds no business state: counters and histograms only, and what it
//! mirrors it reads afresh from the broker.

use std::time::{Duration, Instant};

use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tidings_broker::Broker;
use tidings_types::{Offset, PartitionId};

mod logging;

pub use logging::{init_logging, init_logging_and, LogFormat, LogFormatParseError};

/// Latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// How often histogram samples are folded into their buckets when no scrape
/// does it.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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
        describe();
        // The recorder keeps every histogram sample until an upkeep folds
        // them into the buckets; a scrape does one, but a server nobody
        // scrapes would keep them all (about 24 bytes per event published and
        // consumed over HTTP: `tidings-bench soak` showed it growing by 17 MiB
        // a minute at 13 000 events/s). `install_recorder` starts no upkeep
        // of its own, so a thread does it.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("tidings-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            })
            .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
        Ok(Metrics { handle })
    }

    /// Everything recorded so far, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// The help line of every metric the recorder holds.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tidings_http_requests_total",
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        "tidings_http_request_duration_seconds",
        Unit::Seconds,
        "Time from an HTTP request's arrival to its answer, by method and route."
    );
    describe_counter!(
        "tidings_http_connections_total",
        "HTTP connections accepted."
    );
    describe_gauge!("tidings_http_connections", "HTTP connections open now.");
    describe_counter!(
        "tidings_http_connections_refused_total",
        "HTTP connections closed as they came: limits.connections_max were open."
    );
    describe_counter!(
        "tidings_http_header_timeouts_total",
        "HTTP connections closed because a request head took longer than limits.header_timeout_ms."
    );
    describe_counter!(
        "tidings_kafka_requests_total",
        "Kafka protocol requests answered, by API and version."
    );
    describe_counter!(
        "tidings_kafka_received_bytes_total",
        Unit::Bytes,
        "Bytes of the Kafka requests answered (each frame with its size field), by API."
    );
    describe_counter!(
        "tidings_kafka_sent_bytes_total",
        Unit::Bytes,
        "Bytes of the Kafka responses sent (each frame with its size field), by API."
    );
    describe_histogram!(
        "tidings_kafka_request_duration_seconds",
        Unit::Seconds,
        "Time from a Kafka request's arrival to its answer (for Produce, its appends durable), by API."
    );
    describe_counter!(
        "tidings_kafka_request_errors_total",
        "Kafka error codes answered, by API and Kafka's name of the error, once per topic, partition or member they were given for."
    );
    describe_counter!(
        "tidings_kafka_connections_idle_closed_total",
        "Kafka connections closed after sending nothing for kafka.idle_timeout_ms."
    );
    describe_counter!(
        "tidings_kafka_connections_total",
        "Kafka connections accepted."
    );
    describe_gauge!("tidings_kafka_connections", "Kafka connections open now.");
    describe_counter!(
        "tidings_denied_total",
        "Requests refused by the permissions, by listener (kafka, http) and resource type."
    );
    describe_counter!(
        "tidings_logins_total",
        "Logins by listener (kafka, http), mechanism and outcome (ok, failed)."
    );
    describe_counter!(
        "tidings_kafka_connections_over_limit_total",
        "Kafka connections closed as they came: kafka.connections_max were open."
    );
    describe_counter!(
        "tidings_kafka_connections_refused_total",
        "Kafka connections closed for what the client sent."
    );
    describe_histogram!(
        "tidings_publish_to_deliver_seconds",
        Unit::Seconds,
        "Time from an event's append to its hand-over to a consumer."
    );
    describe_histogram!(
        "tidings_append_duration_seconds",
        Unit::Seconds,
        "Time a publish over HTTP took, dedup and the durable append included."
    );
    describe_histogram!(
        "tidings_fsync_duration_seconds",
        Unit::Seconds,
        "Time an fdatasync of the log took."
    );
}

/// Speaks of something that may happen thousands of times a second (a
/// flood of connections turned away) at most once per `every`, so a flood
/// does not become a flood of log lines too: every call counts, and the
/// call that may speak learns how many happened since the last that did.
pub struct Occasional {
    every: Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Occasional {
    /// Speaking at most once per `every`.
    pub const fn new(every: Duration) -> Occasional {
        Occasional {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Counts one; answers the count to report when it is time to speak.
    pub fn note(&self) -> Option<u64> {
        let mut state = self.state.lock().expect("occasional lock");
        state.1 += 1;
        let now = std::time::Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
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

    /// A connection was accepted.
    pub fn connection_opened() {
        metrics::counter!("tidings_http_connections_total").increment(1);
        metrics::gauge!("tidings_http_connections").increment(1.0);
    }

    /// An accepted connection closed; `header_timeout` when it was closed
    /// for a request head that did not arrive in time.
    pub fn connection_closed(header_timeout: bool) {
        metrics::gauge!("tidings_http_connections").decrement(1.0);
        if header_timeout {
            metrics::counter!("tidings_http_header_timeouts_total").increment(1);
        }
    }

    /// A connection was closed as it came, the server at its limit.
    pub fn connection_refused() {
        metrics::counter!("tidings_http_connections_refused_total").increment(1);
    }
}

/// What the Kafka listener records.
pub mod kafka {
    use std::time::Duration;

    /// A request of `api` (the Kafka API's name, such as `Produce`) at
    /// `version`, `received` bytes long, was answered with `sent` bytes
    /// `elapsed` after it was read; for Produce, once its appends were
    /// durable (with `acks` 0, once they were, though nothing is sent).
    pub fn request_done(
        api: &'static str,
        version: i16,
        elapsed: Duration,
        received: usize,
        sent: usize,
    ) {
        metrics::counter!(
            "tidings_kafka_requests_total",
            "api" => api,
            "version" => version.to_string()
        )
        .increment(1);
        metrics::histogram!("tidings_kafka_request_duration_seconds", "api" => api)
            .record(elapsed.as_secs_f64());
        metrics::counter!("tidings_kafka_received_bytes_total", "api" => api)
            .increment(received as u64);
        metrics::counter!("tidings_kafka_sent_bytes_total", "api" => api).increment(sent as u64);
    }

    /// A response carried Kafka error `error` (its name, such as
    /// `UNKNOWN_TOPIC_OR_PARTITION`), once per topic, partition or member
    /// it was given for.
    pub fn request_error(api: &'static str, error: &str) {
        metrics::counter!(
            "tidings_kafka_request_errors_total",
            "api" => api,
            "error" => error.to_owned()
        )
        .increment(1);
    }

    /// A connection was closed for idleness.
    pub fn connection_idle_closed() {
        metrics::counter!("tidings_kafka_connections_idle_closed_total").increment(1);
    }

    /// A client connected.
    pub fn connection_opened() {
        metrics::counter!("tidings_kafka_connections_total").increment(1);
        metrics::gauge!("tidings_kafka_connections").increment(1.0);
    }

    /// A connection was closed as it came, the server at its limit.
    pub fn connection_over_limit() {
        metrics::counter!("tidings_kafka_connections_over_limit_total").increment(1);
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

/// A request through `listener` (`kafka`, `http`) was refused by the
/// permissions, on a resource of `resource` type (`topic`, `group`,
/// `stream`, `cluster`).
pub fn denied(listener: &'static str, resource: &'static str) {
    metrics::counter!(
        "tidings_denied_total",
        "listener" => listener,
        "resource" => resource
    )
    .increment(1);
}

/// A login through `listener` (`kafka`, `http`) with `mechanism`
/// (`PLAIN`, `SCRAM-SHA-256`, a token) succeeded or failed.
pub fn login(listener: &'static str, mechanism: &'static str, ok: bool) {
    metrics::counter!(
        "tidings_logins_total",
        "listener" => listener,
        "mechanism" => mechanism,
        "outcome" => if ok { "ok" } else { "failed" }
    )
    .increment(1);
}

/// An event handed to a consumer `latency_ms` after it was appended.
pub fn delivered(latency_ms: i64) {
    let seconds = latency_ms.max(0) as f64 / 1e3;
    metrics::histogram!("tidings_publish_to_deliver_seconds").record(seconds);
}

/// A publish took `elapsed`, dedup and the durable append included. (Not per
/// topic: a series of the recorder outlives a deleted topic; per-topic
/// figures come from [`render_broker`].)
pub fn appended(elapsed: Duration) {
    metrics::histogram!("tidings_append_duration_seconds").record(elapsed.as_secs_f64());
}

/// `fdatasync` through the operating system, timed into the histogram
/// `tidings_fsync_duration_seconds`. The server gives it to the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct MeasuredSync;

impl tidings_broker::FileSync for MeasuredSync {
    fn sync_data(&self, file: &dyn tidings_broker::StorageFile) -> std::io::Result<()> {
        let started = Instant::now();
        let result = tidings_broker::OsFileSync.sync_data(file);
        metrics::histogram!("tidings_fsync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// Where an age is read: the partition and the offset of the oldest event
/// still waiting, under the labels of its series.
struct Age {
    family: &'static Family,
    labels: Vec<(&'static str, String)>,
    topic: String,
    partition: PartitionId,
    offset: Offset,
}

/// Seconds since the first event stored at or after `offset` was appended (0
/// when none is: nothing waits). Reads one batch.
fn age_seconds(broker: &Broker, topic: &str, partition: PartitionId, offset: Offset) -> f64 {
    let Ok((start, end)) = broker.offsets(topic, partition) else {
        return 0.0;
    };
    let from = offset.max(start);
    if from >= end {
        return 0.0;
    }
    let now = broker.clock().now().0;
    match broker.read(topic, partition, from, 1) {
        Ok(entries) => entries
            .iter()
            .find(|e| e.offset >= from)
            .map_or(0.0, |e| (now - e.timestamp.0).max(0) as f64 / 1000.0),
        Err(_) => 0.0,
    }
}

/// The broker's state in the Prometheus text format, read afresh at each
/// scrape: per partition its offsets, size and publish counters; per stream
/// group its members and lag, in events and in seconds (the age of the
/// oldest event after its committed offset); per queue group its lag (also
/// in seconds: the oldest event neither acked nor dead-lettered), leases in
/// flight, retries waiting, dead-letter depth and the age of the oldest dead
/// letter, and what it has done since the broker started. Nothing of it is
/// kept between scrapes, so a deleted topic or group has no series left.
/// Ages read one batch each, on the blocking pool.
pub async fn render_broker(broker: &Arc<Broker>) -> String {
    let mut ages: Vec<Age> = Vec::new();
    let mut families = Families::default();
    for topic in broker.list_topics() {
        let name = topic.name.to_string();
        for p in &topic.partitions {
            let labels = [
                ("topic", name.clone()),
                ("partition", p.partition.0.to_string()),
            ];
            families.add(&PUBLISHED_EVENTS, &labels, p.published_events as f64);
            families.add(&PUBLISHED_BYTES, &labels, p.published_bytes as f64);
            families.add(&HIGH_WATERMARK, &labels, p.high_watermark.0 as f64);
            families.add(&LOG_START, &labels, p.log_start.0 as f64);
            families.add(&SIZE_BYTES, &labels, p.size_bytes as f64);
            if p.failure.is_some() {
                let labels = [labels[0].clone(), labels[1].clone(), cause("storage")];
                families.add(&PARTITION_REFUSED, &labels, 1.0);
            }
        }
        for (partition, _) in &topic.refused {
            let labels = [
                ("topic", name.clone()),
                ("partition", partition.0.to_string()),
                cause("recovery"),
            ];
            families.add(&PARTITION_REFUSED, &labels, 1.0);
        }
    }
    for group in broker.list_groups() {
        let Ok(d) = broker.describe_group(&group) else {
            continue;
        };
        families.add(
            &GROUP_MEMBERS,
            &[("group", group.clone())],
            d.members.len() as f64,
        );
        for p in &d.partitions {
            let labels = [
                ("group", group.clone()),
                ("topic", p.topic.to_string()),
                ("partition", p.partition.0.to_string()),
            ];
            families.add(&GROUP_LAG, &labels, p.lag as f64);
            let from = p.committed.unwrap_or(Offset(0));
            ages.push(Age {
                family: &GROUP_LAG_SECONDS,
                labels: labels.to_vec(),
                topic: p.topic.to_string(),
                partition: p.partition,
                offset: if p.lag == 0 { p.high_watermark } else { from },
            });
        }
    }
    for group in broker.list_queue_groups() {
        let Ok(stats) = broker.queue_stats(&group).await else {
            continue;
        };
        let topic = stats.topic.to_string();
        let labels = [("group", group.clone()), ("topic", topic.clone())];
        let c = stats.counters;
        // The oldest dead letter not yet redriven or purged: the first the
        // group lists.
        let oldest_dead = if stats.dead_letters == 0 {
            0.0
        } else {
            match broker.dead_letters(&group, Offset(0), 1).await {
                Ok(dead) => dead.first().map_or(0.0, |d| {
                    (broker.clock().now().0 - d.entry.timestamp.0).max(0) as f64 / 1000.0
                }),
                Err(_) => 0.0,
            }
        };
        families.add(&QUEUE_OLDEST_DEAD_LETTER, &labels, oldest_dead);
        for (family, value) in [
            (&QUEUE_DELIVERED, c.delivered),
            (&QUEUE_REDELIVERED, c.redelivered),
            (&QUEUE_ACKED, c.acked),
            (&QUEUE_NACKED, c.nacked),
            (&QUEUE_EXPIRED, c.expired),
            (&QUEUE_DEAD_LETTERED, c.dead_lettered),
            (&QUEUE_RELEASED, c.released),
            (&QUEUE_REDRIVEN, c.redriven),
            (&QUEUE_DEAD_LETTERS, stats.dead_letters),
            (&QUEUE_REDRIVEN_PENDING, stats.redriven.lag),
        ] {
            families.add(family, &labels, value as f64);
        }
        for p in &stats.partitions {
            let labels = [
                ("group", group.clone()),
                ("topic", topic.clone()),
                ("partition", p.partition.0.to_string()),
            ];
            families.add(&QUEUE_LAG, &labels, p.lag as f64);
            ages.push(Age {
                family: &QUEUE_LAG_SECONDS,
                labels: labels.to_vec(),
                topic: topic.clone(),
                partition: p.partition,
                offset: if p.lag == 0 {
                    p.high_watermark
                } else {
                    p.ack_floor
                },
            });
            families.add(&QUEUE_IN_FLIGHT, &labels, p.in_flight as f64);
            families.add(&QUEUE_RETRYING, &labels, p.retrying as f64);
        }
    }
    let reader = Arc::clone(broker);
    let ages = tokio::task::spawn_blocking(move || {
        ages.into_iter()
            .map(|a| {
                let seconds = age_seconds(&reader, &a.topic, a.partition, a.offset);
                (a.family, a.labels, seconds)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (family, labels, seconds) in ages {
        families.add(family, &labels, seconds);
    }
    families.render()
}

/// A metric family of the broker's state: its name, type and help.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "counter",
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
    }
}

const PUBLISHED_EVENTS: Family = counter(
    "tidings_published_events_total",
    "Events appended to the partition since the broker started.",
);
const PUBLISHED_BYTES: Family = counter(
    "tidings_published_bytes_total",
    "Bytes of event data appended to the partition since the broker started.",
);
const HIGH_WATERMARK: Family = gauge(
    "tidings_partition_high_watermark",
    "The offset the partition's next event gets.",
);
const LOG_START: Family = gauge(
    "tidings_partition_log_start_offset",
    "The partition's first offset still stored (retention removed those below).",
);
const SIZE_BYTES: Family = gauge(
    "tidings_partition_size_bytes",
    "The partition's bytes on disk.",
);
const GROUP_MEMBERS: Family = gauge("tidings_group_members", "Members of the stream group.");
const GROUP_LAG: Family = gauge(
    "tidings_group_lag",
    "Events in the partition after the stream group's committed offset.",
);
fn cause(cause: &str) -> (&'static str, String) {
    ("cause", cause.to_owned())
}

const PARTITION_REFUSED: Family = gauge(
    "tidings_partition_refused",
    "1 for a partition that is not served: refused by recovery at start (cause recovery) or stopped accepting appends after a failed write or sync (cause storage); the log says why. No series while every partition is served.",
);
const GROUP_LAG_SECONDS: Family = gauge(
    "tidings_group_lag_seconds",
    "Age of the oldest event in the partition after the stream group's committed offset: how far behind it is in time (0 when it is caught up).",
);
const QUEUE_LAG_SECONDS: Family = gauge(
    "tidings_queue_lag_seconds",
    "Age of the partition's oldest event the queue group has neither acked nor dead-lettered (0 when none waits).",
);
const QUEUE_OLDEST_DEAD_LETTER: Family = gauge(
    "tidings_queue_oldest_dead_letter_age_seconds",
    "Age of the queue group's oldest dead letter not yet redriven or purged (0 when there is none).",
);
const QUEUE_DELIVERED: Family = counter(
    "tidings_queue_delivered_total",
    "Deliveries of the queue group, first attempts and retries, since the broker started.",
);
const QUEUE_REDELIVERED: Family = counter(
    "tidings_queue_redelivered_total",
    "Deliveries that were retries.",
);
const QUEUE_ACKED: Family = counter("tidings_queue_acked_total", "Deliveries acked.");
const QUEUE_NACKED: Family = counter("tidings_queue_nacked_total", "Deliveries nacked.");
const QUEUE_EXPIRED: Family = counter(
    "tidings_queue_expired_total",
    "Leases that ran out before an answer.",
);
const QUEUE_DEAD_LETTERED: Family = counter(
    "tidings_queue_dead_lettered_total",
    "Events dead-lettered, after their last attempt or by a reject.",
);
const QUEUE_RELEASED: Family = counter(
    "tidings_queue_released_total",
    "Deliveries given back unhandled by a stopping consumer.",
);
const QUEUE_REDRIVEN: Family = counter(
    "tidings_queue_redriven_total",
    "Dead letters redriven to the queue group.",
);
const QUEUE_DEAD_LETTERS: Family = gauge(
    "tidings_queue_dead_letters",
    "Dead letters of the queue group not yet redriven or purged.",
);
const QUEUE_REDRIVEN_PENDING: Family = gauge(
    "tidings_queue_redriven",
    "Dead letters redriven to the queue group and not yet acked or dead-lettered again.",
);
const QUEUE_LAG: Family = gauge(
    "tidings_queue_lag",
    "Events of the partition the queue group has not acked or dead-lettered.",
);
const QUEUE_IN_FLIGHT: Family = gauge(
    "tidings_queue_in_flight",
    "Deliveries of the partition leased now.",
);
const QUEUE_RETRYING: Family = gauge(
    "tidings_queue_retrying",
    "Events of the partition waiting for a retry.",
);

/// Samples gathered by family, rendered each under its `# HELP` and `# TYPE`.
#[derive(Default)]
struct Families {
    /// In the order first seen.
    families: Vec<(&'static Family, String)>,
}

impl Families {
    fn add(&mut self, family: &'static Family, labels: &[(&str, String)], value: f64) {
        let at = match self
            .families
            .iter()
            .position(|(f, _)| f.name == family.name)
        {
            Some(at) => at,
            None => {
                self.families.push((family, String::new()));
                self.families.len() - 1
            }
        };
        let out = &mut self.families[at].1;
        out.push_str(family.name);
        out.push('{');
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push_str("} ");
        out.push_str(&value.to_string());
        out.push('\n');
    }

    fn render(self) -> String {
        let mut text = String::new();
        for (family, samples) in self.families {
            text.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n{samples}",
                family.name, family.help, family.name, family.kind
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_under_their_help_with_escaped_labels() {
        let mut f = Families::default();
        f.add(&GROUP_MEMBERS, &[("group", "a\"b".into())], 2.0);
        f.add(&GROUP_MEMBERS, &[("group", "c".into())], 0.0);
        assert_eq!(
            f.render(),
            "# HELP tidings_group_members Members of the stream group.\n\
             # TYPE tidings_group_members gauge\n\
             tidings_group_members{group=\"a\\\"b\"} 2\n\
             tidings_group_members{group=\"c\"} 0\n"
        );
    }
}
