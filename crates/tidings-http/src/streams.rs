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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidings_store::{
    Direction, EventStore, ExpectedVersion, Position, ReadStream, RecordedEvent, Selector,
    StreamName, StreamVersion, Subscription,
};

use crate::body;
use crate::{Api, ApiError, PathJson, QueryJson};

/// The header that carries an append's expected version.
pub(crate) const EXPECTED_VERSION_HEADER: &str = "tidings-expected-version";

/// The number of events a read answers with: what was asked, at most the limit.
fn read_limit(api: &Api, asked: Option<usize>) -> usize {
    let max = api.limits().read_events_max;
    asked.map_or(max, |n| n.min(max))
}

fn stream_name(name: &str) -> Result<StreamName, ApiError> {
    StreamName::new(name).map_err(|e| ApiError::bad_request("invalid_stream", e.to_string()))
}

fn expected_version(headers: &HeaderMap, query: Option<&str>) -> Result<ExpectedVersion, ApiError> {
    let header = headers
        .get(EXPECTED_VERSION_HEADER)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_expected_version",
                    "Tidings-Expected-Version is not text",
                )
            })
        })
        .transpose()?;
    match header.or(query) {
        None => Ok(ExpectedVersion::Any),
        Some(text) => text
            .parse()
            .map_err(|e: String| ApiError::bad_request("invalid_expected_version", e)),
    }
}

/// One stored event as JSON: where it is, and the CloudEvent in the JSON format.
pub(crate) fn recorded_json(e: &RecordedEvent) -> Result<Value, ApiError> {
    let event = e
        .event
        .to_json_value()
        .map_err(|err| ApiError::internal("internal", err))?;
    Ok(serde_json::json!({
        "stream": e.stream.as_str(),
        "version": e.version.0,
        "position": e.position.0,
        "recorded_ms": e.recorded.0,
        "event": event,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendQuery {
    expected_version: Option<String>,
}

#[derive(Serialize)]
struct AppendAnswer {
    stream: String,
    first_version: u64,
    last_version: u64,
    first_position: u64,
    last_position: u64,
}

/// `POST /v1/streams/{stream}/events`: appends one event (binary or structured
/// mode) or a batch, if the expected version holds.
pub(crate) async fn append(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
    QueryJson(query): QueryJson<AppendQuery>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let stream = stream_name(&stream)?;
    let expected = expected_version(&headers, query.expected_version.as_deref())?;
    let bytes = body::read(&headers, request, api.limits().body_bytes_max).await?;
    let events = crate::events::decode_events(&headers, bytes, api.limits().batch_events_max)?;
    let done = api.store().append_to(&stream, expected, events).await?;
    tracing::debug!(%stream, version = done.last_version.0, position = done.last_position.0, "appended");
    let answer = AppendAnswer {
        stream: done.stream.to_string(),
        first_version: done.first_version.0,
        last_version: done.last_version.0,
        first_position: done.first_position.0,
        last_position: done.last_position.0,
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    from: Option<u64>,
    direction: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/streams/{stream}/events`: a stream's events from a version, forward
/// (the default) or backward.
pub(crate) async fn read_stream(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
    QueryJson(query): QueryJson<StreamQuery>,
) -> Result<Response, ApiError> {
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
            return Err(ApiError::bad_request(
                "invalid_direction",
                format!("direction {other:?} is not 'forward' or 'backward'"),
            ))
        }
    }
    .limit(limit);
    let slice = api.store().read_stream(&stream, read).await?;
    let events = slice
        .events
        .iter()
        .map(recorded_json)
        .collect::<Result<Vec<_>, _>>()?;
    let body = serde_json::json!({
        "stream": stream.as_str(),
        "version": slice.version.map(|v| v.0),
        "events": events,
    });
    Ok(Json(body).into_response())
}

/// `GET /v1/streams/{stream}`: the stream's version, metadata and deletion.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(stream): PathJson<String>,
) -> Result<Response, ApiError> {
    let stream = stream_name(&stream)?;
    let info = api.store().stream_info(&stream).await?;
    let body = serde_json::json!({
        "stream": stream.as_str(),
        "category": stream.category(),
        "version": info.version.map(|v| v.0),
        "deleted": info.deleted,
        "metadata": info.metadata,
    });
    Ok(Json(body).into_response())
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllQuery {
    from: Option<u64>,
    limit: Option<usize>,
    category: Option<String>,
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
            return Err(ApiError::bad_request(
                "invalid_category",
                format!("category {c:?} must be non-empty and hold no '-'"),
            ))
        }
        Some(c) => Selector::Category(c),
    };
    let from = Position(query.from.unwrap_or(0));
    if crate::sse::wanted(&headers) {
        let store = api.store().clone();
        return crate::sse::open(&api, move |sink| async move {
            let mut sub = Subscription::new(store, selector, from);
            while sink.open() {
                match sub.next_within(crate::sse::SLICE).await {
                    Ok(None) => {}
                    Ok(Some(e)) => {
                        let json = match recorded_json(&e) {
                            Ok(json) => json,
                            Err(err) => return sink.fail(err).await,
                        };
                        if !sink.send(&json).await {
                            return;
                        }
                    }
                    Err(err) => return sink.fail(err.into()).await,
                }
            }
        });
    }
    let limit = read_limit(&api, query.limit);
    let slice = api.store().read_all(&selector, from, limit).await?;
    let events = slice
        .events
        .iter()
        .map(recorded_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(serde_json::json!({ "events": events, "next": slice.next.0 })).into_response())
}
