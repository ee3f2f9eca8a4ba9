//! Publishing events (the CloudEvents HTTP binding) and reading them without a
//! group.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidings_broker::{Entry, Payload, StartPosition};
use tidings_types::{
    CloudEvent, Offset, OffsetDateTime, PartitionId, TimestampMs, JSON_BATCH_MEDIA_TYPE,
    JSON_FORMAT_MEDIA_TYPE,
};

use crate::{blocking, body, Api, ApiError, PathJson, QueryJson};

/// Bytes one partition read asks the broker for at a time.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Serialize)]
struct PublishedJson {
    id: String,
    partition: u32,
    offset: u64,
    duplicate: bool,
}

#[derive(Serialize)]
struct PublishAnswer {
    topic: String,
    events: Vec<PublishedJson>,
}

/// `POST /v1/topics/{topic}/events`: one event in binary or structured mode, or
/// a batch, answered with where each event went.
pub(crate) async fn publish(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    // An unknown topic is refused before the body is read.
    api.broker().describe_topic(&topic)?;
    let bytes = body::read(&headers, request, api.limits().body_bytes_max).await?;
    let events = decode_events(&headers, bytes, api.limits().batch_events_max)?;
    record_correlation(&events);
    // The answer names each event by id; the events themselves go to the broker.
    let ids: Vec<String> = events.iter().map(|e| e.id().to_owned()).collect();
    let started = std::time::Instant::now();
    let published = api.broker().publish_batch(&topic, events).await?;
    tidings_telemetry::appended(&topic, started.elapsed());
    let mut answer = PublishAnswer {
        topic,
        events: Vec::with_capacity(published.len()),
    };
    for (id, p) in ids.into_iter().zip(published) {
        // The request's span carries the correlation id.
        tracing::debug!(
            topic = %p.topic,
            partition = p.partition.0,
            offset = p.offset.0,
            %id,
            duplicate = p.duplicate,
            "published"
        );
        answer.events.push(PublishedJson {
            id,
            partition: p.partition.0,
            offset: p.offset.0,
            duplicate: p.duplicate,
        });
    }
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// Puts the events' correlation id on the request's log span, so every line
/// about the request names it: the id when the events share one, `(several)`
/// when they do not.
fn record_correlation(events: &[CloudEvent]) {
    let mut ids = events.iter().filter_map(CloudEvent::correlationid);
    let Some(first) = ids.next() else { return };
    let value = if ids.all(|id| id == first) {
        first
    } else {
        "(several)"
    };
    tracing::Span::current().record("correlationid", value);
}

pub(crate) fn decode_events(
    headers: &HeaderMap,
    bytes: bytes::Bytes,
    batch_max: usize,
) -> Result<Vec<CloudEvent>, ApiError> {
    let invalid = |e: tidings_types::EventError| ApiError::of_kind(e.kind(), e);
    match body::media_type(headers).as_deref() {
        Some(JSON_FORMAT_MEDIA_TYPE) => Ok(vec![CloudEvent::from_json(&bytes).map_err(invalid)?]),
        Some(JSON_BATCH_MEDIA_TYPE) => {
            let events = CloudEvent::batch_from_json(&bytes).map_err(invalid)?;
            if events.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_event",
                    "the batch holds no events",
                ));
            }
            if events.len() > batch_max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "the batch holds {} events; the limit is {batch_max}",
                        events.len()
                    ),
                ));
            }
            Ok(events)
        }
        Some(other) if other.starts_with("application/cloudevents") => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("event format {other} is not supported; use {JSON_FORMAT_MEDIA_TYPE} or {JSON_BATCH_MEDIA_TYPE}"),
        )),
        _ if headers.contains_key("ce-specversion") => {
            let pairs = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
            Ok(vec![CloudEvent::from_http_binary(pairs, bytes).map_err(invalid)?])
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {} carries no CloudEvent: send {JSON_FORMAT_MEDIA_TYPE}, {JSON_BATCH_MEDIA_TYPE}, or binary mode with ce-specversion, ce-id, ce-source and ce-type headers",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    from: Option<String>,
    limit: Option<usize>,
    partition: Option<u32>,
}

/// Where a reader starts: `earliest`, `latest`, an offset, or an RFC 3339 time.
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
                    ApiError::bad_request(
                        "invalid_request",
                        format!("from={from:?}: expected earliest, latest, an offset or an RFC 3339 time"),
                    )
                })?;
            let ms = time.unix_timestamp_nanos() / 1_000_000;
            Ok(StartPosition::Timestamp(TimestampMs(
                i64::try_from(ms).unwrap_or(i64::MAX),
            )))
        }
    }
}

#[derive(Serialize)]
struct ReadAnswer {
    events: Vec<Value>,
    /// Per partition, the offset to read from next.
    next: BTreeMap<u32, u64>,
}

/// `GET /v1/topics/{topic}/events`: events of one partition, or of all of them
/// merged by append time, from a start position, without a group.
pub(crate) async fn read(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
    headers: HeaderMap,
    QueryJson(query): QueryJson<ReadQuery>,
) -> Result<Response, ApiError> {
    let start = parse_start(query.from.as_deref())?;
    let read_max = api.limits().read_events_max;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > read_max {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit={limit}: it must be 1..={read_max}"),
        ));
    }
    let description = api.broker().describe_topic(&topic)?;
    let partitions: Vec<PartitionId> = match query.partition {
        Some(p) if p >= description.spec.partitions => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_partition",
                format!(
                    "topic {topic} has {} partitions; partition {p} does not exist",
                    description.spec.partitions
                ),
            ))
        }
        Some(p) => vec![PartitionId(p)],
        None if matches!(start, StartPosition::Offset(_)) && description.spec.partitions > 1 => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "topic {topic} has {} partitions: an offset needs partition=<n>",
                    description.spec.partitions
                ),
            ))
        }
        None => (0..description.spec.partitions).map(PartitionId).collect(),
    };
    if crate::sse::wanted(&headers) {
        return follow(&api, topic, partitions, start);
    }
    let broker = std::sync::Arc::clone(api.broker());
    let (entries, mut next) = blocking(move || {
        let mut entries = Vec::new();
        let mut next = BTreeMap::new();
        for p in partitions {
            let from = broker.position(&topic, p, start)?;
            next.insert(p.0, from.0);
            let mut at = from;
            let mut got = 0;
            while got < limit {
                let chunk = broker.read(&topic, p, at, READ_CHUNK_BYTES)?;
                if chunk.is_empty() {
                    break;
                }
                for entry in chunk.into_iter().take(limit - got) {
                    at = entry.offset.next();
                    got += 1;
                    entries.push(entry);
                }
            }
        }
        Ok((entries, next))
    })
    .await?;
    let mut entries = entries;
    entries.sort_by_key(|e| (e.timestamp, e.partition, e.offset));
    entries.truncate(limit);
    for e in &entries {
        let n = next.entry(e.partition.0).or_default();
        *n = (*n).max(e.offset.0 + 1);
    }
    let events = entries.iter().map(entry_json).collect::<Result<_, _>>()?;
    Ok(Json(ReadAnswer { events, next }).into_response())
}

/// Streams a topic's events from `start` as they are appended (Server-Sent
/// Events), partition by partition in offset order.
fn follow(
    api: &Api,
    topic: String,
    partitions: Vec<PartitionId>,
    start: StartPosition,
) -> Result<Response, ApiError> {
    let mut positions = Vec::with_capacity(partitions.len());
    for p in partitions {
        positions.push((p, api.broker().position(&topic, p, start)?));
    }
    let broker = std::sync::Arc::clone(api.broker());
    crate::sse::open(api, move |sink| async move {
        while sink.open() {
            let mut sent = false;
            for (p, at) in &mut positions {
                let (b, t, p2, from) = (std::sync::Arc::clone(&broker), topic.clone(), *p, *at);
                let chunk =
                    match blocking(move || Ok(b.read(&t, p2, from, READ_CHUNK_BYTES)?)).await {
                        Ok(chunk) => chunk,
                        Err(e) => return sink.fail(e).await,
                    };
                for entry in &chunk {
                    *at = entry.offset.next();
                    sent = true;
                    let json = match entry_json(entry) {
                        Ok(json) => json,
                        Err(e) => return sink.fail(e).await,
                    };
                    if !sink.send(&json).await {
                        return;
                    }
                }
            }
            if !sent {
                let waited = broker
                    .wait_for_events(&topic, &positions, crate::sse::SLICE)
                    .await;
                if let Err(e) = waited {
                    return sink.fail(e.into()).await;
                }
            }
        }
    })
}

/// One stored entry as JSON: a CloudEvent in the JSON format, or a raw record
/// (key, value and header values in base64) when it carries no event.
pub(crate) fn entry_json(entry: &Entry) -> Result<Value, ApiError> {
    let mut out = serde_json::Map::new();
    out.insert("partition".into(), entry.partition.0.into());
    out.insert("offset".into(), entry.offset.0.into());
    out.insert("timestamp_ms".into(), entry.timestamp.0.into());
    match &entry.payload {
        Payload::Event(event) => {
            let json = event.to_json_value().map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
            out.insert("event".into(), json);
        }
        Payload::Raw(record) => {
            let b64 = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| Value::from(BASE64.encode(b)));
            let headers: Vec<Value> = record
                .headers
                .iter()
                .map(|h| serde_json::json!({"key": h.key, "value": b64(&h.value)}))
                .collect();
            out.insert(
                "record".into(),
                serde_json::json!({
                    "key": b64(&record.key),
                    "value": b64(&record.value),
                    "headers": headers,
                }),
            );
        }
    }
    Ok(Value::Object(out))
}
