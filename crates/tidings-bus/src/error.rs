//! What an emit or a subscription can fail with.

use crate::{PatternError, SubscriptionId};

/// An emit reached every subscriber but some whose buffers were full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// Subscribers that refused the event because their buffer was full.
    #[error("event {event_type} was refused by {} subscriber(s) with full buffers: {subscriptions:?}", subscriptions.len())]
    Overflow {
        /// The event's type.
        event_type: String,
        /// The subscriptions that did not get it.
        subscriptions: Vec<SubscriptionId>,
    },
}

/// A subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// Async handlers need a tokio runtime to run on.
    #[error("async handlers need a tokio runtime; subscribe from inside one")]
    NoRuntime,
}
