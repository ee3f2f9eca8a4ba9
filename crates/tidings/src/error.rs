//! The toolkit's errors: one enum for what a backend call can fail with,
//! whatever the backend, so application code handles them once.

use std::fmt;

/// A toolkit call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The backend address or an option is not one the toolkit can use.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No such topic, and the call does not create one.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// No such group.
    #[error("group {0} does not exist")]
    UnknownGroup(String),
    /// The event is not valid (the backend's reason).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The event fails its schema, or its topic validates events and none is
    /// registered for it; the message names the schema and the failing path.
    /// Nothing of the publish was appended.
    #[error("refused by the schema check: {0}")]
    SchemaRejected(String),
    /// The delivery's lease ran out (or the backend restarted) before the
    /// answer: the event is, or will be, delivered again.
    #[error("the lease of {0} has run out; the event goes to another attempt")]
    LeaseExpired(String),
    /// The backend cannot do this, and the toolkit does not emulate it here.
    #[error("{backend} cannot {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// The subscription or the backend was closed.
    #[error("closed")]
    Closed,
    /// The backend is shutting down.
    #[error("the backend is shutting down")]
    ShuttingDown,
    /// The backend could not be reached, or failed; the operation may be
    /// retried.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What failed, in the backend's words.
        message: String,
        /// Whether trying again later may succeed (a connection lost, a
        /// server restarting), as opposed to a refusal that will repeat.
        transient: bool,
    },
}

impl Error {
    /// Whether trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                transient: true,
                ..
            } | Error::ShuttingDown
        )
    }

    pub(crate) fn backend(backend: &'static str, message: impl fmt::Display) -> Error {
        Error::Backend {
            backend,
            message: message.to_string(),
            transient: false,
        }
    }

    pub(crate) fn transient(backend: &'static str, message: impl fmt::Display) -> Error {
        Error::Backend {
            backend,
            message: message.to_string(),
            transient: true,
        }
    }
}
