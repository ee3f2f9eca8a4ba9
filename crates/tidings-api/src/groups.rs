//! Stream-mode consumer groups: joining, polling, committing, and a group's
//! members and lag.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StoredEvent;

/// One member and the partitions it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The member id.
    pub member: String,
    /// The Kafka client id of a member that joined over Kafka, or
    /// `tidings-http` for one joined over HTTP.
    pub client: String,
    /// Its partitions, by topic.
    pub assignment: BTreeMap<String, Vec<u32>>,
}

/// One partition's progress in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The committed offset (the next to read), `null` before any commit.
    pub committed: Option<u64>,
    /// The partition's high-watermark.
    pub high_watermark: u64,
    /// Events not yet committed.
    pub lag: u64,
}

/// A group: `GET /v1/groups/{group}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group.
    pub group: String,
    /// The topics it consumes: its members' and those it has committed
    /// offsets for.
    pub topics: Vec<String>,
    /// It changes at every rebalance.
    pub generation: u64,
    /// Its live members.
    pub members: Vec<GroupMember>,
    /// Per partition of each topic.
    pub partitions: Vec<PartitionLag>,
    /// The sum of the partitions' lag.
    pub lag: u64,
}

/// `GET /v1/groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    /// Every group, by name.
    pub groups: Vec<Group>,
}

/// `POST /v1/groups/{group}/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The topic the group consumes (a new group is created on first join).
    pub topic: String,
    /// Where to start partitions with nothing committed: `earliest` (the
    /// default), `latest`, an offset or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A member not heard from for this long is removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout_ms: Option<u64>,
}

/// The answer to a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The group.
    pub group: String,
    /// The new member's id.
    pub member: String,
}

/// The query of `GET /v1/groups/{group}/members/{member}/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    /// How long to wait for events when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Most bytes of events to answer with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    /// Most events to answer with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to a poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollAnswer {
    /// The partitions the member owns now.
    pub assignment: Vec<u32>,
    /// Events from them, in order within each partition.
    pub events: Vec<StoredEvent>,
    /// The group's generation.
    pub generation: u64,
    /// For every partition the member owns, where it reads next (after these
    /// events): what to commit.
    pub next: BTreeMap<u32, u64>,
}

/// `POST /v1/groups/{group}/members/{member}/commit`: per partition, the
/// offset of the next event to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Partition → offset.
    pub offsets: BTreeMap<u32, u64>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The group's generation: a new one means a rebalance happened.
    pub generation: u64,
}

/// `POST /v1/groups/{group}/reset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// `earliest`, `latest`, an offset or an RFC 3339 time.
    pub to: String,
}
