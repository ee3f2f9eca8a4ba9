//! The embedded backend: the event store on one partition of a Tidings log.
//!
//! One partition gives the global order: a log offset is a global position. Appends
//! of many streams go to the log as one batch, which the log writes atomically and
//! recovers whole or not at all. An in-memory index maps each stream's versions,
//! each category and each event id to log positions; it is rebuilt from the log on
//! open, so the log is the only thing that must survive a crash.
//!
//! Appends are checked and placed under one writer lock, queued to the log in that
//! order, and the lock is released before the fsync: concurrent appenders share the
//! log's group commit. Readers never take the writer lock and see only positions
//! below the log's durable high-watermark.
//!
//! Snapshots are files under `snapshots/` (a cache: a missing or damaged snapshot
//! only means folding more events); named checkpoints live in `checkpoints.json`,
//! replaced atomically and synced.

mod codec;
mod index;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tidings_log::{
    FsyncPolicy, Log, LogOptions, OpenMode, Partition, Record, Storage, StoredRecord, TopicConfig,
    TopicError,
};
use tidings_types::{Clock, ErrorKind, Offset, PartitionId};

use crate::error::{AppendError, StoreError};
use crate::store::{check_append, metadata_written, repeated_append, EventStore};
use crate::types::{
    read_range, within_age, AllSlice, Appended, Direction, ExpectedVersion, Position, ReadStream,
    RecordedEvent, Selector, Snapshot, StreamAppend, StreamInfo, StreamMetadata, StreamName,
    StreamSlice, StreamState, StreamVersion, READ_LIMIT_MAX,
};
use codec::Entry;
use index::{IdKey, Index, Undo};

/// The log topic holding the store's events.
const TOPIC: &str = "events";

/// Bytes of log read at a time when scanning.
const READ_BYTES: usize = 256 * 1024;

/// The largest checkpoints file read: checked before it is read into memory.
const CHECKPOINTS_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The largest snapshot file read.
const SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// When appends become durable; `always` (the default) acknowledges an append
    /// only once it is on disk.
    pub fsync: FsyncPolicy,
    /// Options of the underlying log (clock, sync hook).
    pub log: LogOptions,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            fsync: FsyncPolicy::Always,
            log: LogOptions::default(),
        }
    }
}

/// A store that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log did not open.
    #[error("event store log: {0}")]
    Log(#[from] tidings_log::OpenError),
    /// The store's topic could not be created or opened.
    #[error("event store topic: {0}")]
    Topic(#[from] TopicError),
    /// The index could not be rebuilt from the log.
    #[error("rebuilding the event store index: {0}")]
    Rebuild(#[from] StoreError),
}

/// The embedded event store. Cheap to clone; clones share one store.
#[derive(Clone, Debug)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// Why the store stopped writing, until it is reopened.
#[derive(Clone, Debug)]
struct Stopped {
    reason: String,
    /// The log found the disk full: nothing of the batch was written, but
    /// the index had placed it, and batches queued behind it would land
    /// where it was meant to be.
    disk_full: bool,
}

impl Stopped {
    fn error(&self) -> StoreError {
        if self.disk_full {
            StoreError::DiskFull(self.reason.clone())
        } else {
            StoreError::Failed(self.reason.clone())
        }
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// The log's storage, which the store's own files (snapshots,
    /// checkpoints) go through too.
    storage: Arc<dyn Storage>,
    log: Log,
    partition: Arc<Partition>,
    clock: Arc<dyn Clock>,
    index: Mutex<Index>,
    /// Serializes writers from checking expected versions to queueing in the log.
    writer: tokio::sync::Mutex<()>,
    failed: Mutex<Option<Stopped>>,
    checkpoints: Mutex<()>,
}

/// What an append will do, decided under the index lock.
enum Plan {
    /// Every event id was stored by this same append before.
    Repeat(Vec<Appended>),
    /// Write: the streams' next versions, in append order.
    Write(Vec<u64>),
}

impl EmbeddedStore {
    /// Opens (creating if needed) a store in `dir` and rebuilds its index from the
    /// log. Blocks while it reads the log.
    pub fn open(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedStore, OpenError> {
        let dir = dir.as_ref().to_owned();
        let clock = Arc::clone(&options.log.clock);
        let storage = Arc::clone(&options.log.storage);
        let log = Log::open(dir.join("log"), options.log)?;
        let config = TopicConfig {
            partitions: 1,
            fsync: options.fsync,
            segment_age: None,
            retention_age: None,
            retention_bytes: None,
            ..TopicConfig::default()
        };
        let topic = match log.topic(TOPIC) {
            Ok(topic) if topic.config() == config => topic,
            Ok(_) => log.alter_topic(TOPIC, config)?,
            Err(TopicError::NotFound(_)) => log.create_topic(TOPIC, config)?,
            Err(e) => return Err(e.into()),
        };
        let partition = topic.partition(PartitionId(0))?;
        let index = rebuild(&partition)?;
        tracing::debug!(
            dir = %dir.display(),
            streams = index.streams.len(),
            next_position = index.next,
            "event store opened"
        );
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                dir,
                storage,
                log,
                partition,
                clock,
                index: Mutex::new(index),
                writer: tokio::sync::Mutex::new(()),
                failed: Mutex::new(None),
                checkpoints: Mutex::new(()),
            }),
        })
    }

    /// Finishes queued appends and closes the log. Reads and appends fail
    /// afterwards.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner
            .log
            .close()
            .map_err(|e| StoreError::Failed(format!("closing the log: {e}")))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn durable(&self) -> u64 {
        self.inner.partition.high_watermark().0
    }

    fn check_failed(&self) -> Result<(), StoreError> {
        match &*self.inner.failed.lock().expect("failed lock") {
            Some(stopped) => Err(stopped.error()),
            None => Ok(()),
        }
    }

    fn fail(&self, reason: String) -> StoreError {
        self.stop(Stopped {
            reason,
            disk_full: false,
        })
    }

    /// Stops after the log refused a queued batch. A full disk is told
    /// apart, so that every refusal until the reopen says so (507 over
    /// HTTP) rather than a storage failure.
    fn fail_append(&self, e: &tidings_log::AppendError) -> StoreError {
        self.stop(Stopped {
            reason: e.to_string(),
            disk_full: e.kind() == ErrorKind::StorageFull,
        })
    }

    fn stop(&self, stopped: Stopped) -> StoreError {
        tracing::error!(reason = %stopped.reason, disk_full = stopped.disk_full, "event store write failed; it refuses writes until reopened");
        let mut failed = self.inner.failed.lock().expect("failed lock");
        failed.get_or_insert(stopped).error()
    }

    /// Queues `records` after their index changes were made, and waits until the
    /// log has them durably at `base`. Undoes the index changes when the log refuses
    /// the batch. Called with the writer lock held; releases it once queued.
    async fn write(
        &self,
        writer: tokio::sync::MutexGuard<'_, ()>,
        records: &[Record],
        undo: Vec<Undo>,
        base: u64,
    ) -> Result<(), AppendError> {
        let queued = match self.inner.partition.queue_append(records).await {
            Ok(queued) => queued,
            Err(e) => {
                self.inner
                    .index
                    .lock()
                    .expect("index lock")
                    .undo(undo, base);
                return Err(match e {
                    tidings_log::AppendError::RecordTooLarge { .. }
                    | tidings_log::AppendError::BatchTooLarge { .. }
                    | tidings_log::AppendError::TooManyRecords { .. } => {
                        AppendError::TooLarge(e.to_string())
                    }
                    e => AppendError::Store(StoreError::Append(e)),
                });
            }
        };
        drop(writer);
        match queued.await {
            Ok(done) if done.base_offset.0 == base => Ok(()),
            Ok(done) => Err(self
                .fail(format!(
                    "the log placed a batch at offset {} where the index expected {base}",
                    done.base_offset
                ))
                .into()),
            Err(e) => Err(self.fail_append(&e).into()),
        }
    }

    /// Waits until `position` is durable.
    async fn await_durable(&self, position: u64) -> Result<(), StoreError> {
        let mut rx = self.inner.partition.watch_high_watermark();
        loop {
            if rx.borrow_and_update().0 > position {
                return Ok(());
            }
            self.check_failed()?;
            // The timeout only bounds how long a failed writer goes unnoticed.
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// Reads the records at `positions` (ascending), decoding each batch once.
    fn fetch(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::with_capacity(positions.len());
        let mut cached: Vec<StoredRecord> = Vec::new();
        for &p in positions {
            let hit = cached.binary_search_by_key(&p, |r| r.offset.0);
            let record = match hit {
                Ok(i) => &cached[i],
                Err(_) => {
                    cached = self.inner.partition.read_records(Offset(p), READ_BYTES)?;
                    match cached.first() {
                        Some(r) if r.offset.0 == p => &cached[0],
                        _ => {
                            return Err(StoreError::Corrupt {
                                position: p,
                                reason: "the index points at a record the log does not have".into(),
                            })
                        }
                    }
                }
            };
            match codec::decode(record)? {
                Entry::Event(e) => out.push(e),
                Entry::Metadata { .. } => {
                    return Err(StoreError::Corrupt {
                        position: p,
                        reason: "the index points at a metadata record".into(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// The stream's state as far as it is durable.
    fn durable_state(entry: &index::StreamEntry, durable: u64) -> StreamState {
        let len = entry.positions.partition_point(|&p| p < durable);
        StreamState {
            last: len.checked_sub(1).map(|l| l as u64),
            ..entry.state
        }
    }

    fn plan(&self, index: &Index, appends: &[StreamAppend]) -> Result<Plan, AppendError> {
        let mut found = Vec::new();
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        for a in appends {
            for e in &a.events {
                if let Some(&p) = index.ids.get(&IdKey::of(e.id())) {
                    found.push((e.id(), p));
                }
            }
        }
        if !found.is_empty() {
            let locate = |stream: &StreamName, id: &str| {
                let position = *index.ids.get(&IdKey::of(id))?;
                let positions = &index.streams.get(stream)?.positions;
                let version = positions.binary_search(&position).ok()?;
                Some((version as u64, position))
            };
            return (found.len() == total)
                .then(|| repeated_append(appends, locate))
                .flatten()
                .map(Plan::Repeat)
                .ok_or_else(|| AppendError::DuplicateEventId {
                    id: found[0].0.to_owned(),
                });
        }
        let mut next_versions = Vec::with_capacity(appends.len());
        for a in appends {
            let state = index.state(&a.stream);
            if !a.expected.admits(state.visible()) {
                return Err(AppendError::WrongExpectedVersion {
                    stream: a.stream.clone(),
                    expected: a.expected,
                    actual: state.visible(),
                });
            }
            next_versions.push(state.next_version());
        }
        Ok(Plan::Write(next_versions))
    }

    async fn write_metadata(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        change: impl FnOnce(&mut StreamState) -> bool,
    ) -> Result<(), AppendError> {
        let writer = self.inner.writer.lock().await;
        self.check_failed()?;
        let now = self.inner.clock.now();
        let (record, undo, base) = {
            let mut index = self.inner.index.lock().expect("index lock");
            let mut state = index.state(stream);
            if !expected.admits(state.visible()) {
                return Err(AppendError::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected,
                    actual: state.visible(),
                });
            }
            if !change(&mut state) {
                return Ok(());
            }
            let base = index.next;
            let undo = index.set_metadata(stream, state, base);
            (codec::metadata_record(stream, &state, now), undo, base)
        };
        self.write(writer, &[record], vec![undo], base).await
    }

    fn snapshot_path(&self, stream: &StreamName) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        stream.as_str().hash(&mut h);
        self.inner
            .dir
            .join("snapshots")
            .join(format!("{:016x}.snap", h.finish()))
    }

    fn checkpoints_path(&self) -> PathBuf {
        self.inner.dir.join("checkpoints.json")
    }

    fn read_checkpoints(&self) -> Result<HashMap<String, u64>, StoreError> {
        let path = self.checkpoints_path();
        match self
            .inner
            .storage
            .read_bounded(&path, CHECKPOINTS_BYTES_MAX)
        {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

/// Reads the whole log into a fresh index.
fn rebuild(partition: &Partition) -> Result<Index, StoreError> {
    let mut index = Index {
        next: partition.log_start_offset().0,
        ..Index::default()
    };
    let end = partition.high_watermark().0;
    let mut at = index.next;
    while at < end {
        let records = partition.read_records(Offset(at), 4 * READ_BYTES)?;
        let Some(last) = records.last() else { break };
        at = last.offset.0 + 1;
        for record in &records {
            let position = record.offset.0;
            match codec::decode(record)? {
                Entry::Event(e) => {
                    index
                        .add_event(&e.stream, e.version.0, e.event.id(), position)
                        .map_err(|reason| StoreError::Corrupt { position, reason })?;
                }
                Entry::Metadata { stream, state } => {
                    index.set_metadata(&stream, state, position);
                }
            }
        }
    }
    Ok(index)
}

/// Writes `bytes` to `path` through a temporary file and a rename; `sync` makes the
/// file and the rename durable first.
fn replace_file(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
    sync: bool,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().expect("store files live in a directory");
    storage.create_dir_all(dir).map_err(io)?;
    if sync {
        return storage.replace_durably(path, bytes).map_err(io);
    }
    let tmp = path.with_extension("tmp");
    let file = storage.open(&tmp, OpenMode::Replace).map_err(io)?;
    file.write_all_at(bytes, 0).map_err(io)?;
    drop(file);
    storage.rename(&tmp, path).map_err(io)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotHeader {
    stream: String,
    version: u64,
    schema_version: u32,
}

impl EventStore for EmbeddedStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<Appended>, AppendError> {
        check_append(&appends)?;
        let now = self.inner.clock.now();
        let writer = self.inner.writer.lock().await;
        self.check_failed()?;
        let plan = {
            let index = self.inner.index.lock().expect("index lock");
            self.plan(&index, &appends)?
        };
        let next_versions = match plan {
            Plan::Repeat(done) => {
                drop(writer);
                let last = done.iter().map(|a| a.last_position.0).max().unwrap_or(0);
                self.await_durable(last).await?;
                return Ok(done);
            }
            Plan::Write(next_versions) => next_versions,
        };
        // Only this writer changes the index, so the plan still holds.
        let mut records = Vec::new();
        for (a, &first) in appends.iter().zip(&next_versions) {
            for (i, e) in a.events.iter().enumerate() {
                let record =
                    codec::event_record(&a.stream, first + i as u64, e, now).map_err(|source| {
                        AppendError::InvalidEvent {
                            stream: a.stream.clone(),
                            index: i,
                            source,
                        }
                    })?;
                records.push(record);
            }
        }
        let (undo, base, done) = {
            let mut index = self.inner.index.lock().expect("index lock");
            let base = index.next;
            let mut undo = Vec::with_capacity(records.len());
            let mut done = Vec::with_capacity(appends.len());
            let mut position = base;
            for (a, &first) in appends.iter().zip(&next_versions) {
                let first_position = position;
                for (i, e) in a.events.iter().enumerate() {
                    match index.add_event(&a.stream, first + i as u64, e.id(), position) {
                        Ok(u) => undo.push(u),
                        Err(reason) => {
                            index.undo(undo, base);
                            return Err(self.fail(reason).into());
                        }
                    }
                    position += 1;
                }
                done.push(Appended {
                    stream: a.stream.clone(),
                    first_version: StreamVersion(first),
                    last_version: StreamVersion(first + a.events.len() as u64 - 1),
                    first_position: Position(first_position),
                    last_position: Position(position - 1),
                });
            }
            (undo, base, done)
        };
        self.write(writer, &records, undo, base).await?;
        Ok(done)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> Result<StreamSlice, StoreError> {
        let durable = self.durable();
        let (state, mut positions) = {
            let index = self.inner.index.lock().expect("index lock");
            let Some(entry) = index.streams.get(stream) else {
                return Ok(StreamSlice {
                    events: Vec::new(),
                    version: None,
                });
            };
            let state = Self::durable_state(entry, durable);
            let positions = match read_range(&state, read) {
                None => Vec::new(),
                Some((a, b)) => {
                    let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
                    entry.positions[lo..=hi].to_vec()
                }
            };
            (state, positions)
        };
        positions.sort_unstable();
        let mut events = self.fetch(&positions)?;
        if read.direction == Direction::Backward {
            events.reverse();
        }
        let now = self.inner.clock.now();
        events.retain(|e| within_age(&state.metadata, e.recorded, now));
        Ok(StreamSlice {
            events,
            version: state.visible(),
        })
    }

    async fn read_all(
        &self,
        selector: &Selector,
        from: Position,
        limit: usize,
    ) -> Result<AllSlice, StoreError> {
        let limit = limit.clamp(1, READ_LIMIT_MAX);
        let durable = self.durable();
        if from.0 >= durable {
            return Ok(AllSlice {
                events: Vec::new(),
                next: from,
            });
        }
        match selector {
            Selector::All => {
                let mut events = Vec::new();
                let mut at = from.0.max(self.inner.partition.log_start_offset().0);
                'scan: while at < durable {
                    let records = self.inner.partition.read_records(Offset(at), READ_BYTES)?;
                    if records.is_empty() {
                        break;
                    }
                    for record in &records {
                        if record.offset.0 >= durable {
                            break 'scan;
                        }
                        at = record.offset.0 + 1;
                        if let Entry::Event(e) = codec::decode(record)? {
                            events.push(e);
                            if events.len() == limit {
                                break 'scan;
                            }
                        }
                    }
                }
                let next = if events.len() == limit { at } else { durable };
                Ok(AllSlice {
                    events,
                    next: Position(next),
                })
            }
            Selector::Category(_) | Selector::Stream(_) => {
                let positions: Vec<u64> = {
                    let index = self.inner.index.lock().expect("index lock");
                    let list = match selector {
                        Selector::Stream(s) => index.streams.get(s).map(|e| &e.positions),
                        Selector::Category(c) => index.categories.get(c.as_str()),
                        Selector::All => unreachable!("handled above"),
                    };
                    match list {
                        None => Vec::new(),
                        Some(all) => {
                            let start = all.partition_point(|&p| p < from.0);
                            all[start..]
                                .iter()
                                .copied()
                                .take_while(|&p| p < durable)
                                .take(limit)
                                .collect()
                        }
                    }
                };
                let next = match positions.last() {
                    Some(&last) if positions.len() == limit => last + 1,
                    _ => durable,
                };
                Ok(AllSlice {
                    events: self.fetch(&positions)?,
                    next: Position(next),
                })
            }
        }
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position(self.durable()))
    }

    async fn wait_beyond(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<Position, StoreError> {
        let mut rx = self.inner.partition.watch_high_watermark();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|hwm| hwm.0 > after.0)).await;
        let head = rx.borrow().0;
        Ok(Position(head))
    }

    async fn stream_info(&self, stream: &StreamName) -> Result<StreamInfo, StoreError> {
        let durable = self.durable();
        let index = self.inner.index.lock().expect("index lock");
        Ok(index
            .streams
            .get(stream)
            .map(|entry| Self::durable_state(entry, durable).info())
            .unwrap_or_else(|| StreamState::default().info()))
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), StoreError> {
        let result = self
            .write_metadata(stream, ExpectedVersion::Any, |state| {
                state.metadata = metadata;
                true
            })
            .await;
        metadata_written(result)
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> Result<(), AppendError> {
        self.write_metadata(stream, expected, StreamState::soft_delete)
            .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let header = SnapshotHeader {
            stream: snapshot.stream.as_str().to_owned(),
            version: snapshot.version.0,
            schema_version: snapshot.schema_version,
        };
        let mut bytes = serde_json::to_vec(&header).expect("snapshot header serializes");
        bytes.push(b'\n');
        bytes.extend_from_slice(&snapshot.state);
        let path = self.snapshot_path(&snapshot.stream);
        let storage = Arc::clone(&self.inner.storage);
        tokio::task::spawn_blocking(move || replace_file(&*storage, &path, &bytes, false))
            .await
            .expect("snapshot writer does not panic")
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        let path = self.snapshot_path(stream);
        let read = {
            let path = path.clone();
            let storage = Arc::clone(&self.inner.storage);
            tokio::task::spawn_blocking(move || storage.read_bounded(&path, SNAPSHOT_BYTES_MAX))
                .await
                .expect("snapshot reader does not panic")
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        // A snapshot is a cache: one that does not parse, belongs to another stream
        // (a hash collision) or is ahead of the durable stream is not used.
        let Some(split) = bytes.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let Ok(header) = serde_json::from_slice::<SnapshotHeader>(&bytes[..split]) else {
            tracing::warn!(path = %path.display(), "ignoring an unreadable snapshot");
            return Ok(None);
        };
        let info = self.stream_info(stream).await?;
        if header.stream != stream.as_str() || info.version.is_none_or(|v| v.0 < header.version) {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            stream: stream.clone(),
            version: StreamVersion(header.version),
            schema_version: header.schema_version,
            state: Bytes::copy_from_slice(&bytes[split + 1..]),
        }))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let this = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let _guard = this.inner.checkpoints.lock().expect("checkpoints lock");
            let mut all = this.read_checkpoints()?;
            all.insert(name, position.0);
            let bytes = serde_json::to_vec(&all).expect("checkpoints serialize");
            replace_file(&*this.inner.storage, &this.checkpoints_path(), &bytes, true)
        })
        .await
        .expect("checkpoint writer does not panic")
    }

    async fn locate_event(&self, id: &str) -> Result<Option<Position>, StoreError> {
        let durable = self.durable();
        let index = self.inner.index.lock().expect("index lock");
        // Only what reads may see: durable and acknowledged.
        Ok(index
            .ids
            .get(&IdKey::of(id))
            .copied()
            .filter(|&p| p < durable)
            .map(Position))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let _guard = self.inner.checkpoints.lock().expect("checkpoints lock");
        Ok(self.read_checkpoints()?.get(name).map(|&p| Position(p)))
    }
}
