//! Queue-mode groups: members share every partition; each delivered event is
//! leased for an ack timeout and answered `ack`, `nack` (retry, optionally after a
//! delay) or `reject` (dead-letter now). A lease that expires is a failed attempt.
//! Failed attempts back off exponentially with jitter; after `max_deliveries`
//! attempts the event goes to the group's dead-letter topic, with headers naming
//! where it came from and why it failed.
//!
//! Per partition the group keeps its *ack floor* (every offset below it is acked
//! or dead-lettered), the offsets above the floor already resolved, and the
//! unresolved offsets it has read (with their attempts and retry times). So every
//! appended event is, for the group, acked, dead-lettered or still pending — none
//! is silently dropped. With key ordering, an event is only delivered once every
//! earlier event with the same key in its partition is resolved: order holds per
//! key while other keys proceed.
//!
//! Every delivery (its attempt count), ack, nack, reject and dead-letter is a
//! record in the group's journal (`<group>.journal`, see the journal module).
//! Answers are synced before the call returns, and calls on one group that
//! overlap share one `fdatasync`; a receive's records are synced with the
//! next sync of its group (its ack's, usually) or at [`crate::Broker::close`], not
//! before the receive returns: a crash in between forgets those deliveries,
//! which are then due again with their earlier attempt counts (so a crash can
//! give an event one delivery past `max_deliveries`). When
//! the journal has grown past twice the snapshot (and at least 1 MiB), the
//! snapshot (`<group>.state`) is replaced atomically and the journal starts over.
//! After a restart, leases are void and their events are delivered again (at
//! least once); an event whose ack was answered is never delivered again. The span
//! between the floor and the read position is bounded by [`QUEUE_WINDOW_MAX`],
//! which also bounds the snapshot.
//!
//! The module is split along its seams: `state` is the delivery state as a pure
//! state machine (property-tested against a model of what each event went
//! through), `codec` the bytes of its journal records and snapshot, `delivery`
//! the broker's receive and answers (reading the log, staging the journal),
//! `dead_letters` the dead-letter topic (appending, listing, redriving).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidings_types::{ErrorKind, Offset, PartitionId, TimestampMs, TopicName};

use tidings_log::Storage;

use crate::journal::Journal;
use crate::{Entry, GroupName, ReadError};

pub(crate) mod codec;
mod dead_letters;
mod delivery;
pub(crate) mod state;

pub use dead_letters::{RedriveTarget, DLQ_HEADER_PREFIX, ORIGIN_OFFSET, ORIGIN_PARTITION};
use state::QueueState;

/// Most offsets a queue group may hold unresolved beyond its ack floor, per
/// partition. A consumer that never acks holds back its group at this distance.
pub const QUEUE_WINDOW_MAX: u64 = 10_000;
/// Most dead letters a group keeps as handled one by one above its
/// dead-letter floor (redriven because of their error while older ones
/// wait); a redrive of some stops there until the oldest are handled.
pub const DLQ_HANDLED_MAX: usize = 10_000;
/// Longest ack timeout.
pub const ACK_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Most delivery attempts a group may allow.
pub const MAX_DELIVERIES_MAX: u32 = 1000;
/// Longest error text kept for a dead letter.
pub const ERROR_TEXT_BYTES_MAX: usize = 1024;
/// Longest delay a nack may ask for, the same bound as the backoff's.
pub const NACK_DELAY_MAX: Duration = Duration::from_secs(24 * 3600);

/// The journal is folded into a new snapshot once it is larger than this and
/// than twice the snapshot.
const COMPACT_BYTES_MIN: u64 = 1024 * 1024;

const _: () = assert!(ERROR_TEXT_BYTES_MAX < crate::journal::RECORD_BYTES_MAX / 2);
// A record of handled dead letters (kind, count, offsets) fits a journal record.
const _: () = assert!(8 + DLQ_HANDLED_MAX * 8 <= crate::journal::RECORD_BYTES_MAX);

/// Exponential backoff between attempts, with jitter: the n-th retry waits
/// between half and all of `min(initial × factor^(n-1), max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Growth per attempt, 1 to 10.
    pub factor: u32,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2,
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay bound before retry number `retry` (1-based), before jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let grown = (1..retry).try_fold(self.initial, |d, _| d.checked_mul(self.factor));
        grown.map_or(self.max, |d| d.min(self.max))
    }
}

/// How a queue-mode group delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a delivery is leased before it counts as failed.
    pub ack_timeout: Duration,
    /// Attempts before an event is dead-lettered. A restart or a crash of the
    /// broker can add one delivery (see the module's notes).
    pub max_deliveries: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// At most one event per key in flight, so events of one key are handled in
    /// order while other keys proceed.
    pub key_ordering: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            backoff: Backoff::default(),
            key_ordering: false,
        }
    }
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<(), QueueError> {
        let bad = |m: String| Err(QueueError::InvalidConfig(m));
        if self.ack_timeout.is_zero() || self.ack_timeout > ACK_TIMEOUT_MAX {
            return bad(format!(
                "ack_timeout is {:?}; it must be 1 ms..={ACK_TIMEOUT_MAX:?}",
                self.ack_timeout
            ));
        }
        if !(1..=MAX_DELIVERIES_MAX).contains(&self.max_deliveries) {
            return bad(format!(
                "max_deliveries is {}; it must be 1..={MAX_DELIVERIES_MAX}",
                self.max_deliveries
            ));
        }
        let b = self.backoff;
        if b.initial.is_zero() || b.initial > b.max || b.max > ACK_TIMEOUT_MAX * 24 {
            return bad(format!(
                "backoff initial {:?} and max {:?} must satisfy 1 ms <= initial <= max <= 24 h",
                b.initial, b.max
            ));
        }
        if !(1..=10).contains(&b.factor) {
            return bad(format!("backoff factor is {}; it must be 1..=10", b.factor));
        }
        Ok(())
    }
}

/// An event handed to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Answer with this lease.
    pub lease: LeaseId,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The event.
    pub entry: Entry,
}

/// A dead letter, as [`Broker::dead_letters`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its offset in the dead-letter topic.
    pub offset: Offset,
    /// Where it came from.
    pub source_partition: PartitionId,
    /// Its offset there.
    pub source_offset: Offset,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// The event itself (with the dead-letter headers).
    pub entry: Entry,
}

/// A queue-mode operation failed; no state changed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The group name is invalid.
    #[error("invalid group name: {0}")]
    InvalidName(#[from] crate::names::GroupNameError),
    /// The group's dead-letter or retry topic (`<topic>.<group>.dlq`,
    /// `<topic>.<group>.retry`) would not be a valid topic name: the topic
    /// and group names are too long together.
    #[error("queue group {group} on topic {topic}: {reason}")]
    DerivedTopicName {
        /// The group.
        group: String,
        /// The group's topic.
        topic: String,
        /// Which topic name, and why it is refused.
        reason: String,
    },
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// No such queue group.
    #[error("queue group {0} does not exist")]
    UnknownGroup(String),
    /// The group exists.
    #[error("group {0} already exists")]
    Exists(String),
    /// The configuration is out of range.
    #[error("invalid queue configuration: {0}")]
    InvalidConfig(String),
    /// The lease is not one this group handed out.
    #[error("lease {0:?} is unknown to this group")]
    UnknownLease(String),
    /// The lease ran out (or the broker restarted) and its event was, or will be,
    /// delivered again.
    #[error("lease {0:?} has expired; the event goes to another attempt")]
    LeaseExpired(String),
    /// Reading or appending failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Dead-lettering failed; the event stays pending.
    #[error("cannot dead-letter: {0}")]
    DeadLetter(String),
    /// The group's dead-letter topic could not be created.
    #[error("cannot create the dead-letter topic: {0}")]
    DeadLetterTopic(crate::AdminError),
    /// The broker is shutting down and hands out no more leases.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The group has deliveries out and was not deleted.
    #[error("queue group {group} has {leased} leased deliveries; wait for their answers or force the deletion")]
    Busy {
        /// The group.
        group: String,
        /// Deliveries leased now.
        leased: usize,
    },
    /// The state file could not be written or read.
    #[error("queue state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl QueueError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueueError::InvalidName(_) | QueueError::DerivedTopicName { .. } => {
                ErrorKind::InvalidGroupName
            }
            QueueError::InvalidConfig(_) => ErrorKind::InvalidRequest,
            QueueError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            QueueError::UnknownGroup(_) => ErrorKind::UnknownGroup,
            QueueError::Exists(_) => ErrorKind::GroupExists,
            QueueError::UnknownLease(_) => ErrorKind::UnknownLease,
            QueueError::LeaseExpired(_) => ErrorKind::LeaseExpired,
            QueueError::Read(e) => e.kind(),
            QueueError::ShuttingDown => ErrorKind::ShuttingDown,
            QueueError::Busy { .. } => ErrorKind::GroupActive,
            QueueError::DeadLetterTopic(e) => e.kind(),
            QueueError::DeadLetter(_) | QueueError::State { .. } => ErrorKind::StorageFailed,
        }
    }
}

/// A lease on one delivered event: which event, and which of its deliveries.
/// It travels as `<partition>.<offset>.<id>`; ids grow from one delivery to
/// the next and across restarts, so a lease from an earlier delivery of the
/// same event is told from the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId {
    partition: u32,
    offset: u64,
    id: u64,
}

impl LeaseId {
    /// The partition of the leased event.
    pub fn partition(&self) -> PartitionId {
        PartitionId(self.partition)
    }

    /// The offset of the leased event.
    pub fn offset(&self) -> Offset {
        Offset(self.offset)
    }

    /// Which delivery of the event this lease is for.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The lease with these parts, as [`partition`](Self::partition),
    /// [`offset`](Self::offset) and [`id`](Self::id) answer them: how a
    /// client that keeps the three as numbers names the lease again. A lease
    /// the group never handed out is refused when used, as a text one is.
    pub fn from_parts(partition: PartitionId, offset: Offset, id: u64) -> LeaseId {
        LeaseId {
            partition: partition.0,
            offset: offset.0,
            id,
        }
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.partition, self.offset, self.id)
    }
}

impl std::str::FromStr for LeaseId {
    /// A text that is no lease is a lease this group never handed out.
    type Err = QueueError;

    fn from_str(text: &str) -> Result<LeaseId, QueueError> {
        let unknown = || QueueError::UnknownLease(text.to_owned());
        let mut parts = text.split('.');
        let mut next = || parts.next().ok_or_else(unknown);
        let partition = next()?.parse().map_err(|_| unknown())?;
        let offset = next()?.parse().map_err(|_| unknown())?;
        let id = next()?.parse().map_err(|_| unknown())?;
        if parts.next().is_some() {
            return Err(unknown());
        }
        Ok(LeaseId {
            partition,
            offset,
            id,
        })
    }
}

/// What a queue group has done since the broker started, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Deliveries, first attempts and retries.
    pub delivered: u64,
    /// Deliveries that were retries.
    pub redelivered: u64,
    /// Acks.
    pub acked: u64,
    /// Nacks.
    pub nacked: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Events dead-lettered (after max deliveries or by reject).
    pub dead_lettered: u64,
    /// Deliveries given back unhandled by a stopping consumer.
    pub released: u64,
    /// Dead letters redriven to the group.
    pub redriven: u64,
}

/// One partition of a queue group, as [`Broker::queue_stats`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePartitionStats {
    /// The partition.
    pub partition: PartitionId,
    /// Every offset below it is acked or dead-lettered.
    pub ack_floor: Offset,
    /// The partition's high-watermark.
    pub high_watermark: Offset,
    /// Events not yet acked or dead-lettered: high-watermark minus the floor,
    /// less those resolved above the floor.
    pub lag: u64,
    /// Events leased right now.
    pub in_flight: u64,
    /// Events waiting for a retry.
    pub retrying: u64,
}

/// An unresolved event of a queue group that was delivered at least once:
/// held under a lease now, or waiting for its next attempt; as
/// [`Broker::pending_deliveries`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDelivery {
    /// Its partition of the group's topic, or `None` for the redrive lane
    /// (then `offset` is in the group's retry topic).
    pub partition: Option<PartitionId>,
    /// Its offset there.
    pub offset: Offset,
    /// Deliveries so far.
    pub attempts: u32,
    /// While leased: the id of the lease and when it runs out.
    pub lease: Option<(LeaseId, TimestampMs)>,
    /// While waiting: when it may be delivered again.
    pub retry_at: Option<TimestampMs>,
    /// The error of its last failed attempt (empty when none failed).
    pub last_error: String,
}

/// Where one event of a queue group's topic stands in the group, as
/// [`Broker::delivery_state`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Acked or dead-lettered.
    Resolved,
    /// Delivered at least once and not resolved: leased now, or waiting for
    /// its next attempt.
    Pending(PendingDelivery),
    /// Not delivered yet.
    Waiting,
}

/// A queue group's progress and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// The topic the group consumes.
    pub topic: TopicName,
    /// The topic its dead letters go to.
    pub dead_letter_topic: TopicName,
    /// How it delivers.
    pub config: QueueConfig,
    /// Per partition.
    pub partitions: Vec<QueuePartitionStats>,
    /// The redrive lane: dead letters redriven to the group (offsets of its
    /// retry topic), as a partition's progress.
    pub redriven: QueuePartitionStats,
    /// Dead letters not yet redriven or purged.
    pub dead_letters: u64,
    /// Since the broker started.
    pub counters: QueueCounters,
}

/// A queue group: its state, its dead-letter topic and its files.
#[derive(Debug)]
pub(crate) struct QueueGroup {
    name: GroupName,
    topic: TopicName,
    dead_letters: TopicName,
    /// `<topic>.<group>.retry`, or why that is no topic name.
    retry: Result<TopicName, tidings_types::TopicNameError>,
    state: QueueState,
    /// The snapshot's generation; the journal follows it.
    generation: u64,
    /// Size of the last snapshot written or read.
    snapshot_bytes: u64,
    journal: Arc<Journal>,
    /// Deleted: whoever still holds it finds it gone.
    deleted: bool,
}

fn journal_path(dir: &Path, group: &GroupName) -> PathBuf {
    dir.join("broker")
        .join("queues")
        .join(format!("{group}.journal"))
}

fn state_path(dir: &Path, group: &GroupName) -> PathBuf {
    dir.join("broker")
        .join("queues")
        .join(format!("{group}.state"))
}

/// Lease ids start at the broker's start time × 1000, so an id from before a
/// restart is not handed out again unless the earlier run leased more than a
/// thousand events per millisecond of its life (or the clock went back).
pub(crate) fn first_lease(started_ms: i64) -> u64 {
    u64::try_from(started_ms).unwrap_or(0).saturating_mul(1000)
}

/// A change staged in a group's journal; [`durable`](Self::durable) waits for it
/// once the group is unlocked, so other calls on the group can share the sync.
struct Staged {
    journal: Arc<Journal>,
    seq: u64,
}

impl Staged {
    async fn durable(self) -> Result<(), QueueError> {
        let journal = self.journal;
        journal
            .sync_to(self.seq)
            .await
            .map_err(|reason| journal_error(&journal, &reason))
    }
}

fn journal_error(journal: &Journal, reason: &str) -> QueueError {
    QueueError::State {
        path: journal.path().to_owned(),
        reason: reason.to_owned(),
    }
}

/// The queue groups of a broker.
#[derive(Default)]
pub(crate) struct Queues {
    /// Signalled after every answer, for a shutdown waiting on leases.
    answered: tokio::sync::Notify,
    /// Set by a shutdown: no more leases are handed out.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Held from a creation's check that the name is free to its insert, so two
    /// creations of one name cannot both succeed.
    creating: std::sync::Mutex<()>,
    groups: std::sync::Mutex<HashMap<GroupName, Arc<tokio::sync::Mutex<QueueGroup>>>>,
    /// Every group's journal, for a close to flush what receives staged
    /// without waiting (see [`Queues::flush`]).
    journals: std::sync::Mutex<Vec<std::sync::Weak<Journal>>>,
}

impl Queues {
    /// Loads every group: its snapshot, then its journal replayed on top. Lease
    /// ids start at `first_lease`, above any handed out before the restart.
    pub(crate) fn load(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        first_lease: u64,
    ) -> Result<Queues, (PathBuf, String)> {
        let queues = Queues::default();
        let qdir = dir.join("broker").join("queues");
        let entries = match storage.list(&qdir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(queues),
            Err(e) => return Err((qdir, e.to_string())),
        };
        for entry in entries {
            let path = qdir.join(&entry.name);
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".state"))
            else {
                continue;
            };
            let name = GroupName::new(name).map_err(|e| (path.clone(), e.to_string()))?;
            // No bound but the file's own size yet: a snapshot holds what the
            // queue window and the partitions allow.
            let bytes = storage
                .read_bounded(&path, u64::MAX)
                .map_err(|e| (path.clone(), e.to_string()))?;
            let snapshot = codec::decode(&bytes).map_err(|e| (path.clone(), e))?;
            let mut state = snapshot.state;
            state.rng ^= bytes.len() as u64;
            let jpath = journal_path(dir, &name);
            let (journal, records) =
                Journal::open(Arc::clone(storage), &jpath, snapshot.generation)
                    .map_err(|e| (jpath.clone(), e.to_string()))?;
            for (n, record) in records.iter().enumerate() {
                state
                    .apply(record)
                    .map_err(|e| (jpath.clone(), format!("record {n}: {e}")))?;
            }
            state.restart(first_lease);
            let group = QueueGroup {
                name: name.clone(),
                retry: dead_letters::retry_topic_of(&snapshot.topic, &name),
                topic: snapshot.topic,
                dead_letters: snapshot.dead_letters,
                state,
                generation: snapshot.generation,
                snapshot_bytes: bytes.len() as u64,
                journal: queues.track(journal),
                deleted: false,
            };
            queues
                .groups
                .lock()
                .expect("queues lock")
                .insert(name, Arc::new(tokio::sync::Mutex::new(group)));
        }
        Ok(queues)
    }

    /// The group `name`, locked; one deleted while this waited is unknown.
    /// Keeps `journal` among those [`flush`](Self::flush) reaches.
    pub(crate) fn track(&self, journal: Journal) -> Arc<Journal> {
        let journal = Arc::new(journal);
        let mut journals = self.journals.lock().expect("journals lock");
        journals.retain(|j| j.strong_count() > 0);
        journals.push(Arc::downgrade(&journal));
        journal
    }

    /// Writes and syncs what every group's journal has staged and not synced
    /// (the records of receives, which do not wait for a sync): a clean close
    /// keeps every delivery's attempt. Answers the first failure.
    pub(crate) fn flush(&self) -> Result<(), (PathBuf, Arc<str>)> {
        let journals: Vec<Arc<Journal>> = self
            .journals
            .lock()
            .expect("journals lock")
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let mut first = None;
        for journal in journals {
            if let Err(reason) = journal.flush_blocking() {
                first.get_or_insert((journal.path().to_owned(), reason));
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn lock(
        &self,
        name: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<QueueGroup>, QueueError> {
        let g = self.get(name)?.lock_owned().await;
        if g.deleted {
            return Err(QueueError::UnknownGroup(name.to_owned()));
        }
        Ok(g)
    }

    fn get(&self, name: &str) -> Result<Arc<tokio::sync::Mutex<QueueGroup>>, QueueError> {
        self.groups
            .lock()
            .expect("queues lock")
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::UnknownGroup(name.to_owned()))
    }

    /// Every group, by name.
    fn all(&self) -> Vec<(GroupName, Arc<tokio::sync::Mutex<QueueGroup>>)> {
        let mut all: Vec<_> = self
            .groups
            .lock()
            .expect("queues lock")
            .iter()
            .map(|(name, g)| (name.clone(), Arc::clone(g)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
