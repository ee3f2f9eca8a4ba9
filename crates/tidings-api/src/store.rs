//! The event store over HTTP: appends with an expected version, stream reads,
//! `$all` and category reads.

use serde::{Deserialize, Serialize};

/// The header that carries an append's or a deletion's expected version:
/// `any`, `no_stream`, `stream_exists` or a version number.
pub const EXPECTED_VERSION_HEADER: &str = "tidings-expected-version";

/// The query of `POST /v1/streams/{stream}/events` and of a stream's deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendQuery {
    /// The expected version, when not in [`EXPECTED_VERSION_HEADER`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<String>,
}

/// The answer to an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendAnswer {
    /// The stream.
    pub stream: String,
    /// Version of the first event appended.
    pub first_version: u64,
    /// Version of the last.
    pub last_version: u64,
    /// Global position of the first.
    pub first_position: u64,
    /// Global position of the last.
    pub last_position: u64,
}

/// A stored event of the event store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The CloudEvent, in the JSON event format.
    pub event: serde_json::Value,
    /// Its position in the global order.
    pub position: u64,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub recorded_ms: i64,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
}

/// The query of `GET /v1/streams/{stream}/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// First version to read (the newest first, backward).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// `forward` (the default) or `backward`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Most events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to a stream read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReadAnswer {
    /// The events.
    pub events: Vec<RecordedEvent>,
    /// The stream.
    pub stream: String,
    /// Its version, `null` for no events.
    pub version: Option<u64>,
}

/// A stream's read limits; an absent one is no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Only the newest this many events are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Only events recorded within this many milliseconds are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

/// `GET /v1/streams/{stream}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Its category: the name before the first `-`.
    pub category: String,
    /// Whether it was soft-deleted and not written since.
    pub deleted: bool,
    /// Its read limits.
    pub metadata: StreamMetadata,
    /// The stream.
    pub stream: String,
    /// Its version, `null` for no events.
    pub version: Option<u64>,
}

/// The query of `GET /v1/store/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllQuery {
    /// First global position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Most events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only streams of this category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// The answer to a `$all` or category read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReadAnswer {
    /// The events, in global order.
    pub events: Vec<RecordedEvent>,
    /// The position to read from next.
    pub next: u64,
}
