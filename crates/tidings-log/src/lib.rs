//! Tidings' storage engine: durable, partitioned logs of Kafka RecordBatch v2
//! batches.
//!
//! A [`Log`] owns a data directory. It holds topics; a topic holds partitions; a
//! partition is a sequence of segment files, each with a sparse offset index and a
//! time index beside it:
//!
//! ```text
//! <data dir>/LOCK
//! <data dir>/topics/<topic>/topic.meta
//! <data dir>/topics/<topic>/<partition>/<base offset:020>.log
//!                                      /<base offset:020>.index
//!                                      /<base offset:020>.timeindex
//! ```
//!
//! Segments hold batches byte for byte as the Kafka protocol defines them, so a
//! Kafka consumer can be served stored bytes as they are. Each partition has one
//! writer thread that gathers concurrent appends into one write and one
//! `fdatasync` (group commit). Readers read segment files directly and never see
//! data above the durable high-watermark.
//!
//! The log never opens a socket and knows nothing of consumer groups or HTTP.
//! Appends are `async` (they wait for the writer), with blocking variants for code
//! outside a runtime; reads are short positional reads from the page cache.
//!
//! ```
//! use tidings_log::{Log, LogOptions, Record, TopicConfig};
//! use tidings_types::{Offset, PartitionId, TimestampMs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogOptions::default())?;
//! let topic = log.create_topic("orders", TopicConfig { partitions: 3, ..Default::default() })?;
//! let partition = topic.partition(PartitionId(0))?;
//!
//! let appended = partition.append_blocking(&[
//!     Record::from_value("order 1 placed", TimestampMs(1_700_000_000_000)),
//!     Record::from_value("order 2 placed", TimestampMs(1_700_000_000_001)),
//! ])?;
//! assert_eq!(appended.base_offset, Offset(0));
//!
//! let records = partition.read_records(Offset(1), 64 * 1024)?;
//! assert_eq!(records[0].offset, Offset(1));
//! assert_eq!(records[0].record.value.as_deref(), Some(&b"order 2 placed"[..]));
//! log.close()?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tidings_types::{PartitionId, TopicName};

mod batch;
mod builder;
mod compression;
mod config;
mod error;
pub mod format;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod index;
pub mod limits;
mod partition;
mod producers;
mod recovery;
mod segment;
#[cfg(feature = "sim")]
pub mod sim;
pub mod storage;
mod topic;

pub use batch::{decode as decode_batches, BatchFault, Header, Record, StoredRecord};
pub use builder::{BatchBuilder, RecordWriter};
pub use config::{
    ConfigError, FileSync, FsyncPolicy, FsyncPolicyParseError, LogOptions, OsFileSync, TopicConfig,
};
pub use error::{AppendError, CloseError, OpenError, ReadError, RecoveryError, TopicError};
pub use format::FormatError;
pub use partition::{Appended, Batches, Partition, QueuedAppend, RetentionOutcome};
pub use storage::{DirEntry, OpenMode, OsStorage, Storage, StorageFile, StorageLock};
pub use topic::Topic;

/// A data directory of topics. Open one per directory; a lock file keeps other
/// processes out.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    topics: RwLock<BTreeMap<TopicName, Arc<Topic>>>,
    _lock: Box<dyn StorageLock>,
}

fn open_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OpenError {
    let path = path.to_owned();
    move |source| OpenError::Io {
        action,
        path,
        source,
    }
}

fn topic_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TopicError {
    let path = path.to_owned();
    move |source| TopicError::Io {
        action,
        path,
        source,
    }
}

/// Takes the data directory's lock, waiting briefly when it is held.
///
/// The lock belongs to the open file description, and a process that starts a
/// child shares its descriptors with that child until the child's `exec`. A log
/// closed and reopened while another thread is spawning a process can therefore
/// find its own released lock still held for a moment. A lock still held after
/// [`LOCK_WAIT`] belongs to someone else.
fn lock_exclusively(storage: &dyn Storage, path: &Path) -> Result<Box<dyn StorageLock>, OpenError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match storage.try_lock(path).map_err(open_err("lock", path))? {
            Some(lock) => return Ok(lock),
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            None => {
                return Err(OpenError::Locked {
                    path: path.to_owned(),
                })
            }
        }
    }
}

/// How long [`Log::open`] waits for a held lock before answering
/// [`OpenError::Locked`].
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl Log {
    /// Opens (creating if needed) the data directory at `dir` and recovers every
    /// partition in it. A partition that fails recovery is refused, not fatal: see
    /// [`Topic::refused`].
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log, OpenError> {
        let dir = dir.as_ref().to_owned();
        if options.retention_check_interval.is_zero() {
            return Err(OpenError::Options(
                "retention_check_interval must be longer than zero",
            ));
        }
        let storage = &*options.storage;
        // The data directory and its subdirectories must outlive a power
        // loss, including when they were created by this open or by a process
        // on this boot that died before making them durable: each is synced
        // into its parent, from the parent of the data directory (or of the
        // highest directory this open creates) down.
        let mut top = dir.as_path();
        while !storage.exists(top).map_err(open_err("stat", top))? {
            match top.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => top = parent,
                _ => break,
            }
        }
        if top == dir.as_path() {
            top = dir.parent().unwrap_or(&dir);
        }
        let top = top.to_owned();
        for sub in ["topics", "staging", "trash"] {
            let path = dir.join(sub);
            storage
                .create_dir_all(&path)
                .map_err(open_err("create", &path))?;
        }
        let mut synced: Vec<&Path> = dir.ancestors().take_while(|a| *a != top).collect();
        synced.push(&top);
        for path in synced.into_iter().rev() {
            match storage.sync_dir(path) {
                Ok(()) => {}
                // A parent the server may enter but not read: its entry for
                // the data directory was made by whoever set the directory up.
                Err(e) if path != dir && e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::warn!(dir = %path.display(), "cannot open the directory to sync it; trusting it to be durable");
                }
                Err(e) => return Err(open_err("sync", path)(e)),
            }
        }
        let lock = lock_exclusively(storage, &dir.join("LOCK"))?;
        // Unfinished topic creations and deletions from an earlier run.
        for sub in ["staging", "trash"] {
            let path = dir.join(sub);
            for entry in storage.list(&path).map_err(open_err("list", &path))? {
                let entry_path = path.join(&entry.name);
                storage
                    .remove_dir_all(&entry_path)
                    .map_err(open_err("remove", &entry_path))?;
            }
        }

        let mut topics = BTreeMap::new();
        let topics_dir = dir.join("topics");
        let mut entries = storage
            .list(&topics_dir)
            .map_err(open_err("list", &topics_dir))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let entry_path = topics_dir.join(&entry.name);
            let Some(name) = entry.name.to_str().and_then(|n| TopicName::new(n).ok()) else {
                tracing::warn!(path = %entry_path.display(), "ignoring a directory that is not a valid topic name");
                continue;
            };
            let meta_path = entry_path.join(topic::TOPIC_META_FILE);
            let bytes = format::read_record_from(storage, &meta_path, topic::TOPIC_META_BODY_BYTES)
                .map_err(|e| OpenError::TopicMeta {
                    path: meta_path.clone(),
                    reason: e.to_string(),
                })?;
            let config = topic::decode_meta(&bytes).map_err(|reason| OpenError::TopicMeta {
                path: meta_path.clone(),
                reason,
            })?;
            // What this open found a process on this boot may have left
            // without making durable (its directory sync failed, or it was
            // killed first); served from now on, it must outlive a power loss.
            storage
                .sync_dir(&entry_path)
                .map_err(open_err("sync", &entry_path))?;
            let topic = open_topic(name.clone(), entry_path, config, &options);
            topics.insert(name, Arc::new(topic));
        }
        storage
            .sync_dir(&topics_dir)
            .map_err(open_err("sync", &topics_dir))?;
        Ok(Log {
            dir,
            options,
            topics: RwLock::new(topics),
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a topic. The topic appears whole or not at all, even across a crash.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, TopicError> {
        let name = TopicName::new(name)?;
        config.validate()?;
        let mut topics = self.topics.write().expect("topics lock");
        if topics.contains_key(&name) {
            return Err(TopicError::Exists(name));
        }
        let storage = &*self.options.storage;
        let staging = self.dir.join("staging").join(name.as_str());
        if storage
            .exists(&staging)
            .map_err(topic_err("stat", &staging))?
        {
            storage
                .remove_dir_all(&staging)
                .map_err(topic_err("remove", &staging))?;
        }
        storage
            .create_dir(&staging)
            .map_err(topic_err("create", &staging))?;
        let meta_path = staging.join(topic::TOPIC_META_FILE);
        storage
            .create_durably(&meta_path, &topic::encode_meta(&config))
            .map_err(topic_err("write", &meta_path))?;
        for p in 0..config.partitions {
            let path = Topic::partition_dir(&staging, PartitionId(p));
            storage
                .create_dir(&path)
                .map_err(topic_err("create", &path))?;
        }
        storage
            .sync_dir(&staging)
            .map_err(topic_err("sync", &staging))?;
        let final_dir = self.dir.join("topics").join(name.as_str());
        storage
            .rename(&staging, &final_dir)
            .map_err(topic_err("rename into place", &final_dir))?;
        let topics_dir = self.dir.join("topics");
        storage
            .sync_dir(&topics_dir)
            .map_err(topic_err("sync", &topics_dir))?;

        let topic = Arc::new(open_topic(name.clone(), final_dir, config, &self.options));
        if let Some((id, error)) = topic.refused().into_iter().next() {
            return Err(TopicError::Refused {
                topic: name,
                partition: id,
                error,
            });
        }
        topics.insert(name, Arc::clone(&topic));
        Ok(topic)
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_owned()))
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    /// Changes a topic's configuration: the fsync policy, retention and segment
    /// settings take effect with the next append or retention pass of each
    /// partition; partitions can be added, never removed. Appends acknowledged
    /// before the change keep the durability they were acknowledged with.
    ///
    /// New partitions' directories are made durable before the metadata names
    /// them, and the metadata is replaced atomically, so a crash leaves the topic
    /// as it was or as asked, never in between.
    pub fn alter_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, TopicError> {
        config.validate()?;
        let storage = &*self.options.storage;
        // Serializes with create and delete, and with other alterations.
        let topics = self.topics.write().expect("topics lock");
        let topic = topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_owned()))?;
        let old = topic.config();
        if config.partitions < old.partitions {
            return Err(ConfigError::PartitionsDecrease {
                from: old.partitions,
                to: config.partitions,
            }
            .into());
        }
        for p in old.partitions..config.partitions {
            // A directory left by an alteration that crashed before its metadata
            // was written was never served: it holds nothing acknowledged.
            let path = Topic::partition_dir(&topic.dir, PartitionId(p));
            if storage.exists(&path).map_err(topic_err("stat", &path))? {
                storage
                    .remove_dir_all(&path)
                    .map_err(topic_err("remove", &path))?;
            }
            storage
                .create_dir(&path)
                .map_err(topic_err("create", &path))?;
        }
        if config.partitions > old.partitions {
            storage
                .sync_dir(&topic.dir)
                .map_err(topic_err("sync", &topic.dir))?;
        }
        let meta_path = topic.dir.join(topic::TOPIC_META_FILE);
        storage
            .replace_durably(&meta_path, &topic::encode_meta(&config))
            .map_err(topic_err("write", &meta_path))?;

        let mut partitions = topic.partitions.write().expect("partitions lock");
        for p in partitions.iter().flatten() {
            p.set_config(config.clone());
        }
        let mut refused = None;
        for p in old.partitions..config.partitions {
            let slot = open_partition(
                &topic.name,
                &topic.dir,
                PartitionId(p),
                &config,
                &self.options,
            );
            if let Err(e) = &slot {
                refused.get_or_insert((PartitionId(p), Arc::clone(e)));
            }
            partitions.push(slot);
        }
        *topic.config.write().expect("config lock") = config;
        drop(partitions);
        match refused {
            Some((partition, error)) => Err(TopicError::Refused {
                topic: topic.name.clone(),
                partition,
                error,
            }),
            None => Ok(topic),
        }
    }

    /// Deletes a topic and all its data. Its partitions stop taking appends first.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let topic = {
            let mut topics = self.topics.write().expect("topics lock");
            topics
                .remove(name)
                .ok_or_else(|| TopicError::NotFound(name.to_owned()))?
        };
        for p in topic.open_partitions() {
            if let Err(e) = p.close() {
                tracing::warn!(error = %e, "closing a partition of a deleted topic");
            }
        }
        let storage = &*self.options.storage;
        let trash = self.dir.join("trash").join(name);
        storage
            .rename(&topic.dir, &trash)
            .map_err(topic_err("move to trash", &topic.dir))?;
        let topics_dir = self.dir.join("topics");
        storage
            .sync_dir(&topics_dir)
            .map_err(topic_err("sync", &topics_dir))?;
        storage
            .remove_dir_all(&trash)
            .map_err(topic_err("remove", &trash))
    }

    /// Finishes queued appends, syncs every partition and leaves clean-shutdown
    /// markers. Returns the first failure; every partition is closed regardless.
    /// Dropping the log does the same and logs failures.
    pub fn close(&self) -> Result<(), CloseError> {
        let mut first = Ok(());
        for topic in self.topics.read().expect("topics lock").values() {
            for p in topic.open_partitions() {
                if let Err(e) = p.close() {
                    tracing::error!(error = %e, "partition did not close cleanly");
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn open_topic(name: TopicName, dir: PathBuf, config: TopicConfig, options: &LogOptions) -> Topic {
    let partitions = (0..config.partitions)
        .map(|p| open_partition(&name, &dir, PartitionId(p), &config, options))
        .collect();
    Topic {
        name,
        config: RwLock::new(config),
        dir,
        partitions: RwLock::new(partitions),
    }
}

fn open_partition(
    name: &TopicName,
    dir: &Path,
    id: PartitionId,
    config: &TopicConfig,
    options: &LogOptions,
) -> Result<Arc<Partition>, Arc<RecoveryError>> {
    let path = Topic::partition_dir(dir, id);
    Partition::open(name.clone(), id, &path, config.clone(), options.clone()).map_err(|e| {
        tracing::error!(topic = %name, partition = id.0, error = %e, "partition refused");
        Arc::new(e)
    })
}
