//! The Kafka listener's side of a group: the classic protocol's JoinGroup
//! (with MEMBER_ID_REQUIRED), SyncGroup, Heartbeat and LeaveGroup, the checks
//! on an OffsetCommit, and what the admin APIs list and describe. The answers
//! are the protocol's outcomes (`ClassicError`), which the listener turns
//! into Kafka error codes.

use std::time::Duration;

use bytes::Bytes;
use tidings_types::TopicName;
use tokio::sync::oneshot;

use super::members::{Group, Initial, KafkaMember, Kind, Member, State};
use super::{ms, protocol, GroupError};
use crate::{Broker, GroupName};

/// Session timeouts a Kafka member may ask for (Kafka's
/// `group.min.session.timeout.ms` is 6 s and its maximum 30 min; shorter ones
/// are allowed here for tests and for failure detection on one machine).
pub const KAFKA_SESSION_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// See [`KAFKA_SESSION_TIMEOUT_MIN`].
pub const KAFKA_SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// Most members (joined or with a handed-out id) in one group.
pub const GROUP_MEMBERS_MAX: usize = 1000;

/// The classic group protocol's answers other than success.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    /// The member is not in the group (it left, timed out, or the server
    /// restarted).
    #[error("unknown member")]
    UnknownMemberId,
    /// The member is of another generation.
    #[error("illegal generation")]
    IllegalGeneration,
    /// A rebalance is under way: rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// The member shares no protocol (or protocol type) with the group.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// The session timeout is out of range.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// The group has [`GROUP_MEMBERS_MAX`] members.
    #[error("the group is full")]
    GroupMaxSizeReached,
    /// The group id is not a valid name.
    #[error("invalid group id")]
    InvalidGroupId,
    /// Join again with this member id (JoinGroup v4+).
    #[error("member id required")]
    MemberIdRequired(String),
    /// The group has members (DeleteGroups).
    #[error("the group has members")]
    NonEmptyGroup,
    /// No such group (DeleteGroups).
    #[error("no such group")]
    GroupIdNotFound,
    /// The group's members subscribe to the topic (OffsetDelete).
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// Storing failed.
    #[error("{0}")]
    Storage(String),
}

/// A Kafka member's JoinGroup.
#[derive(Clone, Debug)]
pub struct KafkaJoin {
    /// Empty for a new member.
    pub member_id: String,
    /// The client's id and address, as DescribeGroups shows them.
    pub client_id: String,
    /// See `client_id`.
    pub client_host: String,
    /// The session timeout.
    pub session: Duration,
    /// How long a rebalance waits for it to rejoin.
    pub rebalance: Duration,
    /// "consumer" for Kafka consumers.
    pub protocol_type: String,
    /// The assignors it offers, each with its subscription metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets an id and joins again with it.
    pub require_member_id: bool,
    /// How long a new group waits for more members before its first
    /// generation (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_delay: Duration,
}

/// What a completed join tells a Kafka member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// The assignor chosen.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's own id.
    pub member_id: String,
    /// Every member's subscription, for the leader only.
    pub members: Vec<(String, Bytes)>,
}

/// The answer to a JoinGroup, once the rebalance completes.
pub type JoinWait = oneshot::Receiver<Result<Joined, ClassicError>>;
/// The answer to a follower's SyncGroup, once the leader's arrives.
pub type SyncWait = oneshot::Receiver<Result<Bytes, ClassicError>>;

/// A SyncGroup's answer: the assignment now, or once the leader sends it.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The member's assignment.
    Ready(Bytes),
    /// Waiting for the leader.
    Waiting(SyncWait),
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group.
    pub group: String,
    /// "consumer" for groups of Kafka consumers and of HTTP members; another
    /// Kafka protocol type as its members said; empty for a group with
    /// offsets and no members.
    pub protocol_type: String,
    /// Kafka's name of its state.
    pub state: &'static str,
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    /// The member id.
    pub member: String,
    /// The Kafka client id, or "tidings-http" for an HTTP member.
    pub client_id: String,
    /// The client's address, as far as the broker knows it.
    pub client_host: String,
    /// Its subscription for the group's protocol.
    pub metadata: Bytes,
    /// Its assignment, in the consumer protocol.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    /// Kafka's name of its state; "Dead" when there is no such group.
    pub state: &'static str,
    /// See [`ListedGroup::protocol_type`].
    pub protocol_type: String,
    /// The assignor of this generation.
    pub protocol: String,
    /// Its members.
    pub members: Vec<DescribedMember>,
}

/// The client id HTTP members show as.
pub const HTTP_CLIENT_ID: &str = "tidings-http";

/// The consumer-protocol assignment of `partitions` (version 0).
fn encode_assignment(partitions: &[(TopicName, u32)]) -> Bytes {
    use bytes::BufMut;
    let mut by_topic: std::collections::BTreeMap<&TopicName, Vec<u32>> = Default::default();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut out = bytes::BytesMut::new();
    out.put_i16(0);
    out.put_i32(i32::try_from(by_topic.len()).expect("bounded"));
    for (t, ps) in by_topic {
        let name = t.as_str().as_bytes();
        out.put_i16(i16::try_from(name.len()).expect("short"));
        out.put_slice(name);
        out.put_i32(i32::try_from(ps.len()).expect("bounded"));
        for p in ps {
            out.put_i32(i32::try_from(p).expect("bounded"));
        }
    }
    out.put_i32(-1);
    out.freeze()
}

impl Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now().0
    }

    /// JoinGroup. Returns the answer to wait for, which comes when the
    /// rebalance completes.
    pub fn kafka_join(&self, group: &str, join: KafkaJoin) -> Result<JoinWait, ClassicError> {
        let name = GroupName::new(group).map_err(|_| ClassicError::InvalidGroupId)?;
        if !(KAFKA_SESSION_TIMEOUT_MIN..=KAFKA_SESSION_TIMEOUT_MAX).contains(&join.session) {
            return Err(ClassicError::InvalidSessionTimeout);
        }
        if join.protocols.is_empty() || join.protocol_type.is_empty() {
            return Err(ClassicError::InconsistentGroupProtocol);
        }
        let now = self.now_ms();
        let g = self.groups.live(&name);
        let mut g = g.lock().expect("group lock");
        if g.deleted {
            drop(g);
            return self.kafka_join(group, join);
        }
        self.expire(&mut g, now);
        if let Some(current) = &g.protocol_type {
            let shares = join.protocols.iter().any(|(name, _)| {
                g.members.values().all(|m| match &m.kind {
                    Kind::Kafka(k) => k.protocols.iter().any(|(p, _)| p == name),
                    Kind::Http(_) => true,
                })
            });
            if *current != join.protocol_type || !shares {
                return Err(ClassicError::InconsistentGroupProtocol);
            }
        } else if join.protocol_type != "consumer"
            && g.members.values().any(|m| matches!(m.kind, Kind::Http(_)))
        {
            return Err(ClassicError::InconsistentGroupProtocol);
        }
        let mut member_id = join.member_id.clone();
        let known = g.has_member(&member_id);
        if member_id.is_empty() {
            if g.members.len() + g.pending.len() >= GROUP_MEMBERS_MAX {
                return Err(ClassicError::GroupMaxSizeReached);
            }
            let n = self
                .groups
                .next_member
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            member_id = format!("{}-{:x}-{n}", join.client_id, self.started_ms);
            if join.require_member_id {
                // The client rejoins with this id; only then is it a member.
                g.pending
                    .insert(member_id.clone(), now.saturating_add(ms(join.session)));
                return Err(ClassicError::MemberIdRequired(member_id));
            }
        } else if !known && g.pending.remove(&member_id).is_none() {
            return Err(ClassicError::UnknownMemberId);
        }
        let (tx, rx) = oneshot::channel();
        let was_empty = g.state == State::Empty;
        // Only consumers' metadata is a subscription; other protocol types
        // (Connect workers) read no topics here.
        let subscribed = if join.protocol_type == "consumer" {
            join.protocols
                .first()
                .and_then(|(_, meta)| protocol::subscription_topics(meta))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if let Some(m) = g.member(&member_id) {
            m.session_ms = ms(join.session);
            m.rebalance_ms = ms(join.rebalance);
            m.last_seen = now;
            let k = m.kafka().ok_or(ClassicError::UnknownMemberId)?;
            k.subscribed = subscribed;
            k.protocols = join.protocols;
            if let Some(old) = k.join.replace(tx) {
                tracing::debug!(group, member = %member_id, "a newer join replaces a pending one");
                let _ = old.send(Err(ClassicError::UnknownMemberId));
            }
        } else {
            g.insert(Member {
                id: member_id.clone(),
                session_ms: ms(join.session),
                rebalance_ms: ms(join.rebalance),
                last_seen: now,
                owned: Vec::new(),
                kind: Kind::Kafka(KafkaMember {
                    client_id: join.client_id,
                    client_host: join.client_host,
                    protocols: join.protocols,
                    subscribed,
                    join: Some(tx),
                    sync: None,
                    assignment: Bytes::new(),
                }),
            });
        }
        g.protocol_type = Some(join.protocol_type);
        let delay = ms(join.initial_delay);
        if g.state != State::PreparingRebalance {
            self.prepare_rebalance(&mut g, now);
            if was_empty && delay > 0 {
                let cap = now.saturating_add(ms(join.rebalance));
                g.initial = Some(Initial {
                    until: now.saturating_add(delay).min(cap),
                    cap,
                    delay_ms: delay,
                });
            }
        } else {
            let longest = now.saturating_add(ms(join.rebalance));
            g.deadline = g.deadline.max(longest);
            if let Some(initial) = &mut g.initial {
                // Each new member waits a delay more, up to the cap.
                initial.until = now.saturating_add(initial.delay_ms).min(initial.cap);
            }
        }
        self.try_complete_join(&mut g, now, false);
        Ok(rx)
    }

    /// SyncGroup. The leader's assignments (for every member, HTTP members
    /// included) complete the rebalance; a follower waits for them.
    pub fn kafka_sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncOutcome, ClassicError> {
        let now = self.now_ms();
        let g = self
            .groups
            .get(group)
            .ok_or(ClassicError::UnknownMemberId)?;
        let mut g = g.lock().expect("group lock");
        match g.check(member, generation, now)? {
            State::PreparingRebalance | State::Empty => {
                return Err(ClassicError::RebalanceInProgress)
            }
            State::Stable => {
                let m = g.member(member).expect("checked");
                let k = m.kafka().ok_or(ClassicError::UnknownMemberId)?;
                return Ok(SyncOutcome::Ready(k.assignment.clone()));
            }
            State::CompletingRebalance => {}
        }
        if g.leader.as_deref() != Some(member) {
            let (tx, rx) = oneshot::channel();
            let m = g.member(member).expect("checked");
            m.kafka().ok_or(ClassicError::UnknownMemberId)?.sync = Some(tx);
            return Ok(SyncOutcome::Waiting(rx));
        }
        let mut given: std::collections::HashMap<String, Bytes> = assignments.into_iter().collect();
        let consumer = g.protocol_type.as_deref() == Some("consumer");
        let counts = self.partition_counts(&g);
        let previous = std::mem::replace(&mut g.assigned, counts);
        let ids: Vec<String> = g.members.values().map(|m| m.id.clone()).collect();
        let mut http = Vec::new();
        for id in ids {
            let bytes = given.remove(&id).unwrap_or_default();
            let partitions = if consumer {
                protocol::assignment_partitions(&bytes).unwrap_or_default()
            } else {
                Vec::new()
            };
            let m = g.member(&id).expect("listed");
            match &mut m.kind {
                Kind::Kafka(k) => {
                    k.assignment = bytes;
                    if let Some(sync) = k.sync.take() {
                        let _ = sync.send(Ok(k.assignment.clone()));
                    }
                    m.owned = partitions;
                }
                Kind::Http(h) => {
                    let topic = h.topic.clone();
                    let own: Vec<(TopicName, u32)> = partitions
                        .into_iter()
                        .filter(|(t, _)| *t == topic)
                        .collect();
                    http.push((id, own));
                }
            }
        }
        for (id, own) in http {
            self.give(&mut g, &id, own, &previous);
        }
        g.state = State::Stable;
        let m = g.member(member).expect("checked");
        let k = m.kafka().expect("the leader is a Kafka member");
        Ok(SyncOutcome::Ready(k.assignment.clone()))
    }

    /// Heartbeat: keeps the member's session; says when a rebalance wants it
    /// to rejoin.
    pub fn kafka_heartbeat(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<(), ClassicError> {
        let now = self.now_ms();
        let g = self
            .groups
            .get(group)
            .ok_or(ClassicError::UnknownMemberId)?;
        let mut g = g.lock().expect("group lock");
        self.expire(&mut g, now);
        match g.check(member, generation, now)? {
            State::PreparingRebalance => Err(ClassicError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: each member's own answer.
    pub fn kafka_leave(&self, group: &str, members: &[String]) -> Vec<Result<(), ClassicError>> {
        let now = self.now_ms();
        let Some(g) = self.groups.get(group) else {
            return members
                .iter()
                .map(|_| Err(ClassicError::UnknownMemberId))
                .collect();
        };
        let mut g = g.lock().expect("group lock");
        let mut any = false;
        let answers = members
            .iter()
            .map(|id| match g.remove(id) {
                Some(mut m) => {
                    any = true;
                    if let Some(join) = m.kafka().and_then(|k| k.join.take()) {
                        let _ = join.send(Err(ClassicError::UnknownMemberId));
                    }
                    Ok(())
                }
                None => Err(ClassicError::UnknownMemberId),
            })
            .collect();
        if any {
            self.member_left(&mut g, now);
        }
        answers
    }

    /// Whether an OffsetCommit from `member` of `generation` may store
    /// offsets: a member of the current generation outside the hand-out of
    /// assignments, or a consumer that assigns its own partitions
    /// (generation -1, no member id) while the group has no members.
    pub fn kafka_commit_allowed(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<(), ClassicError> {
        if group.is_empty() {
            return Err(ClassicError::InvalidGroupId);
        }
        let Some(g) = self.groups.get(group) else {
            let named = generation >= 0 || !member.is_empty();
            return if named {
                Err(ClassicError::UnknownMemberId)
            } else {
                Ok(())
            };
        };
        let now = self.now_ms();
        let mut g = g.lock().expect("group lock");
        g.commit_fence(member, generation, now)
    }

    /// Expires sessions, ends rebalances at their deadlines and initial
    /// delays at their ends, in every group; forgets groups with neither
    /// members nor offsets. Called every 100 ms by the Kafka listener.
    pub fn tick_groups(&self) {
        let now = self.now_ms();
        let all = self.groups.all();
        for g in all {
            let mut g = g.lock().expect("group lock");
            self.expire(&mut g, now);
        }
        self.groups.forget_idle();
    }

    /// Every group, as ListGroups shows it.
    pub fn kafka_list_groups(&self) -> Vec<ListedGroup> {
        let now = self.now_ms();
        let all = self.groups.all();
        let mut out: Vec<ListedGroup> = all
            .into_iter()
            .map(|g| {
                let mut g = g.lock().expect("group lock");
                self.expire(&mut g, now);
                ListedGroup {
                    group: g.name.to_string(),
                    protocol_type: protocol_type(&g),
                    state: g.state.name(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// One group, as DescribeGroups shows it; "Dead" when there is none.
    pub fn kafka_describe_group(&self, group: &str) -> DescribedGroup {
        let now = self.now_ms();
        let Some(g) = self.groups.get(group) else {
            return DescribedGroup {
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let mut g = g.lock().expect("group lock");
        self.expire(&mut g, now);
        let stable = g.state == State::Stable;
        let protocol = g.protocol.clone();
        let members = g
            .members
            .values()
            .map(|m| match &m.kind {
                Kind::Kafka(k) => DescribedMember {
                    member: m.id.clone(),
                    client_id: k.client_id.clone(),
                    client_host: k.client_host.clone(),
                    metadata: k
                        .protocols
                        .iter()
                        .find(|(p, _)| *p == protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                    assignment: if stable {
                        k.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                },
                Kind::Http(h) => DescribedMember {
                    member: m.id.clone(),
                    client_id: HTTP_CLIENT_ID.to_owned(),
                    client_host: String::new(),
                    metadata: protocol::subscription(&h.topic),
                    assignment: encode_assignment(&m.owned),
                },
            })
            .collect();
        DescribedGroup {
            state: g.state.name(),
            protocol_type: protocol_type(&g),
            protocol: g.protocol.clone(),
            members,
        }
    }

    /// OffsetDelete: forgets the group's offsets of these partitions, each
    /// answered on its own; a topic a member subscribes to keeps its offsets
    /// (GROUP_SUBSCRIBED_TO_TOPIC). Durable before it returns.
    pub fn kafka_delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ClassicError>>, ClassicError> {
        let g = self
            .groups
            .get(group)
            .ok_or(ClassicError::GroupIdNotFound)?;
        let mut g = g.lock().expect("group lock");
        self.expire(&mut g, self.now_ms());
        let subscribed = g.member_topics();
        let before = g.committed.clone();
        let answers: Vec<Result<(), ClassicError>> = partitions
            .iter()
            .map(|(topic, p)| {
                if subscribed.iter().any(|t| t.as_str() == topic) {
                    return Err(ClassicError::GroupSubscribedToTopic);
                }
                if let (Ok(t), Ok(p)) = (TopicName::new(topic), u32::try_from(*p)) {
                    g.committed.remove(&(t, p));
                }
                Ok(())
            })
            .collect();
        if g.committed != before {
            if let Err(e) = self.persist(&g) {
                g.committed = before;
                return Err(ClassicError::Storage(e.to_string()));
            }
        }
        Ok(answers)
    }

    /// DeleteGroups: a group without members, with its offsets.
    pub fn kafka_delete_group(&self, group: &str) -> Result<(), ClassicError> {
        match self.delete_group(group) {
            Ok(()) => Ok(()),
            Err(GroupError::UnknownGroup(_)) => Err(ClassicError::GroupIdNotFound),
            Err(GroupError::Active { .. }) => Err(ClassicError::NonEmptyGroup),
            Err(GroupError::InvalidName(_)) => Err(ClassicError::InvalidGroupId),
            Err(e) => Err(ClassicError::Storage(e.to_string())),
        }
    }
}

/// What a group says its protocol type is.
fn protocol_type(g: &Group) -> String {
    match &g.protocol_type {
        Some(t) => t.clone(),
        None if !g.members.is_empty() => "consumer".to_owned(),
        None => String::new(),
    }
}
