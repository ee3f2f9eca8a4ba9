//! Every failure the API answers, as one JSON shape: `{"error_code", "message"}`
//! with the status that says whose fault it is. Bad input is a 4xx with a message
//! that names the input; only the server's own failures are 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tidings_broker::{AdminError, GroupError, PublishError, QueueError, ReadError};
use tidings_log::{AppendError, TopicError};

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

fn from_append(e: AppendError) -> ApiError {
    match e {
        AppendError::Closed { .. } => ApiError::shutting_down(),
        AppendError::BatchTooLarge { .. }
        | AppendError::RecordTooLarge { .. }
        | AppendError::TooManyRecords { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        AppendError::Empty | AppendError::InvalidBatch { .. } | AppendError::Encode(_) => {
            ApiError::bad_request("invalid_event", e.to_string())
        }
        AppendError::Failed { .. } | AppendError::Maintenance { .. } => {
            ApiError::internal("storage_failed", e)
        }
    }
}

fn from_topic(e: TopicError) -> ApiError {
    match e {
        TopicError::InvalidName(_) | TopicError::InvalidConfig(_) => {
            ApiError::bad_request("invalid_topic", e.to_string())
        }
        TopicError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "topic_exists", e.to_string()),
        TopicError::NotFound(t) => ApiError::unknown_topic(&t),
        TopicError::NoSuchPartition { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_partition", e.to_string())
        }
        TopicError::Refused { .. } | TopicError::Io { .. } => {
            ApiError::internal("storage_failed", e)
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> ApiError {
        match e {
            PublishError::UnknownTopic(t) => ApiError::unknown_topic(&t),
            PublishError::InvalidEvent { .. } => {
                ApiError::bad_request("invalid_event", e.to_string())
            }
            PublishError::Partition(e) => from_topic(e),
            PublishError::Append(e) => from_append(e),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        match e {
            AdminError::UnknownTopic(t) => ApiError::unknown_topic(&t),
            AdminError::InvalidSpec(_) => ApiError::bad_request("invalid_topic", e.to_string()),
            AdminError::Log(e) => from_topic(e),
            AdminError::Dedup { .. } | AdminError::Io { .. } => {
                ApiError::internal("storage_failed", e)
            }
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        match e {
            ReadError::UnknownTopic(t) => ApiError::unknown_topic(&t),
            ReadError::Partition(e) => from_topic(e),
            ReadError::Log(tidings_log::ReadError::OffsetOutOfRange { .. }) => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "offset_out_of_range",
                e.to_string(),
            ),
            ReadError::Log(e) => ApiError::internal("storage_failed", e),
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> ApiError {
        let e = match e {
            GroupError::Read(e) => return e.into(),
            e => e,
        };
        let (status, code) = match &e {
            GroupError::InvalidName(_) | GroupError::InvalidOptions(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            GroupError::UnknownTopic(t) => return ApiError::unknown_topic(t),
            GroupError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
            GroupError::UnknownMember { .. } => (StatusCode::NOT_FOUND, "unknown_member"),
            GroupError::WrongTopic { .. } => (StatusCode::CONFLICT, "wrong_topic"),
            GroupError::NotAssigned { .. } => (StatusCode::CONFLICT, "not_assigned"),
            GroupError::OffsetBeyondEnd { .. } => (StatusCode::BAD_REQUEST, "offset_beyond_end"),
            GroupError::Active { .. } => (StatusCode::CONFLICT, "group_active"),
            GroupError::Read(_) => unreachable!("answered above"),
            GroupError::Io { .. } => return ApiError::internal("storage_failed", e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::InvalidName(_) | QueueError::InvalidConfig(_) => {
                ApiError::bad_request("invalid_request", e.to_string())
            }
            QueueError::UnknownTopic(t) => ApiError::unknown_topic(&t),
            QueueError::UnknownGroup(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_group", e.to_string())
            }
            QueueError::UnknownLease(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_lease", e.to_string())
            }
            QueueError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "group_exists", e.to_string())
            }
            QueueError::LeaseExpired(_) => {
                ApiError::new(StatusCode::CONFLICT, "lease_expired", e.to_string())
            }
            QueueError::ShuttingDown => ApiError::shutting_down(),
            QueueError::Read(e) => e.into(),
            QueueError::DeadLetter(_) | QueueError::State { .. } => {
                ApiError::internal("storage_failed", e)
            }
        }
    }
}
