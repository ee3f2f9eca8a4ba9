//! Topics: how one is specified and changed, what the broker keeps beside the
//! log's topic (its dedup index and publish counters), and administration:
//! create, describe, alter, delete.
//!
//! Other parts of the broker reach a topic's partitions through
//! [`BrokerTopic::partition`], never through the log's topic directly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_log::{Partition, TopicConfig, TopicError};
use tidings_types::{Offset, PartitionId, TopicName};

use crate::dedup::{Dedup, Placement};
use crate::settings::{self, DEDUP_WINDOW_MAX};
use crate::{AdminError, Broker, PARTITIONS_MAX};

/// Most partitions a broker may hold over all its topics (dead-letter topics
/// included), and its default limit
/// ([`BrokerOptions::partitions_total_max`](crate::BrokerOptions)). Each
/// partition has a writer thread of its own and files open while it is
/// written, so this bounds the threads and descriptors the topics of one
/// broker take.
pub const PARTITIONS_TOTAL_MAX: u32 = 4096;

const _: () = assert!(PARTITIONS_MAX <= PARTITIONS_TOTAL_MAX);

/// How a topic is created: the log's configuration and the broker's own
/// settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// How the log stores it: partitions, fsync policy, segments, retention.
    pub log: TopicConfig,
    /// How long a published event id is remembered for dedup; `None` turns
    /// dedup off.
    pub dedup_window: Option<Duration>,
    /// Whether events are checked against their schemas before they are
    /// appended (the broker's schema registry must be configured).
    pub schema_validation: SchemaValidation,
}

/// Whether a topic checks events against their schemas at publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchemaValidation {
    /// Events are appended without a check.
    #[default]
    Off,
    /// Every event and record is resolved to its schema in the registry and
    /// validated before anything of its batch is appended; one that fails, or
    /// has no schema, fails the batch.
    Validate,
}

impl SchemaValidation {
    /// The setting's name: `off` or `validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaValidation::Off => "off",
            SchemaValidation::Validate => "validate",
        }
    }

    /// The setting named `s`.
    pub fn parse(s: &str) -> Option<SchemaValidation> {
        match s {
            "off" => Some(SchemaValidation::Off),
            "validate" => Some(SchemaValidation::Validate),
            _ => None,
        }
    }
}

impl Default for TopicSpec {
    fn default() -> Self {
        TopicSpec {
            log: TopicConfig::default(),
            dedup_window: Some(Duration::from_secs(120)),
            schema_validation: SchemaValidation::Off,
        }
    }
}

impl TopicSpec {
    /// The default spec with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> TopicSpec {
        TopicSpec {
            log: TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
            ..TopicSpec::default()
        }
    }

    /// This spec with `changes` made.
    #[must_use]
    pub fn changed(mut self, changes: &TopicChanges) -> TopicSpec {
        let log = &mut self.log;
        if let Some(partitions) = changes.partitions {
            log.partitions = partitions;
        }
        if let Some(fsync) = changes.fsync {
            log.fsync = fsync;
        }
        if let Some(bytes) = changes.segment_bytes {
            log.segment_bytes = bytes;
        }
        if let Some(age) = changes.retention_age {
            log.retention_age = age;
        }
        if let Some(bytes) = changes.retention_bytes {
            log.retention_bytes = bytes;
        }
        if let Some(window) = changes.dedup_window {
            self.dedup_window = window;
        }
        if let Some(v) = changes.schema_validation {
            self.schema_validation = v;
        }
        if let Some(age) = changes.segment_age {
            self.log.segment_age = age;
        }
        if let Some(bytes) = changes.index_interval_bytes {
            self.log.index_interval_bytes = bytes;
        }
        self
    }

    fn settings(&self) -> settings::Settings {
        settings::Settings {
            dedup_window: self.dedup_window,
            validate_schemas: self.schema_validation == SchemaValidation::Validate,
        }
    }

    /// Checks every setting against the limits.
    fn validate(&self) -> Result<(), AdminError> {
        match self.dedup_window {
            Some(w) if w.is_zero() || w > DEDUP_WINDOW_MAX => {
                return Err(AdminError::InvalidSpec(format!(
                    "dedup window is {} ms; it must be 1..={} ms, or none to turn dedup off",
                    w.as_millis(),
                    DEDUP_WINDOW_MAX.as_millis()
                )))
            }
            _ => {}
        }
        self.log
            .validate()
            .map_err(|e| AdminError::InvalidSpec(e.to_string()))
    }
}

/// What [`Broker::alter_topic`] changes; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicChanges {
    /// More partitions (never fewer). Keys hash over the new count from then on,
    /// so a key's later events may go to another partition, as in Kafka.
    pub partitions: Option<u32>,
    /// The fsync policy for appends from now on.
    pub fsync: Option<tidings_log::FsyncPolicy>,
    /// The size at which segments are sealed.
    pub segment_bytes: Option<u64>,
    /// Retention by age; `Some(None)` keeps sealed segments regardless of age.
    pub retention_age: Option<Option<Duration>>,
    /// Retention by size; `Some(None)` removes the limit.
    pub retention_bytes: Option<Option<u64>>,
    /// The dedup window; `Some(None)` turns dedup off.
    pub dedup_window: Option<Option<Duration>>,
    /// Segment age before a roll (`None` inside: never by age).
    pub segment_age: Option<Option<Duration>>,
    /// Spacing of the sparse index entries, for segments written from now on.
    pub index_interval_bytes: Option<u32>,
    /// Whether events are checked against their schemas from now on.
    pub schema_validation: Option<SchemaValidation>,
}

/// One partition as [`Broker::describe_topic`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition.
    pub partition: PartitionId,
    /// First offset still stored.
    pub log_start: Offset,
    /// One past the last readable offset.
    pub high_watermark: Offset,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Events appended to it (publishes, Kafka produce requests, dead letters,
    /// redrives) since the broker started.
    pub published_events: u64,
    /// Bytes of event data those carried; for batches from Kafka producers, the
    /// batches' size as sent.
    pub published_bytes: u64,
    /// Why it stopped accepting appends after a failed write or sync, until
    /// the process restarts and recovers it; `None` while it accepts them.
    pub failure: Option<Arc<str>>,
}

/// A topic's configuration and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic.
    pub name: TopicName,
    /// Its configuration.
    pub spec: TopicSpec,
    /// Its partitions, in order, those recovery refused left out.
    pub partitions: Vec<PartitionInfo>,
    /// The partitions recovery refused at start (they are not served until
    /// what refused them is repaired), with the reason.
    pub refused: Vec<(PartitionId, String)>,
    /// Ids forgotten before their window ended because the dedup index was full.
    pub dedup_evicted: u64,
    /// Events appended since the broker started (duplicates excluded).
    pub published: u64,
    /// Bytes of event data those carried.
    pub published_bytes: u64,
}

/// A topic as the broker holds it.
pub(crate) struct BrokerTopic {
    pub(crate) name: TopicName,
    log: Arc<tidings_log::Topic>,
    pub(crate) dedup: Arc<Dedup>,
    /// The partition the next unkeyed event goes to (round-robin).
    pub(crate) next_unkeyed: AtomicU32,
    /// Whether events are checked against their schemas.
    validate_schemas: AtomicBool,
    /// Tells this topic from an earlier one of the same name: unique in the
    /// process.
    pub(crate) serial: u64,
    /// Per partition, events and bytes of event data appended since the
    /// broker started.
    published: Mutex<Vec<(u64, u64)>>,
    /// A partition recovery refused, and why, when the dedup index was
    /// rebuilt without its events: the topic then takes no events (see
    /// [`BrokerTopic::dedup_gap`]).
    dedup_gap: Mutex<Option<(PartitionId, String)>>,
}

impl BrokerTopic {
    fn new(log: Arc<tidings_log::Topic>, dedup: Arc<Dedup>, validate_schemas: bool) -> BrokerTopic {
        BrokerTopic {
            name: log.name().clone(),
            log,
            dedup,
            next_unkeyed: AtomicU32::new(0),
            validate_schemas: AtomicBool::new(validate_schemas),
            serial: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            published: Mutex::default(),
            dedup_gap: Mutex::default(),
        }
    }

    /// While the topic keeps a dedup window, a partition recovery refused at
    /// start (with the reason): the events it holds are missing from the
    /// dedup index, so an event sent again could be appended to another
    /// partition as new. Events are refused until the partition is repaired
    /// and the broker reopened; raw Kafka batches, which dedup does not
    /// cover, and reads of the other partitions go on.
    pub(crate) fn dedup_gap(&self) -> Option<(PartitionId, String)> {
        if !self.dedup.enabled() {
            return None;
        }
        self.dedup_gap.lock().expect("dedup gap lock").clone()
    }

    /// The topic's configuration now: the log's, plus the broker's settings.
    pub(crate) fn spec(&self) -> TopicSpec {
        TopicSpec {
            log: self.log.config(),
            dedup_window: self.dedup.window(),
            schema_validation: if self.validates_schemas() {
                SchemaValidation::Validate
            } else {
                SchemaValidation::Off
            },
        }
    }

    /// Whether events are checked against their schemas before appending.
    pub(crate) fn validates_schemas(&self) -> bool {
        self.validate_schemas.load(Ordering::Acquire)
    }

    /// How many partitions the topic has.
    pub(crate) fn partitions(&self) -> u32 {
        self.log.partition_count()
    }

    /// One partition of the topic (an error when it has no such partition or
    /// the partition failed recovery).
    pub(crate) fn partition(&self, partition: PartitionId) -> Result<Arc<Partition>, TopicError> {
        self.log.partition(partition)
    }

    /// Adds appended events and their bytes to a partition's counters.
    pub(crate) fn count_published(&self, partition: PartitionId, events: u64, bytes: u64) {
        let mut published = self.published.lock().expect("published lock");
        let at = partition.0 as usize;
        if published.len() <= at {
            published.resize(at + 1, (0, 0));
        }
        published[at].0 += events;
        published[at].1 += bytes;
    }

    /// The topic's configuration, partitions and counters.
    pub(crate) fn describe(&self) -> TopicDescription {
        let published = self.published.lock().expect("published lock").clone();
        let partitions = (0..self.partitions())
            .filter_map(|p| self.log.partition(PartitionId(p)).ok())
            .map(|p| {
                let (events, bytes) = published
                    .get(p.id().0 as usize)
                    .copied()
                    .unwrap_or_default();
                PartitionInfo {
                    partition: p.id(),
                    log_start: p.log_start_offset(),
                    high_watermark: p.high_watermark(),
                    size_bytes: p.size_bytes(),
                    published_events: events,
                    published_bytes: bytes,
                    failure: p.failure(),
                }
            })
            .collect();
        let refused = self
            .log
            .refused()
            .into_iter()
            .map(|(p, e)| (p, e.to_string()))
            .collect();
        TopicDescription {
            name: self.name.clone(),
            spec: self.spec(),
            partitions,
            refused,
            dedup_evicted: self.dedup.evicted(),
            published: published.iter().map(|p| p.0).sum(),
            published_bytes: published.iter().map(|p| p.1).sum(),
        }
    }

    /// Refills the dedup index from the `ce_source` and `ce_id` headers of the
    /// records appended within its window.
    fn rebuild_dedup(&self, now: i64) -> Result<(), String> {
        let Some(window) = self.dedup.window_ms() else {
            return Ok(());
        };
        let refused = self.log.refused();
        if let Some((partition, error)) = refused.first() {
            tracing::error!(
                topic = %self.name,
                partition = partition.0,
                error = %error,
                "a refused partition's events are missing from the dedup index: the topic takes no events until it is repaired"
            );
            *self.dedup_gap.lock().expect("dedup gap lock") = Some((*partition, error.to_string()));
        }
        for p in 0..self.partitions() {
            if refused.iter().any(|(id, _)| id.0 == p) {
                continue;
            }
            let partition = self.partition(PartitionId(p)).map_err(|e| e.to_string())?;
            let since = tidings_types::TimestampMs(now.saturating_sub(window));
            let Some(mut at) = partition
                .offset_for_timestamp(since)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            while at < partition.high_watermark() {
                let records = partition
                    .read_records(at, 1024 * 1024)
                    .map_err(|e| e.to_string())?;
                let Some(last) = records.last() else { break };
                at = last.offset.next();
                for r in records {
                    let header = |name: &str| {
                        r.record
                            .headers
                            .iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value.as_deref())
                            .and_then(|b| std::str::from_utf8(b).ok())
                    };
                    if let (Some(source), Some(id)) = (header("ce_source"), header("ce_id")) {
                        let placement = Placement {
                            partition: PartitionId(p),
                            offset: r.offset,
                        };
                        self.dedup.record(
                            self.dedup.key(source, id),
                            placement,
                            r.record.timestamp.0,
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// Every topic of a broker, by name.
pub(crate) type Topics = BTreeMap<TopicName, Arc<BrokerTopic>>;

/// The broker's topics over an opened log: each with the dedup window of its
/// settings file and its dedup index refilled from the log.
pub(crate) fn load(
    log: &tidings_log::Log,
    storage: &dyn tidings_log::Storage,
    dir: &std::path::Path,
    now: i64,
) -> Result<Topics, crate::OpenError> {
    let mut topics = BTreeMap::new();
    for topic in log.topics() {
        let name = topic.name().clone();
        let settings =
            settings::read(storage, dir, &name).map_err(|reason| crate::OpenError::Settings {
                path: settings::path(dir, &name),
                reason,
            })?;
        let t = BrokerTopic::new(
            topic,
            Dedup::new(settings.dedup_window),
            settings.validate_schemas,
        );
        t.rebuild_dedup(now)
            .map_err(|reason| crate::OpenError::Dedup {
                topic: name.to_string(),
                reason,
            })?;
        topics.insert(name, Arc::new(t));
    }
    Ok(topics)
}

impl Broker {
    /// A topic by name.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<BrokerTopic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    /// Partitions held now over every topic.
    fn partitions_held(&self) -> u32 {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .map(|t| t.partitions())
            .sum()
    }

    /// Refuses schema validation on a broker without a registry.
    fn check_validation(&self, spec: &TopicSpec) -> Result<(), AdminError> {
        if spec.schema_validation == SchemaValidation::Validate && self.registry.is_none() {
            return Err(AdminError::InvalidSpec(
                "schema validation needs a schema registry, and this broker has none (tidings serve always has one; an embedded broker gets one through BrokerOptions::registry)".into(),
            ));
        }
        Ok(())
    }

    /// Refuses `asked` more partitions past the broker's limit.
    fn check_partitions_left(&self, asked: u32) -> Result<(), AdminError> {
        let have = self.partitions_held();
        let limit = self.partitions_total_max;
        if have.saturating_add(asked) > limit {
            return Err(AdminError::TooManyPartitions { have, asked, limit });
        }
        Ok(())
    }

    /// Creates a topic.
    pub fn create_topic(
        &self,
        name: &str,
        spec: TopicSpec,
    ) -> Result<TopicDescription, AdminError> {
        let name = TopicName::new(name).map_err(TopicError::from)?;
        spec.validate()?;
        let _admin = self.admin.lock().expect("admin lock");
        // Before the settings file is touched: it belongs to the existing topic.
        if self.topic(name.as_str()).is_some() {
            return Err(TopicError::Exists(name).into());
        }
        self.check_partitions_left(spec.log.partitions)?;
        // The settings go first: a crash before the topic exists leaves a file
        // that the next create overwrites; a topic never exists without them.
        self.check_validation(&spec)?;
        settings::write(&*self.storage, &self.dir, &name, spec.settings()).map_err(|source| {
            AdminError::Io {
                path: settings::path(&self.dir, &name),
                source,
            }
        })?;
        let topic = self.log.create_topic(name.as_str(), spec.log)?;
        let bt = Arc::new(BrokerTopic::new(
            topic,
            Dedup::new(spec.dedup_window),
            spec.schema_validation == SchemaValidation::Validate,
        ));
        self.topics
            .write()
            .expect("topics lock")
            .insert(name, Arc::clone(&bt));
        Ok(bt.describe())
    }

    /// A topic's configuration and partitions.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, AdminError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_owned()))?;
        Ok(topic.describe())
    }

    /// Every topic, by name.
    pub fn list_topics(&self) -> Vec<TopicDescription> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .map(|t| t.describe())
            .collect()
    }

    /// Every topic's name and partition count, by name.
    pub fn topic_names(&self) -> Vec<(TopicName, u32)> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .map(|t| (t.name.clone(), t.partitions()))
            .collect()
    }

    /// How many partitions a topic has, or `None` when there is no such topic.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|t| t.partitions())
    }

    /// Changes a topic's settings and answers its new description. Every change
    /// is checked before any is made. The log's settings are written first, the
    /// dedup window second; each write is atomic and durable, so after a crash
    /// the topic has its old settings, its new ones, or (if the crash fell between
    /// the two writes) the new log settings with the old window.
    ///
    /// New partitions join stream groups at their next poll or heartbeat (a
    /// rebalance) and queue groups at their next receive, from their first event.
    /// A window turned on is filled from the events already in the log within it.
    pub fn alter_topic(
        &self,
        name: &str,
        changes: TopicChanges,
    ) -> Result<TopicDescription, AdminError> {
        let _admin = self.admin.lock().expect("admin lock");
        let t = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_owned()))?;
        let current = t.spec();
        let wanted = current.clone().changed(&changes);
        wanted.validate()?;
        // The log checks this too; checked here, it is refused as an invalid
        // spec before anything is written.
        if wanted.log.partitions < current.log.partitions {
            let e = tidings_log::ConfigError::PartitionsDecrease {
                from: current.log.partitions,
                to: wanted.log.partitions,
            };
            return Err(AdminError::InvalidSpec(e.to_string()));
        }
        self.check_partitions_left(wanted.log.partitions - current.log.partitions)?;
        self.check_validation(&wanted)?;
        if wanted.log != current.log {
            self.log.alter_topic(name, wanted.log.clone())?;
        }
        if wanted.schema_validation != current.schema_validation {
            settings::write(&*self.storage, &self.dir, &t.name, wanted.settings()).map_err(
                |source| AdminError::Io {
                    path: settings::path(&self.dir, &t.name),
                    source,
                },
            )?;
            t.validate_schemas.store(
                wanted.schema_validation == SchemaValidation::Validate,
                Ordering::Release,
            );
        }
        let window = wanted.dedup_window;
        if window != current.dedup_window {
            settings::write(&*self.storage, &self.dir, &t.name, wanted.settings()).map_err(
                |source| AdminError::Io {
                    path: settings::path(&self.dir, &t.name),
                    source,
                },
            )?;
            let was_on = t.dedup.enabled();
            t.dedup.set_window(window);
            if !was_on {
                t.rebuild_dedup(self.clock.now().0)
                    .map_err(|reason| AdminError::Dedup {
                        topic: t.name.to_string(),
                        reason,
                    })?;
            }
        }
        Ok(t.describe())
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        let _admin = self.admin.lock().expect("admin lock");
        let topic = {
            let mut topics = self.topics.write().expect("topics lock");
            topics
                .remove(name)
                .ok_or_else(|| AdminError::UnknownTopic(name.to_owned()))?
        };
        self.log.delete_topic(topic.name.as_str())?;
        settings::remove(&*self.storage, &self.dir, &topic.name).map_err(|source| AdminError::Io {
            path: settings::path(&self.dir, &topic.name),
            source,
        })
    }
}
