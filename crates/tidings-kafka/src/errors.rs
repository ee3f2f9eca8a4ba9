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
        ErrorKind::InvalidEvent | ErrorKind::SchemaRejected => ResponseError::InvalidRecord,
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
        // KAFKA_STORAGE_ERROR is retriable: a producer at its defaults keeps
        // retrying a full disk until space is freed or its delivery timeout.
        ErrorKind::ShuttingDown | ErrorKind::StorageFailed | ErrorKind::StorageFull => {
            ResponseError::KafkaStorageError
        }
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

/// The error codes a response carries, for the metrics: every non-zero code
/// at any level (the response, a topic, a partition, a member).
pub(crate) trait ErrorCodes {
    fn codes(&self, out: &mut Codes);
}

/// The non-zero codes of a response; nothing is allocated for an answer
/// without errors.
#[derive(Default)]
pub(crate) struct Codes(Vec<i16>);

impl Codes {
    fn push(&mut self, code: i16) {
        if code != 0 {
            self.0.push(code);
        }
    }

    fn extend(&mut self, codes: impl IntoIterator<Item = i16>) {
        for code in codes {
            self.push(code);
        }
    }
}

macro_rules! error_codes {
    ($($ty:ty => |$r:ident, $out:ident| $body:expr;)*) => {
        $(impl ErrorCodes for $ty {
            fn codes(&self, $out: &mut Codes) {
                let $r = self;
                $body
            }
        })*
    };
}

use kafka_protocol::messages as m;

error_codes! {
    m::ApiVersionsResponse => |r, out| out.push(r.error_code);
    m::MetadataResponse => |r, out| for t in &r.topics {
        out.push(t.error_code);
        out.extend(t.partitions.iter().map(|p| p.error_code));
    };
    m::CreateTopicsResponse => |r, out| out.extend(r.topics.iter().map(|t| t.error_code));
    m::ProduceResponse => |r, out| for t in &r.responses {
        out.extend(t.partition_responses.iter().map(|p| p.error_code));
    };
    m::FetchResponse => |r, out| {
        out.push(r.error_code);
        for t in &r.responses {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    };
    m::ListOffsetsResponse => |r, out| for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    };
    m::FindCoordinatorResponse => |r, out| out.push(r.error_code);
    m::JoinGroupResponse => |r, out| out.push(r.error_code);
    m::SyncGroupResponse => |r, out| out.push(r.error_code);
    m::HeartbeatResponse => |r, out| out.push(r.error_code);
    m::LeaveGroupResponse => |r, out| {
        out.push(r.error_code);
        out.extend(r.members.iter().map(|mb| mb.error_code));
    };
    m::OffsetCommitResponse => |r, out| for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    };
    m::OffsetFetchResponse => |r, out| {
        out.push(r.error_code);
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    };
    m::InitProducerIdResponse => |r, out| out.push(r.error_code);
    m::DeleteTopicsResponse => |r, out| out.extend(r.responses.iter().map(|t| t.error_code));
    m::CreatePartitionsResponse => |r, out| out.extend(r.results.iter().map(|t| t.error_code));
    m::DescribeConfigsResponse => |r, out| out.extend(r.results.iter().map(|t| t.error_code));
    m::IncrementalAlterConfigsResponse => |r, out| out.extend(r.responses.iter().map(|t| t.error_code));
    m::DescribeClusterResponse => |r, out| out.push(r.error_code);
    m::ListGroupsResponse => |r, out| out.push(r.error_code);
    m::DescribeGroupsResponse => |r, out| out.extend(r.groups.iter().map(|g| g.error_code));
    m::DeleteGroupsResponse => |r, out| out.extend(r.results.iter().map(|g| g.error_code));
    m::SaslHandshakeResponse => |r, out| out.push(r.error_code);
    m::DescribeAclsResponse => |r, out| out.push(r.error_code);
    m::CreateAclsResponse => |r, out| out.extend(r.results.iter().map(|x| x.error_code));
    m::DeleteAclsResponse => |r, out| out.extend(r.filter_results.iter().map(|x| x.error_code));
    m::SaslAuthenticateResponse => |r, out| out.push(r.error_code);
    m::DescribeUserScramCredentialsResponse => |r, out| {
        out.push(r.error_code);
        out.extend(r.results.iter().map(|x| x.error_code));
    };
    m::AlterUserScramCredentialsResponse => |r, out| out.extend(r.results.iter().map(|x| x.error_code));
    m::OffsetDeleteResponse => |r, out| {
        out.push(r.error_code);
        for t in &r.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    };
}

/// Kafka's name of an error code, as its documentation and clients spell it
/// (`UNKNOWN_TOPIC_OR_PARTITION`).
pub(crate) fn code_name(code: i16) -> String {
    let e = match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => return format!("CODE_{code}"),
        Some(e) => e,
    };
    let camel = format!("{e:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Records every error code of a response in the metrics.
pub(crate) fn record(api: &'static str, response: &impl ErrorCodes) {
    let mut codes = Codes::default();
    response.codes(&mut codes);
    for code in codes.0 {
        tidings_telemetry::kafka::request_error(api, &code_name(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(
            code_name(ResponseError::UnknownTopicOrPartition.code()),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            code_name(ResponseError::OutOfOrderSequenceNumber.code()),
            "OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        assert_eq!(code_name(-12345), "CODE_-12345");
    }
}
