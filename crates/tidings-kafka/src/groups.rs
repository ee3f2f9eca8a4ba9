//! The classic consumer-group protocol over the wire: FindCoordinator,
//! JoinGroup (with MEMBER_ID_REQUIRED), SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit and OffsetFetch, and the group admin APIs (ListGroups,
//! DescribeGroups, DeleteGroups, OffsetDelete).
//!
//! The groups themselves are the broker's (`Broker::kafka_join` and the
//! rest): one model for Kafka members and HTTP members, so a Kafka consumer
//! and an HTTP member of one group share its partitions and see each other.
//! This module turns requests into broker calls and the protocol's outcomes
//! into Kafka error codes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_broker::{ClassicError, CommittedOffset, GroupError, KafkaJoin, SyncOutcome};
use tidings_types::{Offset, PartitionId};

use crate::{Shared, NODE_ID};

/// How often sessions, rebalance deadlines and initial delays are checked.
pub(crate) const TICK: Duration = Duration::from_millis(100);

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// The Kafka error code of a protocol outcome.
pub(crate) fn code(e: &ClassicError) -> ResponseError {
    match e {
        ClassicError::UnknownMemberId => ResponseError::UnknownMemberId,
        ClassicError::IllegalGeneration => ResponseError::IllegalGeneration,
        ClassicError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        ClassicError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        ClassicError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        ClassicError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        ClassicError::InvalidGroupId => ResponseError::InvalidGroupId,
        ClassicError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        ClassicError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        ClassicError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        ClassicError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        ClassicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub(crate) fn find_coordinator(
    shared: &Shared,
    request: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut out = FindCoordinatorResponse::default();
    if request.key_type != 0 {
        // A transaction coordinator: there is none. A code clients treat as
        // fatal, so a transactional producer stops with it at once.
        tracing::warn!(key = %request.key.as_str(), "{}", crate::produce::TRANSACTIONS_UNSUPPORTED);
        out.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        if version >= 1 {
            out.error_message = Some(text(crate::produce::TRANSACTIONS_UNSUPPORTED));
        }
        out.node_id = BrokerId(-1);
        out.port = -1;
        return out;
    }
    out.node_id = BrokerId(NODE_ID);
    out.host = StrBytes::from_string(shared.advertised.host.clone());
    out.port = i32::from(shared.advertised.port);
    out
}

pub(crate) async fn join_group(
    shared: &Shared,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let failed = |code: ResponseError, member_id: &str| {
        JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            .with_member_id(text(member_id))
    };
    let session = Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
    let rebalance = if version >= 1 {
        Duration::from_millis(u64::try_from(request.rebalance_timeout_ms).unwrap_or(0))
    } else {
        session
    };
    let join = KafkaJoin {
        member_id: request.member_id.as_str().to_owned(),
        client_id: client_id.to_owned(),
        client_host: client_host.to_owned(),
        session,
        rebalance,
        protocol_type: request.protocol_type.as_str().to_owned(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect(),
        require_member_id: version >= 4,
        initial_delay: shared.config.initial_rebalance_delay(),
    };
    let wait = match shared.broker.kafka_join(request.group_id.0.as_str(), join) {
        Ok(wait) => wait,
        Err(ClassicError::MemberIdRequired(id)) => {
            return failed(ResponseError::MemberIdRequired, &id)
        }
        Err(e) => return failed(code(&e), request.member_id.as_str()),
    };
    match wait.await {
        Ok(Ok(joined)) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_name(Some(StrBytes::from_string(joined.protocol)))
            .with_leader(StrBytes::from_string(joined.leader))
            .with_member_id(StrBytes::from_string(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Ok(Err(e)) => failed(code(&e), request.member_id.as_str()),
        Err(_) => failed(ResponseError::UnknownMemberId, request.member_id.as_str()),
    }
}

pub(crate) async fn sync_group(shared: &Shared, request: SyncGroupRequest) -> SyncGroupResponse {
    let failed = |code: ResponseError| SyncGroupResponse::default().with_error_code(code.code());
    let assignments: Vec<(String, Bytes)> = request
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_owned(), a.assignment.clone()))
        .collect();
    let outcome = shared.broker.kafka_sync(
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        request.generation_id,
        assignments,
    );
    let assignment = match outcome {
        Ok(SyncOutcome::Ready(bytes)) => Ok(bytes),
        Ok(SyncOutcome::Waiting(wait)) => match wait.await {
            Ok(answer) => answer,
            Err(_) => Err(ClassicError::RebalanceInProgress),
        },
        Err(e) => Err(e),
    };
    match assignment {
        Ok(bytes) => SyncGroupResponse::default().with_assignment(bytes),
        Err(e) => failed(code(&e)),
    }
}

pub(crate) fn heartbeat(shared: &Shared, request: &HeartbeatRequest) -> HeartbeatResponse {
    let answer = shared.broker.kafka_heartbeat(
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(answer.err().map_or(0, |e| code(&e).code()))
}

pub(crate) fn leave_group(
    shared: &Shared,
    request: &LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let ids: Vec<String> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| m.member_id.as_str().to_owned())
            .collect()
    } else {
        vec![request.member_id.as_str().to_owned()]
    };
    let answers = shared.broker.kafka_leave(request.group_id.0.as_str(), &ids);
    let mut out = LeaveGroupResponse::default();
    if version >= 3 {
        out.members = ids
            .into_iter()
            .zip(answers)
            .map(|(id, answer)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(id))
                    .with_error_code(answer.err().map_or(0, |e| code(&e).code()))
            })
            .collect();
    } else if answers.iter().all(Result::is_err) {
        out.error_code = ResponseError::UnknownMemberId.code();
    }
    out
}

pub(crate) async fn offset_commit(
    shared: &Shared,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.as_str().to_owned();
    let member = request.member_id.as_str().to_owned();
    let generation = request.generation_id_or_member_epoch;
    // Checked here for the codes of a request refused whole; checked again
    // with the store, under the group's lock.
    let refused = shared
        .broker
        .kafka_commit_allowed(&group, &member, generation)
        .err()
        .map(|e| code(&e));
    // Every well-formed offset of the request goes to the broker in one
    // durable write; each partition gets its own answer.
    let mut answers: Vec<Vec<Option<ResponseError>>> = Vec::with_capacity(request.topics.len());
    let mut commits = Vec::new();
    let mut slots = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = tidings_types::TopicName::new(topic.name.0.as_str());
        let mut codes = Vec::with_capacity(topic.partitions.len());
        for (p, partition) in topic.partitions.iter().enumerate() {
            let index = u32::try_from(partition.partition_index).ok();
            let offset = u64::try_from(partition.committed_offset).ok();
            let code = match (refused, &name, index, offset) {
                (Some(code), ..) => Some(code),
                (None, Err(_), ..) => Some(ResponseError::UnknownTopicOrPartition),
                (None, Ok(_), None, _) => Some(ResponseError::UnknownTopicOrPartition),
                (None, Ok(_), _, None) => Some(ResponseError::InvalidCommitOffsetSize),
                (None, Ok(name), Some(index), Some(offset)) => {
                    commits.push(CommittedOffset {
                        topic: name.clone(),
                        partition: PartitionId(index),
                        offset: Offset(offset),
                        metadata: partition
                            .committed_metadata
                            .as_ref()
                            .map_or_else(String::new, |m| m.as_str().to_owned()),
                    });
                    slots.push((t, p));
                    None
                }
            };
            codes.push(code);
        }
        answers.push(codes);
    }
    if !commits.is_empty() {
        let broker = Arc::clone(&shared.broker);
        let g = group.clone();
        let committed = tokio::task::spawn_blocking(move || {
            broker.commit_offsets(&g, Some((&member, generation)), commits)
        })
        .await;
        let codes: Vec<Option<ResponseError>> = match committed {
            Ok(Ok(each)) => each
                .into_iter()
                .map(|answer| answer.err().map(|e| commit_code(&group, &e)))
                .collect(),
            Ok(Err(e)) => vec![Some(commit_code(&group, &e)); slots.len()],
            Err(_) => vec![Some(ResponseError::UnknownServerError); slots.len()],
        };
        for ((t, p), code) in slots.into_iter().zip(codes) {
            answers[t][p] = code;
        }
    }
    let topics = request
        .topics
        .into_iter()
        .zip(answers)
        .map(|(topic, codes)| {
            OffsetCommitResponseTopic::default()
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .zip(codes)
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code.map_or(0, |c| c.code()))
                        })
                        .collect(),
                )
                .with_name(topic.name)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The Kafka error code of a refused commit.
fn commit_code(group: &str, e: &GroupError) -> ResponseError {
    match e {
        GroupError::MetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        GroupError::Fenced(e) => code(e),
        e => {
            if e.kind() == tidings_types::ErrorKind::StorageFailed {
                tracing::error!(group, error = %e, "Kafka offset commit failed");
            }
            crate::errors::code(e.kind())
        }
    }
}

pub(crate) fn offset_fetch(shared: &Shared, request: &OffsetFetchRequest) -> OffsetFetchResponse {
    let committed = shared
        .broker
        .committed_offsets(request.group_id.0.as_str())
        .unwrap_or_default();
    let lookup = |topic: &str, partition: i32| -> (i64, &str) {
        committed
            .iter()
            .find(|c| c.topic.as_str() == topic && i64::from(c.partition.0) == i64::from(partition))
            .map_or((-1, ""), |c| {
                (
                    i64::try_from(c.offset.0).unwrap_or(i64::MAX),
                    c.metadata.as_str(),
                )
            })
    };
    let wanted: Vec<(String, Vec<i32>)> = match &request.topics {
        Some(topics) => topics
            .iter()
            .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
            .collect(),
        // Every topic the group has offsets for.
        None => {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for c in &committed {
                if let Ok(p) = i32::try_from(c.partition.0) {
                    by_topic.entry(c.topic.to_string()).or_default().push(p);
                }
            }
            by_topic.into_iter().collect()
        }
    };
    let topics = wanted
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    let (offset, metadata) = lookup(&name, p);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_metadata(Some(StrBytes::from_string(metadata.to_owned())))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// ListGroups: every group, Kafka's and HTTP members' alike, filtered by state
/// (v4+) and by type (v5+: they are all "classic").
pub(crate) fn list_groups(
    shared: &Shared,
    request: &ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let classic_wanted = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case("classic"));
    if !classic_wanted {
        return ListGroupsResponse::default();
    }
    let groups = shared
        .broker
        .kafka_list_groups()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .map(|g| {
            let mut out = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if version >= 4 {
                out.group_state = StrBytes::from_static_str(g.state);
            }
            if version >= 5 {
                out.group_type = StrBytes::from_static_str("classic");
            }
            out
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups: state, protocol and members (with their subscriptions
/// and assignments) of each group; a group that does not exist is "Dead"
/// (v6 answers GROUP_ID_NOT_FOUND for it, as Kafka does).
pub(crate) fn describe_groups(
    shared: &Shared,
    request: &DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let d = shared.broker.kafka_describe_group(id.0.as_str());
            let mut out = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(StrBytes::from_static_str(d.state))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member))
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                );
            if version >= 6 && d.state == "Dead" {
                out.error_code = ResponseError::GroupIdNotFound.code();
                out.error_message = Some(text(&format!("group {} does not exist", id.0.as_str())));
            }
            out
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: each group without members, with its committed offsets.
pub(crate) async fn delete_groups(
    shared: &Arc<Shared>,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in request.groups_names {
        let broker = Arc::clone(&shared.broker);
        let name = id.0.as_str().to_owned();
        let deleted = tokio::task::spawn_blocking(move || broker.kafka_delete_group(&name))
            .await
            .unwrap_or_else(|e| Err(ClassicError::Storage(e.to_string())));
        let out = DeletableGroupResult::default().with_group_id(id.clone());
        results.push(match deleted {
            Ok(()) => {
                tracing::info!(group = %id.0.as_str(), "group deleted through the Kafka listener");
                out
            }
            Err(e) => out.with_error_code(code(&e).code()),
        });
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete: forgets a group's offsets of partitions its members do not
/// subscribe to.
pub(crate) async fn offset_delete(
    shared: &Arc<Shared>,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let asked: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.as_str().to_owned(), p.partition_index))
        })
        .collect();
    let broker = Arc::clone(&shared.broker);
    let group = request.group_id.0.as_str().to_owned();
    let list = asked.clone();
    let answered = tokio::task::spawn_blocking(move || broker.kafka_delete_offsets(&group, &list))
        .await
        .unwrap_or_else(|e| Err(ClassicError::Storage(e.to_string())));
    let answers = match answered {
        Ok(answers) => answers,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(code(&e).code()),
    };
    let mut answers = answers.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let answer = answers.next().unwrap_or(Ok(()));
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(answer.err().map_or(0, |e| code(&e).code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
