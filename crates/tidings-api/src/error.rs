//! Every error code the API answers with, its status, and the JSON error body.

use tidings_types::ErrorKind;

/// The body of every error answer: a stable machine-readable code and a
/// sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// One of [`ErrorCode`]'s codes (a newer server may send one this crate
    /// does not know yet, so it is kept as text).
    pub error_code: String,
    /// What went wrong, naming the input.
    pub message: String,
}

/// The stable codes of the API's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: a parameter or option is missing, malformed or out of range.
    InvalidRequest,
    /// 400: a topic name or setting is invalid.
    InvalidTopic,
    /// 400: an event is invalid.
    InvalidEvent,
    /// 400: an event fails its topic's schema, or its topic validates and no
    /// schema is registered for it; the message names the failing path.
    SchemaRejected,
    /// 400: a stream name is invalid.
    InvalidStream,
    /// 400: an expected version does not parse.
    InvalidExpectedVersion,
    /// 400: a read direction is neither forward nor backward.
    InvalidDirection,
    /// 400: a category is empty or holds a `-`.
    InvalidCategory,
    /// 400: the body could not be read.
    MalformedBody,
    /// 400: the body is not the JSON expected.
    MalformedJson,
    /// 400: an offset to commit lies beyond the partition's end.
    OffsetBeyondEnd,
    /// 401: the server has users and the request logs in as none of them.
    Unauthenticated,
    /// 403: the principal may not do this.
    Forbidden,
    /// 404: no route for the path.
    NotFound,
    /// 404: no such topic.
    UnknownTopic,
    /// 404: no such partition.
    UnknownPartition,
    /// 404: no such group.
    UnknownGroup,
    /// 404: no such member in the group.
    UnknownMember,
    /// 404: no such lease held by the group.
    UnknownLease,
    /// 404: no dead letter at that offset.
    UnknownDeadLetter,
    /// 404: no such saga instance.
    UnknownSagaInstance,
    /// 404: the server reads no sagas' database.
    SagasNotConfigured,
    /// 405: the route takes other methods.
    MethodNotAllowed,
    /// 409: the topic exists.
    TopicExists,
    /// 409: the group exists.
    GroupExists,
    /// 409: the member does not own the partition.
    NotAssigned,
    /// 409: the group has members.
    GroupActive,
    /// 409: the lease ran out.
    LeaseExpired,
    /// 409: the stream is not at the expected version.
    WrongExpectedVersion,
    /// 409: the event id is stored by another append.
    DuplicateEventId,
    /// 409: a server-wide limit is reached.
    LimitReached,
    /// 413: the body, a batch or an event is too large.
    TooLarge,
    /// 415: the content type is not one the route reads.
    UnsupportedMediaType,
    /// 416: the offset lies outside what the partition holds.
    OffsetOutOfRange,
    /// 429: as many event streams are open as allowed.
    TooManyStreams,
    /// 500: the storage failed.
    StorageFailed,
    /// 507: the disk is full; nothing was written.
    StorageFull,
    /// 500: the server failed in a way it did not expect.
    Internal,
    /// 503: the server is shutting down.
    ShuttingDown,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 39] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidTopic,
        ErrorCode::InvalidEvent,
        ErrorCode::SchemaRejected,
        ErrorCode::InvalidStream,
        ErrorCode::InvalidExpectedVersion,
        ErrorCode::InvalidDirection,
        ErrorCode::InvalidCategory,
        ErrorCode::MalformedBody,
        ErrorCode::MalformedJson,
        ErrorCode::OffsetBeyondEnd,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::UnknownGroup,
        ErrorCode::UnknownMember,
        ErrorCode::UnknownLease,
        ErrorCode::UnknownDeadLetter,
        ErrorCode::UnknownSagaInstance,
        ErrorCode::SagasNotConfigured,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TopicExists,
        ErrorCode::GroupExists,
        ErrorCode::NotAssigned,
        ErrorCode::GroupActive,
        ErrorCode::LeaseExpired,
        ErrorCode::WrongExpectedVersion,
        ErrorCode::DuplicateEventId,
        ErrorCode::LimitReached,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::TooManyStreams,
        ErrorCode::StorageFailed,
        ErrorCode::StorageFull,
        ErrorCode::Internal,
        ErrorCode::ShuttingDown,
    ];

    /// The code as it travels in `error_code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::SchemaRejected => "schema_rejected",
            ErrorCode::InvalidStream => "invalid_stream",
            ErrorCode::InvalidExpectedVersion => "invalid_expected_version",
            ErrorCode::InvalidDirection => "invalid_direction",
            ErrorCode::InvalidCategory => "invalid_category",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::OffsetBeyondEnd => "offset_beyond_end",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::UnknownPartition => "unknown_partition",
            ErrorCode::UnknownGroup => "unknown_group",
            ErrorCode::UnknownMember => "unknown_member",
            ErrorCode::UnknownLease => "unknown_lease",
            ErrorCode::UnknownDeadLetter => "unknown_dead_letter",
            ErrorCode::UnknownSagaInstance => "unknown_saga_instance",
            ErrorCode::SagasNotConfigured => "sagas_not_configured",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::TopicExists => "topic_exists",
            ErrorCode::GroupExists => "group_exists",
            ErrorCode::NotAssigned => "not_assigned",
            ErrorCode::GroupActive => "group_active",
            ErrorCode::LeaseExpired => "lease_expired",
            ErrorCode::WrongExpectedVersion => "wrong_expected_version",
            ErrorCode::DuplicateEventId => "duplicate_event_id",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
            ErrorCode::ShuttingDown => "shutting_down",
        }
    }

    /// The code of `text`, if it is one this crate knows.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidTopic
            | ErrorCode::InvalidEvent
            | ErrorCode::SchemaRejected
            | ErrorCode::InvalidStream
            | ErrorCode::InvalidExpectedVersion
            | ErrorCode::InvalidDirection
            | ErrorCode::InvalidCategory
            | ErrorCode::MalformedBody
            | ErrorCode::MalformedJson
            | ErrorCode::OffsetBeyondEnd => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound
            | ErrorCode::UnknownTopic
            | ErrorCode::UnknownPartition
            | ErrorCode::UnknownGroup
            | ErrorCode::UnknownMember
            | ErrorCode::UnknownLease
            | ErrorCode::UnknownDeadLetter
            | ErrorCode::UnknownSagaInstance
            | ErrorCode::SagasNotConfigured => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TopicExists
            | ErrorCode::GroupExists
            | ErrorCode::NotAssigned
            | ErrorCode::GroupActive
            | ErrorCode::LeaseExpired
            | ErrorCode::WrongExpectedVersion
            | ErrorCode::DuplicateEventId
            | ErrorCode::LimitReached => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::OffsetOutOfRange => 416,
            ErrorCode::TooManyStreams => 429,
            ErrorCode::StorageFailed | ErrorCode::Internal => 500,
            ErrorCode::ShuttingDown => 503,
            ErrorCode::StorageFull => 507,
        }
    }

    /// The code an error of the core is answered with: the one place the API
    /// decides how each kind of failure reaches HTTP clients.
    pub fn of(kind: ErrorKind) -> ErrorCode {
        match kind {
            ErrorKind::InvalidRequest | ErrorKind::InvalidGroupName => ErrorCode::InvalidRequest,
            ErrorKind::InvalidTopicName | ErrorKind::InvalidTopicConfig => ErrorCode::InvalidTopic,
            ErrorKind::InvalidEvent | ErrorKind::MalformedRecords => ErrorCode::InvalidEvent,
            ErrorKind::SchemaRejected => ErrorCode::SchemaRejected,
            ErrorKind::TooLarge | ErrorKind::TooMany => ErrorCode::TooLarge,
            ErrorKind::UnknownTopic => ErrorCode::UnknownTopic,
            ErrorKind::UnknownPartition => ErrorCode::UnknownPartition,
            ErrorKind::UnknownGroup => ErrorCode::UnknownGroup,
            ErrorKind::UnknownMember => ErrorCode::UnknownMember,
            ErrorKind::UnknownLease => ErrorCode::UnknownLease,
            ErrorKind::TopicExists => ErrorCode::TopicExists,
            ErrorKind::GroupExists => ErrorCode::GroupExists,
            ErrorKind::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
            ErrorKind::OffsetBeyondEnd => ErrorCode::OffsetBeyondEnd,
            ErrorKind::NotAssigned => ErrorCode::NotAssigned,
            // Kafka producers' sequence checks; nothing over HTTP carries a
            // producer id, so only a bad raw batch could meet them.
            ErrorKind::OutOfOrderSequence | ErrorKind::InvalidProducerEpoch => {
                ErrorCode::InvalidRequest
            }
            ErrorKind::GroupActive => ErrorCode::GroupActive,
            ErrorKind::LeaseExpired => ErrorCode::LeaseExpired,
            ErrorKind::WrongExpectedVersion => ErrorCode::WrongExpectedVersion,
            ErrorKind::DuplicateEventId => ErrorCode::DuplicateEventId,
            ErrorKind::LimitReached => ErrorCode::LimitReached,
            ErrorKind::ShuttingDown => ErrorCode::ShuttingDown,
            ErrorKind::Unavailable | ErrorKind::StorageFailed => ErrorCode::StorageFailed,
            ErrorKind::StorageFull => ErrorCode::StorageFull,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_the_document_lists_exactly_these() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let error = &doc["components"]["schemas"]["Error"];
        let mut documented: Vec<&str> = error["properties"]["error_code"]["enum"]
            .as_array()
            .expect("the Error schema lists its codes")
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        documented.sort_unstable();
        let mut ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        ours.sort_unstable();
        assert_eq!(documented, ours);
        let description = error["description"].as_str().unwrap();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            // The description lists the codes under their statuses.
            let status = format!("{} ", code.status());
            let after_status = &description[description
                .find(&status)
                .unwrap_or_else(|| panic!("status {} of {code} is described", code.status()))..];
            let section = after_status.split(';').next().unwrap();
            assert!(
                section.contains(&format!("`{code}`")),
                "{code} under {status}"
            );
        }
    }
}
