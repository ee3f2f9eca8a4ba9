//! Typed errors, one enum per family of operations. Each message names what failed
//! and with which input (file, byte position, topic, partition, offset).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tidings_types::{ErrorKind, Offset, PartitionId, TopicName, TopicNameError};

use crate::batch::BatchFault;
use crate::config::ConfigError;

/// Opening a data directory failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The options cannot work.
    #[error("invalid log options: {0}")]
    Options(&'static str),
    /// Another process, or another open [`Log`](crate::Log), holds the data directory.
    #[error("data directory lock {path} is held by another process or another open log")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A topic's metadata file is missing or damaged.
    #[error("topic metadata {path} cannot be read: {reason}")]
    TopicMeta {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A partition could not be recovered and is refused until an operator acts.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// An invalid batch is followed by valid ones: this is not a torn write, and
    /// truncating would throw away acknowledged data.
    #[error("corrupt segment {file}: invalid batch at byte {position} ({fault}) is followed by valid batches; refusing the partition rather than dropping data")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte position of the invalid batch.
        position: u64,
        /// What is wrong with it.
        fault: BatchFault,
    },
    /// A segment file is larger than any the log writes.
    #[error("segment {file} is {len} bytes, more than the {max} bytes the log ever writes to one segment", max = crate::limits::SEGMENT_FILE_BYTES_MAX)]
    Oversized {
        /// The segment file.
        file: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Two consecutive segments lie further apart than one segment may span.
    #[error("segment {file} starts at offset {base} and the next at {next}: more than 2^32 offsets apart, which the log never writes")]
    SegmentSpan {
        /// The first segment file.
        file: PathBuf,
        /// Its base offset.
        base: Offset,
        /// The next segment's base offset.
        next: Offset,
    },
    /// A filesystem operation failed during recovery.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Creating, finding or deleting a topic or partition failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The name cannot be a topic name.
    #[error(transparent)]
    InvalidName(#[from] TopicNameError),
    /// The configuration is outside the limits.
    #[error("invalid configuration for topic: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// A topic of that name exists.
    #[error("topic {0} already exists")]
    Exists(TopicName),
    /// No topic of that name exists.
    #[error("topic {0} does not exist")]
    NotFound(String),
    /// The topic has fewer partitions.
    #[error("topic {topic} has {count} partitions; partition {partition} does not exist")]
    NoSuchPartition {
        /// The topic.
        topic: TopicName,
        /// The partition asked for.
        partition: PartitionId,
        /// How many partitions the topic has.
        count: u32,
    },
    /// The partition failed recovery and is not served.
    #[error("partition {topic}/{partition} is refused: {error}")]
    Refused {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// Why recovery refused it.
        error: Arc<RecoveryError>,
    },
    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// An append was refused; nothing of it was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// No records were given.
    #[error("an append needs at least one record")]
    Empty,
    /// More records than one append may carry.
    #[error("{count} records in one append; the limit is {max}", max = crate::limits::BATCH_RECORDS_MAX)]
    TooManyRecords {
        /// Records given.
        count: usize,
    },
    /// One record is larger than the record limit.
    #[error("record {index} carries {bytes} bytes; the limit is {max}", max = crate::limits::RECORD_BYTES_MAX)]
    RecordTooLarge {
        /// Position of the record in the append.
        index: usize,
        /// Its key, value and header bytes.
        bytes: usize,
    },
    /// The append is larger than the batch limit.
    #[error("append of {bytes} bytes exceeds the limit of {max}", max = crate::limits::BATCH_BYTES_MAX)]
    BatchTooLarge {
        /// Size of the append.
        bytes: usize,
    },
    /// A raw batch from a client is malformed.
    #[error("invalid record batch at byte {position} of the request: {fault}")]
    InvalidBatch {
        /// Position of the batch within the appended bytes.
        position: usize,
        /// What is wrong with it.
        fault: BatchFault,
    },
    /// The records cannot be encoded.
    #[error("cannot encode records: {0}")]
    Encode(String),
    /// A write or sync failed earlier; the partition accepts no appends until the
    /// process restarts and recovers it.
    #[error("partition {topic}/{partition} stopped after a storage failure: {reason}")]
    Failed {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// The failure.
        reason: Arc<str>,
    },
    /// The disk is full: the append was not written, and the partition takes
    /// appends again as soon as space is freed.
    #[error("the disk is full: partition {topic}/{partition} cannot grow {path}; nothing was written, and appends succeed again once space is freed")]
    DiskFull {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// The file that could not grow.
        path: PathBuf,
    },
    /// A roll or retention pass could not finish; appends are not affected.
    #[error("maintenance of partition {topic}/{partition} failed: {reason}")]
    Maintenance {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// What failed.
        reason: Arc<str>,
    },
    /// An idempotent producer's batch does not follow its last one: a batch
    /// in between is missing (Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id} sent sequence {received} to {topic}/{partition}; the next is {expected}")]
    OutOfOrderSequence {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// The producer id.
        producer_id: i64,
        /// The first sequence expected.
        expected: i32,
        /// The first sequence sent.
        received: i32,
    },
    /// An idempotent producer's batch carries an older epoch than the
    /// producer's last: a newer instance took over (Kafka's
    /// INVALID_PRODUCER_EPOCH).
    #[error(
        "producer {producer_id} sent epoch {epoch} to {topic}/{partition}; its epoch is {current}"
    )]
    InvalidProducerEpoch {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// The producer id.
        producer_id: i64,
        /// The epoch sent.
        epoch: i16,
        /// The producer's epoch.
        current: i16,
    },
    /// The log is closed or the topic deleted.
    #[error("partition {topic}/{partition} is closed")]
    Closed {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
    },
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The offset lies before the log start or beyond the high-watermark.
    #[error("offset {requested} is out of range: the partition holds offsets {log_start}..{high_watermark}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The first offset still stored.
        log_start: Offset,
        /// One past the last readable offset.
        high_watermark: Offset,
    },
    /// Stored bytes fail their checks.
    #[error("corrupt batch in {file} at byte {position}: {fault}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte position of the batch.
        position: u64,
        /// What is wrong with it.
        fault: BatchFault,
    },
    /// A stored batch cannot be decoded into records.
    #[error("cannot decode records in {file}: {reason}")]
    Decode {
        /// The segment file.
        file: PathBuf,
        /// The codec's reason.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Closing the log could not finish cleanly; recovery will run on the next open.
#[derive(Debug, thiserror::Error)]
#[error("closing partition {topic}/{partition}: {source}")]
pub struct CloseError {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: PartitionId,
    /// The underlying error.
    pub source: io::Error,
}

impl TopicError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TopicError::InvalidName(_) => ErrorKind::InvalidTopicName,
            TopicError::InvalidConfig(_) => ErrorKind::InvalidTopicConfig,
            TopicError::Exists(_) => ErrorKind::TopicExists,
            TopicError::NotFound(_) => ErrorKind::UnknownTopic,
            TopicError::NoSuchPartition { .. } => ErrorKind::UnknownPartition,
            TopicError::Refused { .. } | TopicError::Io { .. } => ErrorKind::StorageFailed,
        }
    }
}

impl AppendError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppendError::Empty | AppendError::InvalidBatch { .. } | AppendError::Encode(_) => {
                ErrorKind::MalformedRecords
            }
            AppendError::TooManyRecords { .. } => ErrorKind::TooMany,
            AppendError::RecordTooLarge { .. } | AppendError::BatchTooLarge { .. } => {
                ErrorKind::TooLarge
            }
            AppendError::Failed { .. } => ErrorKind::StorageFailed,
            // A roll or retention pass failed; the next append tries again.
            AppendError::Maintenance { .. } => ErrorKind::Unavailable,
            AppendError::DiskFull { .. } => ErrorKind::StorageFull,
            AppendError::Closed { .. } => ErrorKind::ShuttingDown,
            AppendError::OutOfOrderSequence { .. } => ErrorKind::OutOfOrderSequence,
            AppendError::InvalidProducerEpoch { .. } => ErrorKind::InvalidProducerEpoch,
        }
    }
}

impl ReadError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::OffsetOutOfRange { .. } => ErrorKind::OffsetOutOfRange,
            ReadError::Corrupt { .. } | ReadError::Decode { .. } | ReadError::Io { .. } => {
                ErrorKind::StorageFailed
            }
        }
    }
}
