//! The broker's errors: one enum per family of operations, each with the
//! [`ErrorKind`] front ends answer it by.

use std::path::PathBuf;

use tidings_log::{AppendError, TopicError};
use tidings_types::{ErrorKind, EventError, PartitionId};

/// Opening the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] tidings_log::OpenError),
    /// A topic's broker settings or a group's offsets could not be read.
    #[error("cannot read broker settings {path}: {reason}")]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Rebuilding a topic's dedup index from its log failed.
    #[error("cannot rebuild the dedup index of topic {topic}: {reason}")]
    Dedup {
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The options cannot work.
    #[error("invalid broker options: {0}")]
    Options(String),
}

/// Creating, describing or deleting a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The spec is invalid.
    #[error("invalid topic configuration: {0}")]
    InvalidSpec(String),
    /// The log refused.
    #[error(transparent)]
    Log(#[from] TopicError),
    /// The dedup index could not be refilled from the log.
    #[error("cannot refill the dedup index of topic {topic} from its log: {reason}")]
    Dedup {
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The topic would take the broker past its limit of partitions over all
    /// topics ([`BrokerOptions::partitions_total_max`](crate::BrokerOptions)).
    #[error("the broker holds {have} partitions over all its topics; {asked} more would pass its limit of {limit}")]
    TooManyPartitions {
        /// Partitions now, over every topic.
        have: u32,
        /// Partitions the topic asked for.
        asked: u32,
        /// The limit.
        limit: u32,
    },
    /// The broker's settings file could not be written.
    #[error("cannot write broker settings {path}: {source}")]
    Io {
        /// The settings file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A publish failed. A batch that fails part-way may have appended some events;
/// publishing it again is safe while dedup is on, as those answer their original
/// offsets.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// An event is not a valid CloudEvent.
    #[error("event {index} is invalid: {error}")]
    InvalidEvent {
        /// Its position in the batch.
        index: usize,
        /// Why.
        error: EventError,
    },
    /// The topic validates events and one fails its schema or has none;
    /// nothing of the batch was appended.
    #[error("event {index} is refused by its topic's schema check: {rejection}")]
    SchemaRejected {
        /// Its position in the batch (for a Kafka producer's batches, the
        /// record's position over all of them).
        index: usize,
        /// Why.
        rejection: tidings_schema::Rejection,
    },
    /// A Kafka producer's batches bound for a topic that validates could not
    /// be decoded to check them.
    #[error("the record batches cannot be decoded to check them against their schemas: {0}")]
    Undecodable(String),
    /// The topic keeps a dedup window and recovery refused one of its
    /// partitions: that partition's events are missing from the dedup index,
    /// so no event is appended to the topic until it is repaired.
    #[error("topic {topic} takes no events while its partition {partition} is refused ({reason}): that partition's events are missing from the topic's dedup index, so a repeat could be stored twice; repair the partition and restart")]
    DedupIncomplete {
        /// The topic.
        topic: String,
        /// The refused partition.
        partition: PartitionId,
        /// Why recovery refused it.
        reason: String,
    },
    /// A partition cannot be written.
    #[error(transparent)]
    Partition(#[from] TopicError),
    /// The log refused the append.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Reading a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// No such partition, or it is refused.
    #[error(transparent)]
    Partition(#[from] TopicError),
    /// The log refused the read (offset out of range, corruption).
    #[error(transparent)]
    Log(#[from] tidings_log::ReadError),
}

impl AdminError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AdminError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            AdminError::InvalidSpec(_) => ErrorKind::InvalidTopicConfig,
            AdminError::TooManyPartitions { .. } => ErrorKind::LimitReached,
            AdminError::Log(e) => e.kind(),
            AdminError::Dedup { .. } | AdminError::Io { .. } => ErrorKind::StorageFailed,
        }
    }
}

impl PublishError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PublishError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            PublishError::InvalidEvent { .. } => ErrorKind::InvalidEvent,
            PublishError::SchemaRejected { .. } => ErrorKind::SchemaRejected,
            PublishError::Undecodable(_) => ErrorKind::MalformedRecords,
            PublishError::DedupIncomplete { .. } => ErrorKind::StorageFailed,
            PublishError::Partition(e) => e.kind(),
            PublishError::Append(e) => e.kind(),
        }
    }
}

impl ReadError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            ReadError::Partition(e) => e.kind(),
            ReadError::Log(e) => e.kind(),
        }
    }
}
