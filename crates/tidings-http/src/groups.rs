//! Stream-mode consumer groups: members join, long-poll their partitions,
//! commit offsets, heartbeat and leave; groups are listed, described with lag,
//! and reset.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidings_broker::{GroupDescription, JoinOptions};
use tidings_types::{Offset, PartitionId};

use crate::events::{entry_json, parse_start};
use crate::{blocking, body, sse, Api, ApiError, PathJson, QueryJson};

/// A long-poll waits in slices this long and ends early when the server drains.
pub(crate) const LONG_POLL_SLICE: Duration = Duration::from_millis(250);

/// Bytes one long-poll answers with at most, unless the client asks for less.
const POLL_BYTES_DEFAULT: usize = 1024 * 1024;

#[derive(Serialize)]
pub(crate) struct GroupJson {
    group: String,
    topic: String,
    generation: u64,
    members: Vec<MemberJson>,
    partitions: Vec<LagJson>,
    lag: u64,
}

#[derive(Serialize)]
struct MemberJson {
    member: String,
    partitions: Vec<u32>,
}

#[derive(Serialize)]
struct LagJson {
    partition: u32,
    committed: Option<u64>,
    high_watermark: u64,
    lag: u64,
}

impl From<GroupDescription> for GroupJson {
    fn from(d: GroupDescription) -> GroupJson {
        GroupJson {
            lag: d.partitions.iter().map(|p| p.lag).sum(),
            group: d.group,
            topic: d.topic.to_string(),
            generation: d.generation,
            members: d
                .members
                .into_iter()
                .map(|m| MemberJson {
                    member: m.member,
                    partitions: m.partitions.iter().map(|p| p.0).collect(),
                })
                .collect(),
            partitions: d
                .partitions
                .into_iter()
                .map(|p| LagJson {
                    partition: p.partition.0,
                    committed: p.committed.map(|o| o.0),
                    high_watermark: p.high_watermark.0,
                    lag: p.lag,
                })
                .collect(),
        }
    }
}

/// `GET /v1/groups`.
pub(crate) async fn list(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let broker = std::sync::Arc::clone(api.broker());
    let groups = blocking(move || {
        let mut out = Vec::new();
        for name in broker.list_groups() {
            // A group whose topic was deleted is no reason to fail the listing.
            match broker.describe_group(&name) {
                Ok(d) => out.push(GroupJson::from(d)),
                Err(e) => {
                    tracing::debug!(group = %name, error = %e, "group left out of the listing")
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(serde_json::json!({ "groups": groups })))
}

/// `GET /v1/groups/{group}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
) -> Result<Json<GroupJson>, ApiError> {
    let broker = std::sync::Arc::clone(api.broker());
    let d = blocking(move || Ok(broker.describe_group(&group)?)).await?;
    Ok(Json(d.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    topic: String,
    from: Option<String>,
    session_timeout_ms: Option<u64>,
}

/// `POST /v1/groups/{group}/members`: joins (creating the group on first join).
pub(crate) async fn join(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let join: Join = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let defaults = JoinOptions::default();
    let options = JoinOptions {
        start: parse_start(join.from.as_deref())?,
        session_timeout: join
            .session_timeout_ms
            .map_or(defaults.session_timeout, Duration::from_millis),
    };
    let member = api.broker().join_group(&group, &join.topic, options)?;
    tracing::info!(%group, %member, topic = %join.topic, "member joined");
    let answer = serde_json::json!({"group": group, "member": member});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /v1/groups/{group}/members/{member}`.
pub(crate) async fn leave(
    State(api): State<Api>,
    PathJson((group, member)): PathJson<(String, String)>,
) -> Result<StatusCode, ApiError> {
    api.broker().leave_group(&group, &member)?;
    tracing::info!(%group, %member, "member left");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/groups/{group}/members/{member}/heartbeat`.
pub(crate) async fn heartbeat(
    State(api): State<Api>,
    PathJson((group, member)): PathJson<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let generation = api.broker().heartbeat(&group, &member)?;
    Ok(Json(serde_json::json!({ "generation": generation })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollQuery {
    wait_ms: Option<u64>,
    max_bytes: Option<usize>,
}

/// The long-poll wait a request asks for, checked against the limit.
pub(crate) fn wait(api: &Api, wait_ms: Option<u64>) -> Result<Duration, ApiError> {
    let wait = Duration::from_millis(wait_ms.unwrap_or(0));
    let max = api.limits().long_poll_wait_max;
    if wait > max {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "wait_ms={}: the limit is {}",
                wait.as_millis(),
                max.as_millis()
            ),
        ));
    }
    Ok(wait)
}

/// `GET /v1/groups/{group}/members/{member}/events`: the member's next events,
/// waiting up to `wait_ms` when there are none. Positions advance; nothing is
/// committed until the member commits.
pub(crate) async fn poll(
    State(api): State<Api>,
    PathJson((group, member)): PathJson<(String, String)>,
    headers: HeaderMap,
    QueryJson(query): QueryJson<PollQuery>,
) -> Result<Response, ApiError> {
    let wait = wait(&api, query.wait_ms)?;
    if sse::wanted(&headers) {
        // Refuse an unknown group or member now, not as the stream's first message.
        api.broker().heartbeat(&group, &member)?;
        let producer_api = api.clone();
        return sse::open(&api, move |sink| async move {
            while sink.open() {
                let polled = producer_api
                    .broker()
                    .poll(&group, &member, POLL_BYTES_DEFAULT, sse::SLICE)
                    .await;
                let polled = match polled {
                    Ok(polled) => polled,
                    Err(e) => return sink.fail(e.into()).await,
                };
                let now = tidings_types::TimestampMs::now().0;
                for entry in &polled.entries {
                    tidings_telemetry::delivered(now - entry.timestamp.0);
                    let json = match entry_json(entry) {
                        Ok(json) => json,
                        Err(e) => return sink.fail(e).await,
                    };
                    if !sink.send(&json).await {
                        return;
                    }
                }
            }
        });
    }
    let max_bytes = query
        .max_bytes
        .unwrap_or(POLL_BYTES_DEFAULT)
        .clamp(1, POLL_BYTES_DEFAULT * 16);
    let deadline = tokio::time::Instant::now() + wait;
    let polled = loop {
        // Waits in slices, so a server that starts draining answers at once
        // instead of holding the shutdown for the rest of the wait.
        let slice = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(LONG_POLL_SLICE);
        let polled = api.broker().poll(&group, &member, max_bytes, slice).await?;
        if !polled.entries.is_empty() || slice.is_zero() || api.draining() {
            break polled;
        }
    };
    let now = tidings_types::TimestampMs::now().0;
    let mut next = BTreeMap::new();
    let mut events = Vec::with_capacity(polled.entries.len());
    for entry in &polled.entries {
        tidings_telemetry::delivered(now - entry.timestamp.0);
        next.insert(entry.partition.0, entry.offset.0 + 1);
        events.push(entry_json(entry)?);
    }
    Ok(Json(serde_json::json!({
        "generation": polled.generation,
        "assignment": polled.assignment.iter().map(|p| p.0).collect::<Vec<_>>(),
        "events": events,
        "next": next,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit {
    offsets: BTreeMap<u32, u64>,
}

/// `POST /v1/groups/{group}/members/{member}/commit`: `{"offsets": {"0": 12}}`
/// commits, per partition, the offset of the next event to read.
pub(crate) async fn commit(
    State(api): State<Api>,
    PathJson((group, member)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<StatusCode, ApiError> {
    let commit: Commit = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let offsets: Vec<(PartitionId, Offset)> = commit
        .offsets
        .into_iter()
        .map(|(p, o)| (PartitionId(p), Offset(o)))
        .collect();
    let broker = std::sync::Arc::clone(api.broker());
    blocking(move || Ok(broker.commit(&group, &member, &offsets)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    to: String,
}

/// `POST /v1/groups/{group}/reset`: moves the committed offsets of a group with
/// no members to `earliest`, `latest`, an offset or a time (replay).
pub(crate) async fn reset(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<GroupJson>, ApiError> {
    let reset: Reset = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let to = parse_start(Some(&reset.to))?;
    let broker = std::sync::Arc::clone(api.broker());
    let d = blocking(move || {
        broker.reset_offsets(&group, to)?;
        Ok(broker.describe_group(&group)?)
    })
    .await?;
    tracing::info!(group = %d.group, to = %reset.to, "offsets reset");
    Ok(Json(d.into()))
}
