//! Crash images: the files a crash can leave, built byte by byte, then reopened.
//!
//! A crash can cut the last batch anywhere; a bit can rot anywhere. Every batch
//! written whole before a cut must read back intact, nothing after it may appear,
//! and damage that is not at the tail must refuse the partition with the file and
//! byte position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tidings_log::{FsyncPolicy, Log, ReadError, Record, RecoveryError, TopicConfig, TopicError};
use tidings_types::{Offset, PartitionId};

use crate::support::{options, partition_dir, record, segment_files, Fixture, TOPIC};

/// A closed log and what it holds.
struct Image {
    fx: Fixture,
    /// Every file of the partition directory as the clean close left it.
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// The active segment file.
    active: PathBuf,
    /// Start position (in the active segment) and base offset of its batches.
    batches: Vec<(u64, Offset)>,
    records: Vec<Record>,
}

fn build(batch_count: usize, segment_bytes: u64) -> Image {
    let config = TopicConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes,
        index_interval_bytes: 128,
        ..TopicConfig::default()
    };
    let mut fx = Fixture::new(config);
    let p = fx.partition();
    let mut records = Vec::new();
    for b in 0..batch_count {
        let batch: Vec<Record> = (0..1 + b % 3)
            .map(|i| record((b * 10 + i) as u64, 20 + b * 7 % 90, b as i64))
            .collect();
        p.append_blocking(&batch).unwrap();
        records.extend(batch);
    }
    drop(p);
    fx.close();
    let dir = fx.partition_dir();
    let active = segment_files(&dir).pop().unwrap();
    let base: u64 = active
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = std::fs::read(&active).unwrap();
    let mut batches = Vec::new();
    let (mut pos, mut offset) = (0usize, base);
    while pos < bytes.len() {
        let len = 12 + i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let count = i32::from_be_bytes(bytes[pos + 57..pos + 61].try_into().unwrap()) as u64;
        batches.push((pos as u64, Offset(offset)));
        pos += len;
        offset += count;
    }
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    Image {
        fx,
        files,
        active,
        batches,
        records,
    }
}

impl Image {
    /// Restores the clean files, applies `damage` to the active segment's bytes, and
    /// removes the clean-shutdown marker unless `keep_marker`.
    fn crash(&self, keep_marker: bool, damage: impl FnOnce(&mut Vec<u8>)) {
        let dir = self.fx.partition_dir();
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (path, bytes) in &self.files {
            std::fs::write(path, bytes).unwrap();
        }
        let mut bytes = self.files[&self.active].clone();
        damage(&mut bytes);
        std::fs::write(&self.active, bytes).unwrap();
        if !keep_marker {
            std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
        }
    }

    fn open(&self) -> Log {
        Log::open(self.fx.dir.path(), options(&self.fx.clock)).unwrap()
    }

    /// After reopening, exactly the first `surviving` records are there, and the
    /// log continues at the next offset.
    fn check_survivors(&self, surviving: Offset, what: &str) {
        let log = self.open();
        let p = log.topic(TOPIC).unwrap().partition(PartitionId(0)).unwrap();
        assert_eq!(p.high_watermark(), surviving, "{what}");
        let mut at = Offset(0);
        while at < surviving {
            for r in p.read_records(at, 1 << 20).unwrap() {
                assert_eq!(
                    r.record, self.records[r.offset.0 as usize],
                    "{what}: offset {}",
                    r.offset
                );
                at = r.offset.next();
            }
        }
        let appended = p.append_blocking(&[record(999, 10, 0)]).unwrap();
        assert_eq!(
            appended.base_offset, surviving,
            "{what}: the log continues without a gap"
        );
        drop(p);
        log.close().unwrap();
    }

    fn last(&self) -> (u64, Offset) {
        *self.batches.last().unwrap()
    }
}

fn check_cuts(image: &Image) {
    let (last_start, last_base) = image.last();
    let end = image.files[&image.active].len() as u64;
    for cut in last_start..end {
        for keep_marker in [false, true] {
            image.crash(keep_marker, |b| b.truncate(cut as usize));
            image.check_survivors(
                last_base,
                &format!("cut at byte {cut}, marker kept: {keep_marker}"),
            );
            let len = std::fs::metadata(&image.active).unwrap().len();
            assert!(
                len > last_start,
                "the test's own append follows the truncation point"
            );
        }
    }
}

#[test]
fn a_cut_anywhere_in_the_last_batch_keeps_every_whole_batch_before_it() {
    check_cuts(&build(12, 1 << 20));
}

/// A crash leaves the zeros of the space the writer allocated ahead: after the
/// last whole batch, or behind a torn one.
#[test]
fn zeros_after_the_data_are_allocated_space_not_damage() {
    let image = build(12, 1 << 20);
    let (last_start, last_base) = image.last();
    let end = image.files[&image.active].len();
    let all = Offset(image.records.len() as u64);
    let torn = usize::try_from(last_start).unwrap() + 20;
    for (keep, surviving, what) in [
        (end, all, "zeros after the last batch"),
        (torn, last_base, "zeros after a torn batch"),
    ] {
        for keep_marker in [false, true] {
            image.crash(keep_marker, |b| {
                b.truncate(keep);
                b.resize(end + 300_000, 0);
            });
            image.check_survivors(surviving, &format!("{what}, marker kept: {keep_marker}"));
        }
    }
}

#[test]
fn a_cut_in_the_active_segment_after_several_sealed_ones() {
    let image = build(40, 1_024);
    assert!(segment_files(&image.fx.partition_dir()).len() > 3);
    check_cuts(&image);
}

#[test]
fn a_cut_exactly_at_a_batch_boundary_loses_nothing() {
    let image = build(6, 1 << 20);
    let end = image.files[&image.active].len();
    image.crash(false, |b| b.truncate(end));
    image.check_survivors(Offset(image.records.len() as u64), "no cut");
}

#[test]
fn a_flipped_bit_in_the_last_batch_is_a_torn_tail() {
    let image = build(8, 1 << 20);
    let (last_start, last_base) = image.last();
    let end = image.files[&image.active].len() as u64;
    for byte in last_start..end {
        let bit = byte % 8;
        image.crash(false, |b| b[byte as usize] ^= 1 << bit);
        image.check_survivors(last_base, &format!("bit {bit} of byte {byte} flipped"));
    }
}

fn refused_at(
    data_dir: &Path,
    clock: &std::sync::Arc<crate::support::ManualClock>,
) -> (PathBuf, u64, String) {
    let log = Log::open(data_dir, options(clock)).unwrap();
    let topic = log.topic(TOPIC).unwrap();
    let err = topic.partition(PartitionId(0)).unwrap_err();
    let message = err.to_string();
    match err {
        TopicError::Refused { error, .. } => match &*error {
            RecoveryError::Corrupt { file, position, .. } => (file.clone(), *position, message),
            other => panic!("expected corruption, got {other}"),
        },
        other => panic!("expected a refused partition, got {other}"),
    }
}

#[test]
fn a_flipped_bit_in_an_earlier_batch_refuses_the_partition() {
    let image = build(8, 1 << 20);
    let batches = image.batches.clone();
    for pair in batches.windows(2) {
        let (start, next_start) = (pair[0].0, pair[1].0);
        for byte in [start, start + 9, start + 16, start + 30, next_start - 1] {
            image.crash(false, |b| b[byte as usize] ^= 0x04);
            let (file, position, message) = refused_at(image.fx.dir.path(), &image.fx.clock);
            assert_eq!(file, image.active, "byte {byte}");
            assert_eq!(position, start, "byte {byte}");
            assert!(
                message.contains(&image.active.display().to_string()),
                "{message}"
            );
            assert!(message.contains(&format!("byte {start}")), "{message}");
        }
    }
    // The refusal concerns that partition only: its data is untouched on disk.
    let damaged = std::fs::read(&image.active).unwrap();
    assert_eq!(damaged.len(), image.files[&image.active].len());
}

#[test]
fn rot_behind_a_clean_marker_is_reported_by_reads_with_file_and_position() {
    let image = build(30, 1 << 20);
    let (start, base) = image.batches[1];
    image.crash(true, |b| b[start as usize + 40] ^= 0x01);
    let log = image.open();
    let p = log.topic(TOPIC).unwrap().partition(PartitionId(0)).unwrap();
    match p.read(base, 1 << 20) {
        Err(ReadError::Corrupt { file, position, .. }) => {
            assert_eq!(file, image.active);
            assert_eq!(position, start);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let image = build(60, 2_048);
    let dir = partition_dir(image.fx.dir.path());
    let segments = segment_files(&dir);
    assert!(segments.len() > 2);
    let expected_lookup = {
        let log = image.open();
        let p = log.topic(TOPIC).unwrap().partition(PartitionId(0)).unwrap();
        (0..60)
            .map(|ts| {
                p.offset_for_timestamp(tidings_types::TimestampMs(ts))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    for keep_marker in [true, false] {
        image.crash(keep_marker, |_| {});
        // Damage one index, remove another, truncate a third.
        let index = segments[0].with_extension("index");
        let mut bytes = std::fs::read(&index).unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 0xff;
        std::fs::write(&index, bytes).unwrap();
        std::fs::remove_file(segments[1].with_extension("timeindex")).unwrap();
        let active_index = segments.last().unwrap().with_extension("index");
        let len = std::fs::metadata(&active_index).unwrap().len();
        std::fs::File::options()
            .write(true)
            .open(&active_index)
            .unwrap()
            .set_len(len - 5)
            .unwrap();

        let log = image.open();
        let p = log.topic(TOPIC).unwrap().partition(PartitionId(0)).unwrap();
        let records = image.records.len() as u64;
        assert_eq!(p.high_watermark(), Offset(records));
        for at in 0..records {
            let first = p.read_records(Offset(at), 1).unwrap().remove(0);
            assert_eq!(first.offset, Offset(at));
            assert_eq!(first.record, image.records[at as usize]);
        }
        let lookup: Vec<_> = (0..60)
            .map(|ts| {
                p.offset_for_timestamp(tidings_types::TimestampMs(ts))
                    .unwrap()
            })
            .collect();
        assert_eq!(lookup, expected_lookup);
        drop(p);
        log.close().unwrap();
        assert!(
            segments[1].with_extension("timeindex").exists(),
            "the rebuilt index is written back"
        );
    }
}

#[test]
fn a_segment_larger_than_the_log_ever_writes_is_refused() {
    let image = build(3, 1 << 20);
    image.crash(false, |_| {});
    let file = std::fs::File::options()
        .write(true)
        .open(&image.active)
        .unwrap();
    file.set_len(tidings_log::limits::SEGMENT_FILE_BYTES_MAX + 1)
        .unwrap();
    let log = image.open();
    let err = log
        .topic(TOPIC)
        .unwrap()
        .partition(PartitionId(0))
        .unwrap_err();
    match err {
        TopicError::Refused { error, .. } => {
            assert!(
                matches!(&*error, RecoveryError::Oversized { .. }),
                "{error}"
            )
        }
        other => panic!("expected a refused partition, got {other}"),
    }
}
