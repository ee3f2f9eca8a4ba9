//! Broker errors as Kafka error codes, with the message clients show.

use kafka_protocol::ResponseError;
use tidings_broker::{AdminError, PublishError, ReadError};
use tidings_log::{AppendError, TopicError};

/// A Kafka error code and the text behind it.
pub(crate) struct Failure {
    pub(crate) code: ResponseError,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: ResponseError, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

fn topic_error(e: &TopicError) -> ResponseError {
    match e {
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Exists(_) => ResponseError::TopicAlreadyExists,
        TopicError::NotFound(_) | TopicError::NoSuchPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        TopicError::Refused { .. } | TopicError::Io { .. } => ResponseError::KafkaStorageError,
    }
}

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        let code = match &e {
            PublishError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            PublishError::InvalidEvent { .. } => ResponseError::InvalidRecord,
            PublishError::Partition(e) => topic_error(e),
            PublishError::Append(a) => match a {
                AppendError::Empty | AppendError::InvalidBatch { .. } | AppendError::Encode(_) => {
                    ResponseError::CorruptMessage
                }
                AppendError::RecordTooLarge { .. } | AppendError::BatchTooLarge { .. } => {
                    ResponseError::MessageTooLarge
                }
                AppendError::TooManyRecords { .. } => ResponseError::RecordListTooLarge,
                AppendError::Failed { .. } | AppendError::Closed { .. } => {
                    ResponseError::KafkaStorageError
                }
                AppendError::Maintenance { .. } => ResponseError::NotLeaderOrFollower,
            },
        };
        Failure::new(code, e.to_string())
    }
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        let code = match &e {
            ReadError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            ReadError::Partition(e) => topic_error(e),
            ReadError::Log(l) => match l {
                tidings_log::ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                tidings_log::ReadError::Corrupt { .. }
                | tidings_log::ReadError::Decode { .. }
                | tidings_log::ReadError::Io { .. } => ResponseError::KafkaStorageError,
            },
        };
        Failure::new(code, e.to_string())
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Failure {
        let code = match &e {
            AdminError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            AdminError::InvalidSpec(_) => ResponseError::InvalidConfig,
            AdminError::Log(t) => topic_error(t),
            AdminError::Dedup { .. } | AdminError::Io { .. } => ResponseError::KafkaStorageError,
        };
        Failure::new(code, e.to_string())
    }
}
