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
/// Longest metadata string stored with a committed offset (Kafka's
/// `offset.metadata.max.bytes` default).
pub const COMMIT_METADATA_BYTES_MAX: usize = 4096;
/// Most (topic, partition) offsets one group holds: a group may consume many
/// topics, each of up to the log's partition limit.
pub const GROUP_OFFSETS_MAX: usize = 16_384;
const GROUP_MAGIC: [u8; 4] = *b"TDGO";
/// Revision 1: one topic, `partition:u32 offset:u64` entries. Read and
/// rewritten as revision 2 when the broker opens.
const GROUP_FILE_V1: u16 = 1;
/// Revision 2: `topic_len:u16 topic partition:u32 offset:u64 metadata_len:u16
/// metadata` entries, any number of topics.
const GROUP_FILE_V2: u16 = 2;
/// Header (magic, revision, count) and checksum of a group file.
const GROUP_FILE_FRAME_BYTES: u64 = 4 + 2 + 4 + 4;
/// The largest revision-2 entry.
const GROUP_ENTRY_BYTES_MAX: u64 =
    2 + tidings_types::TOPIC_NAME_BYTES_MAX as u64 + 4 + 8 + 2 + COMMIT_METADATA_BYTES_MAX as u64;
/// No group file is larger: checked before one is read into memory.
const GROUP_FILE_BYTES_MAX: u64 =
    GROUP_FILE_FRAME_BYTES + GROUP_ENTRY_BYTES_MAX * GROUP_OFFSETS_MAX as u64;
const _: () = assert!(COMMIT_METADATA_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(GROUP_OFFSETS_MAX >= tidings_log::limits::PARTITIONS_MAX as usize);
const _: () = assert!(GROUP_FILE_BYTES_MAX <= 128 * 1024 * 1024);

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
    /// The topics it subscribes to.
    pub topics: Vec<TopicName>,
    /// Its partitions, by topic.
    pub partitions: Vec<(TopicName, PartitionId)>,
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

#[derive(Debug)]
struct Member {
    /// The topic it reads.
    topic: TopicName,
    last_seen: i64,
    session_ms: i64,
    start: StartPosition,
    /// Its partitions of `topic`.
    partitions: Vec<u32>,
    positions: HashMap<u32, Offset>,
    /// Polls so far: which partition a poll reads first.
    turn: usize,
}

/// A committed offset and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Committed {
    offset: Offset,
    metadata: String,
}

type Offsets = BTreeMap<(TopicName, u32), Committed>;

#[derive(Debug)]
pub(crate) struct Group {
    name: GroupName,
    generation: u64,
    members: BTreeMap<String, Member>,
    committed: Offsets,
    /// Each member topic's partition count at the last assignment; a topic
    /// that gained partitions since is rebalanced.
    assigned: BTreeMap<TopicName, u32>,
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

/// A group file in revision 2 (see ARCHITECTURE.md, "Group offsets").
fn encode(committed: &Offsets) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 32 * committed.len());
    out.extend_from_slice(&GROUP_MAGIC);
    out.extend_from_slice(&GROUP_FILE_V2.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(committed.len())
            .expect("bounded by GROUP_OFFSETS_MAX")
            .to_le_bytes(),
    );
    for ((topic, partition), c) in committed {
        let topic = topic.as_str().as_bytes();
        out.extend_from_slice(&u16::try_from(topic.len()).expect("short").to_le_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&c.offset.0.to_le_bytes());
        let metadata = c.metadata.as_bytes();
        out.extend_from_slice(
            &u16::try_from(metadata.len())
                .expect("bounded by COMMIT_METADATA_BYTES_MAX")
                .to_le_bytes(),
        );
        out.extend_from_slice(metadata);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads fields off a checked body; every read is bounds-checked.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated {what}"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    fn topic(&mut self) -> Result<TopicName, String> {
        let len = usize::from(self.u16("topic name length")?);
        let bytes = self.take(len, "topic name")?;
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        TopicName::new(text).map_err(|e| e.to_string())
    }
}

/// A group file of either revision, and whether it is the old one.
fn decode(bytes: &[u8]) -> Result<(Offsets, u16), String> {
    if bytes.len() < GROUP_FILE_FRAME_BYTES as usize {
        return Err("too short".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    let mut f = Fields(body);
    if f.take(4, "magic")? != GROUP_MAGIC {
        return Err("not a group offsets file".into());
    }
    let revision = f.u16("revision")?;
    let mut committed = Offsets::new();
    match revision {
        GROUP_FILE_V1 => {
            let topic = f.topic()?;
            let count = f.u32("entry count")? as usize;
            if f.0.len() != count.saturating_mul(12) {
                return Err("entry count does not match the file size".into());
            }
            for _ in 0..count {
                let partition = f.u32("partition")?;
                let offset = Offset(f.u64("offset")?);
                let metadata = String::new();
                committed.insert((topic.clone(), partition), Committed { offset, metadata });
            }
        }
        GROUP_FILE_V2 => {
            let count = f.u32("entry count")? as usize;
            if count > GROUP_OFFSETS_MAX {
                return Err(format!(
                    "{count} entries; a group holds at most {GROUP_OFFSETS_MAX}"
                ));
            }
            for _ in 0..count {
                let topic = f.topic()?;
                let partition = f.u32("partition")?;
                let offset = Offset(f.u64("offset")?);
                let len = usize::from(f.u16("metadata length")?);
                if len > COMMIT_METADATA_BYTES_MAX {
                    return Err(format!("{len} bytes of commit metadata"));
                }
                let metadata = std::str::from_utf8(f.take(len, "metadata")?)
                    .map_err(|e| e.to_string())?
                    .to_owned();
                if committed
                    .insert((topic, partition), Committed { offset, metadata })
                    .is_some()
                {
                    return Err("a partition is listed twice".into());
                }
            }
            if !f.0.is_empty() {
                return Err(format!("{} bytes after the last entry", f.0.len()));
            }
        }
        other => return Err(format!("group file revision {other} is not supported")),
    }
    Ok((committed, revision))
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
            let (committed, revision) = decode(&bytes).map_err(|e| (path.clone(), e))?;
            if revision == GROUP_FILE_V1 {
                // Replaced whole or not at all: a crash leaves either file,
                // and both read.
                format::replace_durably(&path, &encode(&committed))
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

impl Group {
    fn new(name: GroupName, committed: Offsets) -> Group {
        Group {
            name,
            generation: 0,
            members: BTreeMap::new(),
            committed,
            assigned: BTreeMap::new(),
            deleted: false,
        }
    }

    /// The topics its members read, each once, in order.
    fn member_topics(&self) -> Vec<TopicName> {
        let topics: std::collections::BTreeSet<&TopicName> =
            self.members.values().map(|m| &m.topic).collect();
        topics.into_iter().cloned().collect()
    }

    /// Its members' topics and those it has offsets for.
    fn topics(&self) -> Vec<TopicName> {
        let mut topics: std::collections::BTreeSet<TopicName> =
            self.committed.keys().map(|(t, _)| t.clone()).collect();
        topics.extend(self.member_topics());
        topics.into_iter().collect()
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

    /// Removes members whose session ran out, and rebalances if any did, if a
    /// member topic gained partitions, or if `force` is set. Called with the
    /// group locked. Each topic's partitions are shared out round-robin among
    /// the members that read it.
    fn settle(&self, g: &mut Group, force: bool) -> Result<(), GroupError> {
        let now = self.clock.now().0;
        let before = g.members.len();
        g.members
            .retain(|_, m| now.saturating_sub(m.last_seen) <= m.session_ms);
        let mut counts = BTreeMap::new();
        for topic in g.member_topics() {
            let partitions = self.group_topic(topic.as_str())?.partitions();
            counts.insert(topic, partitions);
        }
        if g.members.len() == before && !force && counts == g.assigned {
            return Ok(());
        }
        g.generation += 1;
        let previous = std::mem::replace(&mut g.assigned, counts.clone());
        for (topic, &partitions) in &counts {
            // Partitions added while the group read the topic hold only events
            // published after it did: they start at their beginning.
            let had = previous.get(topic).copied().unwrap_or(0);
            let added = had..partitions;
            let readers: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.topic == *topic)
                .map(|(id, _)| id.clone())
                .collect();
            for (i, id) in readers.iter().enumerate() {
                let owned: Vec<u32> = (0..partitions)
                    .filter(|p| *p as usize % readers.len() == i)
                    .collect();
                let (start, old_positions) = {
                    let m = &g.members[id];
                    (m.start, m.positions.clone())
                };
                let mut positions = HashMap::new();
                for &p in &owned {
                    let start = if had > 0 && added.contains(&p) {
                        StartPosition::Earliest
                    } else {
                        start
                    };
                    // A committed offset past the partition's end (a Kafka
                    // client may commit any) starts where the member asked,
                    // as a Kafka consumer resets an offset out of range.
                    let committed = g
                        .committed
                        .get(&(topic.clone(), p))
                        .map(|c| c.offset)
                        .filter(|&o| {
                            self.offsets(topic.as_str(), PartitionId(p))
                                .is_ok_and(|(_, end)| o <= end)
                        });
                    let pos = match (old_positions.get(&p), committed) {
                        (Some(pos), _) => *pos,
                        (None, Some(committed)) => committed,
                        (None, None) => self.resolve(topic, p, start)?,
                    };
                    positions.insert(p, pos);
                }
                let m = g.members.get_mut(id).expect("listed");
                m.partitions = owned;
                m.positions = positions;
            }
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
            format::replace_durably(&path, &encode(&g.committed))
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

    /// Joins `group` to read `topic` (a new group is created on first join),
    /// and returns the new member's id. The group rebalances: the topic's
    /// partitions are shared out among the members that read it. Members of
    /// one group may read different topics.
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
        let n = self
            .groups
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{group}-{:x}-{n}", self.started_ms);
        g.members.insert(
            id.clone(),
            Member {
                topic: t.name.clone(),
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
                let topic = m.topic.clone();
                (g.generation, topic, positions)
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
        let m = &g.members[member];
        let t = self.group_topic(m.topic.as_str())?;
        let mut commits = Vec::with_capacity(offsets.len());
        for &(partition, offset) in offsets {
            if !m.partitions.contains(&partition.0) {
                return Err(GroupError::NotAssigned {
                    member: member.to_owned(),
                    partition,
                    generation: g.generation,
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

    /// Commits offsets for a group whose membership lives elsewhere (the Kafka
    /// listener's group coordinator checks members and generations itself),
    /// across any number of topics, with their metadata. As Kafka, any offset
    /// of an existing partition is stored, even one past its end. The group
    /// is created on its first commit; its lag then shows like any group's.
    ///
    /// Returns each offset's own answer, in order: an unknown topic or
    /// partition, or metadata over [`COMMIT_METADATA_BYTES_MAX`], refuses that
    /// offset alone. The others are durable, in one write, before it returns;
    /// a failed write refuses them all (the error).
    pub fn commit_offsets(
        &self,
        group: &str,
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
        if accepted.is_empty() {
            return Ok(answers);
        }
        let g = self.groups.live(&name);
        let mut locked = g.lock().expect("group lock");
        if locked.deleted {
            drop(locked);
            return self.commit_offsets(group, accepted).map(|_| answers);
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
        self.settle(&mut g, false)?;
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
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member: id.clone(),
                    topics: vec![m.topic.clone()],
                    partitions: m
                        .partitions
                        .iter()
                        .map(|p| (m.topic.clone(), PartitionId(*p)))
                        .collect(),
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
