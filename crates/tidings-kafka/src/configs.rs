//! Topic and broker configs by their Kafka names: what CreateTopics and
//! DescribeConfigs answer, and what CreateTopics and IncrementalAlterConfigs
//! may set. Each maps to a setting Tidings has, with its real value; Kafka
//! configs without a meaning here are not listed (asked for by name, they are
//! simply absent, as Kafka leaves out names it does not know).

use std::time::Duration;

use tidings_broker::{SchemaValidation, TopicSpec, DEDUP_WINDOW_MAX};

use crate::Shared;

/// Where a config's value comes from, in Kafka's numbering (`ConfigSource`):
/// every client parses it, and some refuse an unknown one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigSource {
    /// Set for this topic.
    Topic = 1,
    /// Set for the server (a flag, the environment or the configuration file).
    StaticBroker = 4,
    /// The built-in default.
    Default = 5,
}

/// Kafka's config types (`ConfigType`, DescribeConfigs v3+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
}

/// One config as DescribeConfigs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) name: &'static str,
    pub(crate) value: String,
    pub(crate) source: ConfigSource,
    pub(crate) read_only: bool,
    pub(crate) kind: ConfigType,
    pub(crate) doc: &'static str,
}

/// Kafka's "no limit" for millisecond settings.
const NEVER_MS: i64 = i64::MAX;

fn ms(d: Option<Duration>) -> i64 {
    d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A topic's configs. The source says whether a value differs from the
/// server's default.
pub(crate) fn topic_configs(spec: &TopicSpec) -> Vec<Config> {
    let defaults = TopicSpec::default();
    let (log, base) = (&spec.log, &defaults.log);
    let entry = |name, value: String, default: String, kind, doc| Config {
        name,
        source: if value == default {
            ConfigSource::Default
        } else {
            ConfigSource::Topic
        },
        value,
        read_only: false,
        kind,
        doc,
    };
    let fixed = |name, value: &str, kind, doc| Config {
        name,
        value: value.to_owned(),
        source: ConfigSource::Default,
        read_only: true,
        kind,
        doc,
    };
    let retention_bytes = |b: Option<u64>| b.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let segment_ms = |d: Option<Duration>| d.map_or(NEVER_MS, |d| ms(Some(d)));
    let window = |w: Option<Duration>| w.map_or(0, |w| ms(Some(w)));
    vec![
        fixed(
            "cleanup.policy",
            "delete",
            ConfigType::String,
            "Old segments are deleted by retention; compaction is not offered.",
        ),
        fixed(
            "compression.type",
            "producer",
            ConfigType::String,
            "Batches are stored as the producer compressed them.",
        ),
        entry(
            "index.interval.bytes",
            log.index_interval_bytes.to_string(),
            base.index_interval_bytes.to_string(),
            ConfigType::Int,
            "Bytes of log between two entries of the sparse indexes.",
        ),
        fixed(
            "max.message.bytes",
            &tidings_broker::BATCH_BYTES_MAX.to_string(),
            ConfigType::Int,
            "The largest record batch the log stores (a fixed limit).",
        ),
        fixed(
            "message.timestamp.type",
            "CreateTime",
            ConfigType::String,
            "Producer batches keep the timestamps the producer gave them.",
        ),
        fixed(
            "min.insync.replicas",
            "1",
            ConfigType::Int,
            "One node: every partition has one replica.",
        ),
        entry(
            "retention.bytes",
            retention_bytes(log.retention_bytes).to_string(),
            retention_bytes(base.retention_bytes).to_string(),
            ConfigType::Long,
            "Oldest segments are deleted while a partition is above this size; -1 for no limit.",
        ),
        entry(
            "retention.ms",
            ms(log.retention_age).to_string(),
            ms(base.retention_age).to_string(),
            ConfigType::Long,
            "Segments whose newest record is older are deleted; -1 keeps them.",
        ),
        entry(
            "segment.bytes",
            log.segment_bytes.to_string(),
            base.segment_bytes.to_string(),
            ConfigType::Int,
            "A segment is sealed once it would grow past this size.",
        ),
        entry(
            "segment.ms",
            segment_ms(log.segment_age).to_string(),
            segment_ms(base.segment_age).to_string(),
            ConfigType::Long,
            "A non-empty segment older than this is sealed on the next append.",
        ),
        entry(
            "tidings.dedup.window.ms",
            window(spec.dedup_window).to_string(),
            window(defaults.dedup_window).to_string(),
            ConfigType::Long,
            "How long a published CloudEvent's source and id are remembered to drop a repeat; 0 turns dedup off.",
        ),
        entry(
            "tidings.schema.validation",
            spec.schema_validation.as_str().to_owned(),
            defaults.schema_validation.as_str().to_owned(),
            ConfigType::String,
            "off, or validate: every record is checked against its schema in the registry (by its framing's schema id, its CloudEvent type, or <topic>-value) before its batch is appended.",
        ),
        entry(
            "tidings.fsync",
            log.fsync.to_string(),
            base.fsync.to_string(),
            ConfigType::String,
            "When appends are durable before they are acknowledged: always, interval:<ms> or never.",
        ),
    ]
}

/// Sets one topic config (a Kafka name) on `spec`; `None` resets it to the
/// default. Read-only configs take only their one value.
pub(crate) fn set_topic_config(
    spec: &mut TopicSpec,
    name: &str,
    value: Option<&str>,
) -> Result<(), String> {
    let defaults = TopicSpec::default();
    let Some(value) = value else {
        match name {
            "index.interval.bytes" => {
                spec.log.index_interval_bytes = defaults.log.index_interval_bytes;
            }
            "retention.bytes" => spec.log.retention_bytes = defaults.log.retention_bytes,
            "retention.ms" => spec.log.retention_age = defaults.log.retention_age,
            "segment.bytes" => spec.log.segment_bytes = defaults.log.segment_bytes,
            "segment.ms" => spec.log.segment_age = defaults.log.segment_age,
            "tidings.dedup.window.ms" => spec.dedup_window = defaults.dedup_window,
            "tidings.fsync" => spec.log.fsync = defaults.log.fsync,
            "tidings.schema.validation" => spec.schema_validation = defaults.schema_validation,
            _ if topic_configs(spec).iter().any(|c| c.name == name) => {
                return Err(format!("{name} cannot be changed"))
            }
            _ => return Err(format!("unknown topic config {name}")),
        }
        return Ok(());
    };
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| format!("{name}={value} is not a number"))
    };
    let positive = || {
        number().and_then(|n| {
            u64::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}={value} must be positive"))
        })
    };
    match name {
        "retention.ms" => {
            spec.log.retention_age = match number()? {
                -1 => None,
                ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
                _ => return Err(format!("retention.ms={value} must be -1 or positive")),
            }
        }
        "retention.bytes" => {
            spec.log.retention_bytes = match number()? {
                -1 => None,
                b if b > 0 => Some(b as u64),
                _ => return Err(format!("retention.bytes={value} must be -1 or positive")),
            }
        }
        "segment.bytes" => spec.log.segment_bytes = positive()?,
        "segment.ms" => {
            spec.log.segment_age = match positive()? {
                n if n == NEVER_MS as u64 => None,
                n => Some(Duration::from_millis(n)),
            }
        }
        "index.interval.bytes" => {
            spec.log.index_interval_bytes =
                u32::try_from(positive()?).map_err(|_| format!("{name}={value} is too large"))?;
        }
        "tidings.dedup.window.ms" => {
            spec.dedup_window = match u64::try_from(number()?) {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_millis(n)),
                Err(_) => {
                    return Err(format!(
                        "{name}={value} must be 0 (off) up to {} ms",
                        DEDUP_WINDOW_MAX.as_millis()
                    ))
                }
            }
        }
        "tidings.fsync" => {
            spec.log.fsync = value.parse().map_err(|e| format!("{name}={value}: {e}"))?;
        }
        "tidings.schema.validation" => {
            spec.schema_validation = SchemaValidation::parse(value)
                .ok_or_else(|| format!("{name}={value} is not off or validate"))?;
        }
        "cleanup.policy" if value == "delete" => {}
        "cleanup.policy" => {
            return Err(format!(
                "cleanup.policy={value} is not supported; only delete (compaction is not offered)"
            ))
        }
        _ => match topic_configs(spec).into_iter().find(|c| c.name == name) {
            Some(c) if c.value == value => {}
            Some(c) => return Err(format!("{name} is {} and cannot be changed", c.value)),
            None => return Err(format!("unknown or unsupported topic config {name}")),
        },
    }
    Ok(())
}

/// The server's configs as Kafka names them: what clients and tools ask a
/// broker for.
pub(crate) fn broker_configs(shared: &Shared) -> Vec<Config> {
    let c = &shared.config;
    let defaults = crate::KafkaConfig::default();
    let server = |name, value: String, default: String, kind, doc| Config {
        name,
        source: if value == default {
            ConfigSource::Default
        } else {
            ConfigSource::StaticBroker
        },
        value,
        read_only: true,
        kind,
        doc,
    };
    let fixed = |name, value: String, kind, doc| Config {
        name,
        value,
        source: ConfigSource::Default,
        read_only: true,
        kind,
        doc,
    };
    vec![
        server(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            defaults.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Whether Metadata requests create topics that do not exist (--kafka-auto-create-topics).",
        ),
        fixed(
            "message.max.bytes",
            tidings_broker::BATCH_BYTES_MAX.to_string(),
            ConfigType::Int,
            "The largest record batch the log stores.",
        ),
        server(
            "num.partitions",
            c.default_partitions.to_string(),
            defaults.default_partitions.to_string(),
            ConfigType::Int,
            "Partitions of an auto-created topic (--kafka-default-partitions).",
        ),
        fixed(
            "offset.metadata.max.bytes",
            tidings_broker::COMMIT_METADATA_BYTES_MAX.to_string(),
            ConfigType::Int,
            "The longest metadata stored with a committed offset.",
        ),
        fixed(
            "producer.id.expiration.ms",
            ms(Some(shared.broker.producer_id_expiration())).to_string(),
            ConfigType::Int,
            "How long a partition keeps an idle idempotent producer's state.",
        ),
        server(
            "socket.request.max.bytes",
            c.frame_bytes_max.to_string(),
            defaults.frame_bytes_max.to_string(),
            ConfigType::Int,
            "The largest request frame accepted (--kafka-frame-bytes-max).",
        ),
    ]
}
