//! Shared helpers: the manual clock, deterministic records, and a fixture that opens
//! and reopens a log in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tidings_log::{Header, Log, LogOptions, Partition, Record, TopicConfig};
pub use tidings_types::ManualClock;
use tidings_types::{PartitionId, TimestampMs};

/// A record whose bytes are a pure function of `seed`, so a reader can check it.
pub fn record(seed: u64, value_bytes: usize, ts: i64) -> Record {
    let value: Vec<u8> = (0..value_bytes)
        .map(|i| (seed as usize * 31 + i * 7) as u8)
        .collect();
    Record {
        key: (!seed.is_multiple_of(3)).then(|| Bytes::from(format!("key-{seed}"))),
        value: Some(Bytes::from(value)),
        headers: if seed.is_multiple_of(2) {
            vec![Header {
                key: "seed".into(),
                value: Some(Bytes::from(seed.to_string())),
            }]
        } else {
            Vec::new()
        },
        timestamp: TimestampMs(ts),
    }
}

/// A log in a temporary directory, with one topic, that can be closed and reopened.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub log: Option<Log>,
}

pub const TOPIC: &str = "t";

impl Fixture {
    pub fn new(config: TopicConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)));
        let log = Log::open(dir.path(), options(&clock)).unwrap();
        log.create_topic(TOPIC, config).unwrap();
        Fixture {
            dir,
            clock,
            log: Some(log),
        }
    }

    pub fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    pub fn partition(&self) -> Arc<Partition> {
        self.log()
            .topic(TOPIC)
            .unwrap()
            .partition(PartitionId(0))
            .unwrap()
    }

    pub fn partition_dir(&self) -> PathBuf {
        partition_dir(self.dir.path())
    }

    pub fn close(&mut self) {
        if let Some(log) = self.log.take() {
            log.close().unwrap();
        }
    }

    pub fn reopen(&mut self) {
        self.close();
        self.log = Some(Log::open(self.dir.path(), options(&self.clock)).unwrap());
    }
}

pub fn options(clock: &Arc<ManualClock>) -> LogOptions {
    LogOptions {
        clock: clock.clone(),
        ..LogOptions::default()
    }
}

pub fn partition_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics").join(TOPIC).join("0")
}

/// Paths of the segment files in a partition directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Where the last whole batch of a segment file ends: the first position that
/// does not start a batch (wrong magic or too short), or the file's end.
pub fn data_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 0;
    while pos + 17 <= bytes.len() && bytes[pos + 16] == 2 {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        pos += 12 + usize::try_from(len).unwrap();
    }
    pos as u64
}

/// Copies a directory tree: a crash image of a log that is still open.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
