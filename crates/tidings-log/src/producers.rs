//! Idempotent producers: per partition, what each producer id appended last,
//! so a batch a producer sends again (its answer was lost, the connection
//! broke, the server restarted) is answered with where it was stored instead
//! of being stored twice, and a gap in a producer's sequence is refused.
//!
//! This is Kafka's broker-side idempotence (KIP-98, without transactions),
//! rule for rule. Every RecordBatch v2 carries a producer id, an epoch and the
//! sequence number of its first record; a batch with producer id -1 is not
//! idempotent and is not checked. For each producer id the partition keeps
//! its epoch and its last [`PRODUCER_BATCHES_KEPT`] batches (first and last
//! sequence, first and last offset), which is why clients keep at most five
//! requests in flight when idempotent. A batch is, in order:
//!
//! 1. from an unknown producer (never seen, expired, or evicted): accepted
//!    whatever its sequence;
//! 2. of an older epoch than the producer's: refused (`InvalidProducerEpoch`);
//! 3. equal to one of the kept batches (same epoch and sequence range): a
//!    duplicate, answered with the kept batch's offsets, not appended;
//! 4. of a newer epoch: accepted if its first sequence is 0;
//! 5. of the same epoch: accepted if its first sequence follows the last
//!    one's (after `i32::MAX` comes 0); otherwise refused
//!    (`OutOfOrderSequence`).
//!
//! The state is checked and updated by the partition's writer as it assigns
//! offsets, so it always agrees with the order of the log. It is rebuilt on
//! open from the log itself: a snapshot (`<offset:020>.producers`, the state
//! of every batch below `offset`) is written when a segment is sealed and on
//! a clean close, and the batches after the newest readable snapshot are
//! scanned. Snapshots are derived data, like the indexes: a damaged or missing
//! one only means a longer scan. Producers not heard from for
//! `producer_id_expiration` are forgotten, and beyond
//! [`PRODUCERS_PER_PARTITION_MAX`] the longest idle one is.

use std::collections::{HashMap, VecDeque};

use std::io;
use std::path::{Path, PathBuf};

use tidings_types::Offset;

use crate::batch::BatchHeader;
use crate::limits::{PRODUCERS_PER_PARTITION_MAX, PRODUCER_BATCHES_KEPT};
use crate::storage::Storage;

const SNAPSHOT_MAGIC: [u8; 4] = *b"TDPS";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_SUFFIX: &str = ".producers";
/// Magic, version, offset and count; then the checksum.
const SNAPSHOT_FRAME_BYTES: usize = 4 + 2 + 8 + 4 + 4;
/// Producer id, epoch, last-seen time and batch count; then its batches.
const ENTRY_HEAD_BYTES: usize = 8 + 2 + 8 + 1;
const KEPT_BYTES: usize = 4 + 4 + 8 + 8;
/// No snapshot is larger; checked before one is read into memory.
const SNAPSHOT_BYTES_MAX: usize = SNAPSHOT_FRAME_BYTES
    + PRODUCERS_PER_PARTITION_MAX * (ENTRY_HEAD_BYTES + PRODUCER_BATCHES_KEPT * KEPT_BYTES);
const _: () = assert!(PRODUCER_BATCHES_KEPT <= u8::MAX as usize);
const _: () = assert!(SNAPSHOT_BYTES_MAX <= 8 * 1024 * 1024);

/// A batch's producer fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchId {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) first_seq: i32,
    pub(crate) last_seq: i32,
}

impl BatchId {
    /// The producer fields of the batch at the start of `bytes` (a checked
    /// header), or `None` when it is not from an idempotent producer.
    pub(crate) fn of(bytes: &[u8], header: &BatchHeader) -> Option<BatchId> {
        let producer_id = i64::from_be_bytes(bytes[43..51].try_into().expect("8 bytes"));
        if producer_id < 0 {
            return None;
        }
        let epoch = i16::from_be_bytes(bytes[51..53].try_into().expect("2 bytes"));
        let first_seq = i32::from_be_bytes(bytes[53..57].try_into().expect("4 bytes"));
        let delta = i32::try_from(header.last_offset_delta).expect("bounded by the record count");
        Some(BatchId {
            producer_id,
            epoch,
            first_seq,
            last_seq: advance(first_seq, delta),
        })
    }
}

/// `seq` moved on by `by`, wrapping from `i32::MAX` to 0 as Kafka's sequence
/// numbers do.
pub(crate) fn advance(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// One kept batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kept {
    first_seq: i32,
    last_seq: i32,
    base: Offset,
    last: Offset,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    epoch: i16,
    /// Oldest first; never empty.
    batches: VecDeque<Kept>,
    /// When the producer last appended, on the log's clock, in milliseconds.
    last_ms: i64,
}

/// Why a producer's batch is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SequenceFault {
    /// The batch's epoch is older than the producer's.
    StaleEpoch { epoch: i16, current: i16 },
    /// The batch's first sequence is not the one that follows.
    OutOfOrder { expected: i32, received: i32 },
}

/// What the state says of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Append it.
    New,
    /// Stored already, at these offsets.
    Duplicate { base: Offset, last: Offset },
}

/// The idempotent producers of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Producers {
    entries: HashMap<i64, Entry>,
}

/// What [`Producers::record`] replaced, to put it back.
pub(crate) struct Undo(i64, Option<Entry>);

impl Producers {
    /// What to do with `id`'s batch.
    pub(crate) fn check(&self, id: &BatchId) -> Result<Verdict, SequenceFault> {
        let Some(e) = self.entries.get(&id.producer_id) else {
            return Ok(Verdict::New);
        };
        if id.epoch < e.epoch {
            return Err(SequenceFault::StaleEpoch {
                epoch: id.epoch,
                current: e.epoch,
            });
        }
        if id.epoch == e.epoch {
            if let Some(k) = e
                .batches
                .iter()
                .find(|k| k.first_seq == id.first_seq && k.last_seq == id.last_seq)
            {
                return Ok(Verdict::Duplicate {
                    base: k.base,
                    last: k.last,
                });
            }
        }
        let expected = if id.epoch > e.epoch {
            0
        } else {
            let last = e.batches.back().expect("never empty").last_seq;
            advance(last, 1)
        };
        if id.first_seq != expected {
            return Err(SequenceFault::OutOfOrder {
                expected,
                received: id.first_seq,
            });
        }
        Ok(Verdict::New)
    }

    /// Records `id`'s batch, stored at `base..=last` at `now_ms`; returns what
    /// it replaced.
    pub(crate) fn record(&mut self, id: &BatchId, base: Offset, last: Offset, now_ms: i64) -> Undo {
        let before = self.entries.get(&id.producer_id).cloned();
        let e = self.entries.entry(id.producer_id).or_insert_with(|| Entry {
            epoch: id.epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_KEPT),
            last_ms: now_ms,
        });
        if id.epoch != e.epoch {
            e.epoch = id.epoch;
            e.batches.clear();
        }
        if e.batches.len() == PRODUCER_BATCHES_KEPT {
            e.batches.pop_front();
        }
        e.batches.push_back(Kept {
            first_seq: id.first_seq,
            last_seq: id.last_seq,
            base,
            last,
        });
        e.last_ms = e.last_ms.max(now_ms);
        if self.entries.len() > PRODUCERS_PER_PARTITION_MAX {
            let idle = self
                .entries
                .iter()
                .filter(|(pid, _)| **pid != id.producer_id)
                .min_by_key(|(pid, e)| (e.last_ms, **pid))
                .map(|(pid, _)| *pid)
                .expect("more than one producer");
            tracing::debug!(producer_id = idle, "producer state evicted: the partition keeps {PRODUCERS_PER_PARTITION_MAX} producers");
            self.entries.remove(&idle);
        }
        Undo(id.producer_id, before)
    }

    /// Puts back what a [`record`](Self::record) replaced.
    pub(crate) fn undo(&mut self, undo: Undo) {
        match undo.1 {
            Some(e) => self.entries.insert(undo.0, e),
            None => self.entries.remove(&undo.0),
        };
    }

    /// Forgets producers idle since before `now_ms - expiration_ms`.
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        let cutoff = now_ms.saturating_sub(expiration_ms);
        self.entries.retain(|_, e| e.last_ms >= cutoff);
    }

    /// The first sequence `producer_id`'s next batch must carry, if it is known.
    pub(crate) fn expected(&self, producer_id: i64) -> Option<i32> {
        let e = self.entries.get(&producer_id)?;
        Some(advance(e.batches.back().expect("never empty").last_seq, 1))
    }

    /// How many producers are known.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The largest producer id known.
    pub(crate) fn max_id(&self) -> Option<i64> {
        self.entries.keys().max().copied()
    }

    /// The snapshot of this state as of `offset`: `magic "TDPS" version:u16
    /// offset:u64 count:u32`, then per producer (by id) `producer_id:i64
    /// epoch:i16 last_ms:i64 batches:u8` and per batch `first_seq:i32
    /// last_seq:i32 base:u64 last:u64`, then a CRC-32C; little-endian.
    pub(crate) fn encode(&self, offset: Offset) -> Vec<u8> {
        let mut out = Vec::with_capacity(SNAPSHOT_FRAME_BYTES + self.entries.len() * 64);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&offset.0.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.entries.len())
                .expect("bounded")
                .to_le_bytes(),
        );
        let mut ids: Vec<&i64> = self.entries.keys().collect();
        ids.sort_unstable();
        for pid in ids {
            let e = &self.entries[pid];
            out.extend_from_slice(&pid.to_le_bytes());
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.last_ms.to_le_bytes());
            out.push(u8::try_from(e.batches.len()).expect("at most PRODUCER_BATCHES_KEPT"));
            for k in &e.batches {
                out.extend_from_slice(&k.first_seq.to_le_bytes());
                out.extend_from_slice(&k.last_seq.to_le_bytes());
                out.extend_from_slice(&k.base.0.to_le_bytes());
                out.extend_from_slice(&k.last.0.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A snapshot read back: the offset it is valid up to, and the state.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Offset, Producers), String> {
        if bytes.len() < SNAPSHOT_FRAME_BYTES || bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(format!("{} bytes is no snapshot's size", bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
            return Err("checksum mismatch".into());
        }
        let mut r = body;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if r.len() < n {
                return Err("truncated".into());
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        if take(4)? != SNAPSHOT_MAGIC {
            return Err("not a producer snapshot".into());
        }
        let version = u16::from_le_bytes(take(2)?.try_into().expect("2"));
        if version != SNAPSHOT_VERSION {
            return Err(format!("snapshot version {version} is not supported"));
        }
        let offset = Offset(u64::from_le_bytes(take(8)?.try_into().expect("8")));
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return Err(format!("{count} producers"));
        }
        let mut entries = HashMap::with_capacity(count);
        for _ in 0..count {
            let pid = i64::from_le_bytes(take(8)?.try_into().expect("8"));
            let epoch = i16::from_le_bytes(take(2)?.try_into().expect("2"));
            let last_ms = i64::from_le_bytes(take(8)?.try_into().expect("8"));
            let n = usize::from(take(1)?[0]);
            if pid < 0 || !(1..=PRODUCER_BATCHES_KEPT).contains(&n) {
                return Err(format!("producer {pid} with {n} batches"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let first_seq = i32::from_le_bytes(take(4)?.try_into().expect("4"));
                let last_seq = i32::from_le_bytes(take(4)?.try_into().expect("4"));
                let base = Offset(u64::from_le_bytes(take(8)?.try_into().expect("8")));
                let last = Offset(u64::from_le_bytes(take(8)?.try_into().expect("8")));
                if last < base || last >= offset {
                    return Err(format!("producer {pid}: batch at {base}..={last}"));
                }
                batches.push_back(Kept {
                    first_seq,
                    last_seq,
                    base,
                    last,
                });
            }
            let entry = Entry {
                epoch,
                batches,
                last_ms,
            };
            if entries.insert(pid, entry).is_some() {
                return Err(format!("producer {pid} listed twice"));
            }
        }
        if !r.is_empty() {
            return Err(format!("{} bytes after the last producer", r.len()));
        }
        Ok((offset, Producers { entries }))
    }
}

/// The path of the snapshot valid up to `offset`.
pub(crate) fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}{SNAPSHOT_SUFFIX}", offset.0))
}

/// Every snapshot in `dir`, newest first.
pub(crate) fn snapshots(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<(Offset, PathBuf)>> {
    let mut found = Vec::new();
    for entry in storage.list(dir)? {
        let Some(offset) = entry
            .name
            .to_str()
            .and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        found.push((Offset(offset), dir.join(&entry.name)));
    }
    found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// The newest snapshot in `dir` that reads back and is not past `next` (the
/// log's end); others in the way are removed with a warning.
pub(crate) fn newest_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    next: Offset,
) -> io::Result<Option<(Offset, Producers)>> {
    for (offset, path) in snapshots(storage, dir)? {
        let read = if offset > next {
            Err(format!("it is past the log's end {next}"))
        } else {
            let len = storage.file_len(&path)?;
            if len > SNAPSHOT_BYTES_MAX as u64 {
                Err(format!("{len} bytes is larger than any snapshot"))
            } else {
                let bytes = storage.read_bounded(&path, SNAPSHOT_BYTES_MAX as u64)?;
                Producers::decode(&bytes).and_then(|(at, state)| {
                    if at == offset {
                        Ok(state)
                    } else {
                        Err(format!("it says offset {at}"))
                    }
                })
            }
        };
        match read {
            Ok(state) => return Ok(Some((offset, state))),
            Err(why) => {
                tracing::warn!(snapshot = %path.display(), %why, "producer snapshot ignored and removed; the log is scanned instead");
                storage.remove_file(&path)?;
            }
        }
    }
    Ok(None)
}

/// Writes the snapshot of `state` as of `offset` and removes all but the
/// newest two.
pub(crate) fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    state: &Producers,
    offset: Offset,
) -> io::Result<()> {
    storage.replace_durably(&snapshot_path(dir, offset), &state.encode(offset))?;
    for (_, old) in snapshots(storage, dir)?.into_iter().skip(2) {
        storage.remove_file(&old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(pid: i64, epoch: i16, first: i32, count: i32) -> BatchId {
        BatchId {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: advance(first, count - 1),
        }
    }

    #[test]
    fn sequences_wrap_from_the_largest_to_zero() {
        assert_eq!(advance(5, 3), 8);
        assert_eq!(advance(i32::MAX, 1), 0);
        assert_eq!(advance(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn kafkas_rules_in_order() {
        let mut p = Producers::default();
        // Unknown producer: any sequence.
        assert_eq!(p.check(&id(7, 0, 42, 3)), Ok(Verdict::New));
        p.record(&id(7, 0, 42, 3), Offset(10), Offset(12), 1);
        // Next in sequence.
        assert_eq!(p.check(&id(7, 0, 45, 1)), Ok(Verdict::New));
        // A gap, and a repeat of something not kept.
        assert_eq!(
            p.check(&id(7, 0, 47, 1)),
            Err(SequenceFault::OutOfOrder {
                expected: 45,
                received: 47
            })
        );
        assert_eq!(
            p.check(&id(7, 0, 43, 2)),
            Err(SequenceFault::OutOfOrder {
                expected: 45,
                received: 43
            })
        );
        // The same batch again.
        assert_eq!(
            p.check(&id(7, 0, 42, 3)),
            Ok(Verdict::Duplicate {
                base: Offset(10),
                last: Offset(12)
            })
        );
        // A new epoch starts at 0; an old one is refused.
        assert_eq!(
            p.check(&id(7, 1, 45, 1)),
            Err(SequenceFault::OutOfOrder {
                expected: 0,
                received: 45
            })
        );
        p.record(&id(7, 1, 0, 1), Offset(13), Offset(13), 2);
        assert_eq!(
            p.check(&id(7, 0, 45, 1)),
            Err(SequenceFault::StaleEpoch {
                epoch: 0,
                current: 1
            })
        );
        assert_eq!(
            p.check(&id(7, 0, 42, 3)),
            Err(SequenceFault::StaleEpoch {
                epoch: 0,
                current: 1
            }),
            "a duplicate of an older epoch is refused, not answered"
        );
    }

    #[test]
    fn only_the_last_five_batches_are_kept() {
        let mut p = Producers::default();
        for i in 0..6 {
            p.record(&id(1, 0, i, 1), Offset(i as u64), Offset(i as u64), 0);
        }
        assert!(matches!(
            p.check(&id(1, 0, 1, 1)),
            Ok(Verdict::Duplicate { .. })
        ));
        assert!(matches!(
            p.check(&id(1, 0, 0, 1)),
            Err(SequenceFault::OutOfOrder { .. })
        ));
    }

    #[test]
    fn idle_producers_expire_and_the_longest_idle_is_evicted_past_the_limit() {
        let mut p = Producers::default();
        p.record(&id(1, 0, 0, 1), Offset(0), Offset(0), 100);
        p.record(&id(2, 0, 0, 1), Offset(1), Offset(1), 200);
        p.expire(250, 100);
        assert_eq!(p.len(), 1);
        assert_eq!(p.check(&id(1, 0, 9, 1)), Ok(Verdict::New), "forgotten");
        for pid in 10..10 + PRODUCERS_PER_PARTITION_MAX as i64 {
            p.record(&id(pid, 0, 0, 1), Offset(2), Offset(2), 300 + pid);
        }
        assert_eq!(p.len(), PRODUCERS_PER_PARTITION_MAX);
        assert_eq!(
            p.check(&id(2, 0, 9, 1)),
            Ok(Verdict::New),
            "the longest idle went"
        );
    }

    #[test]
    fn undo_puts_back_what_a_record_replaced() {
        let mut p = Producers::default();
        p.record(&id(1, 0, 0, 1), Offset(0), Offset(0), 0);
        let before = p.clone();
        let a = p.record(&id(1, 0, 1, 1), Offset(1), Offset(1), 0);
        let b = p.record(&id(2, 0, 0, 1), Offset(2), Offset(2), 0);
        p.undo(b);
        p.undo(a);
        assert_eq!(p, before);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_found() {
        let mut p = Producers::default();
        p.record(&id(3, 2, 7, 4), Offset(5), Offset(8), 1234);
        p.record(&id(9, 0, 0, 1), Offset(9), Offset(9), 99);
        let bytes = p.encode(Offset(10));
        assert_eq!(Producers::decode(&bytes), Ok((Offset(10), p.clone())));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Producers::decode(&bad).is_err(), "byte {at}");
        }
        assert!(Producers::decode(&bytes[..bytes.len() - 1]).is_err());
        // A batch at or past the snapshot's own offset cannot be in it.
        assert!(Producers::decode(&p.encode(Offset(9))).is_err());
    }

    /// An accepted batch: epoch, first and last sequence, first and last offset.
    type Accepted = (i16, i32, i32, u64, u64);

    /// The reference: every batch ever accepted, per producer, in order.
    #[derive(Default)]
    struct Model {
        accepted: HashMap<i64, Vec<Accepted>>,
    }

    impl Model {
        fn check(&self, id: &BatchId) -> Result<Verdict, ()> {
            let Some(all) = self.accepted.get(&id.producer_id) else {
                return Ok(Verdict::New);
            };
            let &(epoch, _, last_seq, _, _) = all.last().unwrap();
            if id.epoch < epoch {
                return Err(());
            }
            let same_epoch: Vec<_> = all.iter().filter(|b| b.0 == id.epoch).collect();
            let recent = &same_epoch[same_epoch.len().saturating_sub(5)..];
            if let Some(b) = recent
                .iter()
                .find(|b| b.1 == id.first_seq && b.2 == id.last_seq)
            {
                return Ok(Verdict::Duplicate {
                    base: Offset(b.3),
                    last: Offset(b.4),
                });
            }
            let expected = if id.epoch > epoch {
                0
            } else {
                advance(last_seq, 1)
            };
            if id.first_seq == expected {
                Ok(Verdict::New)
            } else {
                Err(())
            }
        }
    }

    proptest! {
        /// Producers retrying, skipping, bumping epochs, near the sequence
        /// wrap: the state answers as the full history does, and survives a
        /// snapshot.
        #[test]
        fn the_state_answers_as_the_whole_history_does(
            steps in prop::collection::vec((0i64..3, 0i16..3, -2i32..3, 1i32..4), 1..200)
        ) {
            let mut p = Producers::default();
            let mut model = Model::default();
            let mut next_seq: HashMap<(i64, i16), i32> = HashMap::new();
            let mut offset = 0u64;
            for (pid, epoch, shift, count) in steps {
                let start = next_seq.get(&(pid, epoch)).copied().unwrap_or(i32::MAX - 3);
                let first = advance(start, 0).wrapping_add(shift).max(0);
                let b = id(pid, epoch, first, count);
                let got = p.check(&b).map_err(|_| ());
                prop_assert_eq!(got, model.check(&b));
                if got == Ok(Verdict::New) {
                    let last = offset + count as u64 - 1;
                    p.record(&b, Offset(offset), Offset(last), 0);
                    model.accepted.entry(pid).or_default().push((epoch, b.first_seq, b.last_seq, offset, last));
                    next_seq.insert((pid, epoch), advance(b.last_seq, 1));
                    offset = last + 1;
                }
            }
            let (at, back) = Producers::decode(&p.encode(Offset(offset))).unwrap();
            prop_assert_eq!(at, Offset(offset));
            prop_assert_eq!(back, p);
        }
    }
}
