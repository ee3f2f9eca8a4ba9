//! Broker errors as Kafka error codes, with the message clients show.

use kafka_protocol::ResponseError;
use tidings_broker::{AdminError, GroupError, ProducerIdError, PublishError, ReadError};
use tidings_types::ErrorKind;

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

/// The Kafka error code of each kind of failure: the one place the listener
/// decides how the core's errors are answered.
pub(crate) fn code(kind: ErrorKind) -> ResponseError {
    match kind {
        ErrorKind::InvalidRequest => ResponseError::InvalidRequest,
        ErrorKind::InvalidTopicName => ResponseError::InvalidTopicException,
        ErrorKind::InvalidTopicConfig => ResponseError::InvalidConfig,
        ErrorKind::InvalidGroupName => ResponseError::InvalidGroupId,
        ErrorKind::InvalidEvent => ResponseError::InvalidRecord,
        ErrorKind::MalformedRecords => ResponseError::CorruptMessage,
        ErrorKind::TooLarge => ResponseError::MessageTooLarge,
        ErrorKind::TooMany => ResponseError::RecordListTooLarge,
        ErrorKind::UnknownTopic | ErrorKind::UnknownPartition => {
            ResponseError::UnknownTopicOrPartition
        }
        ErrorKind::TopicExists => ResponseError::TopicAlreadyExists,
        ErrorKind::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        ErrorKind::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        ErrorKind::OffsetOutOfRange | ErrorKind::OffsetBeyondEnd => ResponseError::OffsetOutOfRange,
        ErrorKind::LimitReached => ResponseError::PolicyViolation,
        ErrorKind::ShuttingDown | ErrorKind::StorageFailed => ResponseError::KafkaStorageError,
        // A roll or retention pass failed; the client retries, as it does
        // when a partition's leader moves.
        ErrorKind::Unavailable => ResponseError::NotLeaderOrFollower,
        // Failures of HTTP groups, queues and the event store, which no Kafka
        // request reaches except through a shared group name.
        ErrorKind::UnknownGroup
        | ErrorKind::UnknownMember
        | ErrorKind::UnknownLease
        | ErrorKind::GroupExists
        | ErrorKind::NotAssigned
        | ErrorKind::GroupActive
        | ErrorKind::LeaseExpired
        | ErrorKind::WrongExpectedVersion
        | ErrorKind::DuplicateEventId => ResponseError::UnknownServerError,
    }
}

/// Every error family of the broker answers through its kind.
macro_rules! from_broker_errors {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for Failure {
            fn from(e: $error) -> Failure {
                Failure::new(code(e.kind()), e.to_string())
            }
        })*
    };
}

from_broker_errors!(
    PublishError,
    ReadError,
    AdminError,
    GroupError,
    ProducerIdError
);
