//! Publishing events and reading them without a group: the answers, and the
//! shape every stored event is read back in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where one published event went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEvent {
    /// The event's id; absent for a raw record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// The event (its source and id) was published within the dedup window
    /// already: nothing was appended, and the place is the original's.
    pub duplicate: bool,
}

/// The answer to `POST /v1/topics/{topic}/events`, one entry per event in
/// request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAnswer {
    /// The topic.
    pub topic: String,
    /// Per event.
    pub events: Vec<PublishedEvent>,
}

/// One header of a raw record; the value in base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawHeader {
    /// The header's key.
    pub key: String,
    /// Its value in base64, `null` for none.
    pub value: Option<String>,
}

/// A record without CloudEvents headers, as a plain Kafka client wrote it: key,
/// value and header values in base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The headers, in order.
    pub headers: Vec<RawHeader>,
    /// The key in base64, `null` for none.
    pub key: Option<String>,
    /// The value in base64, `null` for none.
    pub value: Option<String>,
}

/// A stored event read back: where it is, when it was appended, and either the
/// CloudEvent (in the JSON event format) or the raw record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The CloudEvent, when the record carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    /// Its offset.
    pub offset: u64,
    /// Its partition.
    pub partition: u32,
    /// The record, when it carries no CloudEvent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RawRecord>,
    /// When the broker appended it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The media type of a publish whose body is a JSON array of [`PublishEntry`]:
/// CloudEvents and raw records together, in the shape a read answers them.
pub const RECORDS_MEDIA_TYPE: &str = "application/vnd.tidings.records+json";

/// One entry of a [`RECORDS_MEDIA_TYPE`] publish: a CloudEvent or a raw record,
/// exactly one of the two, as [`StoredEvent`] carries them. Where it was read
/// from (offset, partition, time) is not part of it: the publish places it anew.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEntry {
    /// A CloudEvent in the JSON event format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    /// A raw record: key, value and header values in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RawRecord>,
}

impl From<StoredEvent> for PublishEntry {
    fn from(stored: StoredEvent) -> PublishEntry {
        PublishEntry {
            event: stored.event,
            record: stored.record,
        }
    }
}

/// The query of `GET /v1/topics/{topic}/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// `earliest` (the default), `latest`, an offset (with `partition` on a
    /// topic of several) or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Most events to answer with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only this partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

/// The answer to `GET /v1/topics/{topic}/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAnswer {
    /// The events, merged across partitions by append time.
    pub events: Vec<StoredEvent>,
    /// Per partition, the offset to read from next.
    pub next: BTreeMap<u32, u64>,
}
