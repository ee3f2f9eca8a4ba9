//! A group's committed offsets on disk: `broker/groups/<group>.offsets`,
//! replaced whole on every commit (format in ARCHITECTURE.md, "Storage
//! format").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tidings_types::{Offset, TopicName};

use super::{COMMIT_METADATA_BYTES_MAX, GROUP_OFFSETS_MAX};
use crate::GroupName;

const GROUP_MAGIC: [u8; 4] = *b"TDGO";
/// Revision 1: one topic, `partition:u32 offset:u64` entries. Read and
/// rewritten as revision 2 when the broker opens.
pub(super) const GROUP_FILE_V1: u16 = 1;
/// Revision 2: `topic_len:u16 topic partition:u32 offset:u64 metadata_len:u16
/// metadata` entries, any number of topics.
const GROUP_FILE_V2: u16 = 2;
/// Header (magic, revision, count) and checksum of a group file.
const GROUP_FILE_FRAME_BYTES: u64 = 4 + 2 + 4 + 4;
/// The largest revision-2 entry.
const GROUP_ENTRY_BYTES_MAX: u64 =
    2 + tidings_types::TOPIC_NAME_BYTES_MAX as u64 + 4 + 8 + 2 + COMMIT_METADATA_BYTES_MAX as u64;
/// No group file is larger: checked before one is read into memory.
pub(super) const GROUP_FILE_BYTES_MAX: u64 =
    GROUP_FILE_FRAME_BYTES + GROUP_ENTRY_BYTES_MAX * GROUP_OFFSETS_MAX as u64;
const _: () = assert!(COMMIT_METADATA_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(GROUP_OFFSETS_MAX >= tidings_log::limits::PARTITIONS_MAX as usize);
const _: () = assert!(GROUP_FILE_BYTES_MAX <= 128 * 1024 * 1024);

/// A committed offset and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Committed {
    pub(crate) offset: Offset,
    pub(crate) metadata: String,
}

pub(crate) type Offsets = BTreeMap<(TopicName, u32), Committed>;

pub(crate) fn path(dir: &Path, group: &GroupName) -> PathBuf {
    dir.join("broker")
        .join("groups")
        .join(format!("{group}.offsets"))
}

/// A group file in revision 2 (see ARCHITECTURE.md, "Group offsets").
pub(crate) fn encode(committed: &Offsets) -> Vec<u8> {
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
pub(crate) fn decode(bytes: &[u8]) -> Result<(Offsets, u16), String> {
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
