//! What kind of failure an error is: the one vocabulary in which the broker and
//! the event store describe their errors to the front ends above them.
//!
//! Every error family of the core has a `kind()`. A front end turns a kind into
//! its own words in one small function — an HTTP status and error code, a Kafka
//! error code — and never looks inside the error itself, so it depends on no
//! storage crate and a new error variant cannot slip past it unmapped: the
//! match on [`ErrorKind`] is exhaustive.

/// What went wrong, as far as a caller can act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A parameter or option is missing, malformed or out of range.
    InvalidRequest,
    /// A topic name is not one the log accepts.
    InvalidTopicName,
    /// A topic's settings are outside the limits.
    InvalidTopicConfig,
    /// A group name is not one the broker accepts.
    InvalidGroupName,
    /// An event is not a valid CloudEvent, or breaks a rule of the call.
    InvalidEvent,
    /// Record batch bytes from a client are malformed.
    MalformedRecords,
    /// An event fails its topic's schema, or its topic validates and no schema
    /// is registered for it.
    SchemaRejected,
    /// A record, a batch or an event is larger than its limit.
    TooLarge,
    /// One request carries more records or events than allowed.
    TooMany,
    /// No topic of that name.
    UnknownTopic,
    /// The topic has no partition of that number.
    UnknownPartition,
    /// No group of that name.
    UnknownGroup,
    /// The member is not (or no longer) in its group.
    UnknownMember,
    /// The lease is not one the group handed out and still holds.
    UnknownLease,
    /// A topic of that name exists.
    TopicExists,
    /// A group of that name exists.
    GroupExists,
    /// The offset lies outside what the partition holds.
    OffsetOutOfRange,
    /// An offset to commit lies beyond the partition's end.
    OffsetBeyondEnd,
    /// The member does not own that partition in this generation.
    NotAssigned,
    /// An idempotent producer's batch does not follow its last one.
    OutOfOrderSequence,
    /// An idempotent producer's batch carries an epoch older than its own.
    InvalidProducerEpoch,
    /// The group has members, and the operation needs it to have none.
    GroupActive,
    /// The lease ran out; its event goes to another attempt.
    LeaseExpired,
    /// A stream is not at the version the append expected.
    WrongExpectedVersion,
    /// An event id is stored already, with other content or in another stream.
    DuplicateEventId,
    /// A server-wide limit (such as the number of topics) is reached.
    LimitReached,
    /// The server is shutting down and takes no new work.
    ShuttingDown,
    /// A part of the storage is busy for a moment; trying again may succeed.
    Unavailable,
    /// The storage failed: a file could not be read, written or synced.
    StorageFailed,
    /// The disk is full: nothing was written, and the same request succeeds
    /// once space is freed.
    StorageFull,
}
