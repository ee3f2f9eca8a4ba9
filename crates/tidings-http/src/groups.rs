//! Stream-mode consumer groups: members join, long-poll their partitions,
//! commit offsets, heartbeat and leave; groups are listed, described with lag,
//! and reset.

use crate::access::Access;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tidings_auth::acl::{Operation, ResourceType};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidings_api::{
    CommitRequest, Group, GroupList, GroupMember, HeartbeatAnswer, JoinAnswer, JoinRequest,
    PartitionLag, PollAnswer, PollQuery, ResetRequest,
};
use tidings_broker::{Broker, GroupDescription, JoinOptions, Polled};
use tidings_types::{Offset, PartitionId};

use crate::extract::{PathJson, QueryJson};
use crate::sse::{self, Item, Source};
use crate::stop::Stop;
use crate::{blocking, body, wire, Api, ApiError};

/// Bytes one long-poll answers with at most, unless the client asks for less.
const POLL_BYTES_DEFAULT: usize = 1024 * 1024;

/// A group as the API shows it.
fn group(d: GroupDescription) -> Group {
    Group {
        lag: d.partitions.iter().map(|p| p.lag).sum(),
        group: d.group.to_string(),
        topics: d.topics.iter().map(ToString::to_string).collect(),
        generation: d.generation,
        members: d
            .members
            .into_iter()
            .map(|m| {
                let mut assignment: BTreeMap<String, Vec<u32>> = m
                    .topics
                    .iter()
                    .map(|t| (t.to_string(), Vec::new()))
                    .collect();
                for (topic, p) in m.partitions {
                    assignment.entry(topic.to_string()).or_default().push(p.0);
                }
                GroupMember {
                    member: m.member,
                    client: m.client,
                    assignment,
                }
            })
            .collect(),
        partitions: d
            .partitions
            .into_iter()
            .map(|p| PartitionLag {
                topic: p.topic.to_string(),
                partition: p.partition.0,
                committed: p.committed.map(|o| o.0),
                high_watermark: p.high_watermark.0,
                lag: p.lag,
            })
            .collect(),
    }
}

/// `GET /v1/groups`: the groups the principal may describe.
pub(crate) async fn list(
    State(api): State<Api>,
    access: Access,
) -> Result<Json<GroupList>, ApiError> {
    let broker = Arc::clone(api.broker());
    let groups = blocking(move || {
        let mut out = Vec::new();
        for name in broker.list_groups() {
            if !access.allows(ResourceType::Group, &name, Operation::Describe) {
                continue;
            }
            // A group whose topic was deleted is no reason to fail the listing.
            match broker.describe_group(&name) {
                Ok(d) => out.push(group(d)),
                Err(e) => {
                    tracing::debug!(group = %name, error = %e, "group left out of the listing")
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(GroupList { groups }))
}

/// `GET /v1/groups/{group}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
) -> Result<Json<Group>, ApiError> {
    let broker = Arc::clone(api.broker());
    let d = blocking(move || Ok(broker.describe_group(&name)?)).await?;
    Ok(Json(group(d)))
}

/// `DELETE /v1/groups/{group}`: the group and its committed offsets, once it
/// has no members.
pub(crate) async fn delete(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
) -> Result<StatusCode, ApiError> {
    let broker = Arc::clone(api.broker());
    let group = name.clone();
    blocking(move || Ok(broker.delete_group(&group)?)).await?;
    tracing::info!(group = %name, "group deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/groups/{group}/members`: joins (creating the group on first join).
/// Needs `Read` on the group and on the topic.
pub(crate) async fn join(
    State(api): State<Api>,
    access: Access,
    PathJson(name): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    access.require(ResourceType::Group, &name, Operation::Read)?;
    let join: JoinRequest = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    access.require(ResourceType::Topic, &join.topic, Operation::Read)?;
    let defaults = JoinOptions::default();
    let options = JoinOptions {
        start: wire::parse_start(join.from.as_deref())?,
        session_timeout: join
            .session_timeout_ms
            .map_or(defaults.session_timeout, Duration::from_millis),
    };
    let member = api.broker().join_group(&name, &join.topic, options)?;
    tracing::info!(group = %name, %member, topic = %join.topic, "member joined");
    let answer = JoinAnswer {
        group: name,
        member,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /v1/groups/{group}/members/{member}`.
pub(crate) async fn leave(
    State(api): State<Api>,
    PathJson((name, member)): PathJson<(String, String)>,
) -> Result<StatusCode, ApiError> {
    api.broker().leave_group(&name, &member)?;
    tracing::info!(group = %name, %member, "member left");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/groups/{group}/members/{member}/heartbeat`.
pub(crate) async fn heartbeat(
    State(api): State<Api>,
    PathJson((name, member)): PathJson<(String, String)>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let generation = api.broker().heartbeat(&name, &member)?;
    Ok(Json(HeartbeatAnswer { generation }))
}

/// `GET /v1/groups/{group}/members/{member}/events`: the member's next events,
/// waiting up to `wait_ms` when there are none (ending at once if the server
/// drains); with `Accept: text/event-stream`, a stream of them. Positions
/// advance; nothing is committed until the member commits.
pub(crate) async fn poll(
    State(api): State<Api>,
    PathJson((name, member)): PathJson<(String, String)>,
    headers: HeaderMap,
    QueryJson(query): QueryJson<PollQuery>,
) -> Result<Response, ApiError> {
    let wait = wire::wait(&api, query.wait_ms)?;
    if sse::wanted(&headers) {
        // Refuse an unknown group or member now, not as the stream's first message.
        api.broker().heartbeat(&name, &member)?;
        let source = Member {
            broker: Arc::clone(api.broker()),
            group: name,
            member,
        };
        return sse::open(&api, source);
    }
    let max_bytes = query
        .max_bytes
        .unwrap_or(POLL_BYTES_DEFAULT)
        .clamp(1, POLL_BYTES_DEFAULT * 16);
    let read_max = api.limits().read_events_max;
    let limit = query.limit.unwrap_or(read_max);
    if limit == 0 || limit > read_max {
        return Err(ApiError::invalid_request(format!(
            "limit={limit}: it must be 1..={read_max}"
        )));
    }
    let stop = Stop::server(&api);
    let polled = api
        .broker()
        .poll_limited(&name, &member, max_bytes, limit, wait, stop.wait())
        .await?;
    wire::received(polled.topic.as_str(), &name, polled.entries.iter());
    Ok(Json(poll_answer(&polled)?).into_response())
}

fn poll_answer(polled: &Polled) -> Result<PollAnswer, ApiError> {
    let next: BTreeMap<u32, u64> = polled.positions.iter().map(|(p, o)| (p.0, o.0)).collect();
    let mut events = Vec::with_capacity(polled.entries.len());
    for entry in &polled.entries {
        wire::delivered(entry);
        events.push(wire::stored_event(entry)?);
    }
    Ok(PollAnswer {
        assignment: polled.assignment.iter().map(|p| p.0).collect(),
        events,
        generation: polled.generation,
        next,
    })
}

/// A member's events, streamed as they are appended.
struct Member {
    broker: Arc<Broker>,
    group: String,
    member: String,
}

impl Source for Member {
    async fn next(&mut self, stop: &Stop) -> Result<Vec<Item>, ApiError> {
        let polled = self
            .broker
            .poll_until(
                &self.group,
                &self.member,
                POLL_BYTES_DEFAULT,
                sse::SOURCE_WAIT,
                stop.wait(),
            )
            .await?;
        wire::received(polled.topic.as_str(), &self.group, polled.entries.iter());
        polled
            .entries
            .iter()
            .map(|entry| {
                wire::delivered(entry);
                Item::at_offset(
                    entry.partition.0,
                    entry.offset.0,
                    &wire::stored_event(entry)?,
                )
            })
            .collect()
    }
}

/// `POST /v1/groups/{group}/members/{member}/commit`: `{"offsets": {"0": 12}}`
/// commits, per partition, the offset of the next event to read.
pub(crate) async fn commit(
    State(api): State<Api>,
    PathJson((name, member)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<StatusCode, ApiError> {
    let commit: CommitRequest = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let offsets: Vec<(PartitionId, Offset)> = commit
        .offsets
        .into_iter()
        .map(|(p, o)| (PartitionId(p), Offset(o)))
        .collect();
    let broker = Arc::clone(api.broker());
    blocking(move || Ok(broker.commit(&name, &member, &offsets)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/groups/{group}/reset`: moves the committed offsets of a group with
/// no members to `earliest`, `latest`, an offset or a time (replay).
pub(crate) async fn reset(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Group>, ApiError> {
    let reset: ResetRequest = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let to = wire::parse_start(Some(&reset.to))?;
    let broker = Arc::clone(api.broker());
    let d = blocking(move || {
        broker.reset_offsets(&name, to)?;
        Ok(broker.describe_group(&name)?)
    })
    .await?;
    tracing::info!(group = %d.group, to = %reset.to, "offsets reset");
    Ok(Json(group(d)))
}
