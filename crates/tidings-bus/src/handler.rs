//! What handlers return, and what the bus does when they fail.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The error type handlers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler may return: nothing, or a `Result` whose error becomes a
/// [`HandlerError`].
pub trait HandlerResult {
    /// The outcome as a `Result`.
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerResult for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> HandlerResult for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// Identifies one subscription in errors and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A handler failed or panicked while handling an event.
#[derive(Debug)]
pub struct HandlerError {
    /// The type of the event being handled.
    pub event_type: String,
    /// The id of the event, when it is a CloudEvent.
    pub event_id: Option<String>,
    /// The subscription whose handler failed.
    pub subscription: SubscriptionId,
    /// What happened.
    pub kind: HandlerErrorKind,
}

/// How a handler failed.
#[derive(Debug)]
pub enum HandlerErrorKind {
    /// It returned an error.
    Failed(BoxError),
    /// It panicked; the panic message, when it had one.
    Panicked(String),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handler of subscription {} ", self.subscription)?;
        match &self.kind {
            HandlerErrorKind::Failed(e) => write!(f, "failed on {}: {e}", self.event_type),
            HandlerErrorKind::Panicked(m) => write!(f, "panicked on {}: {m}", self.event_type),
        }
    }
}

impl std::error::Error for HandlerError {}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs a synchronous handler, turning a panic into an error.
pub(crate) fn call_sync(f: impl FnOnce() -> Result<(), BoxError>) -> Result<(), HandlerErrorKind> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HandlerErrorKind::Failed(e)),
        Err(panic) => Err(HandlerErrorKind::Panicked(panic_message(&*panic))),
    }
}
