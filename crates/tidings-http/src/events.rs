//! A topic's events: publishing (the CloudEvents HTTP binding) and reading
//! without a group, once or as a stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidings_api::{ErrorCode, PublishAnswer, PublishedEvent, ReadAnswer, ReadQuery};
use tidings_broker::{Broker, Payload, StartPosition};
use tidings_types::{CloudEvent, Offset, PartitionId};
use tracing::Instrument as _;

use crate::extract::{PathJson, QueryJson};
use crate::sse::{self, Item, Source};
use crate::stop::Stop;
use crate::{blocking, body, wire, Api, ApiError};

/// Bytes one partition read asks the broker for at a time.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// `POST /v1/topics/{topic}/events`: one event in binary or structured mode, or
/// a batch, answered with where each event went.
pub(crate) async fn publish(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<PublishAnswer>, ApiError> {
    // An unknown topic is refused before the body is read (cheaply: this
    // is on every publish).
    if api.broker().partition_count(&topic).is_none() {
        return Err(tidings_broker::AdminError::UnknownTopic(topic).into());
    }
    let bytes = body::read(&headers, request, api.limits().body_bytes_max).await?;
    let mut payloads = wire::decode_payloads(&headers, bytes, api.limits().batch_events_max)?;
    record_correlation(payloads.iter().filter_map(|p| match p {
        Payload::Event(e) => Some(e),
        Payload::Raw(_) => None,
    }));
    // The request's span continues the caller's trace when it sent one.
    let continued = crate::caller_context(&headers).is_some();
    let mut events: Vec<&mut CloudEvent> = payloads
        .iter_mut()
        .filter_map(|p| match p {
            Payload::Event(e) => Some(e),
            Payload::Raw(_) => None,
        })
        .collect();
    let span = tidings_trace::publish_span(&topic, &mut events, continued);
    // The answer names each event by id; the events themselves go to the broker.
    let ids: Vec<Option<String>> = payloads
        .iter()
        .map(|p| match p {
            Payload::Event(e) => Some(e.id().to_owned()),
            Payload::Raw(_) => None,
        })
        .collect();
    let started = std::time::Instant::now();
    let published = api
        .broker()
        .publish_payloads(&topic, payloads)
        .instrument(span)
        .await?;
    tidings_telemetry::appended(started.elapsed());
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
            id = id.as_deref().unwrap_or("(raw record)"),
            duplicate = p.duplicate,
            "published"
        );
        answer.events.push(PublishedEvent {
            id,
            partition: p.partition.0,
            offset: p.offset.0,
            duplicate: p.duplicate,
        });
    }
    Ok(Json(answer))
}

/// Puts the events' correlation id on the request's log span, so every line
/// about the request names it: the id when the events share one, `(several)`
/// when they do not.
fn record_correlation<'a>(events: impl Iterator<Item = &'a CloudEvent>) {
    let mut ids = events.filter_map(CloudEvent::correlationid);
    let Some(first) = ids.next() else { return };
    let value = if ids.all(|id| id == first) {
        first
    } else {
        "(several)"
    };
    tracing::Span::current().record("correlationid", value);
}

/// `GET /v1/topics/{topic}/events`: events of one partition, or of all of them
/// merged by append time, from a start position, without a group; with
/// `Accept: text/event-stream`, followed as they are appended.
pub(crate) async fn read(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
    headers: HeaderMap,
    QueryJson(query): QueryJson<ReadQuery>,
) -> Result<Response, ApiError> {
    let start = wire::parse_start(query.from.as_deref())?;
    let read_max = api.limits().read_events_max;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > read_max {
        return Err(ApiError::invalid_request(format!(
            "limit={limit}: it must be 1..={read_max}"
        )));
    }
    let description = api.broker().describe_topic(&topic)?;
    let count = description.spec.log.partitions;
    let partitions: Vec<PartitionId> = match query.partition {
        Some(p) if p >= count => {
            return Err(ApiError::new(
                ErrorCode::UnknownPartition,
                format!("topic {topic} has {count} partitions; partition {p} does not exist"),
            ))
        }
        Some(p) => vec![PartitionId(p)],
        None if matches!(start, StartPosition::Offset(_)) && count > 1 => {
            return Err(ApiError::invalid_request(format!(
                "topic {topic} has {count} partitions: an offset needs partition=<n>"
            )))
        }
        None => (0..count).map(PartitionId).collect(),
    };
    if sse::wanted(&headers) {
        // A stream resumed with `Last-Event-ID` goes on from the positions
        // its last event named; partitions it does not name start at `from`.
        let resume = match headers.get("last-event-id") {
            Some(id) => resume_positions(id, count)?,
            None => BTreeMap::new(),
        };
        let mut positions = Vec::with_capacity(partitions.len());
        for p in partitions {
            let at = match resume.get(&p.0) {
                // Retention may have removed what the client has not seen.
                Some(&at) => at.max(api.broker().position(&topic, p, StartPosition::Earliest)?),
                None => api.broker().position(&topic, p, start)?,
            };
            positions.push((p, at));
        }
        let source = Follow {
            broker: Arc::clone(api.broker()),
            topic,
            positions,
        };
        return sse::open(&api, source);
    }
    let broker = Arc::clone(api.broker());
    let (mut entries, mut next) = blocking(move || {
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
    entries.sort_by_key(|e| (e.timestamp, e.partition, e.offset));
    entries.truncate(limit);
    for e in &entries {
        let n = next.entry(e.partition.0).or_default();
        *n = (*n).max(e.offset.0 + 1);
    }
    let events = entries
        .iter()
        .map(wire::stored_event)
        .collect::<Result<_, _>>()?;
    Ok(Json(ReadAnswer { events, next }).into_response())
}

/// The positions a `Last-Event-ID` of a topic stream names:
/// `<partition>:<next offset>` for each partition, comma-separated.
fn resume_positions(
    id: &axum::http::HeaderValue,
    partitions: u32,
) -> Result<BTreeMap<u32, Offset>, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid_request(format!(
            "Last-Event-ID {id:?}: {why}; it is the id of an event of this stream, <partition>:<next offset>,..."
        ))
    };
    let text = id.to_str().map_err(|_| bad("not text"))?;
    wire::parse_positions(text, partitions).map_err(|why| bad(&why))
}

/// The id of a topic stream's event: where every partition of the stream
/// reads next once the event is seen, so a client resuming with it as
/// `Last-Event-ID` misses nothing and sees nothing twice.
fn positions_id(positions: &[(PartitionId, Offset)]) -> String {
    let mut id = String::new();
    for (p, o) in positions {
        if !id.is_empty() {
            id.push(',');
        }
        id.push_str(&format!("{}:{}", p.0, o.0));
    }
    id
}

/// A topic followed from a start position, partition by partition in offset
/// order, as events are appended.
struct Follow {
    broker: Arc<Broker>,
    topic: String,
    positions: Vec<(PartitionId, Offset)>,
}

impl Source for Follow {
    async fn next(&mut self, stop: &Stop) -> Result<Vec<Item>, ApiError> {
        let mut items = Vec::new();
        for i in 0..self.positions.len() {
            let (partition, from) = self.positions[i];
            let (broker, topic) = (Arc::clone(&self.broker), self.topic.clone());
            let chunk =
                blocking(move || Ok(broker.read(&topic, partition, from, READ_CHUNK_BYTES)?))
                    .await?;
            for entry in &chunk {
                self.positions[i].1 = entry.offset.next();
                items.push(Item::with_id(
                    positions_id(&self.positions),
                    &wire::stored_event(entry)?,
                )?);
            }
        }
        if items.is_empty() {
            // A pure wait: ending it early loses nothing.
            tokio::select! {
                waited = self.broker.wait_for_events(&self.topic, &self.positions, sse::SOURCE_WAIT) => waited?,
                () = stop.wait() => {}
            }
        }
        Ok(items)
    }
}
