//! Tidings' broker: what turns the log into what the guides reach for Kafka,
//! RabbitMQ, Redis Streams and NATS for, embeddable in a Rust process.
//!
//! The broker manages topics (create, alter, delete), publishes CloudEvents, and
//! runs stream-mode consumer groups (see [`Broker::join_group`]) and queue-mode
//! groups with acks, retries and dead letters (see [`Broker::create_queue_group`]).
//! Keyed events
//! go to the partition Kafka's default partitioner picks for their
//! `partitionkey` (see [`partitioner`]), unkeyed ones are spread round-robin, and
//! producer dedup answers a repeated event id with the original offset for the
//! topic's dedup window, across restarts.
//!
//! The broker knows nothing of any wire protocol; the HTTP and Kafka front ends
//! call it.
//!
//! ```
//! use tidings_broker::{Broker, BrokerOptions, TopicSpec};
//! use tidings_types::CloudEvent;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let broker = Broker::open(dir.path(), BrokerOptions::default())?;
//! broker.create_topic("orders", TopicSpec { partitions: 3, ..TopicSpec::default() })?;
//!
//! let placed = CloudEvent::new("/shop", "order.placed").with_partitionkey("order-17");
//! let first = broker.publish("orders", placed.clone()).await?;
//! let again = broker.publish("orders", placed).await?;
//! assert!(again.duplicate);
//! assert_eq!((again.partition, again.offset), (first.partition, first.offset));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tidings_log::{AppendError, Log, Partition, TopicConfig, TopicError};
// The parts of the log that the broker's own API speaks in: front ends take
// them from here and never depend on the log themselves.
pub use tidings_log::limits::PARTITIONS_MAX;
pub use tidings_log::{
    Appended, Batches, CloseError, FileSync, FsyncPolicy, FsyncPolicyParseError, Header,
    LogOptions, OsFileSync, Record,
};
use tidings_types::{
    Clock, CloudEvent, ErrorKind, EventError, KafkaMessage, Offset, PartitionId, TimestampMs,
    TopicName,
};

mod dedup;
mod groups;
mod journal;
pub mod partitioner;
mod queue;
mod settings;

pub use dedup::DEDUP_ENTRIES_MAX;
use dedup::{Claim, Dedup, Placement};
pub use groups::{
    GroupDescription, GroupError, JoinOptions, MemberDescription, PartitionLag, Polled,
    StartPosition, SESSION_TIMEOUT_MAX,
};
pub use queue::{
    Backoff, DeadLetter, Delivery, QueueConfig, QueueCounters, QueueError, QueuePartitionStats,
    QueueStats, ACK_TIMEOUT_MAX, ERROR_TEXT_BYTES_MAX, MAX_DELIVERIES_MAX, NACK_DELAY_MAX,
    QUEUE_WINDOW_MAX,
};
pub use settings::DEDUP_WINDOW_MAX;

/// How a topic is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Number of partitions.
    pub partitions: u32,
    /// When appends are durable; see [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// Size at which a segment is sealed.
    pub segment_bytes: u64,
    /// Sealed segments older than this are deleted.
    pub retention_age: Option<Duration>,
    /// Oldest sealed segments are deleted while the partition stays above this.
    pub retention_bytes: Option<u64>,
    /// How long a published event id is remembered for dedup; `None` turns
    /// dedup off.
    pub dedup_window: Option<Duration>,
}

impl Default for TopicSpec {
    fn default() -> Self {
        let log = TopicConfig::default();
        TopicSpec {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            segment_bytes: log.segment_bytes,
            retention_age: log.retention_age,
            retention_bytes: log.retention_bytes,
            dedup_window: Some(Duration::from_secs(120)),
        }
    }
}

impl TopicSpec {
    fn log_config(&self) -> TopicConfig {
        TopicConfig {
            partitions: self.partitions,
            fsync: self.fsync,
            segment_bytes: self.segment_bytes,
            retention_age: self.retention_age,
            retention_bytes: self.retention_bytes,
            ..TopicConfig::default()
        }
    }
}

/// What [`Broker::alter_topic`] changes; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicChanges {
    /// More partitions (never fewer). Keys hash over the new count from then on,
    /// so a key's later events may go to another partition, as in Kafka.
    pub partitions: Option<u32>,
    /// The fsync policy for appends from now on.
    pub fsync: Option<FsyncPolicy>,
    /// The size at which segments are sealed.
    pub segment_bytes: Option<u64>,
    /// Retention by age; `Some(None)` keeps sealed segments regardless of age.
    pub retention_age: Option<Option<Duration>>,
    /// Retention by size; `Some(None)` removes the limit.
    pub retention_bytes: Option<Option<u64>>,
    /// The dedup window; `Some(None)` turns dedup off.
    pub dedup_window: Option<Option<Duration>>,
}

/// Options for [`Broker::open`].
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// Options of the underlying log, including the clock the broker reads.
    pub log: LogOptions,
}

/// Where a published event is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: PartitionId,
    /// The event's offset in the partition.
    pub offset: Offset,
    /// The event id was already published within the dedup window; nothing was
    /// appended and the answer is the original's place.
    pub duplicate: bool,
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
    /// Events appended to it by publishes (and Kafka produce requests) since the
    /// broker started.
    pub published_events: u64,
    /// Bytes of event data those carried; for batches from Kafka producers, the
    /// batches' size as sent.
    pub published_bytes: u64,
}

/// A topic's configuration and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic.
    pub name: TopicName,
    /// Its configuration.
    pub spec: TopicSpec,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionInfo>,
    /// Ids forgotten before their window ended because the dedup index was full.
    pub dedup_evicted: u64,
    /// Events appended by publishes since the broker started (duplicates excluded).
    pub published: u64,
    /// Bytes of event data those carried.
    pub published_bytes: u64,
}

/// Opening the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] tidings_log::OpenError),
    /// A topic's broker settings or a group's offsets could not be read.
    #[error("cannot read broker settings {path}: {reason}")]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Rebuilding a topic's dedup index from its log failed.
    #[error("cannot rebuild the dedup index of topic {topic}: {reason}")]
    Dedup {
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
}

/// Creating, describing or deleting a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The spec is invalid.
    #[error("invalid topic configuration: {0}")]
    InvalidSpec(String),
    /// The log refused.
    #[error(transparent)]
    Log(#[from] TopicError),
    /// The dedup index could not be refilled from the log.
    #[error("cannot refill the dedup index of topic {topic} from its log: {reason}")]
    Dedup {
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The broker's settings file could not be written.
    #[error("cannot write broker settings {path}: {source}")]
    Io {
        /// The settings file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A publish failed. A batch that fails part-way may have appended some events;
/// publishing it again is safe while dedup is on, as those answer their original
/// offsets.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// An event is not a valid CloudEvent.
    #[error("event {index} is invalid: {error}")]
    InvalidEvent {
        /// Its position in the batch.
        index: usize,
        /// Why.
        error: EventError,
    },
    /// A partition cannot be written.
    #[error(transparent)]
    Partition(#[from] TopicError),
    /// The log refused the append.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Reading a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// No such partition, or it is refused.
    #[error(transparent)]
    Partition(#[from] TopicError),
    /// The log refused the read (offset out of range, corruption).
    #[error(transparent)]
    Log(#[from] tidings_log::ReadError),
}

impl AdminError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AdminError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            AdminError::InvalidSpec(_) => ErrorKind::InvalidTopicConfig,
            AdminError::Log(e) => e.kind(),
            AdminError::Dedup { .. } | AdminError::Io { .. } => ErrorKind::StorageFailed,
        }
    }
}

impl PublishError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PublishError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            PublishError::InvalidEvent { .. } => ErrorKind::InvalidEvent,
            PublishError::Partition(e) => e.kind(),
            PublishError::Append(e) => e.kind(),
        }
    }
}

impl ReadError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            ReadError::Partition(e) => e.kind(),
            ReadError::Log(e) => e.kind(),
        }
    }
}

/// What a stored record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A CloudEvent (binary or structured mode).
    Event(CloudEvent),
    /// A record without CloudEvents headers, as a plain Kafka client wrote it.
    Raw(Record),
}

/// One stored record, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its partition.
    pub partition: PartitionId,
    /// Its offset.
    pub offset: Offset,
    /// When the broker appended it.
    pub timestamp: TimestampMs,
    /// Its content.
    pub payload: Payload,
}

struct BrokerTopic {
    name: TopicName,
    log: Arc<tidings_log::Topic>,
    dedup: Arc<Dedup>,
    next_unkeyed: AtomicU32,
    /// Per partition, events and bytes of event data appended by publishes
    /// since the broker started.
    published: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl BrokerTopic {
    /// The topic's configuration now: the log's, plus the dedup window.
    fn spec(&self) -> TopicSpec {
        let c = self.log.config();
        TopicSpec {
            partitions: c.partitions,
            fsync: c.fsync,
            segment_bytes: c.segment_bytes,
            retention_age: c.retention_age,
            retention_bytes: c.retention_bytes,
            dedup_window: self.dedup.window(),
        }
    }

    fn partitions(&self) -> u32 {
        self.log.partition_count()
    }

    /// Adds appended events and their bytes to a partition's publish counters.
    fn count_published(&self, partition: PartitionId, events: u64, bytes: u64) {
        let mut published = self.published.lock().expect("published lock");
        let at = partition.0 as usize;
        if published.len() <= at {
            published.resize(at + 1, (0, 0));
        }
        published[at].0 += events;
        published[at].1 += bytes;
    }
}

/// The broker over one data directory.
pub struct Broker {
    log: Log,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    topics: RwLock<BTreeMap<TopicName, Arc<BrokerTopic>>>,
    groups: groups::Groups,
    queues: queue::Queues,
    /// Serializes topic creation, alteration and deletion, which each read,
    /// change and write a topic's settings file and its log directory.
    admin: std::sync::Mutex<()>,
    /// When this broker started; part of member ids, so an id from before a
    /// restart is never handed out again.
    started_ms: i64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("dir", &self.dir).finish()
    }
}

impl Broker {
    /// Opens the broker on a data directory (the log's, plus `broker/` for the
    /// broker's own settings) and rebuilds each topic's dedup index from the
    /// events appended within its window.
    pub fn open(dir: impl AsRef<Path>, options: BrokerOptions) -> Result<Broker, OpenError> {
        let dir = dir.as_ref().to_owned();
        let clock = Arc::clone(&options.log.clock);
        let log = Log::open(&dir, options.log)?;
        let mut topics = BTreeMap::new();
        for topic in log.topics() {
            let name = topic.name().clone();
            let dedup_window =
                settings::read(&dir, &name).map_err(|reason| OpenError::Settings {
                    path: settings::path(&dir, &name),
                    reason,
                })?;
            let dedup = Dedup::new(dedup_window);
            rebuild_dedup(&topic, &dedup, clock.now().0).map_err(|reason| OpenError::Dedup {
                topic: name.to_string(),
                reason,
            })?;
            let bt = BrokerTopic {
                name: name.clone(),
                log: topic,
                dedup,
                next_unkeyed: AtomicU32::new(0),
                published: Default::default(),
            };
            topics.insert(name, Arc::new(bt));
        }
        let groups = groups::Groups::load(&dir)
            .map_err(|(path, reason)| OpenError::Settings { path, reason })?;
        let started_ms = clock.now().0;
        let queues = queue::Queues::load(&dir, queue::first_lease(started_ms))
            .map_err(|(path, reason)| OpenError::Settings { path, reason })?;
        Ok(Broker {
            log,
            dir,
            clock,
            topics: RwLock::new(topics),
            groups,
            queues,
            admin: std::sync::Mutex::new(()),
            started_ms,
        })
    }

    /// The clock the broker reads time from; front ends that keep time of
    /// their own (session timeouts of Kafka groups) read the same one.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Creates a topic.
    pub fn create_topic(
        &self,
        name: &str,
        spec: TopicSpec,
    ) -> Result<TopicDescription, AdminError> {
        let name = TopicName::new(name).map_err(TopicError::from)?;
        check_dedup_window(spec.dedup_window)?;
        spec.log_config()
            .validate()
            .map_err(|e| AdminError::InvalidSpec(e.to_string()))?;
        let _admin = self.admin.lock().expect("admin lock");
        // Before the settings file is touched: it belongs to the existing topic.
        if self.topic(name.as_str()).is_some() {
            return Err(TopicError::Exists(name).into());
        }
        // The settings go first: a crash before the topic exists leaves a file
        // that the next create overwrites; a topic never exists without them.
        settings::write(&self.dir, &name, spec.dedup_window).map_err(|source| AdminError::Io {
            path: settings::path(&self.dir, &name),
            source,
        })?;
        let topic = self.log.create_topic(name.as_str(), spec.log_config())?;
        let bt = Arc::new(BrokerTopic {
            name: name.clone(),
            dedup: Dedup::new(spec.dedup_window),
            log: topic,
            next_unkeyed: AtomicU32::new(0),
            published: Default::default(),
        });
        self.topics
            .write()
            .expect("topics lock")
            .insert(name, Arc::clone(&bt));
        Ok(describe(&bt))
    }

    fn topic(&self, name: &str) -> Option<Arc<BrokerTopic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    /// A topic's configuration and partitions.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, AdminError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_owned()))?;
        Ok(describe(&topic))
    }

    /// Every topic, by name.
    pub fn list_topics(&self) -> Vec<TopicDescription> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .map(|t| describe(t))
            .collect()
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
        let current = t.log.config();
        let mut config = current.clone();
        if let Some(partitions) = changes.partitions {
            config.partitions = partitions;
        }
        if let Some(fsync) = changes.fsync {
            config.fsync = fsync;
        }
        if let Some(bytes) = changes.segment_bytes {
            config.segment_bytes = bytes;
        }
        if let Some(age) = changes.retention_age {
            config.retention_age = age;
        }
        if let Some(bytes) = changes.retention_bytes {
            config.retention_bytes = bytes;
        }
        let window = changes.dedup_window.unwrap_or_else(|| t.dedup.window());
        check_dedup_window(window)?;
        config
            .validate()
            .map_err(|e| AdminError::InvalidSpec(e.to_string()))?;
        // The log checks this too; checked here, it is refused as an invalid
        // spec before anything is written.
        if config.partitions < current.partitions {
            let e = tidings_log::ConfigError::PartitionsDecrease {
                from: current.partitions,
                to: config.partitions,
            };
            return Err(AdminError::InvalidSpec(e.to_string()));
        }
        if config != current {
            self.log.alter_topic(name, config)?;
        }
        if window != t.dedup.window() {
            settings::write(&self.dir, &t.name, window).map_err(|source| AdminError::Io {
                path: settings::path(&self.dir, &t.name),
                source,
            })?;
            let was_on = t.dedup.enabled();
            t.dedup.set_window(window);
            if !was_on {
                rebuild_dedup(&t.log, &t.dedup, self.clock.now().0).map_err(|reason| {
                    AdminError::Dedup {
                        topic: t.name.to_string(),
                        reason,
                    }
                })?;
            }
        }
        Ok(describe(&t))
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
        settings::remove(&self.dir, &topic.name).map_err(|source| AdminError::Io {
            path: settings::path(&self.dir, &topic.name),
            source,
        })
    }

    /// Publishes one event. See [`publish_batch`](Self::publish_batch).
    pub async fn publish(&self, topic: &str, event: CloudEvent) -> Result<Published, PublishError> {
        let mut out = self.publish_batch(topic, vec![event]).await?;
        Ok(out.pop().expect("one event in, one answer out"))
    }

    /// Publishes events to `topic`, each to the partition its `partitionkey`
    /// hashes to (or round-robin without one), and answers where each one is, in
    /// order. Events whose id the topic saw within its dedup window are not
    /// appended again; their answer is the original's place, marked `duplicate`.
    pub async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<Published>, PublishError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| PublishError::UnknownTopic(topic.to_owned()))?;
        let mut messages = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            messages.push(
                event
                    .to_kafka()
                    .map_err(|error| PublishError::InvalidEvent { index, error })?,
            );
        }
        let ids: Vec<&str> = events.iter().map(CloudEvent::id).collect();
        let (guard, known) = loop {
            if !t.dedup.enabled() {
                break (None, vec![None; ids.len()]);
            }
            match t.dedup.claim(&ids, self.clock.now().0) {
                Claim::Claimed(guard, known) => break (Some(guard), known),
                Claim::Wait(rx) => dedup::wait(rx).await,
            }
        };

        // Which events go where: new ones, grouped by partition, in order. A repeat
        // of an id earlier in the same batch follows its first occurrence.
        let partitions = t.partitions();
        let now = self.clock.now();
        let mut first_of: std::collections::HashMap<&str, usize> = Default::default();
        let mut plan: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        let mut follows = vec![None; events.len()];
        for (i, msg) in messages.iter().enumerate() {
            if known[i].is_some() {
                continue;
            }
            if guard.is_some() {
                if let Some(&first) = first_of.get(ids[i]) {
                    follows[i] = Some(first);
                    continue;
                }
                first_of.insert(ids[i], i);
            }
            let p = match &msg.key {
                Some(key) => partitioner::partition_for_key(key, partitions),
                None => t.next_unkeyed.fetch_add(1, Ordering::Relaxed) % partitions,
            };
            plan.entry(p).or_default().push(i);
        }

        // One append per partition, all under way at once.
        let mut appends = Vec::with_capacity(plan.len());
        for (p, indexes) in &plan {
            let partition = t.log.partition(PartitionId(*p))?;
            let records: Vec<Record> = indexes
                .iter()
                .map(|&i| to_record(&mut messages[i], now))
                .collect();
            appends.push(async move { (*p, indexes, partition.append(&records).await) });
        }
        let mut placed: Vec<Option<Placement>> = vec![None; events.len()];
        let mut failure = None;
        for (p, indexes, result) in join_all(appends).await {
            match result {
                Ok(appended) => {
                    let bytes: usize = indexes
                        .iter()
                        .map(|&i| messages[i].value.as_ref().map_or(0, |v| v.len()))
                        .sum();
                    t.count_published(PartitionId(p), indexes.len() as u64, bytes as u64);
                    for (n, &i) in indexes.iter().enumerate() {
                        let offset = appended.base_offset.plus(n as u64);
                        placed[i] = Some(Placement {
                            partition: PartitionId(p),
                            offset,
                        });
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(guard) = guard {
            let fresh: Vec<(&str, Placement)> = plan
                .values()
                .flatten()
                .filter_map(|&i| placed[i].map(|p| (ids[i], p)))
                .collect();
            guard.finish(&fresh, self.clock.now().0);
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok((0..events.len())
            .map(|i| {
                let (p, duplicate) = match (known[i], follows[i]) {
                    (Some(p), _) => (p, true),
                    (None, Some(first)) => (placed[first].expect("appended"), true),
                    (None, None) => (placed[i].expect("appended when no append failed"), false),
                };
                Published {
                    topic: t.name.clone(),
                    partition: p.partition,
                    offset: p.offset,
                    duplicate,
                }
            })
            .collect())
    }

    /// Appends RecordBatch v2 batches to one partition exactly as a Kafka producer
    /// sent them (compressed ones too); the log rewrites only their base offsets.
    /// Durable under the topic's fsync policy when this returns. Raw appends skip
    /// producer dedup, as a Kafka broker without idempotence does.
    pub async fn append_batches(
        &self,
        topic: &str,
        partition: PartitionId,
        batches: bytes::BytesMut,
    ) -> Result<tidings_log::Appended, PublishError> {
        self.queue_append_batches(topic, partition, batches)
            .await?
            .await
    }

    /// [`append_batches`](Self::append_batches) in two steps: this returns once
    /// the batches are queued in order behind earlier ones, with a future of
    /// their acknowledgement. A Kafka connection queues its produce requests one
    /// after another this way and awaits their syncs together.
    pub async fn queue_append_batches(
        &self,
        topic: &str,
        partition: PartitionId,
        batches: bytes::BytesMut,
    ) -> Result<
        impl std::future::Future<Output = Result<tidings_log::Appended, PublishError>> + Send + 'static,
        PublishError,
    > {
        let t = self
            .topic(topic)
            .ok_or_else(|| PublishError::UnknownTopic(topic.to_owned()))?;
        let p = t.log.partition(partition)?;
        let bytes = batches.len() as u64;
        let queued = p.queue_append_batches(batches).await?;
        Ok(async move {
            let appended = queued.await?;
            let events = appended.last_offset.0 - appended.base_offset.0 + 1;
            t.count_published(partition, events, bytes);
            Ok(appended)
        })
    }

    /// Reads whole stored batches of one partition from `from` on, up to about
    /// `max_bytes` (at least one batch), byte for byte: what a Kafka fetch serves.
    pub fn read_batches(
        &self,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<tidings_log::Batches, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        Ok(t.log.partition(partition)?.read(from, max_bytes)?)
    }

    /// A partition's log-start offset and high-watermark.
    pub fn offsets(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<(Offset, Offset), ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        let p = t.log.partition(partition)?;
        Ok((p.log_start_offset(), p.high_watermark()))
    }

    /// How many partitions a topic has, or `None` when there is no such topic.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|t| t.partitions())
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

    /// Reads the entries of one partition from `from` on, up to about `max_bytes`
    /// (at least one batch), without a consumer group. Records written by plain
    /// Kafka clients, without CloudEvents headers, come back raw.
    pub fn read(
        &self,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        let p = t.log.partition(partition)?;
        let records = p.read_records(from, max_bytes)?;
        Ok(records.iter().map(|r| entry_of(partition, r)).collect())
    }

    /// The offset a reader starting at `start` in one partition reads first: the
    /// log start, the high-watermark, an offset clamped into what is stored, or
    /// the first event appended at or after a time (the high-watermark when there
    /// is none).
    pub fn position(
        &self,
        topic: &str,
        partition: PartitionId,
        start: StartPosition,
    ) -> Result<Offset, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        let p = t.log.partition(partition)?;
        let (low, high) = (p.log_start_offset(), p.high_watermark());
        Ok(match start {
            StartPosition::Earliest => low,
            StartPosition::Latest => high,
            StartPosition::Offset(o) => o.clamp(low, high),
            StartPosition::Timestamp(ts) => p.offset_for_timestamp(ts)?.unwrap_or(high),
        })
    }

    /// Waits up to `wait` until any of `positions` (a partition and the offset
    /// a reader reads next) has an event to read, for readers that follow a
    /// topic without a group. Returns at once when one already has.
    pub async fn wait_for_events(
        &self,
        topic: &str,
        positions: &[(PartitionId, Offset)],
        wait: Duration,
    ) -> Result<(), ReadError> {
        let positions: Vec<(&str, PartitionId, Offset)> =
            positions.iter().map(|&(p, at)| (topic, p, at)).collect();
        self.wait_for_events_in(&positions, wait).await
    }

    /// [`wait_for_events`](Self::wait_for_events) over partitions of several
    /// topics: each position names its topic.
    pub async fn wait_for_events_in(
        &self,
        positions: &[(&str, PartitionId, Offset)],
        wait: Duration,
    ) -> Result<(), ReadError> {
        let mut watchers = Vec::with_capacity(positions.len());
        for &(topic, p, at) in positions {
            let t = self
                .topic(topic)
                .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
            let part = t.log.partition(p)?;
            // Subscribed before the check, so an append right after it still wakes us.
            watchers.push(part.watch_high_watermark());
            if part.high_watermark() > at {
                return Ok(());
            }
        }
        groups::wait_for_any(watchers, tokio::time::Instant::now() + wait).await;
        Ok(())
    }

    /// Shuts down gracefully: hands out no more leases, waits up to `deadline`
    /// for the consumers to answer the leases they hold, then syncs and closes
    /// the log. Group state is already durable at every answer and commit; leases
    /// still held when the deadline passes are delivered again after a restart.
    /// Returns how many leases were still held.
    pub async fn shutdown(&self, deadline: Duration) -> Result<usize, tidings_log::CloseError> {
        let left = self.drain(deadline).await;
        if left > 0 {
            tracing::warn!(
                leases = left,
                "shutting down with leases still held; their events will be delivered again"
            );
        }
        self.log.close()?;
        Ok(left)
    }

    /// The first half of [`shutdown`](Self::shutdown), for a server that must
    /// keep taking answers while it waits: hands out no more leases and waits up
    /// to `deadline` for the leases held to be answered. Returns how many are
    /// still held.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.queues.closing.store(true, Ordering::Release);
        self.drain_leases(tokio::time::Instant::now() + deadline)
            .await
    }

    /// Finishes queued appends and syncs every partition.
    pub fn close(&self) -> Result<(), tidings_log::CloseError> {
        self.log.close()
    }
}

fn describe(t: &BrokerTopic) -> TopicDescription {
    let published = t.published.lock().expect("published lock").clone();
    let partitions = (0..t.partitions())
        .filter_map(|p| t.log.partition(PartitionId(p)).ok())
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
            }
        })
        .collect();
    TopicDescription {
        name: t.name.clone(),
        spec: t.spec(),
        partitions,
        dedup_evicted: t.dedup.evicted(),
        published: published.iter().map(|p| p.0).sum(),
        published_bytes: published.iter().map(|p| p.1).sum(),
    }
}

/// Runs futures concurrently on the caller's task and returns their outputs in
/// order. A publish touches few partitions, so polling each on every wake-up is
/// cheaper than spawning a task per partition.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// The log record for `msg`, whose headers move into it (they are not needed
/// afterwards).
fn to_record(msg: &mut KafkaMessage, now: TimestampMs) -> Record {
    Record {
        key: msg.key.clone(),
        value: msg.value.clone(),
        headers: std::mem::take(&mut msg.headers)
            .into_iter()
            .map(|(key, value)| Header {
                key,
                value: Some(value),
            })
            .collect(),
        // The broker's append time: dedup windows and time lookups use it; the
        // event's own time travels in `ce_time`.
        timestamp: now,
    }
}

fn check_dedup_window(window: Option<Duration>) -> Result<(), AdminError> {
    match window {
        Some(w) if w.is_zero() || w > DEDUP_WINDOW_MAX => Err(AdminError::InvalidSpec(format!(
            "dedup_window is {w:?}; it must be 1 ms..={DEDUP_WINDOW_MAX:?}, or absent to turn dedup off"
        ))),
        _ => Ok(()),
    }
}

/// Refills `dedup` from the `ce_id` headers of records appended within its window.
fn rebuild_dedup(topic: &tidings_log::Topic, dedup: &Dedup, now: i64) -> Result<(), String> {
    let Some(window) = dedup.window_ms() else {
        return Ok(());
    };
    for p in 0..topic.partition_count() {
        let partition: Arc<Partition> =
            topic.partition(PartitionId(p)).map_err(|e| e.to_string())?;
        let since = TimestampMs(now.saturating_sub(window));
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
                let id = r
                    .record
                    .headers
                    .iter()
                    .find(|h| h.key == "ce_id")
                    .and_then(|h| h.value.clone());
                if let Some(id) = id.as_deref().and_then(|b| std::str::from_utf8(b).ok()) {
                    let placement = Placement {
                        partition: PartitionId(p),
                        offset: r.offset,
                    };
                    dedup.record(id, placement, r.record.timestamp.0);
                }
            }
        }
    }
    Ok(())
}

/// A stored record as an entry: a CloudEvent when its headers make one, else
/// the raw record (written by a plain Kafka client).
pub(crate) fn entry_of(partition: PartitionId, r: &tidings_log::StoredRecord) -> Entry {
    let message = KafkaMessage {
        key: r.record.key.clone(),
        value: r.record.value.clone(),
        headers: r
            .record
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone().unwrap_or_default()))
            .collect(),
    };
    let payload = match CloudEvent::from_kafka(&message) {
        Ok(event) => Payload::Event(event),
        Err(_) => Payload::Raw(r.record.clone()),
    };
    Entry {
        partition,
        offset: r.offset,
        timestamp: r.record.timestamp,
        payload,
    }
}
