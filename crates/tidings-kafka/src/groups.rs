//! The group coordinator of Kafka's classic consumer-group protocol:
//! FindCoordinator, JoinGroup (with MEMBER_ID_REQUIRED), SyncGroup, Heartbeat,
//! LeaveGroup, and OffsetCommit/OffsetFetch on the broker's group offsets.
//!
//! Membership is the coordinator's, in memory, as in Kafka (members rejoin after
//! a restart). A group moves Empty → PreparingRebalance (members join; it waits
//! until every member has rejoined or the rebalance timeout passes, dropping
//! those that did not) → CompletingRebalance (the leader, chosen among the
//! members, received every member's metadata and computes the assignment) →
//! Stable (SyncGroup handed each member its part). A join, a leave or a session
//! timeout starts the next rebalance; the generation fences members of an older
//! one. Committed offsets are the broker's stream-group offsets, so a group that
//! commits over Kafka shows its lag over HTTP and in the CLI.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_broker::{CommittedOffset, GroupError};
use tidings_types::{Clock, Offset, PartitionId, TimestampMs};
use tokio::sync::oneshot;

use crate::{Shared, NODE_ID};

/// Session timeouts a member may ask for (Kafka's `group.min.session.timeout.ms`
/// is 6 s and its maximum 30 min; shorter ones are allowed here for tests and
/// for failure detection on one machine).
const SESSION_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// Most members (joined or with a handed-out id) in one group.
const MEMBERS_MAX: usize = 1000;
/// How often session timeouts and rebalance deadlines are checked.
pub(crate) const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

/// What a waiting JoinGroup is answered with.
struct Joined {
    generation: i32,
    protocol: String,
    leader: String,
    member_id: String,
    /// Every member's metadata for the chosen protocol; the leader's only.
    members: Vec<(String, Bytes)>,
}

type JoinReply = oneshot::Sender<Result<Joined, ResponseError>>;
type SyncReply = oneshot::Sender<Result<Bytes, ResponseError>>;

struct Member {
    session: Duration,
    rebalance: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: TimestampMs,
    join: Option<JoinReply>,
    sync: Option<SyncReply>,
    assignment: Bytes,
}

struct Group {
    name: String,
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    /// In join order.
    members: BTreeMap<u64, (String, Member)>,
    /// Ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending: HashMap<String, TimestampMs>,
    deadline: TimestampMs,
    next_seq: u64,
}

impl Group {
    fn new(name: &str, now: TimestampMs) -> Group {
        Group {
            name: name.to_owned(),
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            deadline: now,
            next_seq: 0,
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members
            .values_mut()
            .find(|(m, _)| m == id)
            .map(|(_, m)| m)
    }

    fn remove(&mut self, id: &str) -> Option<Member> {
        let seq = *self.members.iter().find(|(_, (m, _))| m == id)?.0;
        self.members.remove(&seq).map(|(_, m)| m)
    }

    /// Starts a rebalance: members must rejoin within the longest rebalance
    /// timeout; members waiting for their assignment learn they must rejoin.
    fn prepare_rebalance(&mut self, now: TimestampMs) {
        for (_, m) in self.members.values_mut() {
            if let Some(sync) = m.sync.take() {
                let _ = sync.send(Err(ResponseError::RebalanceInProgress));
            }
        }
        let longest = self
            .members
            .values()
            .map(|(_, m)| m.rebalance)
            .max()
            .unwrap_or_default();
        self.state = State::PreparingRebalance;
        self.deadline = now.plus(longest);
    }

    /// Finishes the join phase once every member has rejoined, or when `force`d
    /// at the deadline, dropping members that did not.
    fn try_complete_join(&mut self, now: TimestampMs, force: bool) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_in = self.members.values().all(|(_, m)| m.join.is_some());
        if !all_in && !force {
            return;
        }
        let name = &self.name;
        self.members.retain(|_, (id, m)| {
            if m.join.is_none() {
                tracing::info!(group = %name, member = %id, "Kafka group member did not rejoin in time; dropped");
            }
            m.join.is_some()
        });
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            return;
        }
        // The first protocol of the first member that every member supports.
        let (_, first) = self.members.values().next().expect("not empty");
        let protocol = first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|(_, m)| m.protocols.iter().any(|(p, _)| p == name))
            });
        let Some(protocol) = protocol else {
            // Checked at each join, so only reachable if members changed
            // protocols meanwhile: everyone must rejoin.
            for (_, m) in self.members.values_mut() {
                if let Some(join) = m.join.take() {
                    let _ = join.send(Err(ResponseError::InconsistentGroupProtocol));
                }
            }
            self.members.clear();
            self.state = State::Empty;
            return;
        };
        let leader = match &self.leader {
            Some(l) if self.members.values().any(|(id, _)| id == l) => l.clone(),
            _ => self.members.values().next().expect("not empty").0.clone(),
        };
        let metadata: Vec<(String, Bytes)> = self
            .members
            .values()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(p, _)| *p == protocol)
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        tracing::info!(
            group = %self.name,
            generation = self.generation,
            members = self.members.len(),
            leader = %leader,
            "Kafka group rebalanced"
        );
        self.protocol.clone_from(&protocol);
        self.leader = Some(leader.clone());
        self.state = State::CompletingRebalance;
        for (id, m) in self.members.values_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(join) = m.join.take() {
                let _ = join.send(Ok(Joined {
                    generation: self.generation,
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        metadata.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
    }

    /// Drops members whose session ran out (not those waiting in a join) and
    /// expired ids; rebalances when a member went.
    fn expire(&mut self, now: TimestampMs) {
        self.pending.retain(|_, until| *until > now);
        let before = self.members.len();
        self.members.retain(|_, (id, m)| {
            let alive = m.join.is_some() || now.since(m.last_seen) <= m.session;
            if !alive {
                tracing::info!(group = %self.name, member = %id, "Kafka group member's session timed out");
            }
            alive
        });
        if self.members.len() != before {
            self.member_left(now);
        }
        if self.state == State::PreparingRebalance && now >= self.deadline {
            self.try_complete_join(now, true);
        }
    }

    fn member_left(&mut self, now: TimestampMs) {
        match self.state {
            State::Stable | State::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = State::Empty;
                    self.generation = self.generation.wrapping_add(1).max(1);
                    self.leader = None;
                } else {
                    self.prepare_rebalance(now);
                }
            }
            State::PreparingRebalance => self.try_complete_join(now, false),
            State::Empty => {}
        }
    }

    /// Checks a member and its generation; `Ok` with the state.
    fn check(
        &mut self,
        member: &str,
        generation: i32,
        now: TimestampMs,
    ) -> Result<State, ResponseError> {
        let current = self.generation;
        let m = self.member(member).ok_or(ResponseError::UnknownMemberId)?;
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        m.last_seen = now;
        Ok(self.state)
    }
}

/// Every group the coordinator knows. Sessions and rebalance deadlines run on
/// the broker's clock.
pub(crate) struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Coordinator {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Coordinator {
        Coordinator {
            groups: Mutex::default(),
            next_member: AtomicU64::new(0),
            clock,
        }
    }

    fn now(&self) -> TimestampMs {
        self.clock.now()
    }

    /// Checks sessions and rebalance deadlines of every group.
    pub(crate) fn tick(&self) {
        let now = self.now();
        let mut groups = self.groups.lock().expect("groups lock");
        for g in groups.values_mut() {
            g.expire(now);
        }
        groups.retain(|_, g| g.state != State::Empty || !g.pending.is_empty());
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
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
) -> JoinGroupResponse {
    let failed = |code: ResponseError, member_id: &str| {
        JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            .with_member_id(text(member_id))
    };
    let group_id = request.group_id.0.as_str().to_owned();
    let session = Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
    let rebalance = if version >= 1 {
        Duration::from_millis(u64::try_from(request.rebalance_timeout_ms).unwrap_or(0))
    } else {
        session
    };
    if group_id.is_empty() {
        return failed(ResponseError::InvalidGroupId, "");
    }
    if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&session) {
        return failed(
            ResponseError::InvalidSessionTimeout,
            request.member_id.as_str(),
        );
    }
    let protocols: Vec<(String, Bytes)> = request
        .protocols
        .iter()
        .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
        .collect();
    let protocol_type = request.protocol_type.as_str().to_owned();
    if protocols.is_empty() || protocol_type.is_empty() {
        return failed(
            ResponseError::InconsistentGroupProtocol,
            request.member_id.as_str(),
        );
    }
    let now = shared.coordinator.now();
    let rx = {
        let mut groups = shared.coordinator.groups.lock().expect("groups lock");
        let g = groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id, now));
        g.expire(now);
        if !g.members.is_empty() {
            let shares = protocols.iter().any(|(name, _)| {
                g.members
                    .values()
                    .all(|(_, m)| m.protocols.iter().any(|(p, _)| p == name))
            });
            if g.protocol_type != protocol_type || !shares {
                return failed(
                    ResponseError::InconsistentGroupProtocol,
                    request.member_id.as_str(),
                );
            }
        }
        let mut member_id = request.member_id.as_str().to_owned();
        let known = g.member(&member_id).is_some();
        if member_id.is_empty() {
            if g.members.len() + g.pending.len() >= MEMBERS_MAX {
                return failed(ResponseError::GroupMaxSizeReached, "");
            }
            let n = shared
                .coordinator
                .next_member
                .fetch_add(1, Ordering::Relaxed);
            member_id = format!(
                "{client_id}-{:x}-{n}",
                uuid::Uuid::now_v7().as_u128() as u64
            );
            if version >= 4 {
                // The client rejoins with this id; only then is it a member.
                g.pending.insert(member_id.clone(), now.plus(session));
                return failed(ResponseError::MemberIdRequired, &member_id);
            }
        } else if !known && g.pending.remove(&member_id).is_none() {
            return failed(ResponseError::UnknownMemberId, &member_id);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = g.member(&member_id) {
            m.protocols = protocols;
            m.session = session;
            m.rebalance = rebalance;
            m.last_seen = now;
            if let Some(old) = m.join.replace(tx) {
                tracing::debug!(group = %group_id, member = %member_id, "a newer join replaces a pending one");
                let _ = old.send(Err(ResponseError::UnknownMemberId));
            }
        } else {
            let seq = g.next_seq;
            g.next_seq += 1;
            g.members.insert(
                seq,
                (
                    member_id.clone(),
                    Member {
                        session,
                        rebalance,
                        protocols,
                        last_seen: now,
                        join: Some(tx),
                        sync: None,
                        assignment: Bytes::new(),
                    },
                ),
            );
        }
        g.protocol_type = protocol_type;
        if g.state != State::PreparingRebalance {
            g.prepare_rebalance(now);
        } else {
            let longest = now.plus(rebalance);
            if longest > g.deadline {
                g.deadline = longest;
            }
        }
        g.try_complete_join(now, false);
        rx
    };
    match rx.await {
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
        Ok(Err(code)) => failed(code, request.member_id.as_str()),
        Err(_) => failed(ResponseError::UnknownMemberId, request.member_id.as_str()),
    }
}

pub(crate) async fn sync_group(shared: &Shared, request: SyncGroupRequest) -> SyncGroupResponse {
    let failed = |code: ResponseError| SyncGroupResponse::default().with_error_code(code.code());
    let member = request.member_id.as_str();
    let now = shared.coordinator.now();
    let rx = {
        let mut groups = shared.coordinator.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(request.group_id.0.as_str()) else {
            return failed(ResponseError::UnknownMemberId);
        };
        let state = match g.check(member, request.generation_id, now) {
            Ok(state) => state,
            Err(code) => return failed(code),
        };
        match state {
            State::PreparingRebalance | State::Empty => {
                return failed(ResponseError::RebalanceInProgress)
            }
            State::Stable => {
                let assignment = g.member(member).expect("checked").assignment.clone();
                return SyncGroupResponse::default().with_assignment(assignment);
            }
            State::CompletingRebalance => {}
        }
        if g.leader.as_deref() == Some(member) {
            let mut given: HashMap<&str, &Bytes> = request
                .assignments
                .iter()
                .map(|a| (a.member_id.as_str(), &a.assignment))
                .collect();
            for (id, m) in g.members.values_mut() {
                m.assignment = given.remove(id.as_str()).cloned().unwrap_or_default();
                if let Some(sync) = m.sync.take() {
                    let _ = sync.send(Ok(m.assignment.clone()));
                }
            }
            g.state = State::Stable;
            let assignment = g.member(member).expect("checked").assignment.clone();
            return SyncGroupResponse::default().with_assignment(assignment);
        }
        let (tx, rx) = oneshot::channel();
        g.member(member).expect("checked").sync = Some(tx);
        rx
    };
    match rx.await {
        Ok(Ok(assignment)) => SyncGroupResponse::default().with_assignment(assignment),
        Ok(Err(code)) => failed(code),
        Err(_) => failed(ResponseError::RebalanceInProgress),
    }
}

pub(crate) fn heartbeat(shared: &Shared, request: &HeartbeatRequest) -> HeartbeatResponse {
    let mut groups = shared.coordinator.groups.lock().expect("groups lock");
    let code = match groups.get_mut(request.group_id.0.as_str()) {
        None => Some(ResponseError::UnknownMemberId),
        Some(g) => match g.check(
            request.member_id.as_str(),
            request.generation_id,
            shared.coordinator.now(),
        ) {
            Err(code) => Some(code),
            Ok(State::PreparingRebalance) => Some(ResponseError::RebalanceInProgress),
            Ok(_) => None,
        },
    };
    HeartbeatResponse::default().with_error_code(code.map_or(0, |c| c.code()))
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
    let now = shared.coordinator.now();
    let mut groups = shared.coordinator.groups.lock().expect("groups lock");
    let mut answers = Vec::with_capacity(ids.len());
    let mut any_known = false;
    if let Some(g) = groups.get_mut(request.group_id.0.as_str()) {
        for id in &ids {
            let gone = g.remove(id);
            if let Some(mut m) = gone {
                any_known = true;
                if let Some(join) = m.join.take() {
                    let _ = join.send(Err(ResponseError::UnknownMemberId));
                }
                answers.push((id.clone(), 0));
            } else {
                answers.push((id.clone(), ResponseError::UnknownMemberId.code()));
            }
        }
        if any_known {
            g.member_left(now);
        }
    } else {
        answers = ids
            .iter()
            .map(|id| (id.clone(), ResponseError::UnknownMemberId.code()))
            .collect();
    }
    let mut out = LeaveGroupResponse::default();
    if version >= 3 {
        out.members = answers
            .into_iter()
            .map(|(id, code)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(id))
                    .with_error_code(code)
            })
            .collect();
    } else if !any_known {
        out.error_code = ResponseError::UnknownMemberId.code();
    }
    out
}

pub(crate) async fn offset_commit(
    shared: &Shared,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.as_str().to_owned();
    let member = request.member_id.as_str();
    let generation = request.generation_id_or_member_epoch;
    // A member of a generation, or a consumer that assigns its own partitions
    // (generation -1, no member id), which only a group without members accepts.
    let refused = {
        let mut groups = shared.coordinator.groups.lock().expect("groups lock");
        match groups.get_mut(&group) {
            _ if group.is_empty() => Some(ResponseError::InvalidGroupId),
            Some(g) if generation >= 0 || !member.is_empty() => {
                match g.check(member, generation, shared.coordinator.now()) {
                    Err(code) => Some(code),
                    Ok(State::CompletingRebalance) => Some(ResponseError::RebalanceInProgress),
                    Ok(_) => None,
                }
            }
            Some(g) if !g.members.is_empty() => Some(ResponseError::IllegalGeneration),
            None if generation >= 0 || !member.is_empty() => Some(ResponseError::UnknownMemberId),
            _ => None,
        }
    };
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
        let committed =
            tokio::task::spawn_blocking(move || broker.commit_offsets(&g, commits)).await;
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

#[cfg(test)]
mod tests {

    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::GroupId;
    use tidings_broker::{Broker, BrokerOptions};
    use tidings_types::ManualClock;

    use super::*;
    use crate::KafkaConfig;

    /// A listener's shared state on a broker whose clock the test moves.
    fn shared(dir: &std::path::Path) -> (Arc<Shared>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)));
        let options = BrokerOptions {
            log: tidings_broker::LogOptions {
                clock: clock.clone(),
                ..Default::default()
            },
            ..BrokerOptions::default()
        };
        let broker = Arc::new(Broker::open(dir, options).unwrap());
        let shared = Arc::new(Shared {
            coordinator: Coordinator::new(Arc::clone(broker.clock())),
            broker,
            config: KafkaConfig::default(),
            advertised: crate::Advertised {
                host: "127.0.0.1".into(),
                port: 9092,
            },
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        (shared, clock)
    }

    fn join_request(member: &str) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_session_timeout_ms(1000)
            .with_rebalance_timeout_ms(5000)
            .with_member_id(text(member))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"meta"))])
    }

    /// A new member: MEMBER_ID_REQUIRED, then the join proper (spawned, as it
    /// waits for the rebalance). Returns the member id and the pending join.
    async fn join(
        s: &Arc<Shared>,
        id: Option<&str>,
    ) -> (String, tokio::task::JoinHandle<JoinGroupResponse>) {
        let id = match id {
            Some(id) => id.to_owned(),
            None => {
                let first = join_group(s, join_request(""), 5, "client").await;
                assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
                first.member_id.as_str().to_owned()
            }
        };
        let s2 = Arc::clone(s);
        let request = join_request(&id);
        let handle = tokio::spawn(async move { join_group(&s2, request, 5, "client").await });
        // Until the join is registered (or already answered).
        while !handle.is_finished() && !joining(s, &id) {
            tokio::task::yield_now().await;
        }
        (id, handle)
    }

    fn joining(s: &Shared, id: &str) -> bool {
        let mut groups = s.coordinator.groups.lock().unwrap();
        groups
            .get_mut("g")
            .and_then(|g| g.member(id))
            .is_some_and(|m| m.join.is_some())
    }

    fn heartbeat_code(s: &Shared, member: &str, generation: i32) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_member_id(text(member))
            .with_generation_id(generation);
        heartbeat(s, &request).error_code
    }

    async fn sync(s: &Shared, member: &str, generation: i32, assign: &[&str]) -> SyncGroupResponse {
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_member_id(text(member))
            .with_generation_id(generation)
            .with_assignments(
                assign
                    .iter()
                    .map(|m| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(text(m))
                            .with_assignment(Bytes::from(format!("for {m}")))
                    })
                    .collect(),
            );
        sync_group(s, request).await
    }

    #[tokio::test]
    async fn rebalances_on_join_and_on_session_timeout_and_fences_old_generations() {
        let dir = tempfile::tempdir().unwrap();
        let (s, clock) = shared(dir.path());
        // One member: generation 1, it leads and assigns itself.
        let (a, joining) = join(&s, None).await;
        let joined = joining.await.unwrap();
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.leader.as_str(), a);
        assert_eq!(joined.members.len(), 1);
        let synced = sync(&s, &a, 1, &[&a]).await;
        assert_eq!(synced.assignment, Bytes::from(format!("for {a}")));
        assert_eq!(heartbeat_code(&s, &a, 1), 0);

        // A second member joins: the first learns of the rebalance and rejoins.
        let (b, b_joining) = join(&s, None).await;
        assert_eq!(
            heartbeat_code(&s, &a, 1),
            ResponseError::RebalanceInProgress.code()
        );
        let (_, a_joining) = join(&s, Some(&a)).await;
        let (a2, b2) = (a_joining.await.unwrap(), b_joining.await.unwrap());
        assert_eq!((a2.generation_id, b2.generation_id), (2, 2));
        assert_eq!(a2.members.len(), 2, "the leader sees every member");
        assert!(b2.members.is_empty());
        // The follower's sync waits for the leader's.
        let s2 = Arc::clone(&s);
        let b_id = b.clone();
        let b_sync = tokio::spawn(async move { sync(&s2, &b_id, 2, &[]).await });
        sync(&s, &a, 2, &[&a, &b]).await;
        assert_eq!(
            b_sync.await.unwrap().assignment,
            Bytes::from(format!("for {b}"))
        );
        // A stale generation is fenced.
        assert_eq!(
            heartbeat_code(&s, &a, 1),
            ResponseError::IllegalGeneration.code()
        );

        // b goes silent while a heartbeats: past b's session (1 s) the tick
        // drops it and a rebalances alone.
        for _ in 0..3 {
            clock.advance(Duration::from_millis(500));
            assert_eq!(heartbeat_code(&s, &a, 2), 0);
        }
        s.coordinator.tick();
        assert_eq!(
            heartbeat_code(&s, &b, 2),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            heartbeat_code(&s, &a, 2),
            ResponseError::RebalanceInProgress.code()
        );
        let (_, a_joining) = join(&s, Some(&a)).await;
        let a3 = a_joining.await.unwrap();
        assert_eq!((a3.error_code, a3.generation_id), (0, 3));
        assert_eq!(a3.members.len(), 1);
    }

    #[tokio::test]
    async fn bad_joins_get_their_error_codes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _clock) = shared(dir.path());
        let unknown = join_group(&s, join_request("nobody"), 5, "c").await;
        assert_eq!(unknown.error_code, ResponseError::UnknownMemberId.code());
        let short = join_group(&s, join_request("").with_session_timeout_ms(1), 5, "c").await;
        assert_eq!(
            short.error_code,
            ResponseError::InvalidSessionTimeout.code()
        );
        let empty = join_group(&s, join_request("").with_protocols(vec![]), 5, "c").await;
        assert_eq!(
            empty.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
        // Version 3 has no MEMBER_ID_REQUIRED: the first join is the join.
        let old = join_group(&s, join_request(""), 3, "c").await;
        assert_eq!((old.error_code, old.generation_id), (0, 1));
        // A member with another protocol type cannot join that group.
        let other = join_group(
            &s,
            join_request("").with_protocol_type(text("connect")),
            3,
            "c",
        )
        .await;
        assert_eq!(
            other.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
    }
}
