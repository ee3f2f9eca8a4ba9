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
//! All of it except the leases is durable before anyone hears of it: every
//! delivery (its attempt count), ack, nack, reject and dead-letter is a record in
//! the group's journal (`<group>.journal`, see the journal module), synced before
//! the call returns; calls on one group that overlap share one `fdatasync`. When
//! the journal has grown past twice the snapshot (and at least 1 MiB), the
//! snapshot (`<group>.state`) is replaced atomically and the journal starts over.
//! After a restart, leases are void and their events are delivered again (at
//! least once); an event whose ack was answered is never delivered again. The span
//! between the floor and the read position is bounded by [`QUEUE_WINDOW_MAX`],
//! which also bounds the snapshot.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidings_log::{format, FsyncPolicy, Header, Record, StoredRecord};
use tidings_types::{ErrorKind, Offset, PartitionId, TopicName};

use crate::journal::{self, Journal};
use crate::{Broker, Entry, Payload, ReadError, TopicSpec};

/// Most offsets a queue group may hold unresolved beyond its ack floor, per
/// partition. A consumer that never acks holds back its group at this distance.
pub const QUEUE_WINDOW_MAX: u64 = 10_000;
/// Longest ack timeout.
pub const ACK_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Most delivery attempts a group may allow.
pub const MAX_DELIVERIES_MAX: u32 = 1000;
/// Longest error text kept for a dead letter.
pub const ERROR_TEXT_BYTES_MAX: usize = 1024;

const STATE_MAGIC: [u8; 4] = *b"TDQS";
/// Bytes read from a partition at a time when filling the pending set.
const READ_BYTES: usize = 256 * 1024;
/// How much a receive reads to hand out the events it chose: a receive takes a
/// few dozen events, so reading a whole `READ_BYTES` for them would decode
/// records it does not deliver.
const DELIVERY_READ_BYTES: usize = 32 * 1024;
/// The journal is folded into a new snapshot once it is larger than this and
/// than twice the snapshot.
const COMPACT_BYTES_MIN: u64 = 1024 * 1024;

/// Journal record kinds.
const REC_ATTEMPT: u32 = 1;
const REC_RESOLVE: u32 = 2;
const REC_FLOOR: u32 = 3;
const REC_DLQ_FLOOR: u32 = 4;

/// Longest delay a nack may ask for, the same bound as the backoff's.
pub const NACK_DELAY_MAX: Duration = Duration::from_secs(24 * 3600);

/// How often a waiting receive looks again for retries and expired leases that
/// came due, when no publish wakes it sooner.
const QUEUE_WAIT_TICK: Duration = Duration::from_millis(50);

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
    /// Attempts before an event is dead-lettered.
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
    fn validate(&self) -> Result<(), QueueError> {
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
    pub lease: String,
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
    InvalidName(#[from] tidings_types::TopicNameError),
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
    /// The broker is shutting down and hands out no more leases.
    #[error("the broker is shutting down")]
    ShuttingDown,
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
            QueueError::InvalidName(_) => ErrorKind::InvalidGroupName,
            QueueError::InvalidConfig(_) => ErrorKind::InvalidRequest,
            QueueError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            QueueError::UnknownGroup(_) => ErrorKind::UnknownGroup,
            QueueError::Exists(_) => ErrorKind::GroupExists,
            QueueError::UnknownLease(_) => ErrorKind::UnknownLease,
            QueueError::LeaseExpired(_) => ErrorKind::LeaseExpired,
            QueueError::Read(e) => e.kind(),
            QueueError::ShuttingDown => ErrorKind::ShuttingDown,
            QueueError::DeadLetter(_) | QueueError::State { .. } => ErrorKind::StorageFailed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    key: Option<Bytes>,
    attempts: u32,
    eligible_at: i64,
    first_failure: Option<i64>,
    last_failure: Option<i64>,
    last_error: String,
    /// `(lease id, deadline)` while delivered. Not persisted.
    lease: Option<(u64, i64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PartitionQueue {
    floor: u64,
    cursor: u64,
    resolved: BTreeSet<u64>,
    pending: BTreeMap<u64, Pending>,
}

/// Extends the group to partitions the topic gained since; they are read from
/// their first event, as everything in them came after the group existed.
/// Returns whether it did.
fn follow_partitions(g: &mut QueueGroup, t: &crate::BrokerTopic) -> bool {
    let count = t.partitions() as usize;
    if g.partitions.len() >= count {
        return false;
    }
    g.partitions.resize_with(count, PartitionQueue::default);
    true
}

impl PartitionQueue {
    /// Forgets everything below `low` (removed by retention before it was read).
    fn raise_floor(&mut self, low: u64) {
        self.pending.retain(|o, _| *o >= low);
        self.resolved.retain(|o| *o >= low);
        self.floor = self.floor.max(low);
        self.cursor = self.cursor.max(self.floor);
    }

    fn resolve(&mut self, offset: u64) {
        self.pending.remove(&offset);
        self.resolved.insert(offset);
        while self.resolved.remove(&self.floor) {
            self.floor += 1;
        }
    }
}

#[derive(Debug)]
pub(crate) struct QueueGroup {
    name: String,
    topic: TopicName,
    dead_letters: TopicName,
    config: QueueConfig,
    partitions: Vec<PartitionQueue>,
    /// Dead letters below this offset were redriven or purged.
    dlq_floor: u64,
    next_lease: u64,
    rng: u64,
    counters: QueueCounters,
    /// The snapshot's generation; the journal follows it.
    generation: u64,
    /// Size of the last snapshot written or read.
    snapshot_bytes: u64,
    /// Journal records of the operation under way, staged when it finishes.
    records: Vec<u8>,
    /// Attached when the group is created or loaded.
    journal: Option<Arc<Journal>>,
}

impl QueueGroup {
    fn journal(&self) -> &Arc<Journal> {
        self.journal.as_ref().expect("attached at create and load")
    }

    fn note(&mut self, body: Out) {
        journal::frame(&mut self.records, &body.0);
    }

    /// Records the state of a pending offset (after a delivery or a failure).
    fn note_attempt(&mut self, p: usize, offset: u64) {
        let pe = &self.partitions[p].pending[&offset];
        let mut o = Out(Vec::new());
        o.u32(REC_ATTEMPT);
        o.u32(u32::try_from(p).expect("bounded"));
        o.u64(offset);
        encode_pending(&mut o, pe);
        self.note(o);
    }

    /// Resolves an acked offset and records it.
    fn acked(&mut self, p: usize, off: u64) {
        self.partitions[p].resolve(off);
        self.note_resolve(p, off);
        self.counters.acked += 1;
    }

    /// Records that an offset was acked or dead-lettered.
    fn note_resolve(&mut self, p: usize, offset: u64) {
        let mut o = Out(Vec::new());
        o.u32(REC_RESOLVE);
        o.u32(u32::try_from(p).expect("bounded"));
        o.u64(offset);
        self.note(o);
    }

    /// Records a floor raised because retention removed events never read.
    fn note_floor(&mut self, p: usize) {
        let mut o = Out(Vec::new());
        o.u32(REC_FLOOR);
        o.u32(u32::try_from(p).expect("bounded"));
        o.u64(self.partitions[p].floor);
        self.note(o);
    }

    fn note_dlq_floor(&mut self) {
        let mut o = Out(Vec::new());
        o.u32(REC_DLQ_FLOOR);
        o.u64(self.dlq_floor);
        self.note(o);
    }

    fn partition_mut(&mut self, p: u32) -> Result<&mut PartitionQueue, String> {
        let p = p as usize;
        if p >= tidings_log::limits::PARTITIONS_MAX as usize {
            return Err(format!("partition {p} is beyond any topic"));
        }
        if self.partitions.len() <= p {
            self.partitions.resize_with(p + 1, PartitionQueue::default);
        }
        Ok(&mut self.partitions[p])
    }

    /// Replays one journal record. Records carry whole states, not steps, and
    /// skip offsets already resolved, so replaying one twice changes nothing.
    fn apply(&mut self, body: &[u8]) -> Result<(), String> {
        let mut i = In(body);
        match i.u32()? {
            REC_ATTEMPT => {
                let p = i.u32()?;
                let offset = i.u64()?;
                let pe = decode_pending(&mut i)?;
                let pq = self.partition_mut(p)?;
                if offset >= pq.floor && !pq.resolved.contains(&offset) {
                    pq.pending.insert(offset, pe);
                }
            }
            REC_RESOLVE => {
                let p = i.u32()?;
                let offset = i.u64()?;
                let pq = self.partition_mut(p)?;
                if offset >= pq.floor && !pq.resolved.contains(&offset) {
                    pq.resolve(offset);
                }
            }
            REC_FLOOR => {
                let p = i.u32()?;
                let low = i.u64()?;
                let pq = self.partition_mut(p)?;
                pq.raise_floor(low);
            }
            REC_DLQ_FLOOR => self.dlq_floor = self.dlq_floor.max(i.u64()?),
            other => return Err(format!("unknown journal record kind {other}")),
        }
        if !i.0.is_empty() {
            return Err("trailing bytes in a journal record".into());
        }
        Ok(())
    }
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

/// Lease ids start at the broker's start time × 1000, so an id from before a
/// restart is not handed out again unless the earlier run leased more than a
/// thousand events per millisecond of its life (or the clock went back).
pub(crate) fn first_lease(started_ms: i64) -> u64 {
    u64::try_from(started_ms).unwrap_or(0).saturating_mul(1000)
}

fn journal_path(dir: &Path, group: &str) -> PathBuf {
    dir.join("broker")
        .join("queues")
        .join(format!("{group}.journal"))
}

fn encode_pending(o: &mut Out, pe: &Pending) {
    o.u32(pe.attempts);
    o.i64(pe.eligible_at);
    o.i64(opt(pe.first_failure));
    o.i64(opt(pe.last_failure));
    o.bytes(pe.last_error.as_bytes());
    match &pe.key {
        Some(k) => {
            o.u32(1);
            o.bytes(k);
        }
        None => o.u32(0),
    }
}

fn decode_pending(i: &mut In<'_>) -> Result<Pending, String> {
    Ok(Pending {
        attempts: i.u32()?,
        eligible_at: i.i64()?,
        first_failure: unopt(i.i64()?),
        last_failure: unopt(i.i64()?),
        last_error: String::from_utf8_lossy(i.bytes()?).into_owned(),
        key: match i.u32()? {
            0 => None,
            _ => Some(Bytes::copy_from_slice(i.bytes()?)),
        },
        lease: None,
    })
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
    /// Dead letters not yet redriven or purged.
    pub dead_letters: u64,
    /// Since the broker started.
    pub counters: QueueCounters,
}

fn state_path(dir: &Path, group: &str) -> PathBuf {
    dir.join("broker")
        .join("queues")
        .join(format!("{group}.state"))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Little-endian writer for the state file body.
struct Out(Vec<u8>);

impl Out {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).expect("bounded"));
        self.0.extend_from_slice(b);
    }
}

/// Bounds-checked reader for the state file body.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("needs {n} more bytes, {} remain", self.0.len()));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn count(&mut self, bound: u64) -> Result<usize, String> {
        let n = u64::from(self.u32()?);
        if n > bound {
            return Err(format!("count {n} exceeds {bound}"));
        }
        Ok(usize::try_from(n).expect("bounded"))
    }
}

fn opt(v: Option<i64>) -> i64 {
    v.unwrap_or(i64::MIN)
}

fn unopt(v: i64) -> Option<i64> {
    (v != i64::MIN).then_some(v)
}

fn encode(g: &QueueGroup) -> Vec<u8> {
    let mut o = Out(Vec::new());
    o.u64(g.generation);
    o.bytes(g.topic.as_str().as_bytes());
    o.bytes(g.dead_letters.as_str().as_bytes());
    let c = &g.config;
    o.i64(ms(c.ack_timeout));
    o.u32(c.max_deliveries);
    o.i64(ms(c.backoff.initial));
    o.u32(c.backoff.factor);
    o.i64(ms(c.backoff.max));
    o.u32(u32::from(c.key_ordering));
    o.u64(g.dlq_floor);
    o.u32(u32::try_from(g.partitions.len()).expect("bounded"));
    for p in &g.partitions {
        o.u64(p.floor);
        o.u64(p.cursor);
        o.u32(u32::try_from(p.resolved.len()).expect("bounded by the window"));
        for r in &p.resolved {
            o.u64(*r);
        }
        o.u32(u32::try_from(p.pending.len()).expect("bounded by the window"));
        for (off, pe) in &p.pending {
            o.u64(*off);
            encode_pending(&mut o, pe);
        }
    }
    let body = o.0;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&u32::try_from(body.len()).expect("bounded").to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(name: &str, bytes: &[u8]) -> Result<QueueGroup, String> {
    if bytes.len() < 16 {
        return Err("too short".into());
    }
    let (head, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(head) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("checksum mismatch".into());
    }
    if head[0..4] != STATE_MAGIC {
        return Err("not a queue state file".into());
    }
    let version = u16::from_le_bytes(head[4..6].try_into().expect("2"));
    if version != format::FORMAT_VERSION {
        return Err(format!("format version {version} is not supported"));
    }
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize;
    if head.len() - 12 != len {
        return Err("body length does not match the file".into());
    }
    let mut i = In(&head[12..]);
    let generation = i.u64()?;
    let name_of = |b: &[u8]| -> Result<TopicName, String> {
        TopicName::new(std::str::from_utf8(b).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    let topic = name_of(i.bytes()?)?;
    let dead_letters = name_of(i.bytes()?)?;
    let dur = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    let config = QueueConfig {
        ack_timeout: dur(i.i64()?),
        max_deliveries: i.u32()?,
        backoff: Backoff {
            initial: dur(i.i64()?),
            factor: i.u32()?,
            max: dur(i.i64()?),
        },
        key_ordering: i.u32()? != 0,
    };
    config.validate().map_err(|e| e.to_string())?;
    let dlq_floor = i.u64()?;
    let count = i.count(u64::from(tidings_log::limits::PARTITIONS_MAX))?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        let mut p = PartitionQueue {
            floor: i.u64()?,
            cursor: i.u64()?,
            ..Default::default()
        };
        for _ in 0..i.count(QUEUE_WINDOW_MAX)? {
            p.resolved.insert(i.u64()?);
        }
        for _ in 0..i.count(QUEUE_WINDOW_MAX)? {
            let off = i.u64()?;
            p.pending.insert(off, decode_pending(&mut i)?);
        }
        partitions.push(p);
    }
    Ok(QueueGroup {
        name: name.to_owned(),
        topic,
        dead_letters,
        config,
        partitions,
        dlq_floor,
        next_lease: 1,
        rng: 0x9e37_79b9,
        counters: QueueCounters::default(),
        generation,
        snapshot_bytes: bytes.len() as u64,
        records: Vec::new(),
        journal: None,
    })
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
    groups: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<QueueGroup>>>,
    >,
}

impl Queues {
    /// Loads every group: its snapshot, then its journal replayed on top. Lease
    /// ids start at `first_lease`, above any handed out before the restart.
    pub(crate) fn load(dir: &Path, first_lease: u64) -> Result<Queues, (PathBuf, String)> {
        let queues = Queues::default();
        let qdir = dir.join("broker").join("queues");
        let entries = match std::fs::read_dir(&qdir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(queues),
            Err(e) => return Err((qdir, e.to_string())),
        };
        for entry in entries {
            let path = entry.map_err(|e| (qdir.clone(), e.to_string()))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".state"))
            else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|e| (path.clone(), e.to_string()))?;
            let mut group = decode(name, &bytes).map_err(|e| (path.clone(), e))?;
            group.rng ^= bytes.len() as u64;
            group.next_lease = first_lease;
            let jpath = journal_path(dir, name);
            let (journal, records) = Journal::open(&jpath, group.generation)
                .map_err(|e| (jpath.clone(), e.to_string()))?;
            for (n, record) in records.iter().enumerate() {
                group
                    .apply(record)
                    .map_err(|e| (jpath.clone(), format!("record {n}: {e}")))?;
            }
            // Events read but never delivered are read again from the floor.
            for pq in &mut group.partitions {
                pq.cursor = pq.floor;
            }
            group.journal = Some(Arc::new(journal));
            let arc = std::sync::Arc::new(tokio::sync::Mutex::new(group));
            queues
                .groups
                .lock()
                .expect("queues lock")
                .insert(name.to_owned(), arc);
        }
        Ok(queues)
    }

    fn get(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<tokio::sync::Mutex<QueueGroup>>, QueueError> {
        self.groups
            .lock()
            .expect("queues lock")
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::UnknownGroup(name.to_owned()))
    }
}

/// The partition and offset of a lease the group handed out and the event still
/// holds.
fn held(g: &QueueGroup, lease: &str) -> Result<(usize, u64), QueueError> {
    let unknown = || QueueError::UnknownLease(lease.to_owned());
    let (p, off, id) = parse_lease(lease).ok_or_else(unknown)?;
    let p = usize::try_from(p).map_err(|_| unknown())?;
    if p >= g.partitions.len() || id >= g.next_lease {
        return Err(unknown());
    }
    match g.partitions[p].pending.get(&off).map(|pe| pe.lease) {
        Some(Some((held, _))) if held == id => Ok((p, off)),
        // Still pending under another lease, or waiting for a retry.
        Some(_) => Err(QueueError::LeaseExpired(lease.to_owned())),
        // Acked or dead-lettered already, or never read.
        None => Err(unknown()),
    }
}

fn parse_lease(lease: &str) -> Option<(u32, u64, u64)> {
    let mut it = lease.split('.');
    let p = it.next()?.parse().ok()?;
    let o = it.next()?.parse().ok()?;
    let id = it.next()?.parse().ok()?;
    it.next().is_none().then_some((p, o, id))
}

fn truncate(mut s: String) -> String {
    if s.len() > ERROR_TEXT_BYTES_MAX {
        let mut cut = ERROR_TEXT_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// How an attempt failed.
enum Failure {
    /// Retry after the backoff, or after this delay.
    Retry(Option<Duration>, String),
    /// Dead-letter now.
    Reject(String),
}

impl Broker {
    /// Creates a queue-mode group on `topic`. Its dead letters go to the topic
    /// `<topic>.<group>.dlq`, created here.
    pub fn create_queue_group(
        &self,
        group: &str,
        topic: &str,
        config: QueueConfig,
    ) -> Result<(), QueueError> {
        TopicName::new(group)?;
        config.validate()?;
        let t = self
            .topic(topic)
            .ok_or_else(|| QueueError::UnknownTopic(topic.to_owned()))?;
        let _creating = self.queues.creating.lock().expect("creating lock");
        if self
            .queues
            .groups
            .lock()
            .expect("queues lock")
            .contains_key(group)
        {
            return Err(QueueError::Exists(group.to_owned()));
        }
        let dlq = format!("{topic}.{group}.dlq");
        let dead_letters = TopicName::new(&dlq)?;
        if self.topic(&dlq).is_none() {
            let spec = TopicSpec {
                partitions: 1,
                fsync: FsyncPolicy::Always,
                dedup_window: None,
                ..t.spec()
            };
            self.create_topic(&dlq, spec)
                .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
        }
        let mut partitions = Vec::new();
        for p in 0..t.partitions() {
            let start = t
                .log
                .partition(PartitionId(p))
                .map_err(ReadError::from)?
                .log_start_offset()
                .0;
            partitions.push(PartitionQueue {
                floor: start,
                cursor: start,
                ..Default::default()
            });
        }
        let mut g = QueueGroup {
            name: group.to_owned(),
            topic: t.name.clone(),
            dead_letters,
            config,
            partitions,
            dlq_floor: 0,
            next_lease: first_lease(self.started_ms),
            rng: u64::try_from(self.clock.now().0).unwrap_or(1) | 1,
            counters: QueueCounters::default(),
            generation: 0,
            snapshot_bytes: 0,
            records: Vec::new(),
            journal: None,
        };
        // The journal first: a snapshot is what makes the group exist.
        let jpath = journal_path(&self.dir, group);
        let created = std::fs::create_dir_all(jpath.parent().expect("a directory"))
            .and_then(|()| Journal::create(&jpath, 0));
        let journal = created.map_err(|e| QueueError::State {
            path: jpath.clone(),
            reason: e.to_string(),
        })?;
        g.journal = Some(Arc::new(journal));
        self.write_snapshot(&mut g)?;
        let arc = std::sync::Arc::new(tokio::sync::Mutex::new(g));
        self.queues
            .groups
            .lock()
            .expect("queues lock")
            .insert(group.to_owned(), arc);
        Ok(())
    }

    /// Writes the group's state as its snapshot (replaced atomically).
    fn write_snapshot(&self, g: &mut QueueGroup) -> Result<(), QueueError> {
        let path = state_path(&self.dir, &g.name);
        let bytes = encode(g);
        format::replace_durably(&path, &bytes).map_err(|e| QueueError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        g.snapshot_bytes = bytes.len() as u64;
        Ok(())
    }

    /// Stages the records of the operation that just changed `g`. When the
    /// journal has grown enough, folds it into a new snapshot instead (with the
    /// group still locked, so nothing else stages meanwhile).
    async fn stage(&self, g: &mut QueueGroup) -> Result<Staged, QueueError> {
        let journal = Arc::clone(g.journal());
        let seq = journal
            .stage(&mut g.records)
            .map_err(|reason| journal_error(&journal, &reason))?;
        if journal.len() <= COMPACT_BYTES_MIN.max(2 * g.snapshot_bytes) {
            return Ok(Staged { journal, seq });
        }
        Staged {
            journal: Arc::clone(&journal),
            seq,
        }
        .durable()
        .await?;
        g.generation = journal.generation() + 1;
        self.write_snapshot(g)?;
        journal
            .restart(g.generation)
            .map_err(|e| journal_error(&journal, &e.to_string()))?;
        Ok(Staged { journal, seq: 0 })
    }

    fn backoff_delay(g: &mut QueueGroup, retry: u32) -> i64 {
        let ceiling = ms(g.config.backoff.ceiling(retry)).max(1);
        g.rng ^= g.rng << 13;
        g.rng ^= g.rng >> 7;
        g.rng ^= g.rng << 17;
        let half = ceiling / 2;
        half + i64::try_from(g.rng % u64::try_from(ceiling - half + 1).unwrap_or(1)).unwrap_or(0)
    }

    /// Records a failed attempt of `offset` that happened at `now`: schedules the
    /// retry or dead-letters.
    async fn fail(
        &self,
        g: &mut QueueGroup,
        p: usize,
        offset: u64,
        now: i64,
        failure: Failure,
    ) -> Result<(), QueueError> {
        let (retry, error) = match failure {
            Failure::Retry(delay, e) => (Some(delay), e),
            Failure::Reject(e) => (None, e),
        };
        let error = truncate(error);
        let pe = g.partitions[p].pending.get_mut(&offset).expect("pending");
        pe.lease = None;
        pe.first_failure.get_or_insert(now);
        pe.last_failure = Some(now);
        pe.last_error = error;
        let attempts = pe.attempts;
        match retry {
            Some(delay) if attempts < g.config.max_deliveries => {
                let wait = delay.map_or_else(|| Self::backoff_delay(g, attempts), ms);
                g.partitions[p]
                    .pending
                    .get_mut(&offset)
                    .expect("pending")
                    .eligible_at = now.saturating_add(wait);
                g.note_attempt(p, offset);
                Ok(())
            }
            _ => self.dead_letter(g, p, offset).await,
        }
    }

    /// Appends the event to the dead-letter topic, then resolves it.
    async fn dead_letter(
        &self,
        g: &mut QueueGroup,
        p: usize,
        offset: u64,
    ) -> Result<(), QueueError> {
        let pe = g.partitions[p]
            .pending
            .get(&offset)
            .expect("pending")
            .clone();
        let partition = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?
            .log
            .partition(PartitionId(u32::try_from(p).expect("bounded")))
            .map_err(ReadError::from)?;
        let stored = partition
            .read_records(Offset(offset), 1)
            .map_err(ReadError::from)?
            .into_iter()
            .find(|r| r.offset.0 == offset)
            .ok_or_else(|| {
                QueueError::DeadLetter(format!("offset {offset} of partition {p} is gone"))
            })?;
        let mut record: Record = stored.record;
        let mut add = |k: &str, v: String| {
            record.headers.push(Header {
                key: k.to_owned(),
                value: Some(Bytes::from(v)),
            })
        };
        add("ce_dlqtopic", g.topic.to_string());
        add("ce_dlqpartition", p.to_string());
        add("ce_dlqoffset", offset.to_string());
        add("ce_dlqattempts", pe.attempts.to_string());
        add("ce_dlqerror", pe.last_error.clone());
        add("ce_dlqfirstfailure", opt(pe.first_failure).to_string());
        add("ce_dlqlastfailure", opt(pe.last_failure).to_string());
        record.timestamp = self.clock.now();
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        let dlq_partition = dlq.log.partition(PartitionId(0)).map_err(ReadError::from)?;
        dlq_partition
            .append(&[record])
            .await
            .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
        g.partitions[p].resolve(offset);
        g.note_resolve(p, offset);
        g.counters.dead_lettered += 1;
        Ok(())
    }

    /// Expires leases past their deadline as failed attempts.
    async fn expire_leases(&self, g: &mut QueueGroup) -> Result<bool, QueueError> {
        let now = self.clock.now().0;
        let mut expired = Vec::new();
        for (p, pq) in g.partitions.iter().enumerate() {
            for (off, pe) in &pq.pending {
                if let Some((_, deadline)) = pe.lease.filter(|(_, deadline)| *deadline <= now) {
                    expired.push((p, *off, deadline));
                }
            }
        }
        g.counters.expired += expired.len() as u64;
        // The attempt failed when the lease ran out, not when this noticed it.
        for &(p, off, deadline) in &expired {
            self.fail(
                g,
                p,
                off,
                deadline,
                Failure::Retry(None, "lease expired".into()),
            )
            .await?;
        }
        Ok(!expired.is_empty())
    }

    /// Like [`receive`](Self::receive), but when nothing is due it waits up to
    /// `wait` for an event to be published or a retry to come due (a long-poll).
    pub async fn receive_wait(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.receive_wait_until(group, max, wait, std::future::pending())
            .await
    }

    /// [`receive_wait`](Self::receive_wait), but the wait also ends when `stop`
    /// resolves (a server draining, a client gone), answering nothing. Only the
    /// wait is cut short: a receive under way finishes, so no event is leased
    /// to a consumer that never hears of it. (Dropping the future instead can
    /// do that: its leases then run out and count as failed attempts.)
    pub async fn receive_wait_until(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = std::pin::pin!(stop);
        loop {
            // Taken before the receive, so a publish landing after it still wakes us.
            let watchers = {
                let g = self.queues.get(group)?;
                let topic = g.lock().await.topic.clone();
                let t = self
                    .topic(topic.as_str())
                    .ok_or_else(|| QueueError::UnknownTopic(topic.to_string()))?;
                (0..t.partitions())
                    .filter_map(|p| t.log.partition(PartitionId(p)).ok())
                    .map(|p| p.watch_high_watermark())
                    .collect()
            };
            let got = self.receive(group, max).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Retries and expired leases come due on the clock, not on appends.
            let tick = (now + QUEUE_WAIT_TICK).min(deadline);
            tokio::select! {
                () = crate::groups::wait_for_any(watchers, tick) => {}
                () = &mut stop => return Ok(got),
            }
        }
    }

    /// Leases up to `max` events that are due, oldest first per partition. With
    /// key ordering, an event waits while an earlier event of its key in the same
    /// partition is unresolved.
    pub async fn receive(&self, group: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        if self
            .queues
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(QueueError::ShuttingDown);
        }
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        let mut changed = self.expire_leases(&mut g).await?;
        let now = self.clock.now().0;
        let t = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?;
        changed |= follow_partitions(&mut g, &t);
        let mut chosen: Vec<(usize, u64)> = Vec::new();
        let key_ordering = g.config.key_ordering;
        let partitions = g.partitions.len();
        let start = usize::try_from(g.next_lease).unwrap_or(0) % partitions.max(1);
        for k in 0..partitions {
            if chosen.len() >= max {
                break;
            }
            let p = (start + k) % partitions;
            // Read new events into the pending set, within the window.
            let part = t
                .log
                .partition(PartitionId(u32::try_from(p).expect("bounded")))
                .map_err(ReadError::from)?;
            if g.partitions[p].cursor < part.log_start_offset().0 {
                // Retention deleted events the group never read: nothing to deliver.
                g.partitions[p].raise_floor(part.log_start_offset().0);
                g.note_floor(p);
                changed = true;
            }
            let pq = &mut g.partitions[p];
            while pq.cursor < part.high_watermark().0
                && pq.cursor - pq.floor < QUEUE_WINDOW_MAX
                && pq.pending.len() < max.max(64) * 4
            {
                let records = part
                    .read_records(Offset(pq.cursor), READ_BYTES)
                    .map_err(ReadError::from)?;
                if records.is_empty() {
                    break;
                }
                for r in records {
                    if r.offset.0 < pq.cursor || r.offset.0 - pq.floor >= QUEUE_WINDOW_MAX {
                        continue;
                    }
                    pq.cursor = r.offset.0 + 1;
                    if pq.resolved.contains(&r.offset.0) {
                        // Resolved before a restart; read again from the floor.
                        continue;
                    }
                    // After a restart, offsets with attempts are known already.
                    pq.pending.entry(r.offset.0).or_insert_with(|| Pending {
                        key: r.record.key.clone(),
                        attempts: 0,
                        eligible_at: i64::MIN,
                        first_failure: None,
                        last_failure: None,
                        last_error: String::new(),
                        lease: None,
                    });
                }
            }
            let mut keys_ahead: HashSet<Bytes> = HashSet::new();
            for (off, pe) in &pq.pending {
                if chosen.len() >= max {
                    break;
                }
                let blocked = key_ordering
                    && pe
                        .key
                        .as_ref()
                        .is_some_and(|k| !keys_ahead.insert(k.clone()));
                if !blocked && pe.lease.is_none() && pe.eligible_at <= now {
                    chosen.push((p, *off));
                }
            }
        }
        let deadline = now.saturating_add(ms(g.config.ack_timeout));
        let mut out = Vec::with_capacity(chosen.len());
        let mut read: Option<(usize, Vec<StoredRecord>)> = None;
        for (p, off) in chosen {
            let id = g.next_lease;
            g.next_lease += 1;
            let pe = g.partitions[p]
                .pending
                .get_mut(&off)
                .expect("chosen from pending");
            pe.attempts += 1;
            pe.lease = Some((id, deadline));
            let attempt = pe.attempts;
            g.note_attempt(p, off);
            g.counters.delivered += 1;
            if attempt > 1 {
                g.counters.redelivered += 1;
            }
            // Chosen offsets ascend per partition: one read serves the next
            // ones too, instead of decoding a whole batch for each event. Only
            // the chosen records become entries.
            let partition = PartitionId(u32::try_from(p).expect("bounded"));
            let cached = |read: &Option<(usize, Vec<StoredRecord>)>| {
                read.as_ref().and_then(|(rp, records)| {
                    let i = records.binary_search_by_key(&off, |r| r.offset.0).ok();
                    i.filter(|_| *rp == p)
                        .map(|i| crate::entry_of(partition, &records[i]))
                })
            };
            let entry = match cached(&read) {
                Some(entry) => entry,
                None => {
                    let records = t
                        .log
                        .partition(partition)
                        .map_err(ReadError::from)?
                        .read_records(Offset(off), DELIVERY_READ_BYTES)
                        .map_err(ReadError::from)?;
                    read = Some((p, records));
                    cached(&read).ok_or_else(|| {
                        QueueError::DeadLetter(format!("offset {off} of partition {p} is gone"))
                    })?
                }
            };
            out.push(Delivery {
                lease: format!("{p}.{off}.{id}"),
                attempt,
                entry,
            });
            changed = true;
        }
        if changed {
            // Attempt counts are durable before anyone sees the delivery.
            let staged = self.stage(&mut g).await?;
            drop(g);
            staged.durable().await?;
        }
        Ok(out)
    }

    async fn answer(
        &self,
        group: &str,
        lease: &str,
        failure: Option<Failure>,
    ) -> Result<(), QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        self.expire_leases(&mut g).await?;
        let (p, off) = held(&g, lease)?;
        let result = match failure {
            None => {
                g.acked(p, off);
                Ok(())
            }
            Some(f) => {
                if matches!(f, Failure::Retry(..)) {
                    g.counters.nacked += 1;
                }
                let now = self.clock.now().0;
                self.fail(&mut g, p, off, now, f).await
            }
        };
        // What changed is staged even if dead-lettering failed part-way (the
        // failure itself is recorded): memory and journal stay in step.
        let staged = self.stage(&mut g).await;
        drop(g);
        let durable = match staged {
            Ok(staged) => staged.durable().await,
            Err(e) => Err(e),
        };
        self.queues.answered.notify_waiters();
        result.and(durable)
    }

    /// Acknowledges a delivery: the event is done for this group, durably, and
    /// will not be delivered again.
    pub async fn ack(&self, group: &str, lease: &str) -> Result<(), QueueError> {
        self.answer(group, lease, None).await
    }

    /// Acknowledges several deliveries of one group with one journal write and
    /// one sync. Each lease is answered on its own, in the order given: the
    /// result at index `i` is `leases[i]`'s, and a lease that is unknown or ran
    /// out does not stop the others. The outer error is the group's (unknown,
    /// or its journal could not be written), and then none of the acks is
    /// known to be durable.
    pub async fn ack_many(
        &self,
        group: &str,
        leases: &[impl AsRef<str>],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        self.expire_leases(&mut g).await?;
        let results: Vec<Result<(), QueueError>> = leases
            .iter()
            .map(|lease| {
                let (p, off) = held(&g, lease.as_ref())?;
                g.acked(p, off);
                Ok(())
            })
            .collect();
        let staged = self.stage(&mut g).await?;
        drop(g);
        staged.durable().await?;
        self.queues.answered.notify_waiters();
        Ok(results)
    }

    /// Fails a delivery: the event is retried after `delay`, or after the group's
    /// backoff, or dead-lettered once it has had `max_deliveries` attempts.
    pub async fn nack(
        &self,
        group: &str,
        lease: &str,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<(), QueueError> {
        if let Some(d) = delay.filter(|d| *d > NACK_DELAY_MAX) {
            return Err(QueueError::InvalidConfig(format!(
                "a nack delay of {d:?} is longer than the limit of {NACK_DELAY_MAX:?}"
            )));
        }
        self.answer(group, lease, Some(Failure::Retry(delay, error.to_owned())))
            .await
    }

    /// Dead-letters a delivery now, without further attempts.
    pub async fn reject(&self, group: &str, lease: &str, reason: &str) -> Result<(), QueueError> {
        self.answer(group, lease, Some(Failure::Reject(reason.to_owned())))
            .await
    }

    /// The events in the group's dead-letter topic, from `from` on.
    pub async fn dead_letters(
        &self,
        group: &str,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let (dlq, floor) = {
            let g = self.queues.get(group)?;
            let g = g.lock().await;
            (g.dead_letters.clone(), g.dlq_floor)
        };
        // Retention may have removed dead letters nobody handled.
        let log_start = self
            .position(dlq.as_str(), PartitionId(0), crate::StartPosition::Earliest)
            .map_err(QueueError::Read)?;
        let from = from.max(Offset(floor)).max(log_start);
        let entries = match self.read(dlq.as_str(), PartitionId(0), from, max_bytes) {
            Err(ReadError::Log(tidings_log::ReadError::OffsetOutOfRange {
                requested,
                high_watermark,
                ..
            })) if requested == high_watermark => Vec::new(),
            other => other?,
        };
        Ok(entries.into_iter().filter_map(dead_letter_of).collect())
    }
}

impl Broker {
    /// Publishes the group's dead letters again — to the topic they came from, or
    /// to `to` — without their dead-letter headers and bypassing dedup (a redrive
    /// is meant to repeat), then marks them handled. Returns how many.
    pub async fn redrive_dead_letters(
        &self,
        group: &str,
        to: Option<&str>,
        max: usize,
    ) -> Result<usize, QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        let target = to.unwrap_or(g.topic.as_str()).to_owned();
        let t = self
            .topic(&target)
            .ok_or_else(|| QueueError::UnknownTopic(target.clone()))?;
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        let dlq = dlq.log.partition(PartitionId(0)).map_err(ReadError::from)?;
        let mut moved = 0;
        let mut floor = g.dlq_floor.max(dlq.log_start_offset().0);
        while moved < max && floor < dlq.high_watermark().0 {
            let records = dlq
                .read_records(Offset(floor), 1024 * 1024)
                .map_err(ReadError::from)?;
            let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
            let mut last = floor;
            for r in records
                .into_iter()
                .filter(|r| r.offset.0 >= floor)
                .take(max - moved)
            {
                let mut record = r.record;
                record.headers.retain(|h| !h.key.starts_with("ce_dlq"));
                record.timestamp = self.clock.now();
                let p = match &record.key {
                    Some(k) => crate::partitioner::partition_for_key(k, t.partitions()),
                    None => u32::try_from(r.offset.0 % u64::from(t.partitions())).expect("bounded"),
                };
                by_partition.entry(p).or_default().push(record);
                last = r.offset.0 + 1;
                moved += 1;
            }
            for (p, records) in by_partition {
                let partition = t.log.partition(PartitionId(p)).map_err(ReadError::from)?;
                partition
                    .append(&records)
                    .await
                    .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
            }
            floor = last;
            // Each chunk is marked handled once its events are durable at the target.
            g.dlq_floor = floor;
            g.note_dlq_floor();
            self.stage(&mut g).await?.durable().await?;
        }
        Ok(moved)
    }

    /// Marks every dead letter of the group handled, without publishing them.
    /// Returns how many.
    pub async fn purge_dead_letters(&self, group: &str) -> Result<u64, QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        let end = dlq
            .log
            .partition(PartitionId(0))
            .map_err(ReadError::from)?
            .high_watermark()
            .0;
        let before = g.dlq_floor;
        g.dlq_floor = end.max(before);
        g.note_dlq_floor();
        self.stage(&mut g).await?.durable().await?;
        Ok(end.saturating_sub(before))
    }

    /// The group's lag, leases and counters.
    pub async fn queue_stats(&self, group: &str) -> Result<QueueStats, QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        let t = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?;
        // Not persisted here: the next receive does that, and a reload would
        // extend the group the same way.
        follow_partitions(&mut g, &t);
        let mut partitions = Vec::new();
        for (p, pq) in g.partitions.iter().enumerate() {
            let id = PartitionId(u32::try_from(p).expect("bounded"));
            let hwm = t
                .log
                .partition(id)
                .map_err(ReadError::from)?
                .high_watermark();
            let in_flight = pq.pending.values().filter(|pe| pe.lease.is_some()).count() as u64;
            let retrying = pq
                .pending
                .values()
                .filter(|pe| pe.lease.is_none() && pe.attempts > 0)
                .count() as u64;
            partitions.push(QueuePartitionStats {
                partition: id,
                ack_floor: Offset(pq.floor),
                high_watermark: hwm,
                lag: hwm
                    .0
                    .saturating_sub(pq.floor)
                    .saturating_sub(pq.resolved.len() as u64),
                in_flight,
                retrying,
            });
        }
        let dead_letters = match self.topic(g.dead_letters.as_str()) {
            Some(d) => d
                .log
                .partition(PartitionId(0))
                .map_err(ReadError::from)?
                .high_watermark()
                .0
                .saturating_sub(g.dlq_floor),
            None => 0,
        };
        Ok(QueueStats {
            topic: g.topic.clone(),
            dead_letter_topic: g.dead_letters.clone(),
            config: g.config,
            partitions,
            dead_letters,
            counters: g.counters,
        })
    }

    /// The queue groups, by name.
    pub fn list_queue_groups(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .queues
            .groups
            .lock()
            .expect("queues lock")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Leases held right now, over every queue group.
    pub(crate) async fn leases_in_flight(&self) -> usize {
        let groups: Vec<_> = self
            .queues
            .groups
            .lock()
            .expect("queues lock")
            .values()
            .cloned()
            .collect();
        let mut n = 0;
        for g in groups {
            let g = g.lock().await;
            n += g
                .partitions
                .iter()
                .flat_map(|p| p.pending.values())
                .filter(|pe| pe.lease.is_some())
                .count();
        }
        n
    }

    /// Waits until no lease is held or `deadline` passes; returns how many remain.
    pub(crate) async fn drain_leases(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let answered = self.queues.answered.notified();
            let mut answered = std::pin::pin!(answered);
            answered.as_mut().enable();
            let left = self.leases_in_flight().await;
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            // Leases also end by running out; look again at least every 100 ms.
            let step = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            let _ = tokio::time::timeout_at(step, answered).await;
        }
    }
}

fn dead_letter_of(entry: Entry) -> Option<DeadLetter> {
    let header = |name: &str| -> Option<String> {
        match &entry.payload {
            Payload::Event(e) => e.extension(name).map(|v| v.to_canonical_string()),
            Payload::Raw(r) => r
                .headers
                .iter()
                .find(|h| h.key == format!("ce_{name}"))
                .and_then(|h| {
                    h.value
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                }),
        }
    };
    Some(DeadLetter {
        offset: entry.offset,
        source_partition: PartitionId(header("dlqpartition")?.parse().ok()?),
        source_offset: Offset(header("dlqoffset")?.parse().ok()?),
        attempts: header("dlqattempts")?.parse().ok()?,
        error: header("dlqerror").unwrap_or_default(),
        entry,
    })
}
