//! Every failure the API answers, as one JSON shape: `{"error_code", "message"}`
//! with the status that says whose fault it is. Bad input is a 4xx with a message
//! that names the input; only the server's own failures are 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidings_api::{ErrorBody, ErrorCode};
use tidings_broker::{AdminError, GroupError, PublishError, QueueError, ReadError};
use tidings_types::{ErrorKind, EventError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with a stable code (which fixes its status) and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`: a parameter is missing, malformed or out of range.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> ApiError {
        ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down")
    }

    /// The answer to an error of the core, from its kind and its message.
    pub fn of_kind(kind: ErrorKind, error: impl std::fmt::Display) -> ApiError {
        if kind == ErrorKind::ShuttingDown {
            // Whatever part of the core noticed, the client hears one reason.
            return ApiError::shutting_down();
        }
        ApiError::new(ErrorCode::of(kind), error.to_string())
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).expect("the API's statuses are valid")
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error_code: self.code.as_str().to_owned(),
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error_code = %self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error_code = %self.code, message = %self.message, "request refused");
        }
        (status, Json(self.body())).into_response()
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
    EventError,
    tidings_store::AppendError,
    tidings_store::StoreError,
);
