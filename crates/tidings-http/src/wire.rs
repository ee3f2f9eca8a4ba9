//! The broker's and the store's values as the API's JSON shapes, and the
//! request parts several resources read the same way: events per the
//! CloudEvents HTTP binding, start positions, waits.

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use tidings_api::{ErrorCode, PublishEntry, RawHeader, RawRecord, StoredEvent, RECORDS_MEDIA_TYPE};
use tidings_broker::{Entry, Header, Payload, Record, StartPosition};
use tidings_types::{
    CloudEvent, Offset, OffsetDateTime, TimestampMs, JSON_BATCH_MEDIA_TYPE, JSON_FORMAT_MEDIA_TYPE,
};

use crate::{body, Api, ApiError};

/// A stored entry as the API shows it: the CloudEvent in the JSON format, or
/// the raw record (key, value and header values in base64) when it carries none.
pub(crate) fn stored_event(entry: &Entry) -> Result<StoredEvent, ApiError> {
    let (event, record) = match &entry.payload {
        Payload::Event(event) => (Some(event_json(event)?), None),
        Payload::Raw(record) => {
            let b64 = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| BASE64.encode(b));
            let raw = RawRecord {
                headers: record
                    .headers
                    .iter()
                    .map(|h| RawHeader {
                        key: h.key.clone(),
                        value: b64(&h.value),
                    })
                    .collect(),
                key: b64(&record.key),
                value: b64(&record.value),
            };
            (None, Some(raw))
        }
    };
    Ok(StoredEvent {
        event,
        offset: entry.offset.0,
        partition: entry.partition.0,
        record,
        timestamp_ms: entry.timestamp.0,
    })
}

/// An event in the CloudEvents JSON format. Events are validated before they
/// are stored, so a failure here is the server's.
pub(crate) fn event_json(event: &CloudEvent) -> Result<serde_json::Value, ApiError> {
    event
        .to_json_value()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// The events a request carries, per the CloudEvents HTTP binding: one in
/// structured mode, a batch, or one in binary mode (`ce-*` headers).
pub(crate) fn decode_events(
    headers: &HeaderMap,
    bytes: bytes::Bytes,
    batch_max: usize,
) -> Result<Vec<CloudEvent>, ApiError> {
    match body::media_type(headers).as_deref() {
        Some(JSON_FORMAT_MEDIA_TYPE) => Ok(vec![CloudEvent::from_json(&bytes)?]),
        Some(JSON_BATCH_MEDIA_TYPE) => {
            let events = CloudEvent::batch_from_json(&bytes)?;
            if events.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidEvent,
                    "the batch holds no events",
                ));
            }
            if events.len() > batch_max {
                return Err(ApiError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the batch holds {} events; the limit is {batch_max}",
                        events.len()
                    ),
                ));
            }
            Ok(events)
        }
        Some(other) if other.starts_with("application/cloudevents") => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("event format {other} is not supported; use {JSON_FORMAT_MEDIA_TYPE} or {JSON_BATCH_MEDIA_TYPE}"),
        )),
        _ if headers.contains_key("ce-specversion") => {
            let pairs = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
            Ok(vec![CloudEvent::from_http_binary(pairs, bytes)?])
        }
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {} carries no CloudEvent: send {JSON_FORMAT_MEDIA_TYPE}, {JSON_BATCH_MEDIA_TYPE}, or binary mode with ce-specversion, ce-id, ce-source and ce-type headers",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

/// What a publish carries: CloudEvents per the HTTP binding (see
/// [`decode_events`]), or, with the [`RECORDS_MEDIA_TYPE`], a JSON array of
/// entries that are each a CloudEvent or a raw record.
pub(crate) fn decode_payloads(
    headers: &HeaderMap,
    bytes: bytes::Bytes,
    batch_max: usize,
) -> Result<Vec<Payload>, ApiError> {
    if body::media_type(headers).as_deref() != Some(RECORDS_MEDIA_TYPE) {
        return Ok(decode_events(headers, bytes, batch_max)?
            .into_iter()
            .map(Payload::Event)
            .collect());
    }
    let entries: Vec<PublishEntry> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("a {RECORDS_MEDIA_TYPE} body is a JSON array of {{\"event\": ...}} or {{\"record\": ...}} entries: {e}"),
        )
    })?;
    if entries.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidEvent,
            "the batch holds no entries",
        ));
    }
    if entries.len() > batch_max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "the batch holds {} entries; the limit is {batch_max}",
                entries.len()
            ),
        ));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| match (entry.event, entry.record) {
            (Some(event), None) => CloudEvent::from_json_value(event)
                .map(Payload::Event)
                .map_err(|e| ApiError::new(ErrorCode::InvalidEvent, format!("entry {index}: {e}"))),
            (None, Some(record)) => raw_record(index, record).map(Payload::Raw),
            _ => Err(ApiError::new(
                ErrorCode::InvalidEvent,
                format!("entry {index}: give exactly one of \"event\" and \"record\""),
            )),
        })
        .collect()
}

/// A raw record from its API shape (key, value and header values in base64).
fn raw_record(index: usize, raw: RawRecord) -> Result<Record, ApiError> {
    let decode = |what: &str, b64: Option<String>| -> Result<Option<bytes::Bytes>, ApiError> {
        b64.map(|text| {
            BASE64
                .decode(text.as_bytes())
                .map(bytes::Bytes::from)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidEvent,
                        format!("entry {index}: the record's {what} is not base64: {e}"),
                    )
                })
        })
        .transpose()
    };
    let mut headers = Vec::with_capacity(raw.headers.len());
    for h in raw.headers {
        let value = decode(&format!("header {:?}", h.key), h.value)?;
        headers.push(Header { key: h.key, value });
    }
    Ok(Record {
        key: decode("key", raw.key)?,
        value: decode("value", raw.value)?,
        headers,
        // The broker stamps its append time.
        timestamp: TimestampMs(0),
    })
}

/// Where a reader starts: `earliest` (also when absent), `latest`, an offset,
/// or an RFC 3339 time.
pub(crate) fn parse_start(from: Option<&str>) -> Result<StartPosition, ApiError> {
    let Some(from) = from else {
        return Ok(StartPosition::Earliest);
    };
    match from {
        "earliest" => Ok(StartPosition::Earliest),
        "latest" => Ok(StartPosition::Latest),
        _ => {
            if let Ok(offset) = from.parse::<u64>() {
                return Ok(StartPosition::Offset(Offset(offset)));
            }
            let time = OffsetDateTime::parse(from, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::invalid_request(format!(
                        "from={from:?}: expected earliest, latest, an offset or an RFC 3339 time"
                    ))
                })?;
            let ms = time.unix_timestamp_nanos() / 1_000_000;
            Ok(StartPosition::Timestamp(TimestampMs(
                i64::try_from(ms).unwrap_or(i64::MAX),
            )))
        }
    }
}

/// The long-poll wait a request asks for (none by default), checked against
/// the limit.
pub(crate) fn wait(api: &Api, wait_ms: Option<u64>) -> Result<std::time::Duration, ApiError> {
    let wait = std::time::Duration::from_millis(wait_ms.unwrap_or(0));
    let max = api.limits().long_poll_wait_max();
    if wait > max {
        return Err(ApiError::invalid_request(format!(
            "wait_ms={}: the limit is {}",
            wait.as_millis(),
            max.as_millis()
        )));
    }
    Ok(wait)
}

/// An event handed to a consumer now: its publish-to-deliver latency.
pub(crate) fn delivered(entry: &Entry) {
    tidings_telemetry::delivered(TimestampMs::now().0 - entry.timestamp.0);
}

/// The `receive {topic}` span of handing `entries` out to `group` (a
/// consumer span under the request, linked to the trace of each event), or
/// none when nothing was handed out: an idle consumer's empty long-polls,
/// every few seconds, would bury the receives that matter.
pub(crate) fn received<'a>(
    topic: &str,
    group: &str,
    entries: impl ExactSizeIterator<Item = &'a Entry>,
) {
    if entries.len() == 0 {
        return;
    }
    let span = tidings_trace::receive_span(tidings_trace::SYSTEM, topic, group);
    tidings_trace::link_events(&span, entries.map(Entry::trace_context));
}

/// Positions in a topic's partitions as streams and pages name them:
/// `<partition>:<offset>` for each partition, comma-separated; the error
/// says what is wrong, for the caller to say where it was.
pub(crate) fn parse_positions(
    text: &str,
    partitions: u32,
) -> Result<std::collections::BTreeMap<u32, Offset>, String> {
    let mut positions = std::collections::BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (p, o) = pair.split_once(':').ok_or("no ':'")?;
        let p: u32 = p.parse().map_err(|_| "a partition is not a number")?;
        let o: u64 = o.parse().map_err(|_| "an offset is not a number")?;
        if p >= partitions {
            return Err(format!("the topic has {partitions} partitions"));
        }
        positions.insert(p, Offset(o));
    }
    Ok(positions)
}
