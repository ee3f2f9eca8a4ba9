//! The event store over HTTP: append to a stream with an expected version, read a
//! stream, read `$all` or a category, and subscribe by Server-Sent Events.
//!
//! Expected versions travel as `any`, `no_stream`, `stream_exists` or a version
//! number, in the `Tidings-Expected-Version` header or the `expected_version`
//! query parameter. A conflict is 409 `wrong_expected_version` and names the
//! stream's actual version.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidings_api::{
    AllQuery, AppendAnswer, AppendQuery, ErrorCode, StoreReadAnswer, Stream, StreamMetadata,
    StreamQuery, StreamReadAnswer, EXPECTED_VERSION_HEADER,
};
use tidings_store::{
    Direction, EmbeddedStore, EventStore, ExpectedVersion, Position, ReadStream, Selector,
    StreamName, StreamVersion, Subscription,
};

use crate::extract::{PathJson, QueryJson};
use crate::sse::{self, Item, Source};
use crate::stop::Stop;
use crate::{body, wire, Api, ApiError};

/// The number of events a read answers with: what was asked, at most the limit.
fn read_limit(api: &Api, asked: Option<usize>) -> usize {
    let max = api.limits().read_events_max;
    asked.map_or(max, |n| n.min(max))
}

fn stream_name(name: &str) -> Result<StreamName, ApiError> {
    StreamName::new(name).map_err(|e| ApiError::new(ErrorCode::InvalidStream, e.to_string()))
}

fn expected_version(headers: &HeaderMap, query: Option<&str>) -> Result<ExpectedVersion, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidExpectedVersion, message);
    let header = headers
        .get(EXPECTED_VERSION_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| invalid("Tidings-Expected-Version is not text".to_owned()))
        })
        .transpose()?;
    match header.or(query) {
        None => Ok(ExpectedVersion::Any),
        Some(text) => text.parse().map_err(invalid),
    }
}

/// One stored event as the API shows it: where it is, and the CloudEvent in
/// the JSON format.
fn recorded_event(
    e: &tidings_store::RecordedEvent,
) -> Result<tidings_api::RecordedEvent, ApiError> {
    Ok(tidings_api::RecordedEvent {
        event: wire::event_json(&e.event)?,
        position: e.position.0,
        recorded_ms: e.recorded.0,
        stream: e.stream.as_str().to_owned(),
        version: e.version.0,
    })
}

fn recorded_events(
    events: &[tidings_store::RecordedEvent],
) -> Result<Vec<tidings_api::RecordedEvent>, ApiError> {
    events.iter().map(recorded_event).collect()
}

/// `POST /v1/streams/{stream}/events`: appends one event (binary or structured
/// mode) or a batch, if the expected version holds.
pub(crate) async fn append(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
    QueryJson(query): QueryJson<AppendQuery>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<AppendAnswer>, ApiError> {
    let stream = stream_name(&stream)?;
    let expected = expected_version(&headers, query.expected_version.as_deref())?;
    let bytes = body::read(&headers, request, api.limits().body_bytes_max).await?;
    let events = wire::decode_events(&headers, bytes, api.limits().batch_events_max)?;
    let done = api.store().append_to(&stream, expected, events).await?;
    tracing::debug!(%stream, version = done.last_version.0, position = done.last_position.0, "appended");
    Ok(Json(AppendAnswer {
        stream: done.stream.to_string(),
        first_version: done.first_version.0,
        last_version: done.last_version.0,
        first_position: done.first_position.0,
        last_position: done.last_position.0,
    }))
}

/// `GET /v1/streams/{stream}/events`: a stream's events from a version, forward
/// (the default) or backward.
pub(crate) async fn read_stream(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
    QueryJson(query): QueryJson<StreamQuery>,
) -> Result<Json<StreamReadAnswer>, ApiError> {
    let stream = stream_name(&stream)?;
    let limit = read_limit(&api, query.limit);
    let read = match query.direction.as_deref() {
        None | Some("forward") => ReadStream::forward(StreamVersion(query.from.unwrap_or(0))),
        Some("backward") => ReadStream {
            from: StreamVersion(query.from.unwrap_or(u64::MAX)),
            direction: Direction::Backward,
            limit,
        },
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidDirection,
                format!("direction {other:?} is not 'forward' or 'backward'"),
            ))
        }
    }
    .limit(limit);
    let slice = api.store().read_stream(&stream, read).await?;
    Ok(Json(StreamReadAnswer {
        events: recorded_events(&slice.events)?,
        stream: stream.as_str().to_owned(),
        version: slice.version.map(|v| v.0),
    }))
}

/// `GET /v1/streams/{stream}`: the stream's version, metadata and deletion.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
) -> Result<Json<Stream>, ApiError> {
    let stream = stream_name(&stream)?;
    let info = api.store().stream_info(&stream).await?;
    Ok(Json(Stream {
        category: stream.category().to_owned(),
        deleted: info.deleted,
        metadata: StreamMetadata {
            max_count: info.metadata.max_count,
            max_age: info
                .metadata
                .max_age
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
        stream: stream.as_str().to_owned(),
        version: info.version.map(|v| v.0),
    }))
}

/// `DELETE /v1/streams/{stream}`: soft-deletes a stream if the expected version
/// holds.
pub(crate) async fn delete(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
    QueryJson(query): QueryJson<AppendQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stream = stream_name(&stream)?;
    let expected = expected_version(&headers, query.expected_version.as_deref())?;
    api.store().delete_stream(&stream, expected).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/store/events`: `$all`, or one category, from a global position; with
/// `Accept: text/event-stream`, a subscription that catches up and goes live.
pub(crate) async fn read_all(
    State(api): State<Api>,
    QueryJson(query): QueryJson<AllQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let selector = match query.category {
        None => Selector::All,
        Some(c) if c.is_empty() || c.contains('-') => {
            return Err(ApiError::new(
                ErrorCode::InvalidCategory,
                format!("category {c:?} must be non-empty and hold no '-'"),
            ))
        }
        Some(c) => Selector::Category(c),
    };
    let mut from = Position(query.from.unwrap_or(0));
    if sse::wanted(&headers) {
        // A subscription resumed with `Last-Event-ID` (a global position)
        // goes on after it.
        if let Some(id) = headers.get("last-event-id") {
            let last: u64 = id
                .to_str()
                .ok()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| {
                    ApiError::invalid_request(format!(
                        "Last-Event-ID {id:?}: a subscription's event id is a global position"
                    ))
                })?;
            from = Position(last.saturating_add(1));
        }
        let subscription = Subscription::new(api.store().clone(), selector, from);
        return sse::open(&api, Subscribed(subscription));
    }
    let limit = read_limit(&api, query.limit);
    let slice = api.store().read_all(&selector, from, limit).await?;
    Ok(Json(StoreReadAnswer {
        events: recorded_events(&slice.events)?,
        next: slice.next.0,
    })
    .into_response())
}

/// A subscription to `$all` or a category, streamed: it catches up, then goes
/// live without a gap.
struct Subscribed(Subscription<EmbeddedStore>);

/// Most events one step of a subscription's stream hands out.
const SUBSCRIPTION_STEP_EVENTS_MAX: usize = 256;

impl Source for Subscribed {
    async fn next(&mut self, stop: &Stop) -> Result<Vec<Item>, ApiError> {
        // Reading and waiting ahead of the checkpoint: ending it early loses
        // nothing.
        let events = tokio::select! {
            events = self.0.next_batch(SUBSCRIPTION_STEP_EVENTS_MAX, sse::SOURCE_WAIT) => events?,
            () = stop.wait() => Vec::new(),
        };
        events
            .iter()
            .map(|e| Item::at_position(e.position.0, &recorded_event(e)?))
            .collect()
    }
}
