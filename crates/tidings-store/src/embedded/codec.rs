//! How the embedded store lays events into log records.
//!
//! An event is a record in the CloudEvents Kafka binding (binary mode: `ce_*`
//! headers, the data as value) whose key is the stream name and which carries its
//! stream version in the `tidings_version` header, so the store's log stays readable
//! by any Kafka tool. A stream's metadata (read limits and soft-delete point) is a
//! record with the `tidings_kind: metadata` header and the whole metadata as JSON.

use bytes::Bytes;
use tidings_log::{Header, Record, StoredRecord};
use tidings_types::{CloudEvent, KafkaMessage, TimestampMs};

use crate::error::StoreError;
use crate::types::{Position, RecordedEvent, StreamName, StreamState, StreamVersion};

const VERSION_HEADER: &str = "tidings_version";
const KIND_HEADER: &str = "tidings_kind";
const KIND_METADATA: &str = "metadata";

/// A decoded record of the store's log.
pub(crate) enum Entry {
    /// An event of a stream.
    Event(RecordedEvent),
    /// A stream's new metadata.
    Metadata {
        stream: StreamName,
        state: StreamState,
    },
}

/// The record for `event` at `version` of `stream`.
pub(crate) fn event_record(
    stream: &StreamName,
    version: u64,
    event: &CloudEvent,
    now: TimestampMs,
) -> Result<Record, tidings_types::EventError> {
    let message = event.to_kafka()?;
    let mut headers = Vec::with_capacity(message.headers.len() + 1);
    headers.push(Header {
        key: VERSION_HEADER.to_owned(),
        value: Some(Bytes::from(version.to_string())),
    });
    headers.extend(message.headers.into_iter().map(|(key, value)| Header {
        key,
        value: Some(value),
    }));
    Ok(Record {
        key: Some(Bytes::copy_from_slice(stream.as_str().as_bytes())),
        value: message.value,
        headers,
        timestamp: now,
    })
}

/// The record that sets `stream`'s metadata to `state`.
pub(crate) fn metadata_record(
    stream: &StreamName,
    state: &StreamState,
    now: TimestampMs,
) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(stream.as_str().as_bytes())),
        value: Some(Bytes::from(
            serde_json::to_vec(state).expect("stream state serializes"),
        )),
        headers: vec![Header {
            key: KIND_HEADER.to_owned(),
            value: Some(Bytes::from_static(KIND_METADATA.as_bytes())),
        }],
        timestamp: now,
    }
}

/// Decodes a record of the store's log.
pub(crate) fn decode(stored: &StoredRecord) -> Result<Entry, StoreError> {
    let position = stored.offset.0;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let record = &stored.record;
    let key = record
        .key
        .as_ref()
        .ok_or_else(|| corrupt("record has no stream name".to_owned()))?;
    let name = std::str::from_utf8(key).map_err(|_| corrupt("stream name is not UTF-8".into()))?;
    let stream = StreamName::stored(name).map_err(|e| corrupt(e.to_string()))?;
    let header = |name: &str| {
        record
            .headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_ref())
    };
    if header(KIND_HEADER).is_some_and(|k| k.as_ref() == KIND_METADATA.as_bytes()) {
        let value = record.value.as_deref().unwrap_or_default();
        let state: StreamState =
            serde_json::from_slice(value).map_err(|e| corrupt(format!("stream metadata: {e}")))?;
        return Ok(Entry::Metadata { stream, state });
    }
    let version = header(VERSION_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| corrupt("event has no readable stream version".into()))?;
    let message = KafkaMessage {
        // The key is the stream name, not the event's partition key, which keeps
        // its own header.
        key: None,
        value: record.value.clone(),
        headers: record
            .headers
            .iter()
            .filter(|h| h.key != VERSION_HEADER)
            .map(|h| (h.key.clone(), h.value.clone().unwrap_or_default()))
            .collect(),
    };
    let event = CloudEvent::from_kafka(&message).map_err(|e| corrupt(e.to_string()))?;
    Ok(Entry::Event(RecordedEvent {
        stream,
        version: StreamVersion(version),
        position: Position(position),
        recorded: record.timestamp,
        event,
    }))
}

#[cfg(test)]
mod tests {
    use tidings_types::Offset;

    use super::*;

    #[test]
    fn a_stream_named_before_the_name_rule_reads_back() {
        let state = StreamState::default();
        let mut record =
            metadata_record(&StreamName::new("order-1").unwrap(), &state, TimestampMs(1));
        // Written when names could hold any text without control characters.
        record.key = Some(Bytes::from_static(b"order 1"));
        let stored = StoredRecord {
            offset: Offset(3),
            record,
        };
        match decode(&stored).unwrap() {
            Entry::Metadata { stream, .. } => assert_eq!(stream.as_str(), "order 1"),
            _ => panic!("metadata"),
        }
        assert!(
            StreamName::new("order 1").is_err(),
            "no new stream takes it"
        );
    }
}
