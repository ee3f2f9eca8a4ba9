//! Stream-mode consumer groups, with Kafka's semantics: the partitions of a topic
//! are shared out among the group's members, each member reads its partitions in
//! order and commits offsets, and the group rebalances when a member joins, leaves
//! or stops heartbeating. Fan-out is several groups on one topic.
//!
//! Membership lives in memory (members rejoin after a restart, as Kafka clients
//! do); committed offsets are durable, one file per group, replaced atomically on
//! every commit. Session timeouts are measured on the broker's clock.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_log::Storage;
use tidings_types::{ErrorKind, Offset, PartitionId, TimestampMs, TopicName};

pub(crate) mod file;
mod kafka;
mod members;
mod protocol;

pub use kafka::{
    ClassicError, DescribedGroup, DescribedMember, JoinWait, Joined, KafkaJoin, ListedGroup,
    SyncOutcome, SyncWait, GROUP_MEMBERS_MAX, HTTP_CLIENT_ID, KAFKA_SESSION_TIMEOUT_MAX,
    KAFKA_SESSION_TIMEOUT_MIN,
};
use members::{Group, HttpMember, Kind, Member, State};

pub(crate) use file::path;
use file::{decode, encode, Committed, Offsets, GROUP_FILE_BYTES_MAX, GROUP_FILE_V1};

use crate::read::wait_for_any;
use crate::{Broker, Entry, GroupName, ReadError};

/// Longest session timeout a member may ask for.
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Longest metadata string stored with a committed offset (Kafka's
/// `offset.metadata.max.bytes` default).
pub const COMMIT_METADATA_BYTES_MAX: usize = 4096;
/// Most (topic, partition) offsets one group holds: a group may consume many
/// topics, each of up to the log's partition limit.
pub const GROUP_OFFSETS_MAX: usize = 16_384;
/// How long a poll waiting for a rebalance to end sleeps between looks.
const REBALANCE_POLL_STEP: Duration = Duration::from_millis(20);

/// Where a member starts reading a partition the group has no committed offset for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// The first offset still stored.
    #[default]
    Earliest,
    /// The high-watermark: only events published from now on.
    Latest,
    /// This offset (clamped into what is stored).
    Offset(Offset),
    /// The first event appended at or after this time.
    Timestamp(TimestampMs),
}

/// How a member joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinOptions {
    /// A member not heard from (poll or heartbeat) for this long is removed.
    pub session_timeout: Duration,
    /// Where to start partitions without a committed offset.
    pub start: StartPosition,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            session_timeout: Duration::from_secs(30),
            start: StartPosition::Earliest,
        }
    }
}

/// What a poll returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Polled {
    /// The topic the member reads.
    pub topic: TopicName,
    /// The group's generation: it changes at every rebalance.
    pub generation: u64,
    /// The partitions this member owns now.
    pub assignment: Vec<PartitionId>,
    /// Events from those partitions, in order within each partition.
    pub entries: Vec<Entry>,
    /// Where the member reads next in each of its partitions, after these
    /// events: what it commits to go on from here.
    pub positions: Vec<(PartitionId, Offset)>,
}

/// One member, as [`Broker::describe_group`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member: String,
    /// Its Kafka client id, or `tidings-http` for a member joined over HTTP.
    pub client: String,
    /// The topics it subscribes to.
    pub topics: Vec<TopicName>,
    /// Its partitions, by topic.
    pub partitions: Vec<(TopicName, PartitionId)>,
    /// When it was last heard from (a join, a heartbeat, a poll).
    pub last_seen: TimestampMs,
    /// How long it may stay silent before it is taken out of the group.
    pub session_timeout: std::time::Duration,
}

/// A committed offset: where the group reads a partition next, and what the
/// committer said with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: PartitionId,
    /// The next offset to read.
    pub offset: Offset,
    /// Kafka's commit metadata: any text the consumer stores with its offset
    /// (empty for HTTP commits).
    pub metadata: String,
}

/// One partition's progress in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: PartitionId,
    /// The group's committed offset, if any.
    pub committed: Option<Offset>,
    /// The partition's high-watermark.
    pub high_watermark: Offset,
    /// Events not yet committed: high-watermark minus the committed offset (or
    /// minus the log start, with nothing committed).
    pub lag: u64,
}

/// A group's members, assignment and lag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group.
    pub group: GroupName,
    /// The topics it consumes: its members' and those it has offsets for.
    pub topics: Vec<TopicName>,
    /// Its generation.
    pub generation: u64,
    /// Its live members.
    pub members: Vec<MemberDescription>,
    /// Per-partition progress, by topic; a deleted topic's offsets are left
    /// out.
    pub partitions: Vec<PartitionLag>,
}

/// A group operation failed; no state changed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The group name is not a valid name.
    #[error("invalid group name: {0}")]
    InvalidName(#[from] crate::names::GroupNameError),
    /// No such topic.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// No such group.
    #[error("group {0} does not exist")]
    UnknownGroup(String),
    /// The member is not (or no longer) in the group: it left, timed out, or the
    /// broker restarted. It must join again.
    #[error("member {member} is not in group {group}; join again")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// A commit names a partition the member does not own (a rebalance moved it).
    #[error("partition {partition} is not assigned to member {member} in generation {generation}")]
    NotAssigned {
        /// The member.
        member: String,
        /// The partition.
        partition: PartitionId,
        /// The current generation.
        generation: u64,
    },
    /// A commit is beyond the partition's high-watermark.
    #[error(
        "offset {offset} is beyond the high-watermark {high_watermark} of partition {partition}"
    )]
    OffsetBeyondEnd {
        /// The partition.
        partition: PartitionId,
        /// The offset asked for.
        offset: Offset,
        /// The high-watermark.
        high_watermark: Offset,
    },
    /// A commit's metadata is longer than [`COMMIT_METADATA_BYTES_MAX`].
    #[error("commit metadata is {len} bytes; the limit is {COMMIT_METADATA_BYTES_MAX}")]
    MetadataTooLarge {
        /// Its length.
        len: usize,
    },
    /// The group holds [`GROUP_OFFSETS_MAX`] offsets already.
    #[error(
        "group {group} holds offsets for {GROUP_OFFSETS_MAX} partitions, the most a group may"
    )]
    TooManyOffsets {
        /// The group.
        group: String,
    },
    /// Offsets can only be reset while the group has no members.
    #[error(
        "group {group} has {members} active member(s); offsets can only be reset while it has none"
    )]
    Active {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },
    /// The options are out of range.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A Kafka commit's member is not (or no longer) in that generation.
    #[error("commit refused: {0}")]
    Fenced(ClassicError),
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The group's offsets file could not be written or read.
    #[error("group offsets file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl GroupError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GroupError::InvalidName(_) => ErrorKind::InvalidGroupName,
            GroupError::InvalidOptions(_) => ErrorKind::InvalidRequest,
            GroupError::Fenced(_) => ErrorKind::UnknownMember,
            GroupError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            GroupError::UnknownGroup(_) => ErrorKind::UnknownGroup,
            GroupError::UnknownMember { .. } => ErrorKind::UnknownMember,
            GroupError::NotAssigned { .. } => ErrorKind::NotAssigned,
            GroupError::OffsetBeyondEnd { .. } => ErrorKind::OffsetBeyondEnd,
            GroupError::Active { .. } => ErrorKind::GroupActive,
            GroupError::MetadataTooLarge { .. } => ErrorKind::TooLarge,
            GroupError::TooManyOffsets { .. } => ErrorKind::LimitReached,
            GroupError::Read(e) => e.kind(),
            GroupError::Io { .. } => ErrorKind::StorageFailed,
        }
    }
}

/// Every group, by name.
#[derive(Default)]
pub(crate) struct Groups {
    groups: Mutex<HashMap<GroupName, Arc<Mutex<Group>>>>,
    next_member: std::sync::atomic::AtomicU64,
}

impl Groups {
    /// Loads every group's committed offsets.
    pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<Groups, (PathBuf, String)> {
        let groups = Groups::default();
        let groups_dir = dir.join("broker").join("groups");
        let entries = match storage.list(&groups_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(groups),
            Err(e) => return Err((groups_dir, e.to_string())),
        };
        for entry in entries {
            let path = groups_dir.join(&entry.name);
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".offsets"))
            else {
                continue;
            };
            let Ok(name) = GroupName::new(name) else {
                tracing::warn!(path = %path.display(), "ignoring a group file whose name is not a group name");
                continue;
            };
            let bytes = storage
                .read_bounded(&path, GROUP_FILE_BYTES_MAX)
                .map_err(|e| (path.clone(), e.to_string()))?;
            let (committed, revision) = decode(&bytes).map_err(|e| (path.clone(), e))?;
            if revision == GROUP_FILE_V1 {
                // Replaced whole or not at all: a crash leaves either file,
                // and both read.
                storage
                    .replace_durably(&path, &encode(&committed))
                    .map_err(|e| (path.clone(), format!("migrating to revision 2: {e}")))?;
                tracing::info!(group = %name, path = %path.display(), "group offsets file migrated to revision 2");
            }
            let group = Group::new(name.clone(), committed);
            groups
                .groups
                .lock()
                .expect("groups lock")
                .insert(name, Arc::new(Mutex::new(group)));
        }
        Ok(groups)
    }

    /// Forgets groups with neither members nor offsets (nothing on disk,
    /// nothing to show); whoever still holds one finds it deleted.
    fn forget_idle(&self) {
        self.groups.lock().expect("groups lock").retain(|_, g| {
            let Ok(mut g) = g.try_lock() else { return true };
            let idle = g.members.is_empty() && g.pending.is_empty() && g.committed.is_empty();
            if idle {
                g.deleted = true;
            }
            !idle
        });
    }

    /// Every group, each to be locked on its own.
    fn all(&self) -> Vec<Arc<Mutex<Group>>> {
        self.groups
            .lock()
            .expect("groups lock")
            .values()
            .cloned()
            .collect()
    }

    fn get(&self, name: &str) -> Option<Arc<Mutex<Group>>> {
        self.groups.lock().expect("groups lock").get(name).cloned()
    }

    /// The group `name`, created without members or offsets if it does not
    /// exist.
    fn get_or_create(&self, name: &GroupName) -> Arc<Mutex<Group>> {
        Arc::clone(
            self.groups
                .lock()
                .expect("groups lock")
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Group::new(name.clone(), Offsets::new())))),
        )
    }

    /// [`get_or_create`](Self::get_or_create), but never a group deleted
    /// after it was looked up: that one is created anew.
    fn live(&self, name: &GroupName) -> Arc<Mutex<Group>> {
        loop {
            let g = self.get_or_create(name);
            if !g.lock().expect("group lock").deleted {
                return g;
            }
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Broker {
    fn group(&self, name: &str) -> Result<Arc<Mutex<Group>>, GroupError> {
        self.groups
            .get(name)
            .ok_or_else(|| GroupError::UnknownGroup(name.to_owned()))
    }

    fn group_topic(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<crate::topics::BrokerTopic>, GroupError> {
        self.topic(name)
            .ok_or_else(|| GroupError::UnknownTopic(name.to_owned()))
    }

    fn resolve(
        &self,
        topic: &TopicName,
        partition: u32,
        start: StartPosition,
    ) -> Result<Offset, GroupError> {
        self.position(topic.as_str(), PartitionId(partition), start)
            .map_err(|e| match e {
                ReadError::UnknownTopic(t) => GroupError::UnknownTopic(t),
                e => GroupError::from(e),
            })
    }

    fn persist(&self, g: &Group) -> Result<(), GroupError> {
        if g.deleted {
            return Err(GroupError::UnknownGroup(g.name.to_string()));
        }
        let path = path(&self.dir, &g.name);
        self.storage
            .replace_durably(&path, &encode(&g.committed))
            .map_err(|source| GroupError::Io {
                path: path.clone(),
                source,
            })
    }

    /// The group of HTTP member `member`, its sessions checked.
    fn member_group(&self, group: &str, member: &str) -> Result<Arc<Mutex<Group>>, GroupError> {
        let g = self.group(group)?;
        {
            let mut locked = g.lock().expect("group lock");
            self.expire(&mut locked, self.clock.now().0);
            let known = locked
                .members
                .values()
                .any(|m| m.id == member && matches!(m.kind, Kind::Http(_)));
            if !known {
                return Err(GroupError::UnknownMember {
                    group: group.to_owned(),
                    member: member.to_owned(),
                });
            }
        }
        Ok(g)
    }

    /// Joins `group` to read `topic` (a new group is created on first join),
    /// and returns the new member's id. The group rebalances: with HTTP
    /// members only, each topic's partitions are shared out among the
    /// members that read it at once; with Kafka members, once they have
    /// rejoined and their leader has assigned. Members of one group may read
    /// different topics.
    pub fn join_group(
        &self,
        group: &str,
        topic: &str,
        options: JoinOptions,
    ) -> Result<String, GroupError> {
        let name = GroupName::new(group)?;
        if options.session_timeout.is_zero() || options.session_timeout > SESSION_TIMEOUT_MAX {
            return Err(GroupError::InvalidOptions(format!(
                "session_timeout is {:?}; it must be 1 ms..={SESSION_TIMEOUT_MAX:?}",
                options.session_timeout
            )));
        }
        let t = self.group_topic(topic)?;
        let g = self.groups.live(&name);
        let mut g = g.lock().expect("group lock");
        if g.deleted {
            // Deleted between the look-up and the lock: join the new one.
            drop(g);
            return self.join_group(group, topic, options);
        }
        let now = self.clock.now().0;
        self.expire(&mut g, now);
        if let Some(pt) = g.protocol_type.as_deref().filter(|pt| *pt != "consumer") {
            return Err(members::protocol_mismatch(&g.name, pt));
        }
        if g.members.len() + g.pending.len() >= kafka::GROUP_MEMBERS_MAX {
            return Err(GroupError::InvalidOptions(format!(
                "group {group} has {} members, the most a group may",
                kafka::GROUP_MEMBERS_MAX
            )));
        }
        let n = self
            .groups
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{group}-{:x}-{n}", self.started_ms);
        g.insert(Member {
            id: id.clone(),
            session_ms: ms(options.session_timeout),
            rebalance_ms: 0,
            last_seen: now,
            owned: Vec::new(),
            kind: Kind::Http(HttpMember {
                topic: t.name.clone(),
                start: options.start,
                positions: HashMap::new(),
                turn: 0,
            }),
        });
        if g.state != State::PreparingRebalance {
            self.prepare_rebalance(&mut g, now);
        }
        self.try_complete_join(&mut g, now, false);
        Ok(id)
    }

    /// Leaves the group; its partitions go to the other members.
    pub fn leave_group(&self, group: &str, member: &str) -> Result<(), GroupError> {
        let g = self.member_group(group, member)?;
        let mut g = g.lock().expect("group lock");
        g.remove(member);
        self.member_left(&mut g, self.clock.now().0);
        Ok(())
    }

    /// Keeps the member's session alive without reading.
    pub fn heartbeat(&self, group: &str, member: &str) -> Result<u64, GroupError> {
        let g = self.member_group(group, member)?;
        let mut g = g.lock().expect("group lock");
        let now = self.clock.now().0;
        g.member(member).expect("checked").last_seen = now;
        Ok(u64::try_from(g.generation).unwrap_or(0))
    }

    /// Reads up to about `max_bytes` of events from the member's partitions, from
    /// where it left off, waiting up to `wait` for events if there are none.
    /// Heartbeats the member. Positions advance; nothing is committed.
    pub async fn poll(
        &self,
        group: &str,
        member: &str,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Polled, GroupError> {
        self.poll_until(group, member, max_bytes, wait, std::future::pending())
            .await
    }

    /// [`poll`](Self::poll), but a wait for events also ends when `stop`
    /// resolves (a server draining, a client gone): the answer is then empty.
    /// Dropping the future loses nothing either: positions move only with the
    /// events a poll answers with.
    pub async fn poll_until(
        &self,
        group: &str,
        member: &str,
        max_bytes: usize,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Polled, GroupError> {
        self.poll_limited(group, member, max_bytes, usize::MAX, wait, stop)
            .await
    }

    /// [`poll_until`](Self::poll_until) answering at most `max_events`
    /// events. The partitions take turns being read first, so a busy one
    /// does not starve the others of a small limit. While the group
    /// rebalances (its Kafka members rejoining) the member owns nothing, and
    /// the poll waits for the rebalance to end within `wait`.
    pub async fn poll_limited(
        &self,
        group: &str,
        member: &str,
        max_bytes: usize,
        max_events: usize,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Polled, GroupError> {
        if max_events == 0 {
            return Err(GroupError::InvalidOptions(
                "a poll takes at least one event".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = std::pin::pin!(stop);
        loop {
            let g = self.member_group(group, member)?;
            let (generation, stable, topic, positions) = {
                let mut g = g.lock().expect("group lock");
                let now = self.clock.now().0;
                let stable = g.state == State::Stable;
                let generation = u64::try_from(g.generation).unwrap_or(0);
                let m = g.member(member).expect("checked");
                m.last_seen = now;
                let owned: Vec<u32> = m.owned.iter().map(|(_, p)| *p).collect();
                let h = m.http().expect("checked");
                h.turn = h.turn.wrapping_add(1);
                let mut positions: Vec<(u32, Offset)> =
                    owned.iter().map(|p| (*p, h.positions[p])).collect();
                let first = h.turn % positions.len().max(1);
                positions.rotate_left(first);
                (generation, stable, h.topic.clone(), positions)
            };
            let mut entries = Vec::new();
            let mut next = Vec::new();
            let mut watchers = Vec::new();
            // Each partition gets an equal share of the budget (at least one batch).
            let share = (max_bytes / positions.len().max(1)).max(1);
            for &(p, pos) in &positions {
                let t = self.group_topic(topic.as_str())?;
                let part = t.partition(PartitionId(p)).map_err(ReadError::from)?;
                let pos = pos.max(part.log_start_offset());
                watchers.push(part.watch_high_watermark());
                if pos >= part.high_watermark() {
                    next.push((p, pos));
                    continue;
                }
                let room = max_events - entries.len();
                if room == 0 {
                    next.push((p, pos));
                    continue;
                }
                let read = self.read(topic.as_str(), PartitionId(p), pos, share)?;
                let read: Vec<Entry> = read
                    .into_iter()
                    .filter(|e| e.offset >= pos)
                    .take(room)
                    .collect();
                let after = read.last().map_or(pos, |e| e.offset.next());
                entries.extend(read);
                next.push((p, after));
            }
            {
                let mut g = g.lock().expect("group lock");
                if u64::try_from(g.generation).unwrap_or(0) != generation
                    || g.state != State::Stable && stable
                {
                    // A rebalance happened while reading: these events may belong to
                    // another member now. Drop them; the next poll reads afresh.
                    continue;
                }
                if let Some(h) = g.member(member).and_then(Member::http) {
                    for (p, pos) in &next {
                        h.positions.insert(*p, *pos);
                    }
                }
            }
            let mut assignment: Vec<PartitionId> =
                positions.iter().map(|(p, _)| PartitionId(*p)).collect();
            assignment.sort_unstable();
            let mut positions: Vec<(PartitionId, Offset)> =
                next.iter().map(|(p, o)| (PartitionId(*p), *o)).collect();
            positions.sort_unstable();
            let polled = Polled {
                topic: topic.clone(),
                generation,
                assignment,
                entries,
                positions,
            };
            if !polled.entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(polled);
            }
            if !stable {
                // Waiting for the Kafka members to rejoin and their leader to
                // assign: look again shortly.
                let soon = (tokio::time::Instant::now() + REBALANCE_POLL_STEP).min(deadline);
                tokio::select! {
                    () = tokio::time::sleep_until(soon) => {}
                    () = &mut stop => return Ok(polled),
                }
                continue;
            }
            tokio::select! {
                () = wait_for_any(watchers, deadline) => {}
                () = &mut stop => return Ok(polled),
            }
        }
    }

    /// Records `offsets` and persists them in one write; on a failed write the
    /// group keeps its old offsets.
    fn store_commits(
        &self,
        g: &mut Group,
        offsets: Vec<CommittedOffset>,
    ) -> Result<(), GroupError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let before = g.committed.clone();
        for c in offsets {
            g.committed.insert(
                (c.topic, c.partition.0),
                Committed {
                    offset: c.offset,
                    metadata: c.metadata,
                },
            );
        }
        if g.committed.len() > GROUP_OFFSETS_MAX {
            g.committed = before;
            return Err(GroupError::TooManyOffsets {
                group: g.name.to_string(),
            });
        }
        if let Err(e) = self.persist(g) {
            g.committed = before;
            return Err(e);
        }
        Ok(())
    }

    /// Commits offsets for the member's partitions of its topic: the next
    /// offset to read, as Kafka does. An offset past a partition's
    /// high-watermark is refused (no member has read there). Durable before it
    /// returns.
    pub fn commit(
        &self,
        group: &str,
        member: &str,
        offsets: &[(PartitionId, Offset)],
    ) -> Result<(), GroupError> {
        let g = self.member_group(group, member)?;
        let mut g = g.lock().expect("group lock");
        let generation = u64::try_from(g.generation).unwrap_or(0);
        let m = g.member(member).expect("checked");
        let owned: Vec<u32> = m.owned.iter().map(|(_, p)| *p).collect();
        let topic = m.http().expect("checked").topic.clone();
        let t = self.group_topic(topic.as_str())?;
        let mut commits = Vec::with_capacity(offsets.len());
        for &(partition, offset) in offsets {
            if !owned.contains(&partition.0) {
                return Err(GroupError::NotAssigned {
                    member: member.to_owned(),
                    partition,
                    generation,
                });
            }
            let high_watermark = t
                .partition(partition)
                .map_err(ReadError::from)?
                .high_watermark();
            if offset > high_watermark {
                return Err(GroupError::OffsetBeyondEnd {
                    partition,
                    offset,
                    high_watermark,
                });
            }
            commits.push(CommittedOffset {
                topic: t.name.clone(),
                partition,
                offset,
                metadata: String::new(),
            });
        }
        self.store_commits(&mut g, commits)
    }

    /// A Kafka OffsetCommit: offsets across any number of topics, with their
    /// metadata. `fence` is the committing member and its generation (see
    /// [`kafka_commit_allowed`](Self::kafka_commit_allowed)), checked under the
    /// same lock as the store, so a member fenced by a rebalance meanwhile
    /// stores nothing; `None` for an HTTP-side or administrative commit. As
    /// Kafka, any offset of an existing partition is stored, even one past its
    /// end. The group is created on its first commit; its lag then shows like
    /// any group's.
    ///
    /// Returns each offset's own answer, in order: an unknown topic or
    /// partition, or metadata over [`COMMIT_METADATA_BYTES_MAX`], refuses that
    /// offset alone. The others are durable, in one write, before it returns;
    /// a failed write, or the fence, refuses them all (the error).
    pub fn commit_offsets(
        &self,
        group: &str,
        fence: Option<(&str, i32)>,
        offsets: Vec<CommittedOffset>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let name = GroupName::new(group)?;
        let mut answers = Vec::with_capacity(offsets.len());
        let mut accepted = Vec::with_capacity(offsets.len());
        for c in offsets {
            let checked = (|| {
                if c.metadata.len() > COMMIT_METADATA_BYTES_MAX {
                    return Err(GroupError::MetadataTooLarge {
                        len: c.metadata.len(),
                    });
                }
                let t = self.group_topic(c.topic.as_str())?;
                t.partition(c.partition).map_err(ReadError::from)?;
                Ok(())
            })();
            if checked.is_ok() {
                accepted.push(c);
            }
            answers.push(checked);
        }
        if let Some((member, generation)) = fence {
            self.kafka_commit_allowed(group, member, generation)
                .map_err(GroupError::Fenced)?;
        }
        if accepted.is_empty() {
            return Ok(answers);
        }
        let g = self.groups.live(&name);
        let mut locked = g.lock().expect("group lock");
        if locked.deleted {
            drop(locked);
            return self.commit_offsets(group, fence, accepted).map(|_| answers);
        }
        if let Some((member, generation)) = fence {
            // Again under the lock the store takes: no rebalance in between.
            locked
                .commit_fence(member, generation, self.clock.now().0)
                .map_err(GroupError::Fenced)?;
        }
        self.store_commits(&mut locked, accepted)?;
        Ok(answers)
    }

    /// A group's committed offsets, in topic and partition order, or `None`
    /// when there is no such group.
    pub fn committed_offsets(&self, group: &str) -> Option<Vec<CommittedOffset>> {
        let g = self.groups.get(group)?;
        let g = g.lock().expect("group lock");
        Some(
            g.committed
                .iter()
                .map(|((topic, partition), c)| CommittedOffset {
                    topic: topic.clone(),
                    partition: PartitionId(*partition),
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                })
                .collect(),
        )
    }

    /// Moves the group's committed offsets (for replay or to skip ahead), on
    /// every partition of every topic it has offsets for. Only while the group
    /// has no members, as in Kafka. A deleted topic's offsets stay as they
    /// are.
    pub fn reset_offsets(&self, group: &str, to: StartPosition) -> Result<(), GroupError> {
        let g = self.group(group)?;
        let mut g = g.lock().expect("group lock");
        self.expire(&mut g, self.clock.now().0);
        if !g.members.is_empty() {
            return Err(GroupError::Active {
                group: group.to_owned(),
                members: g.members.len(),
            });
        }
        let mut committed = g.committed.clone();
        for topic in g.topics() {
            let Some(t) = self.topic(topic.as_str()) else {
                continue;
            };
            for p in 0..t.partitions() {
                let offset = self.resolve(&topic, p, to)?;
                let metadata = String::new();
                committed.insert((topic.clone(), p), Committed { offset, metadata });
            }
        }
        let before = std::mem::replace(&mut g.committed, committed);
        if let Err(e) = self.persist(&g) {
            g.committed = before;
            return Err(e);
        }
        Ok(())
    }

    /// Deletes a group and its committed offsets, durably. Only while it has
    /// no members, as Kafka's DeleteGroups.
    pub fn delete_group(&self, group: &str) -> Result<(), GroupError> {
        let g = self.group(group)?;
        let mut locked = g.lock().expect("group lock");
        if locked.deleted {
            return Err(GroupError::UnknownGroup(group.to_owned()));
        }
        self.expire(&mut locked, self.clock.now().0);
        if !locked.members.is_empty() {
            return Err(GroupError::Active {
                group: group.to_owned(),
                members: locked.members.len(),
            });
        }
        let path = path(&self.dir, &locked.name);
        let removed = match self.storage.remove_file(&path) {
            Ok(()) => self.storage.sync_dir(path.parent().expect("a directory")),
            // A group that never committed has no file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|source| GroupError::Io {
            path: path.clone(),
            source,
        })?;
        locked.deleted = true;
        let mut groups = self.groups.groups.lock().expect("groups lock");
        if groups
            .get(group)
            .is_some_and(|current| Arc::ptr_eq(current, &g))
        {
            groups.remove(group);
        }
        Ok(())
    }

    /// The topics a group consumes (its members' and those it has offsets
    /// for), without its lag: what a permission check needs.
    pub fn group_topics(&self, group: &str) -> Result<Vec<TopicName>, GroupError> {
        let g = self.group(group)?;
        let topics = g.lock().expect("group lock").topics();
        Ok(topics)
    }

    /// A group's members, assignment and lag.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription, GroupError> {
        let g = self.group(group)?;
        let mut g = g.lock().expect("group lock");
        self.expire(&mut g, self.clock.now().0);
        let topics = g.topics();
        let mut partitions = Vec::new();
        for topic in &topics {
            // A deleted topic has no partitions to show.
            let Some(t) = self.topic(topic.as_str()) else {
                continue;
            };
            for p in 0..t.partitions() {
                let part = t.partition(PartitionId(p)).map_err(ReadError::from)?;
                let committed = g.committed.get(&(topic.clone(), p)).map(|c| c.offset);
                let high_watermark = part.high_watermark();
                let from = committed.unwrap_or(part.log_start_offset());
                partitions.push(PartitionLag {
                    topic: topic.clone(),
                    partition: PartitionId(p),
                    committed,
                    high_watermark,
                    lag: high_watermark.0.saturating_sub(from.0),
                });
            }
        }
        Ok(GroupDescription {
            group: g.name.clone(),
            topics,
            generation: u64::try_from(g.generation).unwrap_or(0),
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member: m.id.clone(),
                    client: match &m.kind {
                        Kind::Kafka(k) => k.client_id.clone(),
                        Kind::Http(_) => kafka::HTTP_CLIENT_ID.to_owned(),
                    },
                    topics: m.topics().to_vec(),
                    partitions: m
                        .owned
                        .iter()
                        .map(|(t, p)| (t.clone(), PartitionId(*p)))
                        .collect(),
                    last_seen: TimestampMs(m.last_seen),
                    session_timeout: std::time::Duration::from_millis(
                        u64::try_from(m.session_ms).unwrap_or(0),
                    ),
                })
                .collect(),
            partitions,
        })
    }

    /// Every group's name.
    pub fn list_groups(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .groups
            .groups
            .lock()
            .expect("groups lock")
            .keys()
            .map(GroupName::to_string)
            .collect();
        names.sort();
        names
    }
}
