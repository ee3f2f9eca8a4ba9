//! The event store's vocabulary: stream names, versions, positions, expected
//! versions and recorded events. No IO.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tidings_types::{CloudEvent, TimestampMs};

/// Longest stream name, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 256;

/// Most events one append may carry, across all its streams.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// Most events one read returns.
pub const READ_LIMIT_MAX: usize = 10_000;

/// The name of a stream: the ordered events of one entity, such as `order-123`.
///
/// Non-empty, at most [`STREAM_NAME_BYTES_MAX`] bytes, made of what a topic
/// name is made of — ASCII letters, digits, `.`, `_` and `-` — so it needs no
/// escaping in a URL, a shell or a log line. `$` names the store's own streams
/// (`$all`). Events of streams named before this rule (any text without
/// control characters) still read back, in `$all` and their category.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// Checks and wraps a stream name.
    pub fn new(name: &str) -> Result<StreamName, NameError> {
        StreamName::checked(name, |c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
    }

    /// A name read back from storage, under the rule it was written with:
    /// any text without control characters.
    pub(crate) fn stored(name: &str) -> Result<StreamName, NameError> {
        StreamName::checked(name, char::is_control)
    }

    /// `name`, if it is not empty, not too long, not reserved, and holds no
    /// character `refused` says no to.
    fn checked(name: &str, refused: impl Fn(char) -> bool) -> Result<StreamName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > STREAM_NAME_BYTES_MAX {
            return Err(NameError::TooLong(name.len()));
        }
        if name.starts_with('$') {
            return Err(NameError::Reserved(name.to_owned()));
        }
        if let Some(ch) = name.chars().find(|c| refused(*c)) {
            return Err(NameError::BadCharacter {
                name: name.to_owned(),
                ch,
            });
        }
        Ok(StreamName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream's category: the part of the name before the first `-`, or the
    /// whole name when it has none (`order-123` → `order`).
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }
}

/// The category of a stream name: the part before the first `-`.
pub(crate) fn category_of(name: &str) -> &str {
    name.split_once('-').map_or(name, |(category, _)| category)
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

/// A stream or category name the store does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a stream name must not be empty")]
    Empty,
    /// The name is longer than [`STREAM_NAME_BYTES_MAX`].
    #[error("a stream name is {0} bytes; at most {STREAM_NAME_BYTES_MAX} are allowed")]
    TooLong(usize),
    /// The name starts with `$`.
    #[error("stream name {0:?} starts with '$', which is reserved for the store's own streams")]
    Reserved(String),
    /// The name holds a character a stream name may not.
    #[error("stream name {name:?} holds {ch:?}: a stream name is ASCII letters, digits, '.', '_' and '-', as a topic name is")]
    BadCharacter {
        /// The name.
        name: String,
        /// The first character it may not hold.
        ch: char,
    },
}

/// The version of an event in its stream: the first event is version 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// The version after this one.
    pub fn next(self) -> StreamVersion {
        StreamVersion(self.0 + 1)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A place in the store's global order (`$all`). Positions grow with every append;
/// a reader passes the position to read from, and a checkpoint stores the position
/// after the last event handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position(pub u64);

impl Position {
    /// The beginning of `$all`.
    pub const START: Position = Position(0);

    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an append expects of its stream; checked atomically with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events (never written, or soft-deleted).
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this version.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream whose last visible event is `actual` meets the expectation.
    pub fn admits(self, actual: Option<StreamVersion>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::StreamExists => f.write_str("stream_exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl std::str::FromStr for ExpectedVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ExpectedVersion::Any),
            "no_stream" => Ok(ExpectedVersion::NoStream),
            "stream_exists" => Ok(ExpectedVersion::StreamExists),
            _ => s
                .parse::<u64>()
                .map(|v| ExpectedVersion::Exact(StreamVersion(v)))
                .map_err(|_| {
                    format!(
                        "expected version {s:?} is not 'any', 'no_stream', 'stream_exists' or a version number"
                    )
                }),
        }
    }
}

/// Events for one stream, as part of an append.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    /// The stream written.
    pub stream: StreamName,
    /// What the stream must look like for the append to go ahead.
    pub expected: ExpectedVersion,
    /// The events, in order. Their ids are the idempotency keys.
    pub events: Vec<CloudEvent>,
}

impl StreamAppend {
    /// Events for `stream`, written only if `expected` holds.
    pub fn new(stream: StreamName, expected: ExpectedVersion, events: Vec<CloudEvent>) -> Self {
        StreamAppend {
            stream,
            expected,
            events,
        }
    }
}

/// Where the events of one stream of an append landed. The events of one stream
/// take consecutive versions and consecutive global positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream written.
    pub stream: StreamName,
    /// Version of the first event written.
    pub first_version: StreamVersion,
    /// Version of the last event written: the stream's version afterwards, to pass
    /// as `Exact` to the next append.
    pub last_version: StreamVersion,
    /// Global position of the first event written.
    pub first_position: Position,
    /// Global position of the last event written.
    pub last_position: Position,
}

/// An event as the store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The stream the event belongs to.
    pub stream: StreamName,
    /// Its version in that stream.
    pub version: StreamVersion,
    /// Its place in the global order.
    pub position: Position,
    /// When the store recorded it.
    pub recorded: TimestampMs,
    /// The event itself.
    pub event: CloudEvent,
}

/// Which way a stream is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// A read of one stream: from a version, in a direction, up to a number of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStream {
    /// First version to return. Reading backward, [`StreamVersion`]`(u64::MAX)`
    /// starts at the newest event.
    pub from: StreamVersion,
    /// Which way to read.
    pub direction: Direction,
    /// Most events to return, at most [`READ_LIMIT_MAX`].
    pub limit: usize,
}

impl ReadStream {
    /// Oldest first, from `from` on.
    pub fn forward(from: StreamVersion) -> ReadStream {
        ReadStream {
            from,
            direction: Direction::Forward,
            limit: READ_LIMIT_MAX,
        }
    }

    /// Newest first, from the newest event.
    pub fn backward() -> ReadStream {
        ReadStream {
            from: StreamVersion(u64::MAX),
            direction: Direction::Backward,
            limit: READ_LIMIT_MAX,
        }
    }

    /// The same read with at most `limit` events.
    pub fn limit(self, limit: usize) -> ReadStream {
        ReadStream { limit, ..self }
    }
}

/// The events a stream read returned.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSlice {
    /// The events, in the direction asked for.
    pub events: Vec<RecordedEvent>,
    /// The stream's version when it was read; `None` when it has no events
    /// (never written or soft-deleted).
    pub version: Option<StreamVersion>,
}

/// Which events a read of the global order returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every event: `$all`.
    All,
    /// The events of every stream of one category.
    Category(String),
    /// The events of one stream, by global position, soft-deleted ones included.
    Stream(StreamName),
}

impl Selector {
    /// Whether an event of `stream` belongs to the selection.
    pub fn admits(&self, stream: &StreamName) -> bool {
        match self {
            Selector::All => true,
            Selector::Category(c) => stream.category() == c,
            Selector::Stream(s) => stream == s,
        }
    }
}

/// The events a read of the global order returned.
#[derive(Clone, Debug, PartialEq)]
pub struct AllSlice {
    /// The events, in global order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read continues. Every event of the selection between the
    /// position read from and this one is in `events`, so a reader that continues
    /// here misses nothing and sees nothing twice.
    pub next: Position,
}

/// Limits that hide a stream's older events from stream reads. `$all` and category
/// reads still return them: the store never deletes an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamMetadata {
    /// Only the newest this many events are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Only events recorded within this long are read.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_ms")]
    pub max_age: Option<Duration>,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// What the store knows of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The version of the last visible event; `None` for a stream with no events
    /// or a soft-deleted one.
    pub version: Option<StreamVersion>,
    /// The stream's read limits.
    pub metadata: StreamMetadata,
    /// Whether the stream was soft-deleted and not written since.
    pub deleted: bool,
}

/// Saved state of an aggregate at a stream version, so loading it need not fold
/// every event from the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream: StreamName,
    /// The version of the last event folded into the state.
    pub version: StreamVersion,
    /// The shape of the state; a loader ignores snapshots of another shape.
    pub schema_version: u32,
    /// The state, serialized by the aggregate.
    pub state: bytes::Bytes,
}

/// The stream-level state both backends keep: versions and visibility limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamState {
    /// Version of the last event ever written, deleted or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<u64>,
    /// Events below this version are soft-deleted.
    #[serde(default)]
    pub(crate) truncate_before: u64,
    /// Read limits.
    #[serde(default, flatten)]
    pub(crate) metadata: StreamMetadata,
}

impl StreamState {
    /// The version an expected-version check compares against.
    pub(crate) fn visible(&self) -> Option<StreamVersion> {
        self.last
            .filter(|&last| last >= self.truncate_before)
            .map(StreamVersion)
    }

    /// The version the next event gets.
    pub(crate) fn next_version(&self) -> u64 {
        self.last.map_or(0, |l| l + 1)
    }

    /// The first version a stream read may return, given the count limit.
    pub(crate) fn first_readable(&self) -> u64 {
        let by_count = match (self.metadata.max_count, self.last) {
            (Some(n), Some(last)) => (last + 1).saturating_sub(n),
            _ => 0,
        };
        self.truncate_before.max(by_count)
    }

    /// Soft-deletes the stream's events; false when it has none to delete.
    pub(crate) fn soft_delete(&mut self) -> bool {
        match self.visible() {
            Some(last) => {
                self.truncate_before = last.0 + 1;
                true
            }
            None => false,
        }
    }

    pub(crate) fn info(&self) -> StreamInfo {
        StreamInfo {
            version: self.visible(),
            metadata: self.metadata,
            deleted: self.last.is_some() && self.visible().is_none(),
        }
    }
}

/// The versions a read covers, given the stream's state: `(first, last)` inclusive,
/// in reading order, or `None` when nothing is readable.
pub(crate) fn read_range(state: &StreamState, read: ReadStream) -> Option<(u64, u64)> {
    let last = state.last?;
    let first = state.first_readable();
    if first > last || read.limit == 0 {
        return None;
    }
    let limit = read.limit.min(READ_LIMIT_MAX) as u64;
    match read.direction {
        Direction::Forward => {
            let from = read.from.0.max(first);
            (from <= last).then(|| (from, last.min(from + (limit - 1))))
        }
        Direction::Backward => {
            let from = read.from.0.min(last);
            (from >= first).then(|| (from, from.saturating_sub(limit - 1).max(first)))
        }
    }
}

/// Whether an event recorded at `recorded` is still within `max_age` at `now`.
pub(crate) fn within_age(
    metadata: &StreamMetadata,
    recorded: TimestampMs,
    now: TimestampMs,
) -> bool {
    metadata.max_age.is_none_or(|age| {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        now.0.saturating_sub(recorded.0) <= age_ms
    })
}
