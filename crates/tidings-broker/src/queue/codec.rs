//! A queue group's files, byte for byte: the records of its journal (each
//! carrying the whole new state of what changed) and its snapshot
//! (`<group>.state`). All little-endian; every length and count is checked
//! against what remains, and counts against their bounds, before anything is
//! allocated.
//!
//! Journal records (framed and checksummed by the journal); `partition` is a
//! slot, a partition or `LANE` (1024) for the redrive lane:
//! - attempt: `1 partition:u32 offset:u64 pending` — a pending event's state
//!   after a delivery, a failure or a release;
//! - resolve: `2 partition:u32 offset:u64` — acked or dead-lettered;
//! - floor: `3 partition:u32 floor:u64` — retention removed what was below;
//! - dead-letter floor: `4 floor:u64` — dead letters below were handled;
//! - dead letters handled: `5 count:u32 offset:u64*` — these were handled
//!   one by one (at most `DLQ_HANDLED_MAX`).
//!
//! `pending` is `attempts:u32 eligible_at:i64 first_failure:i64
//! last_failure:i64 last_error:bytes key_present:u32 [key:bytes]`, absent
//! times as `i64::MIN`; `bytes` is `len:u32` then the bytes.
//!
//! Snapshot: `magic "TDQS" version:u16 revision:u16 body_len:u32 body
//! crc32c:u32`, the body being `generation:u64 topic:bytes
//! dead_letter_topic:bytes ack_timeout_ms:i64 max_deliveries:u32
//! backoff_initial_ms:i64 backoff_factor:u32 backoff_max_ms:i64
//! key_ordering:u32 dlq_floor:u64 partitions:u32` and per partition
//! `floor:u64 cursor:u64 resolved:u32 offset:u64* pending:u32 (offset:u64
//! pending)*`; from revision 1 the redrive lane follows, as one more
//! partition; from revision 2, `handled:u32 offset:u64*`, the dead letters
//! above the floor handled one by one. Revision 0 (written before the lane
//! existed) reads as an empty lane, revisions 0 and 1 with none handled so.

use std::time::Duration;

use bytes::Bytes;
use tidings_log::{format, limits::PARTITIONS_MAX};
use tidings_types::TopicName;

use super::state::{PartitionQueue, Pending, QueueState, LANE};
use super::{Backoff, QueueConfig, DLQ_HANDLED_MAX, QUEUE_WINDOW_MAX};

const STATE_MAGIC: [u8; 4] = *b"TDQS";
/// The snapshot's revision within the format version: 1 adds the lane, 2
/// the dead letters handled one by one.
const STATE_REVISION: u16 = 2;

/// Journal record kinds.
const REC_ATTEMPT: u32 = 1;
const REC_RESOLVE: u32 = 2;
const REC_FLOOR: u32 = 3;
const REC_DLQ_FLOOR: u32 = 4;
const REC_DLQ_HANDLED: u32 = 5;

/// Little-endian writer.
pub(crate) struct Out(pub(crate) Vec<u8>);

impl Out {
    fn new(kind: u32) -> Out {
        let mut o = Out(Vec::new());
        o.u32(kind);
        o
    }
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
    fn partition(&mut self, p: usize) {
        self.u32(u32::try_from(p).expect("partitions are bounded"));
    }
}

/// Bounds-checked reader.
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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

/// The record of a pending event's state.
pub(crate) fn attempt(p: usize, offset: u64, pending: &Pending) -> Out {
    let mut o = Out::new(REC_ATTEMPT);
    o.partition(p);
    o.u64(offset);
    encode_pending(&mut o, pending);
    o
}

/// The record of an offset acked or dead-lettered.
pub(crate) fn resolve(p: usize, offset: u64) -> Out {
    let mut o = Out::new(REC_RESOLVE);
    o.partition(p);
    o.u64(offset);
    o
}

/// The record of a floor raised because retention removed events never read.
pub(crate) fn floor(p: usize, floor: u64) -> Out {
    let mut o = Out::new(REC_FLOOR);
    o.partition(p);
    o.u64(floor);
    o
}

/// The record of the dead-letter floor.
pub(crate) fn dlq_floor(floor: u64) -> Out {
    let mut o = Out::new(REC_DLQ_FLOOR);
    o.u64(floor);
    o
}

/// The record of dead letters handled one by one.
pub(crate) fn dlq_handled(offsets: &[u64]) -> Out {
    let mut o = Out::new(REC_DLQ_HANDLED);
    o.u32(u32::try_from(offsets.len()).expect("bounded by DLQ_HANDLED_MAX"));
    for offset in offsets {
        o.u64(*offset);
    }
    o
}

/// Slot `p` of `state`, a partition (grown to hold it) or the lane.
fn partition_mut(state: &mut QueueState, p: u32) -> Result<&mut PartitionQueue, String> {
    let p = p as usize;
    if p == LANE {
        return Ok(&mut state.lane);
    }
    if p >= PARTITIONS_MAX as usize {
        return Err(format!("partition {p} is beyond any topic"));
    }
    if state.partitions.len() <= p {
        state.partitions.resize_with(p + 1, PartitionQueue::default);
    }
    Ok(&mut state.partitions[p])
}

/// Replays one journal record on `state`.
pub(crate) fn apply(state: &mut QueueState, body: &[u8]) -> Result<(), String> {
    let mut i = In(body);
    match i.u32()? {
        REC_ATTEMPT => {
            let p = i.u32()?;
            let offset = i.u64()?;
            let pe = decode_pending(&mut i)?;
            let pq = partition_mut(state, p)?;
            if offset >= pq.floor && !pq.resolved.contains(&offset) {
                pq.pending.insert(offset, pe);
            }
        }
        REC_RESOLVE => {
            let p = i.u32()?;
            let offset = i.u64()?;
            let pq = partition_mut(state, p)?;
            if offset >= pq.floor && !pq.resolved.contains(&offset) {
                pq.resolve(offset);
            }
        }
        REC_FLOOR => {
            let p = i.u32()?;
            let low = i.u64()?;
            partition_mut(state, p)?.raise_floor(low);
        }
        REC_DLQ_FLOOR => state.raise_dlq_floor(i.u64()?),
        REC_DLQ_HANDLED => {
            let n = i.count(DLQ_HANDLED_MAX as u64)?;
            let mut offsets = Vec::with_capacity(n);
            for _ in 0..n {
                offsets.push(i.u64()?);
            }
            state.handle_dead_letters(&offsets);
            if state.dlq_handled.len() > DLQ_HANDLED_MAX {
                return Err(format!(
                    "more than {DLQ_HANDLED_MAX} dead letters handled above the floor"
                ));
            }
        }
        other => return Err(format!("unknown journal record kind {other}")),
    }
    if !i.0.is_empty() {
        return Err("trailing bytes in a journal record".into());
    }
    Ok(())
}

/// What a snapshot holds beside the state.
pub(crate) struct Snapshot {
    /// The snapshot's generation; the journal that follows it carries the same.
    pub(crate) generation: u64,
    pub(crate) topic: TopicName,
    pub(crate) dead_letters: TopicName,
    pub(crate) state: QueueState,
}

/// The snapshot file of a group's state.
pub(crate) fn encode(
    generation: u64,
    topic: &TopicName,
    dead_letters: &TopicName,
    state: &QueueState,
) -> Vec<u8> {
    let mut o = Out(Vec::new());
    o.u64(generation);
    o.bytes(topic.as_str().as_bytes());
    o.bytes(dead_letters.as_str().as_bytes());
    let c = &state.config;
    o.i64(ms(c.ack_timeout));
    o.u32(c.max_deliveries);
    o.i64(ms(c.backoff.initial));
    o.u32(c.backoff.factor);
    o.i64(ms(c.backoff.max));
    o.u32(u32::from(c.key_ordering));
    o.u64(state.dlq_floor);
    o.u32(u32::try_from(state.partitions.len()).expect("bounded"));
    for p in state.partitions.iter().chain(std::iter::once(&state.lane)) {
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
    o.u32(u32::try_from(state.dlq_handled.len()).expect("bounded by DLQ_HANDLED_MAX"));
    for offset in &state.dlq_handled {
        o.u64(*offset);
    }
    frame_snapshot(STATE_REVISION, &o.0)
}

/// A snapshot file around `body`: magic, format version, `revision`, length,
/// and the checksum of all of it.
pub(crate) fn frame_snapshot(revision: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).expect("bounded").to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A snapshot file read back, every check made.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
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
    let revision = u16::from_le_bytes(head[6..8].try_into().expect("2"));
    if revision > STATE_REVISION {
        return Err(format!(
            "queue state revision {revision} is newer than this build reads ({STATE_REVISION})"
        ));
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
    let count = i.count(u64::from(PARTITIONS_MAX))?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        partitions.push(decode_partition(&mut i)?);
    }
    let lane = if revision >= 1 {
        decode_partition(&mut i)?
    } else {
        PartitionQueue::default()
    };
    let mut dlq_handled = std::collections::BTreeSet::new();
    if revision >= 2 {
        for _ in 0..i.count(DLQ_HANDLED_MAX as u64)? {
            dlq_handled.insert(i.u64()?);
        }
    }
    if !i.0.is_empty() {
        return Err("trailing bytes after the state".into());
    }
    Ok(Snapshot {
        generation,
        topic,
        dead_letters,
        state: QueueState::restored(config, partitions, lane, dlq_floor, dlq_handled),
    })
}

/// One slot of a snapshot.
fn decode_partition(i: &mut In<'_>) -> Result<PartitionQueue, String> {
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
        p.pending.insert(off, decode_pending(i)?);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (TopicName, TopicName) {
        (
            TopicName::new("jobs").unwrap(),
            TopicName::new("jobs.workers.dlq").unwrap(),
        )
    }

    fn pending(attempts: u32, key: Option<&str>) -> Pending {
        Pending {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            attempts,
            eligible_at: 5,
            first_failure: Some(3),
            last_failure: None,
            last_error: "boom".into(),
            lease: None,
        }
    }

    /// A state with something in every part: partitions and the lane.
    fn state() -> QueueState {
        let mut s = QueueState::new(QueueConfig::default(), [4, 0], 1, 1);
        s.partitions[0].resolved.insert(6);
        s.partitions[0].pending.insert(5, pending(2, Some("k")));
        s.lane = PartitionQueue {
            floor: 1,
            cursor: 3,
            resolved: [2].into(),
            pending: [(1, pending(1, None))].into(),
        };
        s.dlq_floor = 9;
        s.dlq_handled = [11, 14].into();
        s
    }

    #[test]
    fn a_snapshot_reads_back_with_its_lane() {
        let (topic, dlq) = names();
        let bytes = encode(7, &topic, &dlq, &state());
        let back = decode(&bytes).unwrap();
        assert_eq!(back.generation, 7);
        assert_eq!(back.state.partitions, state().partitions);
        assert_eq!(back.state.lane, state().lane);
        assert_eq!(back.state.dlq_floor, 9);
        assert_eq!(back.state.dlq_handled, [11, 14].into());
    }

    #[test]
    fn a_revision_one_snapshot_reads_with_no_dead_letter_handled_alone() {
        let (topic, dlq) = names();
        let mut s = state();
        s.dlq_handled.clear();
        let two = encode(5, &topic, &dlq, &s);
        // Revision 1 is revision 2 without the handled count at the end.
        let mut one = two[..two.len() - 8].to_vec();
        one.extend_from_slice(&two[two.len() - 4..]);
        let one = altered(one, 1, b"");
        let back = decode(&one).unwrap();
        assert_eq!(back.state.lane, s.lane);
        assert_eq!(back.state.dlq_floor, 9);
        assert!(back.state.dlq_handled.is_empty());
    }

    #[test]
    fn handled_dead_letters_replay_and_the_floor_passes_them() {
        let mut s = QueueState::new(QueueConfig::default(), [0], 1, 1);
        apply(&mut s, &dlq_handled(&[3, 1, 5]).0).unwrap();
        assert_eq!((s.dlq_floor, s.dlq_handled.clone()), (0, [1, 3, 5].into()));
        apply(&mut s, &dlq_handled(&[0, 2]).0).unwrap();
        assert_eq!((s.dlq_floor, s.dlq_handled.clone()), (4, [5].into()));
        apply(&mut s, &dlq_floor(7).0).unwrap();
        assert_eq!((s.dlq_floor, s.dlq_handled.clone()), (7, [].into()));
        // Offsets below the floor are already handled; a lower floor is no floor.
        apply(&mut s, &dlq_handled(&[2, 8]).0).unwrap();
        apply(&mut s, &dlq_floor(3).0).unwrap();
        assert_eq!((s.dlq_floor, s.dlq_handled.clone()), (7, [8].into()));
        let mut too_many = dlq_handled(&[]);
        too_many.0.truncate(4);
        too_many.u32(DLQ_HANDLED_MAX as u32 + 1);
        assert!(apply(&mut s, &too_many.0)
            .err()
            .unwrap()
            .contains("exceeds"));
    }

    /// A snapshot as written before the lane existed: revision 0, the body
    /// ending after the partitions. Built byte by byte.
    fn revision_zero() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&3u64.to_le_bytes()); // generation
        for name in ["jobs", "jobs.workers.dlq"] {
            body.extend_from_slice(&(name.len() as u32).to_le_bytes());
            body.extend_from_slice(name.as_bytes());
        }
        body.extend_from_slice(&30_000i64.to_le_bytes()); // ack timeout
        body.extend_from_slice(&5u32.to_le_bytes()); // max deliveries
        body.extend_from_slice(&1_000i64.to_le_bytes()); // backoff initial
        body.extend_from_slice(&2u32.to_le_bytes()); // factor
        body.extend_from_slice(&60_000i64.to_le_bytes()); // backoff max
        body.extend_from_slice(&0u32.to_le_bytes()); // key ordering
        body.extend_from_slice(&4u64.to_le_bytes()); // dlq floor
        body.extend_from_slice(&1u32.to_le_bytes()); // one partition
        body.extend_from_slice(&8u64.to_le_bytes()); // floor
        body.extend_from_slice(&8u64.to_le_bytes()); // cursor
        body.extend_from_slice(&0u32.to_le_bytes()); // resolved
        body.extend_from_slice(&0u32.to_le_bytes()); // pending
        let mut out = Vec::new();
        out.extend_from_slice(b"TDQS");
        out.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn a_snapshot_from_before_the_lane_reads_with_an_empty_lane() {
        let back = decode(&revision_zero()).unwrap();
        assert_eq!(back.generation, 3);
        assert_eq!(back.state.partitions, vec![PartitionQueue::from(8)]);
        assert_eq!(back.state.lane, PartitionQueue::default());
        assert_eq!(back.state.dlq_floor, 4);
    }

    /// `bytes` with its header's revision set to `revision` (and a checksum
    /// that fits), or its body grown by `extra` trailing bytes.
    fn altered(mut bytes: Vec<u8>, revision: u16, extra: &[u8]) -> Vec<u8> {
        bytes.truncate(bytes.len() - 4);
        bytes[6..8].copy_from_slice(&revision.to_le_bytes());
        bytes.extend_from_slice(extra);
        let len = (bytes.len() - 12) as u32;
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn a_newer_revision_and_trailing_bytes_are_refused() {
        let (topic, dlq) = names();
        let bytes = encode(1, &topic, &dlq, &state());
        let newer = decode(&altered(bytes.clone(), STATE_REVISION + 1, b""));
        assert!(newer.err().unwrap().contains("newer than this build reads"));
        let trailing = decode(&altered(bytes, STATE_REVISION, b"x"));
        assert!(trailing.err().unwrap().contains("trailing bytes"));
        // A revision-0 file that carries a lane is one this build did not write.
        let zero = decode(&altered(revision_zero(), 0, &[0; 24]));
        assert!(zero.err().unwrap().contains("trailing bytes"));
    }

    #[test]
    fn journal_records_of_the_lane_replay_onto_it() {
        let mut s = QueueState::new(QueueConfig::default(), [0], 1, 1);
        let lane = LANE;
        apply(&mut s, &attempt(lane, 4, &pending(1, None)).0).unwrap();
        apply(&mut s, &resolve(lane, 0).0).unwrap();
        assert_eq!(s.lane.pending.keys().copied().collect::<Vec<_>>(), [4]);
        assert_eq!(s.lane.floor, 1);
        assert!(s.partitions[0].pending.is_empty());
        let beyond = apply(&mut s, &resolve(LANE + 1, 0).0);
        assert!(beyond.err().unwrap().contains("beyond any topic"));
    }
}
