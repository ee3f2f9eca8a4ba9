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
//! broker.create_topic("orders", TopicSpec::with_partitions(3))?;
//!
//! let placed = CloudEvent::new("/shop", "order.placed").with_partitionkey("order-17");
//! let first = broker.publish("orders", placed.clone()).await?;
//! let again = broker.publish("orders", placed).await?;
//! assert!(again.duplicate);
//! assert_eq!((again.partition, again.offset), (first.partition, first.offset));
//! # Ok(())
//! # }
//! ```
//!
//! Modules: `topics` (specs, administration, what the broker keeps beside the
//! log's topics), `append` (the one path every append takes: publishes after
//! dedup, dead letters, redrives; and Kafka producers' batches), `read`
//! (entries, offsets, waiting for events), `groups` (stream-mode groups),
//! `queue` (queue-mode groups: a pure delivery state machine, its journal
//! codec, delivery and dead letters), `journal`, `dedup`, `settings`,
//! `partitioner`, `error`, `names`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tidings_log::{Log, Storage};
// The parts of the log that the broker's own API speaks in: front ends take
// them from here and never depend on the log themselves.
pub use tidings_log::limits::{BATCH_BYTES_MAX, PARTITIONS_MAX};
pub use tidings_log::{
    Appended, Batches, CloseError, FileSync, FsyncPolicy, FsyncPolicyParseError, Header,
    LogOptions, OsFileSync, Record, StorageFile, TopicConfig,
};
use tidings_types::{Clock, PartitionId};

mod append;
mod catalog;
mod dedup;
mod error;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod groups;
mod journal;
mod names;
pub mod partitioner;
mod producer_ids;
mod queue;
mod read;
mod settings;
mod topics;

pub use append::Published;
pub use catalog::{
    TopicSeen, TypeSeen, DATASCHEMAS_PER_TYPE_MAX, SOURCES_PER_TYPE_MAX, TYPES_PER_TOPIC_MAX,
};
pub use dedup::DEDUP_ENTRIES_MAX;
pub use error::{AdminError, OpenError, PublishError, ReadError};
pub use groups::{
    ClassicError, CommittedOffset, DescribedGroup, DescribedMember, GroupDescription, GroupError,
    JoinOptions, JoinWait, Joined, KafkaJoin, ListedGroup, MemberDescription, PartitionLag, Polled,
    StartPosition, SyncOutcome, SyncWait, COMMIT_METADATA_BYTES_MAX, GROUP_MEMBERS_MAX,
    GROUP_OFFSETS_MAX, HTTP_CLIENT_ID, KAFKA_SESSION_TIMEOUT_MAX, KAFKA_SESSION_TIMEOUT_MIN,
    SESSION_TIMEOUT_MAX,
};
pub use names::{GroupName, GroupNameError, GROUP_NAME_BYTES_MAX};
pub use producer_ids::{ProducerIdError, PRODUCER_ID_BLOCK};
pub use queue::{
    Backoff, DeadLetter, Delivery, DeliveryState, LeaseId, PendingDelivery, QueueConfig,
    QueueCounters, QueueError, QueuePartitionStats, QueueStats, RedriveTarget, ACK_TIMEOUT_MAX,
    DLQ_HANDLED_MAX, DLQ_HEADER_PREFIX, ERROR_TEXT_BYTES_MAX, MAX_DELIVERIES_MAX, NACK_DELAY_MAX,
    ORIGIN_OFFSET, ORIGIN_PARTITION, QUEUE_WINDOW_MAX,
};
pub use read::{Entry, Payload};
pub use settings::DEDUP_WINDOW_MAX;
pub use topics::{
    PartitionInfo, SchemaValidation, TopicChanges, TopicDescription, TopicSpec,
    PARTITIONS_TOTAL_MAX,
};

/// Options for [`Broker::open`].
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Options of the underlying log, including the clock the broker reads.
    pub log: LogOptions,
    /// Most partitions the broker holds over all its topics, at most
    /// [`PARTITIONS_TOTAL_MAX`]; a topic that would pass it is refused.
    pub partitions_total_max: u32,
    /// The schema registry topics that validate check events against; without
    /// one, no topic may validate.
    pub registry: Option<Arc<tidings_schema::Registry>>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            log: LogOptions::default(),
            partitions_total_max: PARTITIONS_TOTAL_MAX,
            registry: None,
        }
    }
}

/// The broker over one data directory.
pub struct Broker {
    log: Log,
    dir: PathBuf,
    /// The log's storage, which the broker's own files go through too.
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    topics: RwLock<topics::Topics>,
    groups: groups::Groups,
    queues: queue::Queues,
    /// Serializes topic creation, alteration and deletion, which each read,
    /// change and write a topic's settings file and its log directory.
    admin: std::sync::Mutex<()>,
    /// When this broker started; part of member ids, so an id from before a
    /// restart is never handed out again.
    started_ms: i64,
    /// See [`BrokerOptions::partitions_total_max`].
    partitions_total_max: u32,
    /// Ids for Kafka's idempotent producers.
    producer_ids: producer_ids::ProducerIds,
    /// How long partitions keep an idle idempotent producer's state.
    producer_id_expiration: Duration,
    /// See [`BrokerOptions::registry`].
    registry: Option<Arc<tidings_schema::Registry>>,
    /// What the topics hold by type, as far as scanned.
    catalog: catalog::Catalog,
}

/// The broker's directories under the data directory, made durable: each
/// one created is synced into its parent, so no power loss forgets a
/// directory that files were made durable in (a group's offsets, a queue's
/// snapshot). The log made the data directory itself durable.
fn create_dirs(storage: &dyn Storage, dir: &Path) -> Result<(), OpenError> {
    let broker = dir.join("broker");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| OpenError::Settings {
            path,
            reason: e.to_string(),
        }
    };
    for sub in ["groups", "queues", "topics"] {
        let path = broker.join(sub);
        storage.create_dir_all(&path).map_err(io(&path))?;
    }
    storage.sync_dir(&broker).map_err(io(&broker))?;
    storage.sync_dir(dir).map_err(io(dir))
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
        if !(1..=PARTITIONS_TOTAL_MAX).contains(&options.partitions_total_max) {
            return Err(OpenError::Options(format!(
                "partitions_total_max is {}; it must be 1..={PARTITIONS_TOTAL_MAX}",
                options.partitions_total_max
            )));
        }
        let clock = Arc::clone(&options.log.clock);
        let storage = Arc::clone(&options.log.storage);
        let producer_id_expiration = options.log.producer_id_expiration;
        let log = Log::open(&dir, options.log)?;
        create_dirs(&*storage, &dir)?;
        let topics = topics::load(&log, &*storage, &dir, clock.now().0)?;
        let groups = groups::Groups::load(&*storage, &dir)
            .map_err(|(path, reason)| OpenError::Settings { path, reason })?;
        let seen = topics
            .values()
            .flat_map(|t| (0..t.partitions()).filter_map(|p| t.partition(PartitionId(p)).ok()))
            .filter_map(|p| p.producer_id_max())
            .max();
        let producer_ids = producer_ids::ProducerIds::load(Arc::clone(&storage), &dir, seen)
            .map_err(|(path, reason)| OpenError::Settings { path, reason })?;
        let started_ms = clock.now().0;
        let queues = queue::Queues::load(&storage, &dir, queue::first_lease(started_ms))
            .map_err(|(path, reason)| OpenError::Settings { path, reason })?;
        Ok(Broker {
            log,
            dir,
            storage,
            clock,
            topics: RwLock::new(topics),
            groups,
            queues,
            admin: std::sync::Mutex::new(()),
            started_ms,
            partitions_total_max: options.partitions_total_max,
            producer_ids,
            producer_id_expiration,
            registry: options.registry,
            catalog: catalog::Catalog::default(),
        })
    }

    /// The clock the broker reads time from; front ends that keep time of
    /// their own (session timeouts of Kafka groups) read the same one.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Shuts down gracefully: hands out no more leases, waits up to `deadline`
    /// for the consumers to answer the leases they hold, then syncs and closes
    /// the log. Group state is already durable at every answer and commit; leases
    /// still held when the deadline passes are delivered again after a restart.
    /// Returns how many leases were still held.
    pub async fn shutdown(&self, deadline: Duration) -> Result<usize, CloseError> {
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
        self.queues
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.drain_leases(tokio::time::Instant::now() + deadline)
            .await
    }

    /// Syncs what queue groups' journals staged (the leases and attempt
    /// counts of receives, which do not wait for a sync), then finishes queued
    /// appends and syncs every partition. Dropping a broker without closing
    /// it leaves its queue groups as a crash would: deliveries not yet synced
    /// are handed out again after a restart, with their earlier attempt counts.
    pub fn close(&self) -> Result<(), CloseError> {
        if let Err((path, reason)) = self.queues.flush() {
            // Everything answered was synced before its answer; what is lost is
            // the attempt counts of deliveries in flight.
            tracing::error!(path = %path.display(), %reason, "a queue journal could not be synced at close; its deliveries in flight will be handed out again");
        }
        self.log.close()
    }
}
