//! The store's errors: one enum for appends, one for everything a backend can fail
//! at.

use tidings_types::{ErrorKind, EventError};

use crate::types::{ExpectedVersion, StreamName, StreamVersion, APPEND_EVENTS_MAX};

/// The backend could not do what was asked: storage or connection trouble, or the
/// store is closed. Nothing the caller sent was wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded log failed to append.
    #[error("event store log: {0}")]
    Append(#[from] tidings_log::AppendError),
    /// The embedded log failed to read.
    #[error("event store log: {0}")]
    Read(#[from] tidings_log::ReadError),
    /// A file beside the log could not be read or written.
    #[error("event store file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Stored data does not decode; the store refuses to guess.
    #[error("event store data at position {position} is damaged: {reason}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What does not hold.
        reason: String,
    },
    /// An earlier write failed halfway; the embedded store must be reopened, which
    /// rebuilds its index from the log.
    #[error("the event store stopped after a failed write ({0}); reopen it")]
    Failed(String),
    /// A write found the disk full; nothing of it was written. As after
    /// [`Failed`](Self::Failed), the embedded store refuses writes until it
    /// is reopened — once space is free.
    #[error("the event store stopped after the disk filled up ({0}); free space and reopen it")]
    DiskFull(String),
    /// PostgreSQL answered with an error or the connection broke.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
}

/// An append that did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream is not at the version the append expected.
    #[error("stream {stream} is at version {}, but the append expected {expected}",
        .actual.map_or_else(|| "none (no events)".to_owned(), |v| v.to_string()))]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamName,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version: its last visible event, `None` when it has none.
        actual: Option<StreamVersion>,
    },
    /// An event id was stored before by a different append. Repeating a whole
    /// append with the same ids is idempotent; mixing stored and new ids is not.
    #[error("event id {id:?} was already stored by another append")]
    DuplicateEventId {
        /// The id.
        id: String,
    },
    /// Two events of the append share an id.
    #[error("event id {0:?} appears twice in one append")]
    RepeatedEventId(String),
    /// One append names a stream twice.
    #[error("stream {0} appears twice in one append; put its events in one list")]
    RepeatedStream(StreamName),
    /// An append with no events.
    #[error("an append needs at least one event")]
    NoEvents,
    /// More events than [`APPEND_EVENTS_MAX`].
    #[error("an append carries {0} events; at most {APPEND_EVENTS_MAX} are allowed")]
    TooManyEvents(usize),
    /// An event fails CloudEvents validation.
    #[error("event {index} of stream {stream}: {source}")]
    InvalidEvent {
        /// The stream.
        stream: StreamName,
        /// Its place in the stream's event list.
        index: usize,
        /// What is wrong with it.
        source: EventError,
    },
    /// The events are too large for one append.
    #[error("the append is too large: {0}")]
    TooLarge(String),
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreError {
    /// What kind of failure this is, for the front ends: a full disk, the
    /// log shutting down or busy, or else the storage's failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::DiskFull(_) => ErrorKind::StorageFull,
            StoreError::Append(e) => match e.kind() {
                kind @ (ErrorKind::StorageFull
                | ErrorKind::ShuttingDown
                | ErrorKind::Unavailable) => kind,
                _ => ErrorKind::StorageFailed,
            },
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                ErrorKind::StorageFull
            }
            _ => ErrorKind::StorageFailed,
        }
    }
}

impl AppendError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppendError::WrongExpectedVersion { .. } => ErrorKind::WrongExpectedVersion,
            AppendError::DuplicateEventId { .. } => ErrorKind::DuplicateEventId,
            AppendError::RepeatedEventId(_)
            | AppendError::RepeatedStream(_)
            | AppendError::NoEvents
            | AppendError::InvalidEvent { .. } => ErrorKind::InvalidEvent,
            AppendError::TooManyEvents(_) => ErrorKind::TooMany,
            AppendError::TooLarge(_) => ErrorKind::TooLarge,
            AppendError::Store(e) => e.kind(),
        }
    }
}
