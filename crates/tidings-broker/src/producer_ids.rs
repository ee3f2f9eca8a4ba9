//! Producer ids for Kafka's idempotent producers (InitProducerId): unique for
//! the life of the data directory, never handed out twice, even across a
//! crash.
//!
//! Ids are reserved in blocks of [`PRODUCER_ID_BLOCK`]: before the first id
//! of a block is handed out, `broker/producer-ids` durably records the end of
//! the block, and a restart starts after the recorded end. A crash wastes at
//! most one block's unused ids. Should the file be lost, the broker starts
//! above the largest producer id any partition still keeps state for, so an
//! id whose batches can still be deduplicated is not reused.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tidings_log::Storage;

const MAGIC: [u8; 4] = *b"TDPI";
const VERSION: u16 = 1;
/// Magic, version, next id, checksum.
const FILE_BYTES: usize = 4 + 2 + 8 + 4;
/// Ids reserved with one durable write.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Why no producer id was handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// Recording the next block failed; nothing was handed out.
    #[error("cannot record producer ids in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Every id up to `i64::MAX` was handed out.
    #[error("producer ids are used up")]
    Exhausted,
}

impl ProducerIdError {
    /// What kind of failure this is, for the front ends.
    pub fn kind(&self) -> tidings_types::ErrorKind {
        match self {
            ProducerIdError::Io { .. } => tidings_types::ErrorKind::StorageFailed,
            ProducerIdError::Exhausted => tidings_types::ErrorKind::LimitReached,
        }
    }
}

struct State {
    next: i64,
    /// Ids below this one are recorded as reserved.
    reserved_end: i64,
}

pub(crate) struct ProducerIds {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    state: Mutex<State>,
}

pub(crate) fn encode(next: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&next.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() != FILE_BYTES {
        return Err(format!("{} bytes; the file has {FILE_BYTES}", bytes.len()));
    }
    let (body, crc) = bytes.split_at(FILE_BYTES - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
        return Err("checksum mismatch".into());
    }
    if body[..4] != MAGIC {
        return Err("not a producer id file".into());
    }
    let version = u16::from_le_bytes(body[4..6].try_into().expect("2"));
    if version != VERSION {
        return Err(format!("version {version} is not supported"));
    }
    let next = i64::from_le_bytes(body[6..14].try_into().expect("8"));
    if next < 0 {
        return Err(format!("next id {next}"));
    }
    Ok(next)
}

impl ProducerIds {
    /// Loads the recorded end of the last block, and starts above it and
    /// above `seen` (the largest id the partitions keep state for).
    pub(crate) fn load(
        storage: Arc<dyn Storage>,
        dir: &Path,
        seen: Option<i64>,
    ) -> Result<ProducerIds, (PathBuf, String)> {
        let path = dir.join("broker").join("producer-ids");
        let recorded = match storage.read_bounded(&path, FILE_BYTES as u64) {
            Ok(bytes) => decode(&bytes).map_err(|why| (path.clone(), why))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err((path, e.to_string())),
        };
        let next = recorded.max(seen.map_or(0, |s| s.saturating_add(1)));
        Ok(ProducerIds {
            storage,
            path,
            state: Mutex::new(State {
                next,
                reserved_end: next,
            }),
        })
    }

    /// A producer id no one had before.
    pub(crate) fn allocate(&self) -> Result<i64, ProducerIdError> {
        let mut s = self.state.lock().expect("producer ids lock");
        if s.next == i64::MAX {
            return Err(ProducerIdError::Exhausted);
        }
        if s.next >= s.reserved_end {
            let end = s.next.saturating_add(PRODUCER_ID_BLOCK);
            self.storage
                .replace_durably(&self.path, &encode(end))
                .map_err(|source| ProducerIdError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            s.reserved_end = end;
        }
        let id = s.next;
        s.next += 1;
        Ok(id)
    }
}

impl crate::Broker {
    /// A new producer id for an idempotent producer (Kafka's InitProducerId
    /// without a transactional id: always a new id, epoch 0). Durable before
    /// it returns.
    pub fn init_producer_id(&self) -> Result<i64, ProducerIdError> {
        self.producer_ids.allocate()
    }

    /// How long a partition keeps an idle idempotent producer's state.
    pub fn producer_id_expiration(&self) -> std::time::Duration {
        self.producer_id_expiration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, seen: Option<i64>) -> Result<ProducerIds, (PathBuf, String)> {
        std::fs::create_dir_all(dir.join("broker")).unwrap();
        ProducerIds::load(Arc::new(tidings_log::OsStorage), dir, seen)
    }

    #[test]
    fn ids_are_never_handed_out_twice_across_restarts_and_start_above_what_partitions_keep() {
        let dir = tempfile::tempdir().unwrap();
        let ids = load(dir.path(), None).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        // A restart (clean or not) goes on after the reserved block.
        let ids = load(dir.path(), None).unwrap();
        assert_eq!(ids.allocate().unwrap(), PRODUCER_ID_BLOCK);
        // Partitions that know a larger id win over the file.
        let ids = load(dir.path(), Some(5 * PRODUCER_ID_BLOCK)).unwrap();
        assert_eq!(ids.allocate().unwrap(), 5 * PRODUCER_ID_BLOCK + 1);
        // Lost file: the partitions' ids still count.
        std::fs::remove_file(dir.path().join("broker/producer-ids")).unwrap();
        let ids = load(dir.path(), Some(41)).unwrap();
        assert_eq!(ids.allocate().unwrap(), 42);
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path(), None).unwrap().allocate().unwrap();
        let path = dir.path().join("broker/producer-ids");
        let mut bytes = std::fs::read(&path).unwrap();
        for at in 0..bytes.len() {
            bytes[at] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            let (p, _) = load(dir.path(), None).err().expect("refused");
            assert_eq!(p, path);
            bytes[at] ^= 1;
        }
        std::fs::write(&path, &bytes[..5]).unwrap();
        assert!(load(dir.path(), None).is_err());
    }
}
