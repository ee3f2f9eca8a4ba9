//! The sparse offset index and time index kept beside each segment.
//!
//! Both are derived from the segment and rebuilt from it when missing or damaged, so
//! they are written without syncing while a segment is active and synced once when
//! it is sealed.
//!
//! File layout (little-endian): a metadata header (see [`crate::format`]) whose body
//! is the segment's base offset, then fixed-width entries, each with its own CRC-32C:
//!
//! | file | entry | meaning |
//! |---|---|---|
//! | `.index` | `rel_offset u32, position u32, crc u32` | the batch with base offset `base + rel_offset` starts at byte `position` |
//! | `.timeindex` | `timestamp i64, rel_offset u32, crc u32` | every record before `base + rel_offset` has a timestamp ≤ `timestamp` |
//!
//! Entries are taken every `index_interval_bytes` of log. A sealed segment's time
//! index ends with an entry for the segment's end offset, which holds its newest
//! timestamp and proves the index complete.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidings_types::Offset;

use crate::batch::BatchHeader;
use crate::format::{self, FormatError};
use crate::limits::INDEX_INTERVAL_BYTES_MIN;
use crate::storage::{OpenMode, Storage, StorageFile};

const OFFSET_MAGIC: [u8; 4] = *b"TDOI";
const TIME_MAGIC: [u8; 4] = *b"TDTI";
const HEADER_BYTES: usize = format::record_len(8);
const OFFSET_ENTRY_BYTES: usize = 12;
const TIME_ENTRY_BYTES: usize = 16;

/// Points at a batch boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) rel: u32,
    pub(crate) pos: u32,
}

/// Every record before `rel` has a timestamp of at most `ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) ts: i64,
    pub(crate) rel: u32,
}

/// The in-memory form of a segment's two indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// The last entry at or before `rel`, or the segment start.
    pub(crate) fn floor(&self, rel: u32) -> OffsetEntry {
        let i = self.offsets.partition_point(|e| e.rel <= rel);
        if i == 0 {
            OffsetEntry { rel: 0, pos: 0 }
        } else {
            self.offsets[i - 1]
        }
    }

    /// A relative offset before which no record has a timestamp ≥ `ts`.
    pub(crate) fn time_floor(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.ts < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].rel
        }
    }

    /// The newest timestamp in a sealed segment: its final time entry.
    pub(crate) fn sealed_max_timestamp(&self) -> Option<i64> {
        self.times.last().map(|e| e.ts)
    }
}

/// Decides where index entries go as batches are appended or scanned.
#[derive(Clone, Debug)]
pub(crate) struct IndexBuilder {
    interval: u32,
    last_entry_pos: u32,
    /// Newest timestamp seen so far in the segment; `i64::MIN` before any batch.
    pub(crate) max_ts: i64,
}

impl IndexBuilder {
    pub(crate) fn new(interval: u32) -> IndexBuilder {
        IndexBuilder {
            interval,
            last_entry_pos: 0,
            max_ts: i64::MIN,
        }
    }

    /// A builder that continues an index already holding `index`'s entries.
    pub(crate) fn resume(interval: u32, index: &SegmentIndex) -> IndexBuilder {
        IndexBuilder {
            interval,
            last_entry_pos: index.offsets.last().map_or(0, |e| e.pos),
            max_ts: index.times.last().map_or(i64::MIN, |e| e.ts),
        }
    }

    /// Records a batch at `pos` with relative base offset `rel`; returns the entries
    /// to add, if this batch is due for them.
    pub(crate) fn on_batch(
        &mut self,
        rel: u32,
        pos: u32,
        header: &BatchHeader,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let mut entries = (None, None);
        if pos >= self.last_entry_pos.saturating_add(self.interval) {
            self.last_entry_pos = pos;
            entries.0 = Some(OffsetEntry { rel, pos });
            if self.max_ts != i64::MIN {
                entries.1 = Some(TimeEntry {
                    ts: self.max_ts,
                    rel,
                });
            }
        }
        self.max_ts = self.max_ts.max(header.max_timestamp);
        entries
    }

    /// The entry that closes a sealed segment whose end offset is `end_rel`.
    pub(crate) fn final_entry(&self, end_rel: u32) -> TimeEntry {
        TimeEntry {
            ts: self.max_ts,
            rel: end_rel,
        }
    }
}

pub(crate) fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

pub(crate) fn offset_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

pub(crate) fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.timeindex", base.0))
}

fn header(magic: [u8; 4], base: Offset) -> Vec<u8> {
    format::encode_record(magic, &base.0.to_le_bytes())
}

fn offset_entry_bytes(e: OffsetEntry) -> [u8; OFFSET_ENTRY_BYTES] {
    let mut b = [0u8; OFFSET_ENTRY_BYTES];
    b[0..4].copy_from_slice(&e.rel.to_le_bytes());
    b[4..8].copy_from_slice(&e.pos.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..8]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

fn time_entry_bytes(e: TimeEntry) -> [u8; TIME_ENTRY_BYTES] {
    let mut b = [0u8; TIME_ENTRY_BYTES];
    b[0..8].copy_from_slice(&e.ts.to_le_bytes());
    b[8..12].copy_from_slice(&e.rel.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..12]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

/// What loading an index from disk found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) index: SegmentIndex,
    /// Both files were present and every byte of them valid.
    pub(crate) intact: bool,
}

/// Reads a file of at most `bytes_max` bytes; `None` if it does not exist.
fn read_bounded(
    storage: &dyn Storage,
    path: &Path,
    bytes_max: u64,
) -> io::Result<Option<Result<Vec<u8>, u64>>> {
    let file = match storage.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    if len > bytes_max {
        return Ok(Some(Err(len)));
    }
    let mut buf = vec![0u8; usize::try_from(len).expect("bounded")];
    file.read_exact_at(&mut buf, 0)?;
    Ok(Some(Ok(buf)))
}

/// Loads both indexes of the segment at `base`, keeping the longest valid prefix of
/// entries that are ordered and point inside a segment of `segment_len` bytes.
pub(crate) fn load(
    storage: &dyn Storage,
    dir: &Path,
    base: Offset,
    segment_len: u64,
) -> io::Result<Loaded> {
    // A segment of `segment_len` bytes has at most this many entries.
    let entries_max = segment_len / u64::from(INDEX_INTERVAL_BYTES_MIN) + 2;
    let mut intact = true;
    let mut index = SegmentIndex::default();

    let check_header = |bytes: &[u8], magic| -> Result<(), FormatError> {
        let body = format::decode_record(&bytes[..HEADER_BYTES.min(bytes.len())], magic, 8)?;
        if body != base.0.to_le_bytes() {
            return Err(FormatError::Checksum);
        }
        Ok(())
    };

    let bound = HEADER_BYTES as u64 + entries_max * TIME_ENTRY_BYTES as u64;
    match read_bounded(storage, &offset_index_path(dir, base), bound)? {
        Some(Ok(bytes)) if check_header(&bytes, OFFSET_MAGIC).is_ok() => {
            let body = &bytes[HEADER_BYTES..];
            intact &= body.len() % OFFSET_ENTRY_BYTES == 0;
            for chunk in body.chunks_exact(OFFSET_ENTRY_BYTES) {
                let e = OffsetEntry {
                    rel: u32::from_le_bytes(chunk[0..4].try_into().expect("4")),
                    pos: u32::from_le_bytes(chunk[4..8].try_into().expect("4")),
                };
                let ordered = index
                    .offsets
                    .last()
                    .is_none_or(|p| p.rel < e.rel && p.pos < e.pos);
                if offset_entry_bytes(e) != chunk || !ordered || u64::from(e.pos) >= segment_len {
                    intact = false;
                    break;
                }
                index.offsets.push(e);
            }
        }
        _ => intact = false,
    }
    match read_bounded(storage, &time_index_path(dir, base), bound)? {
        Some(Ok(bytes)) if check_header(&bytes, TIME_MAGIC).is_ok() => {
            let body = &bytes[HEADER_BYTES..];
            intact &= body.len() % TIME_ENTRY_BYTES == 0;
            for chunk in body.chunks_exact(TIME_ENTRY_BYTES) {
                let e = TimeEntry {
                    ts: i64::from_le_bytes(chunk[0..8].try_into().expect("8")),
                    rel: u32::from_le_bytes(chunk[8..12].try_into().expect("4")),
                };
                let ordered = index
                    .times
                    .last()
                    .is_none_or(|p| p.ts <= e.ts && p.rel < e.rel);
                if time_entry_bytes(e) != chunk || !ordered {
                    intact = false;
                    break;
                }
                index.times.push(e);
            }
        }
        _ => intact = false,
    }
    Ok(Loaded { index, intact })
}

/// The two index files of the active segment, appended to as entries are added.
#[derive(Debug)]
pub(crate) struct IndexFiles {
    offsets: Arc<dyn StorageFile>,
    times: Arc<dyn StorageFile>,
    offsets_len: u64,
    times_len: u64,
}

impl IndexFiles {
    /// Creates both files for a new segment, durably.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
    ) -> io::Result<IndexFiles> {
        let offsets =
            storage.create_durably(&offset_index_path(dir, base), &header(OFFSET_MAGIC, base))?;
        let times =
            storage.create_durably(&time_index_path(dir, base), &header(TIME_MAGIC, base))?;
        Ok(IndexFiles {
            offsets,
            times,
            offsets_len: HEADER_BYTES as u64,
            times_len: HEADER_BYTES as u64,
        })
    }

    /// Replaces both files with exactly `index`, then opens them for appending.
    pub(crate) fn rewrite(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
        index: &SegmentIndex,
    ) -> io::Result<IndexFiles> {
        let mut offsets = header(OFFSET_MAGIC, base);
        for e in &index.offsets {
            offsets.extend_from_slice(&offset_entry_bytes(*e));
        }
        let mut times = header(TIME_MAGIC, base);
        for e in &index.times {
            times.extend_from_slice(&time_entry_bytes(*e));
        }
        storage.replace_durably(&offset_index_path(dir, base), &offsets)?;
        storage.replace_durably(&time_index_path(dir, base), &times)?;
        let open = |p: PathBuf| storage.open(&p, OpenMode::ReadWrite);
        Ok(IndexFiles {
            offsets: open(offset_index_path(dir, base))?,
            times: open(time_index_path(dir, base))?,
            offsets_len: offsets.len() as u64,
            times_len: times.len() as u64,
        })
    }

    pub(crate) fn push_offset(&mut self, e: OffsetEntry) -> io::Result<()> {
        self.offsets
            .write_all_at(&offset_entry_bytes(e), self.offsets_len)?;
        self.offsets_len += OFFSET_ENTRY_BYTES as u64;
        Ok(())
    }

    pub(crate) fn push_time(&mut self, e: TimeEntry) -> io::Result<()> {
        self.times
            .write_all_at(&time_entry_bytes(e), self.times_len)?;
        self.times_len += TIME_ENTRY_BYTES as u64;
        Ok(())
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.offsets.sync_data()?;
        self.times.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsStorage;

    #[test]
    fn written_entries_load_back_and_damage_keeps_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let base = Offset(100);
        let mut files = IndexFiles::create(&OsStorage, dir.path(), base).unwrap();
        let mut expected = SegmentIndex::default();
        for i in 1..=5u32 {
            let o = OffsetEntry {
                rel: i * 10,
                pos: i * 4096,
            };
            let t = TimeEntry {
                ts: i64::from(i) * 1000,
                rel: i * 10,
            };
            files.push_offset(o).unwrap();
            files.push_time(t).unwrap();
            expected.offsets.push(o);
            expected.times.push(t);
        }
        let loaded = load(&OsStorage, dir.path(), base, 1 << 20).unwrap();
        assert!(loaded.intact);
        assert_eq!(loaded.index, expected);

        // Damage the third offset entry: the first two survive.
        let path = offset_index_path(dir.path(), base);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 2 * OFFSET_ENTRY_BYTES + 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let loaded = load(&OsStorage, dir.path(), base, 1 << 20).unwrap();
        assert!(!loaded.intact);
        assert_eq!(loaded.index.offsets, expected.offsets[..2]);

        // Entries pointing past the segment are dropped too.
        let loaded = load(&OsStorage, dir.path(), base, 3 * 4096).unwrap();
        assert_eq!(loaded.index.offsets.len(), 2);

        std::fs::remove_file(time_index_path(dir.path(), base)).unwrap();
        assert!(!load(&OsStorage, dir.path(), base, 1 << 20).unwrap().intact);
    }

    #[test]
    fn floor_lookups() {
        let index = SegmentIndex {
            offsets: vec![
                OffsetEntry { rel: 10, pos: 500 },
                OffsetEntry { rel: 20, pos: 900 },
            ],
            times: vec![TimeEntry { ts: 50, rel: 10 }, TimeEntry { ts: 70, rel: 20 }],
        };
        assert_eq!(index.floor(5), OffsetEntry { rel: 0, pos: 0 });
        assert_eq!(index.floor(10).pos, 500);
        assert_eq!(index.floor(19).pos, 500);
        assert_eq!(index.floor(25).pos, 900);
        assert_eq!(index.time_floor(50), 0);
        assert_eq!(index.time_floor(51), 10);
        assert_eq!(index.time_floor(1000), 20);
    }
}
