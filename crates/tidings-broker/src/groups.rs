//! Stream-mode consumer groups, with Kafka's semantics: the partitions of a topic
//! are shared out among the group's members, each member reads its partitions in
//! order and commits offsets, and the group rebalances when a member joins, leaves
//! or stops heartbeating. Fan-out is several groups on one topic.
//!
//! Membership lives in memory (members rejoin after a restart, as Kafka clients
//! do); committed offsets are durable, one file per group, replaced atomically on
//! every commit. Session timeouts are measured on the broker's clock.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_log::format;
use tidings_types::{ErrorKind, Offset, PartitionId, TimestampMs, TopicName};

use crate::read::wait_for_any;
use crate::{Broker, Entry, GroupName, ReadError};

/// Longest session timeout a member may ask for.
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Most partitions' offsets one group file holds (bounded by the topic limit).
const GROUP_FILE_BYTES_MAX: u64 = 16 + 255 + 12 * tidings_log::limits::PARTITIONS_MAX as u64 + 8;
const GROUP_MAGIC: [u8; 4] = *b"TDGO";

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
    /// Its partitions.
    pub partitions: Vec<PartitionId>,
}

/// One partition's progress in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
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
    /// The topic it consumes.
    pub topic: TopicName,
    /// Its generation.
    pub generation: u64,
    /// Its live members.
    pub members: Vec<MemberDescription>,
    /// Per-partition progress.
    pub partitions: Vec<PartitionLag>,
}

/// A group operation failed; no state changed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The group name is not a valid name.
    #[error("invalid group name: {0}")]
    InvalidName(#[from] tidings_types::TopicNameError),
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
    /// The group consumes another topic.
    #[error("group {group} consumes topic {topic}")]
    WrongTopic {
        /// The group.
        group: String,
        /// The topic it consumes.
        topic: TopicName,
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
            GroupError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            GroupError::UnknownGroup(_) => ErrorKind::UnknownGroup,
            GroupError::UnknownMember { .. } => ErrorKind::UnknownMember,
            GroupError::WrongTopic { .. } => ErrorKind::WrongTopic,
            GroupError::NotAssigned { .. } => ErrorKind::NotAssigned,
            GroupError::OffsetBeyondEnd { .. } => ErrorKind::OffsetBeyondEnd,
            GroupError::Active { .. } => ErrorKind::GroupActive,
            GroupError::Read(e) => e.kind(),
            GroupError::Io { .. } => ErrorKind::StorageFailed,
        }
    }
}

#[derive(Debug)]
struct Member {
    last_seen: i64,
    session_ms: i64,
    start: StartPosition,
    partitions: Vec<u32>,
    positions: HashMap<u32, Offset>,
    /// Polls so far: which partition a poll reads first.
    turn: usize,
}

#[derive(Debug)]
pub(crate) struct Group {
    name: GroupName,
    topic: TopicName,
    generation: u64,
    members: BTreeMap<String, Member>,
    committed: BTreeMap<u32, Offset>,
    /// The topic's partition count at the last assignment; a topic that gained
    /// partitions since is rebalanced.
    assigned: u32,
    /// Deleted: whoever still holds it finds it gone.
    deleted: bool,
}

/// Every group, by name.
#[derive(Default)]
pub(crate) struct Groups {
    groups: Mutex<HashMap<GroupName, Arc<Mutex<Group>>>>,
    next_member: std::sync::atomic::AtomicU64,
}

pub(crate) fn path(dir: &Path, group: &GroupName) -> PathBuf {
    dir.join("broker")
        .join("groups")
        .join(format!("{group}.offsets"))
}

fn encode(group: &Group) -> Vec<u8> {
    let topic = group.topic.as_str().as_bytes();
    let mut out = Vec::with_capacity(16 + topic.len() + 12 * group.committed.len());
    out.extend_from_slice(&GROUP_MAGIC);
    out.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(
        &u16::try_from(topic.len())
            .expect("topic names are short")
            .to_le_bytes(),
    );
    out.extend_from_slice(topic);
    out.extend_from_slice(
        &u32::try_from(group.committed.len())
            .expect("bounded")
            .to_le_bytes(),
    );
    for (p, o) in &group.committed {
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&o.0.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<(TopicName, BTreeMap<u32, Offset>), String> {
    let err = |what: &str| Err(what.to_owned());
    if bytes.len() < 16 {
        return err("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return err("checksum mismatch");
    }
    if body[0..4] != GROUP_MAGIC {
        return err("not a group offsets file");
    }
    let version = u16::from_le_bytes(body[4..6].try_into().expect("2"));
    if version != format::FORMAT_VERSION {
        return Err(format!("format version {version} is not supported"));
    }
    let topic_len = usize::from(u16::from_le_bytes(body[6..8].try_into().expect("2")));
    let rest = &body[8..];
    if rest.len() < topic_len + 4 {
        return err("truncated topic name");
    }
    let topic = std::str::from_utf8(&rest[..topic_len]).map_err(|e| e.to_string())?;
    let topic = TopicName::new(topic).map_err(|e| e.to_string())?;
    let rest = &rest[topic_len..];
    let count = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
    let entries = &rest[4..];
    if entries.len() != count * 12 {
        return err("entry count does not match the file size");
    }
    let committed = entries
        .chunks_exact(12)
        .map(|c| {
            let p = u32::from_le_bytes(c[0..4].try_into().expect("4"));
            let o = u64::from_le_bytes(c[4..12].try_into().expect("8"));
            (p, Offset(o))
        })
        .collect();
    Ok((topic, committed))
}

impl Groups {
    /// Loads every group's committed offsets.
    pub(crate) fn load(dir: &Path) -> Result<Groups, (PathBuf, String)> {
        let groups = Groups::default();
        let groups_dir = dir.join("broker").join("groups");
        let entries = match std::fs::read_dir(&groups_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(groups),
            Err(e) => return Err((groups_dir, e.to_string())),
        };
        for entry in entries {
            let entry = entry.map_err(|e| (groups_dir.clone(), e.to_string()))?;
            let path = entry.path();
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
            let len = entry
                .metadata()
                .map_err(|e| (path.clone(), e.to_string()))?
                .len();
            if len > GROUP_FILE_BYTES_MAX {
                return Err((path, format!("{len} bytes is larger than any group file")));
            }
            let bytes = std::fs::read(&path).map_err(|e| (path.clone(), e.to_string()))?;
            let (topic, committed) = decode(&bytes).map_err(|e| (path.clone(), e))?;
            let group = Group {
                name: name.clone(),
                topic,
                generation: 0,
                members: BTreeMap::new(),
                committed,
                assigned: 0,
                deleted: false,
            };
            groups
                .groups
                .lock()
                .expect("groups lock")
                .insert(name, Arc::new(Mutex::new(group)));
        }
        Ok(groups)
    }

    fn get(&self, name: &str) -> Option<Arc<Mutex<Group>>> {
        self.groups.lock().expect("groups lock").get(name).cloned()
    }

    /// The group `name`, created (without members or offsets) to consume
    /// `topic` if it does not exist; a group consuming another topic refuses.
    fn get_or_create(
        &self,
        name: &GroupName,
        topic: &TopicName,
    ) -> Result<Arc<Mutex<Group>>, GroupError> {
        let g = Arc::clone(
            self.groups
                .lock()
                .expect("groups lock")
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Group {
                        name: name.clone(),
                        topic: topic.clone(),
                        generation: 0,
                        members: BTreeMap::new(),
                        committed: BTreeMap::new(),
                        assigned: 0,
                        deleted: false,
                    }))
                }),
        );
        let current = g.lock().expect("group lock").topic.clone();
        if current != *topic {
            return Err(GroupError::WrongTopic {
                group: name.to_string(),
                topic: current,
            });
        }
        Ok(g)
    }
}

fn ms(d: Duration) -> i64 {
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

    /// Removes members whose session ran out, and rebalances if any did or if
    /// `force` is set. Called with the group locked.
    fn settle(&self, g: &mut Group, force: bool) -> Result<(), GroupError> {
        let now = self.clock.now().0;
        let before = g.members.len();
        g.members
            .retain(|_, m| now.saturating_sub(m.last_seen) <= m.session_ms);
        let partitions = self.group_topic(g.topic.as_str())?.partitions();
        if g.members.len() == before && !force && partitions == g.assigned {
            return Ok(());
        }
        g.generation += 1;
        // Partitions added while the group was assigned hold only events
        // published after it existed: they start at their beginning.
        let added = g.assigned..partitions;
        let grew = g.assigned > 0;
        g.assigned = partitions;
        let count = g.members.len();
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for (i, id) in ids.iter().enumerate() {
            let owned: Vec<u32> = (0..partitions)
                .filter(|p| *p as usize % count == i)
                .collect();
            let mut positions = HashMap::new();
            let (start, old_positions) = {
                let m = &g.members[id];
                (m.start, m.positions.clone())
            };
            for &p in &owned {
                let start = if grew && added.contains(&p) {
                    StartPosition::Earliest
                } else {
                    start
                };
                let pos = match (old_positions.get(&p), g.committed.get(&p)) {
                    (Some(pos), _) => *pos,
                    (None, Some(committed)) => *committed,
                    (None, None) => self.resolve(&g.topic, p, start)?,
                };
                positions.insert(p, pos);
            }
            let m = g.members.get_mut(id).expect("listed");
            m.partitions = owned;
            m.positions = positions;
        }
        Ok(())
    }

    fn persist(&self, g: &Group) -> Result<(), GroupError> {
        if g.deleted {
            return Err(GroupError::UnknownGroup(g.name.to_string()));
        }
        let path = path(&self.dir, &g.name);
        let write = || -> io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a directory"))?;
            format::replace_durably(&path, &encode(g))
        };
        write().map_err(|source| GroupError::Io {
            path: path.clone(),
            source,
        })
    }

    fn member_group(&self, group: &str, member: &str) -> Result<Arc<Mutex<Group>>, GroupError> {
        let g = self.group(group)?;
        {
            let mut locked = g.lock().expect("group lock");
            self.settle(&mut locked, false)?;
            if !locked.members.contains_key(member) {
                return Err(GroupError::UnknownMember {
                    group: group.to_owned(),
                    member: member.to_owned(),
                });
            }
        }
        Ok(g)
    }

    /// Joins `group`, which consumes `topic` (a new group is created on first
    /// join), and returns the new member's id. The group rebalances.
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
        let g = loop {
            let g = self.groups.get_or_create(&name, &t.name)?;
            // A group deleted after it was looked up is created anew.
            if !g.lock().expect("group lock").deleted {
                break g;
            }
        };
        let mut g = g.lock().expect("group lock");
        let n = self
            .groups
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{group}-{:x}-{n}", self.started_ms);
        g.members.insert(
            id.clone(),
            Member {
                last_seen: self.clock.now().0,
                session_ms: ms(options.session_timeout),
                start: options.start,
                partitions: Vec::new(),
                positions: HashMap::new(),
                turn: 0,
            },
        );
        if let Err(e) = self.settle(&mut g, true) {
            g.members.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Leaves the group; its partitions go to the other members.
    pub fn leave_group(&self, group: &str, member: &str) -> Result<(), GroupError> {
        let g = self.member_group(group, member)?;
        let mut g = g.lock().expect("group lock");
        g.members.remove(member);
        self.settle(&mut g, true)
    }

    /// Keeps the member's session alive without reading.
    pub fn heartbeat(&self, group: &str, member: &str) -> Result<u64, GroupError> {
        let g = self.member_group(group, member)?;
        let mut g = g.lock().expect("group lock");
        let now = self.clock.now().0;
        g.members.get_mut(member).expect("checked").last_seen = now;
        Ok(g.generation)
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
    /// does not starve the others of a small limit.
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
            let (generation, topic, positions) = {
                let mut g = g.lock().expect("group lock");
                let now = self.clock.now().0;
                let m = g.members.get_mut(member).expect("checked");
                m.last_seen = now;
                m.turn = m.turn.wrapping_add(1);
                let mut positions: Vec<(u32, Offset)> =
                    m.partitions.iter().map(|p| (*p, m.positions[p])).collect();
                let first = m.turn % positions.len().max(1);
                positions.rotate_left(first);
                (g.generation, g.topic.clone(), positions)
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
                if g.generation != generation {
                    // A rebalance happened while reading: these events may belong to
                    // another member now. Drop them; the next poll reads afresh.
                    continue;
                }
                if let Some(m) = g.members.get_mut(member) {
                    for (p, pos) in &next {
                        m.positions.insert(*p, *pos);
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
                generation,
                assignment,
                entries,
                positions,
            };
            if !polled.entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(polled);
            }
            tokio::select! {
                () = wait_for_any(watchers, deadline) => {}
                () = &mut stop => return Ok(polled),
            }
        }
    }

    /// Checks that no offset is past its partition's high-watermark, then records
    /// and persists them; on a failed write the group keeps its old offsets.
    fn store_commits(
        &self,
        g: &mut Group,
        t: &crate::topics::BrokerTopic,
        offsets: &[(PartitionId, Offset)],
    ) -> Result<(), GroupError> {
        for &(partition, offset) in offsets {
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
        }
        let before = g.committed.clone();
        for &(partition, offset) in offsets {
            g.committed.insert(partition.0, offset);
        }
        if let Err(e) = self.persist(g) {
            g.committed = before;
            return Err(e);
        }
        Ok(())
    }

    /// Commits offsets for the member's partitions: the next offset to read, as
    /// Kafka does. Durable before it returns.
    pub fn commit(
        &self,
        group: &str,
        member: &str,
        offsets: &[(PartitionId, Offset)],
    ) -> Result<(), GroupError> {
        let g = self.member_group(group, member)?;
        let mut g = g.lock().expect("group lock");
        let t = self.group_topic(g.topic.as_str())?;
        let m = &g.members[member];
        for &(partition, _) in offsets {
            if !m.partitions.contains(&partition.0) {
                return Err(GroupError::NotAssigned {
                    member: member.to_owned(),
                    partition,
                    generation: g.generation,
                });
            }
        }
        self.store_commits(&mut g, &t, offsets)
    }

    /// Commits offsets for a group whose membership lives elsewhere (the Kafka
    /// listener's group coordinator checks members and generations itself). The
    /// group is created on its first commit, consuming `topic`; its lag then shows
    /// like any group's. A group that consumes another topic refuses. Durable
    /// before it returns.
    pub fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(PartitionId, Offset)],
    ) -> Result<(), GroupError> {
        let name = GroupName::new(group)?;
        let t = self.group_topic(topic)?;
        let g = self.groups.get_or_create(&name, &t.name)?;
        let mut g = g.lock().expect("group lock");
        self.store_commits(&mut g, &t, offsets)
    }

    /// A group's topic and committed offsets, or `None` when there is no such
    /// group.
    pub fn committed_offsets(
        &self,
        group: &str,
    ) -> Option<(TopicName, Vec<(PartitionId, Offset)>)> {
        let g = self.groups.get(group)?;
        let g = g.lock().expect("group lock");
        let offsets = g
            .committed
            .iter()
            .map(|(p, o)| (PartitionId(*p), *o))
            .collect();
        Some((g.topic.clone(), offsets))
    }

    /// Moves the group's committed offsets (for replay or to skip ahead). Only
    /// while the group has no members, as in Kafka.
    pub fn reset_offsets(&self, group: &str, to: StartPosition) -> Result<(), GroupError> {
        let g = self.group(group)?;
        let mut g = g.lock().expect("group lock");
        self.settle(&mut g, false)?;
        if !g.members.is_empty() {
            return Err(GroupError::Active {
                group: group.to_owned(),
                members: g.members.len(),
            });
        }
        let t = self.group_topic(g.topic.as_str())?;
        let mut committed = BTreeMap::new();
        for p in 0..t.partitions() {
            committed.insert(p, self.resolve(&g.topic, p, to)?);
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
        self.settle(&mut locked, false)?;
        if !locked.members.is_empty() {
            return Err(GroupError::Active {
                group: group.to_owned(),
                members: locked.members.len(),
            });
        }
        let path = path(&self.dir, &locked.name);
        let removed = match std::fs::remove_file(&path) {
            Ok(()) => format::sync_dir(path.parent().expect("a directory")),
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

    /// A group's members, assignment and lag.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription, GroupError> {
        let g = self.group(group)?;
        let mut g = g.lock().expect("group lock");
        self.settle(&mut g, false)?;
        let t = self.group_topic(g.topic.as_str())?;
        let mut partitions = Vec::new();
        for p in 0..t.partitions() {
            let part = t.partition(PartitionId(p)).map_err(ReadError::from)?;
            let committed = g.committed.get(&p).copied();
            let high_watermark = part.high_watermark();
            let from = committed.unwrap_or(part.log_start_offset());
            partitions.push(PartitionLag {
                partition: PartitionId(p),
                committed,
                high_watermark,
                lag: high_watermark.0.saturating_sub(from.0),
            });
        }
        Ok(GroupDescription {
            group: g.name.clone(),
            topic: g.topic.clone(),
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member: id.clone(),
                    partitions: m.partitions.iter().map(|p| PartitionId(*p)).collect(),
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
