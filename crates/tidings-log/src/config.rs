//! Per-topic configuration and the options of a whole log: the clock it reads
//! time from and how it syncs.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::storage::{OsStorage, Storage, StorageFile};
use tidings_types::{Clock, SystemClock};

use crate::limits::{
    FSYNC_INTERVAL_MAX, INDEX_INTERVAL_BYTES_MAX, INDEX_INTERVAL_BYTES_MIN, PARTITIONS_MAX,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};

/// When the log makes appended data durable with `fdatasync`, and so when it
/// acknowledges an append and when readers may see it.
///
/// | policy | append acknowledged | readers see data | lost on power failure |
/// |---|---|---|---|
/// | `always` | after `fdatasync` | after `fdatasync` | nothing acknowledged |
/// | `interval:<ms>` | after the write | after the next sync (≤ ms later) | up to `ms` of acknowledged appends |
/// | `never` | after the write | after the write | anything not yet written back by the OS |
///
/// A killed process loses nothing acknowledged under any policy: written data sits in
/// the page cache. Every policy syncs a segment before sealing it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge an append only once it is on disk. Concurrent appends share one sync.
    #[default]
    Always,
    /// Sync at most this often; acknowledge on write.
    Interval(Duration),
    /// Leave write-back to the operating system. Lossy on power failure.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// A string that is not `always`, `never` or `interval:<ms>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fsync policy {input:?}: {reason}")]
pub struct FsyncPolicyParseError {
    input: String,
    reason: &'static str,
}

impl FromStr for FsyncPolicy {
    type Err = FsyncPolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| FsyncPolicyParseError {
            input: s.to_owned(),
            reason,
        };
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(0)) => Err(refuse(
                    "an interval of 0 ms would sync after every write; give 'always', or an interval of 1 ms or more",
                )),
                Some(Ok(ms)) => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                Some(Err(_)) => Err(refuse("the interval is a whole number of milliseconds")),
                None => Err(refuse("expected 'always', 'never' or 'interval:<milliseconds>'")),
            },
        }
    }
}

/// How a topic stores its partitions. Chosen at creation, changed by
/// [`Log::alter_topic`](crate::Log::alter_topic); kept in the topic's metadata file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions, 1..=[`PARTITIONS_MAX`].
    pub partitions: u32,
    /// When appends become durable.
    pub fsync: FsyncPolicy,
    /// A segment is sealed and a new one started once it would grow past this size.
    pub segment_bytes: u64,
    /// A non-empty segment older than this is sealed on the next append.
    pub segment_age: Option<Duration>,
    /// Sealed segments whose newest record is older than this are deleted.
    pub retention_age: Option<Duration>,
    /// Oldest sealed segments are deleted while the partition stays above this size.
    pub retention_bytes: Option<u64>,
    /// Bytes of log between two entries of the sparse indexes.
    pub index_interval_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 * 1024 * 1024,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            index_interval_bytes: 4096,
        }
    }
}

/// A topic configuration outside the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Partition count out of range.
    #[error("partitions is {0}; it must be 1..={PARTITIONS_MAX}")]
    Partitions(u32),
    /// Segment size out of range.
    #[error("segment_bytes is {0}; it must be {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}")]
    SegmentBytes(u64),
    /// Index interval out of range.
    #[error("index_interval_bytes is {0}; it must be {INDEX_INTERVAL_BYTES_MIN}..={INDEX_INTERVAL_BYTES_MAX}")]
    IndexInterval(u32),
    /// An fsync interval longer than [`FSYNC_INTERVAL_MAX`].
    #[error("fsync interval {0:?} is longer than the limit of {FSYNC_INTERVAL_MAX:?}")]
    FsyncInterval(Duration),
    /// A duration of zero where zero makes no sense.
    #[error("{0} must be at least 1 ms")]
    ZeroDuration(&'static str),
    /// An alteration that would take partitions away.
    #[error("a topic's partitions can be added but not removed: it has {from}, asked for {to}")]
    PartitionsDecrease {
        /// Partitions now.
        from: u32,
        /// Partitions asked for.
        to: u32,
    },
}

impl TopicConfig {
    /// Checks every field against the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(ConfigError::Partitions(self.partitions));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(ConfigError::SegmentBytes(self.segment_bytes));
        }
        if !(INDEX_INTERVAL_BYTES_MIN..=INDEX_INTERVAL_BYTES_MAX)
            .contains(&self.index_interval_bytes)
        {
            return Err(ConfigError::IndexInterval(self.index_interval_bytes));
        }
        let zero = |d: Option<Duration>| d.is_some_and(|d| d.as_millis() == 0);
        if zero(self.segment_age) {
            return Err(ConfigError::ZeroDuration("segment_age"));
        }
        if zero(self.retention_age) {
            return Err(ConfigError::ZeroDuration("retention_age"));
        }
        if let FsyncPolicy::Interval(d) = self.fsync {
            if d.as_millis() == 0 {
                return Err(ConfigError::ZeroDuration("fsync interval"));
            }
            if d > FSYNC_INTERVAL_MAX {
                return Err(ConfigError::FsyncInterval(d));
            }
        }
        Ok(())
    }
}

/// How the log makes a segment's written data durable.
///
/// Tests replace it to inject `fdatasync` failures; everything else uses
/// [`OsFileSync`].
pub trait FileSync: Send + Sync + fmt::Debug {
    /// Makes the data written to `file` durable.
    fn sync_data(&self, file: &dyn StorageFile) -> io::Result<()>;
}

/// `fdatasync(2)` through the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileSync;

impl FileSync for OsFileSync {
    fn sync_data(&self, file: &dyn StorageFile) -> io::Result<()> {
        file.sync_data()
    }
}

/// Options for a whole [`Log`](crate::Log).
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Source of wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// The file system the log's files live on.
    pub storage: Arc<dyn Storage>,
    /// How segment data is made durable.
    pub file_sync: Arc<dyn FileSync>,
    /// How often each partition's writer checks retention when idle.
    pub retention_check_interval: Duration,
    /// How long a partition keeps an idle idempotent producer's state (Kafka's
    /// `producer.id.expiration.ms`, one day by default): a batch it sends
    /// again after that is accepted as from a new producer.
    pub producer_id_expiration: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            clock: Arc::new(SystemClock),
            storage: Arc::new(OsStorage),
            file_sync: Arc::new(OsFileSync),
            retention_check_interval: Duration::from_secs(60),
            producer_id_expiration: Duration::from_secs(24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_round_trips_through_its_text_form() {
        for text in ["always", "never", "interval:250"] {
            let policy: FsyncPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        for bad in [
            "",
            "Always",
            "interval:",
            "interval:0",
            "interval:-5",
            "interval:x",
        ] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_config_is_valid_and_limits_are_enforced() {
        assert_eq!(TopicConfig::default().validate(), Ok(()));
        let bad = TopicConfig {
            partitions: 0,
            ..TopicConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Partitions(0)));
        let bad = TopicConfig {
            segment_bytes: SEGMENT_BYTES_MAX + 1,
            ..TopicConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::SegmentBytes(SEGMENT_BYTES_MAX + 1))
        );
    }
}
