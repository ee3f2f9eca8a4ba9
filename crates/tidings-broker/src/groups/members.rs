//! A group's membership: Kafka's classic group protocol, with HTTP members in
//! it too.
//!
//! A group moves Empty → PreparingRebalance (members join; it waits until
//! every member has rejoined or the longest rebalance timeout passes, dropping
//! those that did not) → CompletingRebalance (the leader, a Kafka member, got
//! every member's subscription and computes the assignment) → Stable (the
//! leader's SyncGroup handed each member its part). A join, a leave, a session
//! timeout or a member topic gaining partitions starts the next rebalance; the
//! generation fences members of an older one.
//!
//! HTTP members (`Kind::Http`) take part in the same rebalances. They never
//! need to rejoin: the broker answers for them at once. The Kafka leader sees
//! each as a member subscribed to its topic (a consumer-protocol subscription
//! the broker writes for it) and assigns it partitions like any other; the
//! broker reads its part out of the leader's assignment. A group with no Kafka
//! member has no leader: the broker shares each topic's partitions round-robin
//! among the members that read it and the group is Stable at once. Between a
//! rebalance's start and its end an HTTP member owns nothing (Kafka's eager
//! protocol), so no partition has two readers.
//!
//! A new group whose first member is a Kafka member waits the initial
//! rebalance delay (Kafka's `group.initial.rebalance.delay.ms`) before it
//! completes, extended by each member that joins meanwhile up to the first
//! member's rebalance timeout, so consumers started together form one
//! generation rather than several.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tidings_types::{Offset, PartitionId, TopicName};
use tokio::sync::oneshot;

use super::file::Offsets;
use super::kafka::{ClassicError, Joined};
use super::protocol;
use super::{GroupError, StartPosition};
use crate::{Broker, GroupName};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// Kafka's name of the state, as DescribeGroups and ListGroups say it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

pub(crate) type JoinReply = oneshot::Sender<Result<Joined, ClassicError>>;
pub(crate) type SyncReply = oneshot::Sender<Result<Bytes, ClassicError>>;

/// A Kafka client in the group.
#[derive(Debug)]
pub(crate) struct KafkaMember {
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// The protocols it offers (assignor names) with its metadata for each.
    pub(crate) protocols: Vec<(String, Bytes)>,
    /// The topics its subscription names (read once, at its join: every
    /// assignor's metadata names the same topics).
    pub(crate) subscribed: Vec<TopicName>,
    /// Its JoinGroup, waiting for the rebalance to complete.
    pub(crate) join: Option<JoinReply>,
    /// Its SyncGroup, waiting for the leader's.
    pub(crate) sync: Option<SyncReply>,
    /// What the leader assigned it, as the leader encoded it.
    pub(crate) assignment: Bytes,
}

/// A member joined over HTTP: the broker reads for it.
#[derive(Debug)]
pub(crate) struct HttpMember {
    /// The topic it reads.
    pub(crate) topic: TopicName,
    pub(crate) start: StartPosition,
    /// Where it reads next in each partition it owns or owned.
    pub(crate) positions: HashMap<u32, Offset>,
    /// Polls so far: which partition a poll reads first.
    pub(crate) turn: usize,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Kafka(KafkaMember),
    Http(HttpMember),
}

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) session_ms: i64,
    pub(crate) rebalance_ms: i64,
    pub(crate) last_seen: i64,
    /// The partitions it owns in this generation, in order.
    pub(crate) owned: Vec<(TopicName, u32)>,
    pub(crate) kind: Kind,
}

impl Member {
    /// Whether it has joined the rebalance under way.
    fn rejoined(&self) -> bool {
        match &self.kind {
            Kind::Kafka(k) => k.join.is_some(),
            Kind::Http(_) => true,
        }
    }

    pub(crate) fn kafka(&mut self) -> Option<&mut KafkaMember> {
        match &mut self.kind {
            Kind::Kafka(k) => Some(k),
            Kind::Http(_) => None,
        }
    }

    pub(crate) fn http(&mut self) -> Option<&mut HttpMember> {
        match &mut self.kind {
            Kind::Http(h) => Some(h),
            Kind::Kafka(_) => None,
        }
    }

    /// The topics it subscribes to: an HTTP member's one topic, or what a
    /// Kafka consumer's subscription names.
    pub(crate) fn topics(&self) -> &[TopicName] {
        match &self.kind {
            Kind::Http(h) => std::slice::from_ref(&h.topic),
            Kind::Kafka(k) => &k.subscribed,
        }
    }
}

/// The initial rebalance delay under way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Initial {
    /// The join completes at this time, unless a member joins first.
    pub(crate) until: i64,
    /// It never waits past this (the first member's rebalance timeout).
    pub(crate) cap: i64,
    pub(crate) delay_ms: i64,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: GroupName,
    pub(crate) state: State,
    pub(crate) generation: i32,
    /// The Kafka members' protocol type ("consumer" for Kafka consumers);
    /// `None` while it has none.
    pub(crate) protocol_type: Option<String>,
    /// The assignor the Kafka members agreed on in this generation.
    pub(crate) protocol: String,
    pub(crate) leader: Option<String>,
    /// By join order.
    pub(crate) members: BTreeMap<u64, Member>,
    pub(crate) next_seq: u64,
    /// Ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pub(crate) pending: HashMap<String, i64>,
    /// When the join phase under way ends, whoever has not rejoined.
    pub(crate) deadline: i64,
    pub(crate) initial: Option<Initial>,
    pub(crate) committed: Offsets,
    /// Each member topic's partition count at the last assignment; a topic
    /// that gained partitions since is rebalanced.
    pub(crate) assigned: BTreeMap<TopicName, u32>,
    /// Deleted: whoever still holds it finds it gone.
    pub(crate) deleted: bool,
}

impl Group {
    pub(crate) fn new(name: GroupName, committed: Offsets) -> Group {
        Group {
            name,
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            next_seq: 0,
            pending: HashMap::new(),
            deadline: 0,
            initial: None,
            committed,
            assigned: BTreeMap::new(),
            deleted: false,
        }
    }

    pub(crate) fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.values_mut().find(|m| m.id == id)
    }

    pub(crate) fn has_member(&self, id: &str) -> bool {
        self.members.values().any(|m| m.id == id)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Member> {
        let seq = *self.members.iter().find(|(_, m)| m.id == id)?.0;
        self.members.remove(&seq)
    }

    pub(crate) fn insert(&mut self, member: Member) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.members.insert(seq, member);
    }

    fn has_kafka_members(&self) -> bool {
        self.members
            .values()
            .any(|m| matches!(m.kind, Kind::Kafka(_)))
    }

    /// The topics its members subscribe to, each once, in order.
    pub(crate) fn member_topics(&self) -> Vec<TopicName> {
        let mut topics: Vec<TopicName> = self
            .members
            .values()
            .flat_map(|m| m.topics().iter().cloned())
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Its members' topics and those it has offsets for.
    pub(crate) fn topics(&self) -> Vec<TopicName> {
        let mut topics: Vec<TopicName> = self.committed.keys().map(|(t, _)| t.clone()).collect();
        topics.extend(self.member_topics());
        topics.sort();
        topics.dedup();
        topics
    }

    /// Whether a Kafka OffsetCommit from `member` of `generation` may store:
    /// a member of the current generation outside the hand-out of
    /// assignments, or a consumer assigning its own partitions (generation
    /// -1, no member id) while the group has no members.
    pub(crate) fn commit_fence(
        &mut self,
        member: &str,
        generation: i32,
        now: i64,
    ) -> Result<(), ClassicError> {
        if generation >= 0 || !member.is_empty() {
            match self.check(member, generation, now)? {
                State::CompletingRebalance => Err(ClassicError::RebalanceInProgress),
                _ => Ok(()),
            }
        } else if self.members.is_empty() {
            Ok(())
        } else {
            Err(ClassicError::IllegalGeneration)
        }
    }

    /// Checks a Kafka member and its generation; `Ok` with the state.
    pub(crate) fn check(
        &mut self,
        member: &str,
        generation: i32,
        now: i64,
    ) -> Result<State, ClassicError> {
        let current = self.generation;
        let m = self.member(member).ok_or(ClassicError::UnknownMemberId)?;
        if generation != current {
            return Err(ClassicError::IllegalGeneration);
        }
        m.last_seen = now;
        Ok(self.state)
    }
}

impl Broker {
    /// Drops members whose session ran out (not Kafka members waiting in a
    /// join) and expired ids; rebalances when a member went or a member topic
    /// gained partitions; ends the join phase at its deadline and the initial
    /// delay at its end.
    pub(crate) fn expire(&self, g: &mut Group, now: i64) {
        g.pending.retain(|_, until| *until > now);
        let before = g.members.len();
        let name = g.name.clone();
        g.members.retain(|_, m| {
            let waiting = matches!(&m.kind, Kind::Kafka(k) if k.join.is_some());
            let alive = waiting || now.saturating_sub(m.last_seen) <= m.session_ms;
            if !alive {
                tracing::info!(group = %name, member = %m.id, "group member's session timed out");
            }
            alive
        });
        if g.members.len() != before {
            self.member_left(g, now);
        } else if g.state == State::Stable && self.topics_grew(g) {
            self.prepare_rebalance(g, now);
            self.try_complete_join(g, now, false);
        }
        if let Some(initial) = g.initial {
            if now >= initial.until {
                g.initial = None;
                self.try_complete_join(g, now, false);
            }
        }
        if g.state == State::PreparingRebalance && now >= g.deadline {
            self.try_complete_join(g, now, true);
        }
    }

    /// Whether a topic a member reads has more partitions than at the last
    /// assignment.
    fn topics_grew(&self, g: &Group) -> bool {
        g.member_topics().iter().any(|t| {
            let now = self.topic(t.as_str()).map_or(0, |t| t.partitions());
            g.assigned.get(t).is_some_and(|had| now > *had)
        })
    }

    /// A member left or was dropped: the others rebalance.
    pub(crate) fn member_left(&self, g: &mut Group, now: i64) {
        match g.state {
            State::Stable | State::CompletingRebalance => {
                if g.members.is_empty() {
                    self.become_empty(g);
                } else {
                    self.prepare_rebalance(g, now);
                    self.try_complete_join(g, now, false);
                }
            }
            State::PreparingRebalance => self.try_complete_join(g, now, false),
            State::Empty => {}
        }
    }

    fn become_empty(&self, g: &mut Group) {
        g.state = State::Empty;
        g.generation = g.generation.wrapping_add(1).max(1);
        g.leader = None;
        g.protocol_type = None;
        g.initial = None;
    }

    /// Starts a rebalance: Kafka members must rejoin within the longest
    /// rebalance timeout; those waiting for their assignment learn they must
    /// rejoin; HTTP members give up their partitions until it completes.
    pub(crate) fn prepare_rebalance(&self, g: &mut Group, now: i64) {
        let mut longest = 0;
        for m in g.members.values_mut() {
            m.owned.clear();
            if let Kind::Kafka(k) = &mut m.kind {
                if let Some(sync) = k.sync.take() {
                    let _ = sync.send(Err(ClassicError::RebalanceInProgress));
                }
                longest = longest.max(m.rebalance_ms);
            }
        }
        g.state = State::PreparingRebalance;
        g.deadline = now.saturating_add(longest);
    }

    /// Finishes the join phase once every member has rejoined (and the
    /// initial delay is over), or when `force`d at the deadline, dropping
    /// Kafka members that did not rejoin.
    pub(crate) fn try_complete_join(&self, g: &mut Group, now: i64, force: bool) {
        if g.state != State::PreparingRebalance {
            return;
        }
        if g.initial.is_some() && !force {
            return;
        }
        let all_in = g.members.values().all(Member::rejoined);
        if !all_in && !force {
            return;
        }
        g.initial = None;
        let name = g.name.clone();
        g.members.retain(|_, m| {
            if !m.rejoined() {
                tracing::info!(group = %name, member = %m.id, "Kafka group member did not rejoin in time; dropped");
            }
            m.rejoined()
        });
        g.generation = g.generation.wrapping_add(1).max(1);
        if g.members.is_empty() {
            g.state = State::Empty;
            g.leader = None;
            g.protocol_type = None;
            return;
        }
        if !g.has_kafka_members() {
            g.protocol_type = None;
            g.leader = None;
            g.protocol.clear();
            self.assign_http_members(g);
            return;
        }
        // The first protocol of the first Kafka member that every Kafka
        // member offers. HTTP members take any.
        let kafka: Vec<&KafkaMember> = g
            .members
            .values()
            .filter_map(|m| match &m.kind {
                Kind::Kafka(k) => Some(k),
                Kind::Http(_) => None,
            })
            .collect();
        let chosen = kafka[0]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                kafka
                    .iter()
                    .all(|k| k.protocols.iter().any(|(p, _)| p == name))
            });
        let Some(protocol) = chosen else {
            // Checked at each join, so only reachable if members changed
            // protocols meanwhile: the Kafka members must join again.
            let ids: Vec<String> = g
                .members
                .values()
                .filter(|m| matches!(m.kind, Kind::Kafka(_)))
                .map(|m| m.id.clone())
                .collect();
            for id in ids {
                if let Some(mut m) = g.remove(&id) {
                    if let Some(join) = m.kafka().and_then(|k| k.join.take()) {
                        let _ = join.send(Err(ClassicError::InconsistentGroupProtocol));
                    }
                }
            }
            g.state = State::PreparingRebalance;
            return self.try_complete_join(g, now, true);
        };
        let leader = match &g.leader {
            Some(l)
                if g.members
                    .values()
                    .any(|m| &m.id == l && matches!(m.kind, Kind::Kafka(_))) =>
            {
                l.clone()
            }
            _ => g
                .members
                .values()
                .find(|m| matches!(m.kind, Kind::Kafka(_)))
                .expect("has Kafka members")
                .id
                .clone(),
        };
        let metadata: Vec<(String, Bytes)> = g
            .members
            .values()
            .map(|m| {
                let meta = match &m.kind {
                    Kind::Kafka(k) => k
                        .protocols
                        .iter()
                        .find(|(p, _)| *p == protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                    Kind::Http(h) => protocol::subscription(&h.topic),
                };
                (m.id.clone(), meta)
            })
            .collect();
        tracing::info!(
            group = %g.name,
            generation = g.generation,
            members = g.members.len(),
            leader = %leader,
            "group rebalanced; the leader assigns"
        );
        g.protocol.clone_from(&protocol);
        g.leader = Some(leader.clone());
        g.state = State::CompletingRebalance;
        let generation = g.generation;
        for m in g.members.values_mut() {
            m.last_seen = now;
            m.owned.clear();
            let id = m.id.clone();
            if let Kind::Kafka(k) = &mut m.kind {
                k.assignment = Bytes::new();
                if let Some(join) = k.join.take() {
                    let _ = join.send(Ok(Joined {
                        generation,
                        protocol: protocol.clone(),
                        leader: leader.clone(),
                        member_id: id.clone(),
                        members: if id == leader {
                            metadata.clone()
                        } else {
                            Vec::new()
                        },
                    }));
                }
            }
        }
    }

    /// Each member topic's partition count now.
    pub(crate) fn partition_counts(&self, g: &Group) -> BTreeMap<TopicName, u32> {
        g.member_topics()
            .into_iter()
            .filter_map(|t| {
                let count = self.topic(t.as_str())?.partitions();
                Some((t, count))
            })
            .collect()
    }

    /// The broker's own assignment, for a group of HTTP members only: each
    /// topic's partitions round-robin among the members that read it, in
    /// join order. The group is Stable.
    fn assign_http_members(&self, g: &mut Group) {
        let counts = self.partition_counts(g);
        let mut plan: HashMap<String, Vec<(TopicName, u32)>> = HashMap::new();
        for (topic, &partitions) in &counts {
            let readers: Vec<String> = g
                .members
                .values()
                .filter(|m| matches!(&m.kind, Kind::Http(h) if h.topic == *topic))
                .map(|m| m.id.clone())
                .collect();
            for p in 0..partitions {
                let owner = &readers[p as usize % readers.len()];
                plan.entry(owner.clone())
                    .or_default()
                    .push((topic.clone(), p));
            }
        }
        let previous = std::mem::replace(&mut g.assigned, counts);
        let ids: Vec<String> = g.members.values().map(|m| m.id.clone()).collect();
        for id in ids {
            let owned = plan.remove(&id).unwrap_or_default();
            self.give(g, &id, owned, &previous);
        }
        g.state = State::Stable;
        tracing::debug!(group = %g.name, generation = g.generation, members = g.members.len(), "group rebalanced");
    }

    /// Hands `owned` to HTTP member `id`: each partition it read before goes
    /// on from there; otherwise from the committed offset (unless past the
    /// partition's end, as a Kafka client may commit: then as for none), else
    /// from where the member asked to start. A partition a topic gained since
    /// the last assignment starts at its beginning.
    pub(crate) fn give(
        &self,
        g: &mut Group,
        id: &str,
        owned: Vec<(TopicName, u32)>,
        previous: &BTreeMap<TopicName, u32>,
    ) {
        let committed: Vec<Option<Offset>> = owned
            .iter()
            .map(|(t, p)| {
                g.committed
                    .get(&(t.clone(), *p))
                    .map(|c| c.offset)
                    .filter(|&o| {
                        self.offsets(t.as_str(), PartitionId(*p))
                            .is_ok_and(|(_, end)| o <= end)
                    })
            })
            .collect();
        let Some(m) = g.member(id) else { return };
        let Kind::Http(h) = &mut m.kind else { return };
        let mut positions = HashMap::new();
        for ((topic, p), committed) in owned.iter().zip(committed) {
            let grew = previous
                .get(topic)
                .is_some_and(|had| *p >= *had && *had > 0);
            let start = if grew {
                StartPosition::Earliest
            } else {
                h.start
            };
            let pos = match (h.positions.get(p), committed) {
                (Some(pos), _) => Some(*pos),
                (None, Some(c)) => Some(c),
                (None, None) => self.position(topic.as_str(), PartitionId(*p), start).ok(),
            };
            // A partition that cannot be read (its topic deleted meanwhile)
            // is left out.
            if let Some(pos) = pos {
                positions.insert(*p, pos);
            }
        }
        h.positions = positions;
        m.owned = owned
            .into_iter()
            .filter(|(_, p)| h.positions.contains_key(p))
            .collect();
    }
}

/// Why an HTTP member cannot join a group whose Kafka members use another
/// protocol type than Kafka consumers' (Kafka Connect workers, say).
pub(crate) fn protocol_mismatch(group: &GroupName, protocol_type: &str) -> GroupError {
    GroupError::InvalidOptions(format!(
        "group {group} is a Kafka group of protocol type {protocol_type}; only consumer groups take HTTP members"
    ))
}
