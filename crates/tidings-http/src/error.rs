//! Every failure the API answers, as one JSON shape: `{"error_code", "message"}`
//! with the status that says whose fault it is. Bad input is a 4xx with a message
//! that names the input; only the server's own failures are 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tidings_broker::{AdminError, GroupError, PublishError, QueueError, ReadError};
use tidings_types::ErrorKind;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error_code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a topic.
    pub fn unknown_topic(topic: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("topic {topic} does not exist"),
        )
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn internal(code: &'static str, e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error_code = self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error_code = self.code, message = %self.message, "request refused");
        }
        let body = Body {
            error_code: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// The status and code of each kind of failure: the one place the API decides
/// how the core's errors are answered.
fn status_and_code(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::InvalidGroupName => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        ErrorKind::InvalidTopicName | ErrorKind::InvalidTopicConfig => {
            (StatusCode::BAD_REQUEST, "invalid_topic")
        }
        ErrorKind::InvalidEvent | ErrorKind::MalformedRecords => {
            (StatusCode::BAD_REQUEST, "invalid_event")
        }
        ErrorKind::TooLarge | ErrorKind::TooMany => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ErrorKind::UnknownTopic => (StatusCode::NOT_FOUND, "unknown_topic"),
        ErrorKind::UnknownPartition => (StatusCode::NOT_FOUND, "unknown_partition"),
        ErrorKind::UnknownGroup => (StatusCode::NOT_FOUND, "unknown_group"),
        ErrorKind::UnknownMember => (StatusCode::NOT_FOUND, "unknown_member"),
        ErrorKind::UnknownLease => (StatusCode::NOT_FOUND, "unknown_lease"),
        ErrorKind::TopicExists => (StatusCode::CONFLICT, "topic_exists"),
        ErrorKind::GroupExists => (StatusCode::CONFLICT, "group_exists"),
        ErrorKind::OffsetOutOfRange => (StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range"),
        ErrorKind::OffsetBeyondEnd => (StatusCode::BAD_REQUEST, "offset_beyond_end"),
        ErrorKind::WrongTopic => (StatusCode::CONFLICT, "wrong_topic"),
        ErrorKind::NotAssigned => (StatusCode::CONFLICT, "not_assigned"),
        ErrorKind::GroupActive => (StatusCode::CONFLICT, "group_active"),
        ErrorKind::LeaseExpired => (StatusCode::CONFLICT, "lease_expired"),
        ErrorKind::WrongExpectedVersion => (StatusCode::CONFLICT, "wrong_expected_version"),
        ErrorKind::DuplicateEventId => (StatusCode::CONFLICT, "duplicate_event_id"),
        ErrorKind::LimitReached => (StatusCode::CONFLICT, "limit_reached"),
        ErrorKind::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        ErrorKind::Unavailable | ErrorKind::StorageFailed => {
            (StatusCode::INTERNAL_SERVER_ERROR, "storage_failed")
        }
    }
}

impl ApiError {
    /// The answer to an error of the core, from its kind and its message.
    pub fn of_kind(kind: ErrorKind, error: impl std::fmt::Display) -> ApiError {
        if kind == ErrorKind::ShuttingDown {
            // Whatever part of the core noticed, the client hears one reason.
            return ApiError::shutting_down();
        }
        let (status, code) = status_and_code(kind);
        ApiError::new(status, code, error.to_string())
    }
}

/// Every error family of the core answers through its kind.
macro_rules! from_core_errors {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for ApiError {
            fn from(e: $error) -> ApiError {
                ApiError::of_kind(e.kind(), e)
            }
        })*
    };
}

from_core_errors!(
    PublishError,
    AdminError,
    ReadError,
    GroupError,
    QueueError,
    tidings_store::AppendError,
    tidings_store::StoreError,
);
