//! A partition: segments in offset order, one writer thread, any number of readers.
//!
//! Appends travel over a bounded channel to the partition's writer thread, which
//! gathers everything queued (group commit), assigns offsets, writes the batches with
//! one positional write and makes them durable with one `fdatasync`. Readers never
//! wait for the writer: they read the segment files directly, up to the durable
//! high-watermark the writer publishes after each sync.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use tidings_types::{Offset, PartitionId, TimestampMs, TopicName};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::batch::{self, BatchHeader, Record, StoredRecord};
use crate::config::{FsyncPolicy, LogOptions, TopicConfig};
use crate::error::{AppendError, CloseError, ReadError, RecoveryError};
use crate::index::{self, IndexBuilder, IndexFiles, OffsetEntry, TimeEntry};
use crate::limits::{
    APPEND_QUEUE_DEPTH, BATCH_BYTES_MAX, BATCH_RECORDS_MAX, GROUP_COMMIT_BYTES_MAX,
    OPEN_SEGMENTS_PER_PARTITION_MAX, RECORD_BYTES_MAX,
};
use crate::producers::{self, BatchId, Producers, SequenceFault, Verdict};
use crate::recovery;
use crate::segment::{self, Segment};
use crate::storage::StorageFile;

/// How far ahead of the write position the writer allocates the active segment.
/// One size change per this many bytes instead of one per synced append.
const PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first appended record.
    pub base_offset: Offset,
    /// Offset of the last appended record.
    pub last_offset: Offset,
    /// The append was an idempotent producer's batch stored already (see
    /// `producers`): nothing was appended, and the offsets are where it was
    /// stored the first time.
    pub duplicate: bool,
}

/// A batch queued by [`Partition::queue_append`]: a future of where it landed,
/// ready once the topic's fsync policy allows.
#[derive(Debug)]
#[must_use = "the append is acknowledged only when this resolves"]
pub struct QueuedAppend {
    rx: oneshot::Receiver<Result<Appended, AppendError>>,
    closed: AppendError,
}

impl std::future::Future for QueuedAppend {
    type Output = Result<Appended, AppendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        std::pin::Pin::new(&mut this.rx).poll(cx).map(|r| match r {
            Ok(result) => result,
            Err(_) => Err(this.closed.clone()),
        })
    }
}

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Sealed segments deleted.
    pub segments_deleted: usize,
    /// Bytes of segment data deleted.
    pub bytes_deleted: u64,
    /// The log-start offset afterwards.
    pub log_start: Offset,
}

/// Whole batches read from a partition, as they are stored.
#[derive(Clone, Debug)]
pub struct Batches {
    /// The batches, byte for byte; ready to serve to a Kafka consumer.
    pub bytes: Bytes,
    /// Base offset of the first batch. It can lie before the offset asked for, when
    /// the read started inside a batch.
    pub first_offset: Offset,
    /// The offset after the last batch: where the next read continues.
    pub next_offset: Offset,
    /// The partition's high-watermark when the read was made.
    pub high_watermark: Offset,
    /// The partition's log-start offset when the read was made.
    pub log_start: Offset,
    file: PathBuf,
}

impl Batches {
    /// Whether no batch was read (the read was at the high-watermark).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Decodes every record of the batches, including any before the offset the read
    /// asked for.
    pub fn records(&self) -> Result<Vec<StoredRecord>, ReadError> {
        batch::decode(self.bytes.clone()).map_err(|reason| ReadError::Decode {
            file: self.file.clone(),
            reason,
        })
    }

    /// The offset and key of every record of the batches, as
    /// [`records`](Self::records) would give them, without decoding values
    /// and headers (compressed batches excepted).
    pub fn keys(&self) -> Result<Vec<(Offset, Option<Bytes>)>, ReadError> {
        batch::decode_keys(self.bytes.clone()).map_err(|reason| ReadError::Decode {
            file: self.file.clone(),
            reason,
        })
    }
}

type Reply<T> = oneshot::Sender<Result<T, AppendError>>;

/// Validated batches on their way to the writer.
pub(crate) struct Prepared {
    pub(crate) bytes: BytesMut,
    pub(crate) headers: Vec<BatchHeader>,
}

enum Command {
    Append {
        prepared: Prepared,
        reply: Reply<Appended>,
    },
    Roll {
        reply: Reply<()>,
    },
    Retention {
        reply: Reply<RetentionOutcome>,
    },
}

/// One partition of a topic. Shared by `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Partition {
    topic: TopicName,
    id: PartitionId,
    dir: PathBuf,
    /// Altered in place by [`Log::alter_topic`](crate::Log::alter_topic); the
    /// writer reads it for every group it commits.
    config: RwLock<TopicConfig>,
    options: LogOptions,
    segments: RwLock<Vec<Arc<Segment>>>,
    log_start: AtomicU64,
    high_watermark: AtomicU64,
    hwm_tx: watch::Sender<Offset>,
    tx: mpsc::Sender<Command>,
    failure: Mutex<Option<Arc<str>>>,
    shutdown: Notify,
    writer: Mutex<Option<JoinHandle<io::Result<()>>>>,
    /// The largest idempotent producer id this partition has state for, or -1.
    producer_id_max: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Append { .. } => "Append",
            Command::Roll { .. } => "Roll",
            Command::Retention { .. } => "Retention",
        })
    }
}

impl Partition {
    /// Recovers the partition stored in `dir` and starts its writer thread.
    pub(crate) fn open(
        topic: TopicName,
        id: PartitionId,
        dir: &Path,
        config: TopicConfig,
        options: LogOptions,
    ) -> Result<Arc<Partition>, RecoveryError> {
        let recovered = recovery::recover(&options.storage, dir, &config)?;
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_DEPTH);
        let (hwm_tx, _) = watch::channel(recovered.next);
        let log_start = recovered
            .sealed
            .first()
            .map_or(recovered.active_base, |s| s.base);
        let active = Arc::new(Segment::active(
            &options.storage,
            dir,
            recovered.active_base,
            Arc::clone(&recovered.file),
            recovered.len,
            recovered.index,
        ));
        let mut segments = recovered.sealed;
        segments.push(Arc::clone(&active));
        let (producers, producers_seen) =
            rebuild_producers(dir, &segments, recovered.next, &config, &options)?;
        let partition = Arc::new(Partition {
            topic,
            id,
            dir: dir.to_owned(),
            config: RwLock::new(config),
            options,
            segments: RwLock::new(segments),
            log_start: AtomicU64::new(log_start.0),
            high_watermark: AtomicU64::new(recovered.next.0),
            hwm_tx,
            tx,
            failure: Mutex::new(None),
            shutdown: Notify::new(),
            writer: Mutex::new(None),
            producer_id_max: std::sync::atomic::AtomicI64::new(producers.max_id().unwrap_or(-1)),
        });
        let writer = Writer {
            config: partition.config(),
            builder: recovered.builder,
            segment_started: (recovered.len > 0).then(|| partition.options.clock.now()),
            p: Arc::clone(&partition),
            active,
            file: recovered.file,
            len: recovered.len,
            // Recovery leaves the file ending at the last whole batch.
            allocated: recovered.len,
            preallocate: true,
            next: recovered.next,
            written_next: recovered.next,
            index_files: recovered.index_files,
            buf: Vec::new(),
            entries: Vec::new(),
            replies: Vec::new(),
            sync_due: None,
            last_sync: Instant::now(),
            failed: None,
            producers_seen,
            producers,
        };
        let name = format!("tidings-log-{}-{}", partition.topic, partition.id);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || writer.run(rx))
            .map_err(|source| RecoveryError::Io {
                action: "start the writer thread for",
                path: dir.to_owned(),
                source,
            })?;
        *partition.writer.lock().expect("writer handle lock") = Some(handle);
        Ok(partition)
    }

    /// The largest idempotent producer id this partition has appended for (of
    /// those it still keeps state for), if any: whoever hands out producer ids
    /// starts above it.
    pub fn producer_id_max(&self) -> Option<i64> {
        let max = self.producer_id_max.load(Ordering::Acquire);
        (max >= 0).then_some(max)
    }

    /// The topic this partition belongs to.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// This partition's number.
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// The topic configuration this partition follows now.
    pub fn config(&self) -> TopicConfig {
        self.config.read().expect("config lock").clone()
    }

    /// Takes a new configuration; the next group the writer commits follows it.
    pub(crate) fn set_config(&self, config: TopicConfig) {
        *self.config.write().expect("config lock") = config;
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> Offset {
        Offset(self.log_start.load(Ordering::Acquire))
    }

    /// Why the partition stopped accepting appends (a write or sync failed),
    /// or `None` while it accepts them. Reads still serve what was durable.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// One past the last offset readers may see: everything below it is durable
    /// under the topic's fsync policy.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.high_watermark.load(Ordering::Acquire))
    }

    /// A receiver that changes whenever the high-watermark moves, for long-polling
    /// readers.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.hwm_tx.subscribe()
    }

    /// Number of segments, sealed and active.
    pub fn segment_count(&self) -> usize {
        self.segments.read().expect("segments lock").len()
    }

    /// Bytes of readable segment data.
    pub fn size_bytes(&self) -> u64 {
        self.segments
            .read()
            .expect("segments lock")
            .iter()
            .map(|s| s.readable_len())
            .sum()
    }

    /// Appends `records` as one batch and returns their offsets once the topic's
    /// fsync policy allows.
    pub async fn append(&self, records: &[Record]) -> Result<Appended, AppendError> {
        let prepared = prepare_records(records)?;
        self.submit(prepared).await
    }

    /// Appends the batch `batch` holds, as [`append`](Self::append) appends
    /// records: a caller with records in another shape writes them into a
    /// [`BatchBuilder`](crate::BatchBuilder) instead of building [`Record`]s.
    pub async fn append_built(&self, batch: crate::BatchBuilder) -> Result<Appended, AppendError> {
        let prepared = prepare_built(batch)?;
        self.submit(prepared).await
    }

    /// [`append`](Self::append) for callers outside an async runtime.
    ///
    /// # Panics
    /// When called from inside an async runtime.
    pub fn append_blocking(&self, records: &[Record]) -> Result<Appended, AppendError> {
        let prepared = prepare_records(records)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Command::Append { prepared, reply })
            .map_err(|_| self.closed())?;
        rx.blocking_recv().map_err(|_| self.closed())?
    }

    /// Appends RecordBatch v2 batches exactly as a Kafka producer sent them; the log
    /// only stamps base offsets and the leader epoch, which the CRC does not cover.
    pub async fn append_batches(&self, bytes: BytesMut) -> Result<Appended, AppendError> {
        let prepared = prepare_batches(bytes)?;
        self.submit(prepared).await
    }

    /// [`append_batches`](Self::append_batches), returning once the batches are
    /// queued for the writer, before they are written: batches queued one after
    /// another are stored in that order, while their syncs are awaited later.
    pub async fn queue_append_batches(&self, bytes: BytesMut) -> Result<QueuedAppend, AppendError> {
        let prepared = prepare_batches(bytes)?;
        self.enqueue(prepared).await
    }

    /// Queues `records` as one batch for the writer and returns once it is queued,
    /// before it is written. Batches are written in the order they are queued, so a
    /// caller that queues under its own lock knows the order of its batches in the
    /// log without holding the lock while they are synced. The returned
    /// [`QueuedAppend`] resolves as [`append`](Self::append) does.
    pub async fn queue_append(&self, records: &[Record]) -> Result<QueuedAppend, AppendError> {
        let prepared = prepare_records(records)?;
        self.enqueue(prepared).await
    }

    async fn submit(&self, prepared: Prepared) -> Result<Appended, AppendError> {
        self.enqueue(prepared).await?.await
    }

    async fn enqueue(&self, prepared: Prepared) -> Result<QueuedAppend, AppendError> {
        if let Some(reason) = self.failure.lock().expect("failure lock").clone() {
            return Err(self.failed(reason));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append { prepared, reply })
            .await
            .map_err(|_| self.closed())?;
        Ok(QueuedAppend {
            rx,
            closed: self.closed(),
        })
    }

    /// Seals the active segment now (if it holds anything) and starts a new one.
    pub async fn roll(&self) -> Result<(), AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Roll { reply })
            .await
            .map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Applies the retention rules now rather than at the next periodic check.
    pub async fn enforce_retention(&self) -> Result<RetentionOutcome, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Retention { reply })
            .await
            .map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())?
    }

    fn closed(&self) -> AppendError {
        AppendError::Closed {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }

    fn failed(&self, reason: Arc<str>) -> AppendError {
        AppendError::Failed {
            topic: self.topic.clone(),
            partition: self.id,
            reason,
        }
    }

    /// The segment holding `offset` and the offset its data ends at.
    fn segment_for(&self, offset: Offset) -> Option<(Arc<Segment>, Offset)> {
        let segments = self.segments.read().expect("segments lock");
        let i = segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)?;
        let end = segments
            .get(i + 1)
            .map_or_else(|| self.high_watermark(), |s| s.base);
        Some((Arc::clone(&segments[i]), end))
    }

    fn out_of_range(&self, requested: Offset) -> ReadError {
        ReadError::OffsetOutOfRange {
            requested,
            log_start: self.log_start_offset(),
            high_watermark: self.high_watermark(),
        }
    }

    /// Reads whole batches from `from` on, up to about `max_bytes`. The first batch is
    /// returned whole even when larger, so a reader always makes progress. A read at
    /// the high-watermark returns no batches; beyond it, or before the log start, it
    /// is an error.
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<Batches, ReadError> {
        self.read_through(from, None, max_bytes)
    }

    /// [`read`](Self::read), stopping after the batch that holds `last` when
    /// one is given: a reader that wants a few records does not read and
    /// decode the batches after them.
    fn read_through(
        &self,
        from: Offset,
        last: Option<Offset>,
        max_bytes: usize,
    ) -> Result<Batches, ReadError> {
        let high_watermark = self.high_watermark();
        let log_start = self.log_start_offset();
        if from < log_start || from > high_watermark {
            return Err(self.out_of_range(from));
        }
        let mut out = Batches {
            bytes: Bytes::new(),
            first_offset: from,
            next_offset: from,
            high_watermark,
            log_start,
            file: PathBuf::new(),
        };
        if from == high_watermark {
            return Ok(out);
        }
        let (seg, end) = self
            .segment_for(from)
            .ok_or_else(|| self.out_of_range(from))?;
        out.file.clone_from(&seg.path);
        let start = self.floor(&seg, end, from)?;
        let file = self.open_segment(&seg, from)?;
        let mut bytes = BytesMut::new();
        let mut first = None;
        let mut next = from;
        let limit = seg.readable_len();
        // The scan starts at the index entry at or before `from`, at most an
        // index interval (plus one batch) before it: reading that and
        // `max_bytes` at a time keeps a small read small.
        let chunk = max_bytes
            .saturating_add(self.config().index_interval_bytes as usize)
            .min(segment::SCAN_CHUNK_BYTES);
        scan_stored(&seg, &*file, start, limit, chunk, |_, h, whole| {
            let base = Offset(u64::try_from(h.base_offset).expect("checked"));
            let batch_next = base.plus(h.offset_count());
            if batch_next <= from {
                return ControlFlow::Continue(());
            }
            if !bytes.is_empty()
                && (bytes.len() + whole.len() > max_bytes || last.is_some_and(|l| base > l))
            {
                return ControlFlow::Break(());
            }
            first.get_or_insert(Offset(u64::try_from(h.base_offset).expect("checked")));
            bytes.extend_from_slice(whole);
            next = batch_next;
            ControlFlow::Continue(())
        })?;
        out.bytes = bytes.freeze();
        out.first_offset = first.unwrap_or(from);
        out.next_offset = next;
        Ok(out)
    }

    /// Reads and decodes records from `from` on, up to about `max_bytes` of batches,
    /// dropping records before `from` that share its batch.
    pub fn read_records(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, ReadError> {
        let mut records = self.read(from, max_bytes)?.records()?;
        records.retain(|r| r.offset >= from);
        Ok(records)
    }

    /// [`read_records`](Self::read_records) of the batches from the one that
    /// holds `from` through the one that holds `last`, up to about
    /// `max_bytes`: the records from `from` to `last`, or the first of them
    /// when `max_bytes` is reached. Records after `last` that share its batch
    /// come too.
    pub fn read_records_through(
        &self,
        from: Offset,
        last: Offset,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, ReadError> {
        let mut records = self.read_through(from, Some(last), max_bytes)?.records()?;
        records.retain(|r| r.offset >= from);
        Ok(records)
    }

    /// [`read_records`](Self::read_records), offsets and keys only.
    pub fn read_keys(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Option<Bytes>)>, ReadError> {
        let mut keys = self.read(from, max_bytes)?.keys()?;
        keys.retain(|(offset, _)| *offset >= from);
        Ok(keys)
    }

    /// Every segment with the offset where its readable data ends (the next
    /// segment's base, or the high-watermark for the active one).
    fn segments_with_ends(&self) -> Vec<(Arc<Segment>, Offset)> {
        let hwm = self.high_watermark();
        let segments = self.segments.read().expect("segments lock");
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::clone(s), segments.get(i + 1).map_or(hwm, |n| n.base)))
            .collect()
    }

    /// The first offset whose record has a timestamp at or after `ts`, as Kafka's
    /// ListOffsets answers; `None` when every readable record is older.
    pub fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<Offset>, ReadError> {
        let segments = self.segments_with_ends();
        let interval = self.config().index_interval_bytes;
        for (seg, end) in segments {
            if seg.is_sealed() {
                let newest = seg.with_index(end, interval, |ix| ix.sealed_max_timestamp())?;
                if newest.is_none_or(|newest| newest < ts.0) {
                    continue;
                }
            }
            let entry = seg.with_index(end, interval, |ix| ix.floor(ix.time_floor(ts.0)))?;
            let file = self.open_segment(&seg, seg.base)?;
            let mut found = None;
            let start = (u64::from(entry.pos), seg.base.plus(u64::from(entry.rel)));
            let scanned = segment::scan(
                &*file,
                seg.base,
                start.0,
                start.1,
                seg.readable_len(),
                |_, h, whole| {
                    if h.max_timestamp < ts.0 {
                        return ControlFlow::Continue(());
                    }
                    found = Some(batch::decode(Bytes::copy_from_slice(whole)).map(|records| {
                        records
                            .into_iter()
                            .find(|r| r.record.timestamp >= ts)
                            .map(|r| r.offset)
                    }));
                    ControlFlow::Break(())
                },
            )
            .map_err(|source| ReadError::Io {
                path: seg.path.clone(),
                source,
            })?;
            match found {
                Some(Ok(Some(offset))) => return Ok(Some(offset)),
                Some(Ok(None)) => {}
                Some(Err(reason)) => {
                    return Err(ReadError::Decode {
                        file: seg.path.clone(),
                        reason,
                    })
                }
                None => {
                    if let Some((position, fault)) = scanned.fault {
                        return Err(ReadError::Corrupt {
                            file: seg.path.clone(),
                            position,
                            fault,
                        });
                    }
                }
            }
        }
        Ok(None)
    }

    /// The first record with the partition's largest timestamp, and that
    /// timestamp (Kafka's ListOffsets "max timestamp", KIP-734); `None` when
    /// the partition holds nothing. The sealed segment with the largest
    /// newest timestamp (its time index says) and the active segment are
    /// scanned; on a tie the earlier record wins, as in Kafka.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(Offset, TimestampMs)>, ReadError> {
        let segments = self.segments_with_ends();
        let interval = self.config().index_interval_bytes;
        let mut sealed_best: Option<(i64, usize)> = None;
        for (i, (seg, end)) in segments.iter().enumerate() {
            if !seg.is_sealed() {
                continue;
            }
            if let Some(newest) = seg.with_index(*end, interval, |ix| ix.sealed_max_timestamp())? {
                if sealed_best.is_none_or(|(ts, _)| newest > ts) {
                    sealed_best = Some((newest, i));
                }
            }
        }
        let mut candidates: Vec<usize> = sealed_best.map(|(_, i)| i).into_iter().collect();
        candidates.extend(segments.iter().position(|(s, _)| !s.is_sealed()));
        let mut best: Option<(i64, Bytes, PathBuf)> = None;
        for i in candidates {
            let seg = &segments[i].0;
            let file = self.open_segment(seg, seg.base)?;
            scan_stored(
                seg,
                &*file,
                (0, seg.base),
                seg.readable_len(),
                segment::SCAN_CHUNK_BYTES,
                |_, h, whole| {
                    if best.as_ref().is_none_or(|(ts, _, _)| h.max_timestamp > *ts) {
                        best = Some((
                            h.max_timestamp,
                            Bytes::copy_from_slice(whole),
                            seg.path.clone(),
                        ));
                    }
                    ControlFlow::Continue(())
                },
            )?;
        }
        let Some((ts, whole, path)) = best else {
            return Ok(None);
        };
        let records = batch::decode(whole).map_err(|reason| ReadError::Decode {
            file: path.clone(),
            reason,
        })?;
        Ok(records
            .into_iter()
            .find(|r| r.record.timestamp.0 == ts)
            .map(|r| (r.offset, TimestampMs(ts))))
    }

    /// Byte position and offset of the index entry at or before `offset`.
    fn floor(
        &self,
        seg: &Segment,
        end: Offset,
        offset: Offset,
    ) -> Result<(u64, Offset), ReadError> {
        let rel = u32::try_from(offset.0 - seg.base.0).expect("a segment spans < 2^32 offsets");
        let entry: OffsetEntry =
            seg.with_index(end, self.config().index_interval_bytes, |ix| ix.floor(rel))?;
        Ok((u64::from(entry.pos), seg.base.plus(u64::from(entry.rel))))
    }

    fn open_segment(
        &self,
        seg: &Segment,
        requested: Offset,
    ) -> Result<Arc<dyn StorageFile>, ReadError> {
        match seg.open_file() {
            // Retention deleted the segment between lookup and open.
            Err(ReadError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(self.out_of_range(requested))
            }
            other => other,
        }
    }

    /// Stops the writer after it finishes queued work, syncs, and leaves a
    /// clean-shutdown marker. Appends afterwards fail with [`AppendError::Closed`].
    pub(crate) fn close(&self) -> Result<(), CloseError> {
        self.shutdown.notify_one();
        let handle = self.writer.lock().expect("writer handle lock").take();
        let result = match handle {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the partition writer thread panicked"))),
            None => Ok(()),
        };
        result.map_err(|source| CloseError {
            topic: self.topic.clone(),
            partition: self.id,
            source,
        })
    }
}

fn prepare_records(records: &[Record]) -> Result<Prepared, AppendError> {
    if records.is_empty() {
        return Err(AppendError::Empty);
    }
    if records.len() > BATCH_RECORDS_MAX {
        return Err(AppendError::TooManyRecords {
            count: records.len(),
        });
    }
    let mut total = 0usize;
    for (index, r) in records.iter().enumerate() {
        let bytes = r.payload_bytes();
        if bytes > RECORD_BYTES_MAX {
            return Err(AppendError::RecordTooLarge { index, bytes });
        }
        total += bytes;
        if total > BATCH_BYTES_MAX {
            return Err(AppendError::BatchTooLarge { bytes: total });
        }
    }
    let bytes = batch::encode(records)?;
    if bytes.len() > BATCH_BYTES_MAX {
        return Err(AppendError::BatchTooLarge { bytes: bytes.len() });
    }
    let header = batch::check_batch(&bytes)
        .map_err(|fault| AppendError::InvalidBatch { position: 0, fault })?;
    Ok(Prepared {
        bytes,
        headers: vec![header],
    })
}

fn prepare_built(batch: crate::BatchBuilder) -> Result<Prepared, AppendError> {
    // The builder kept to the limits as records were added and computed the
    // CRC over what it wrote: only the header is read back.
    let bytes = batch.finish().ok_or(AppendError::Empty)?;
    let header = batch::parse_header(&bytes)
        .map_err(|fault| AppendError::InvalidBatch { position: 0, fault })?;
    debug_assert_eq!(header.bytes, bytes.len());
    debug_assert!(batch::check_batch(&bytes).is_ok());
    Ok(Prepared {
        bytes,
        headers: vec![header],
    })
}

pub(crate) fn prepare_batches(bytes: BytesMut) -> Result<Prepared, AppendError> {
    if bytes.is_empty() {
        return Err(AppendError::Empty);
    }
    if bytes.len() > BATCH_BYTES_MAX {
        return Err(AppendError::BatchTooLarge { bytes: bytes.len() });
    }
    let mut headers = Vec::new();
    let mut records = 0usize;
    let mut position = 0;
    while position < bytes.len() {
        let header = batch::check_batch(&bytes[position..])
            .and_then(|h| batch::check_records(&bytes[position..], &h).map(|()| h))
            .map_err(|fault| AppendError::InvalidBatch { position, fault })?;
        records += usize::try_from(header.offset_count()).expect("bounded by the header check");
        if records > BATCH_RECORDS_MAX {
            return Err(AppendError::TooManyRecords { count: records });
        }
        position += header.bytes;
        headers.push(header);
    }
    Ok(Prepared { bytes, headers })
}

/// The partition's single writer. Owns the active segment's file and index files.
struct Writer {
    p: Arc<Partition>,
    /// The partition's configuration, reread at the start of every group so an
    /// alteration applies from the next group without a lock per append.
    config: TopicConfig,
    active: Arc<Segment>,
    file: Arc<dyn StorageFile>,
    /// Bytes written to the active segment.
    len: u64,
    /// The active segment file's size: `len` plus space allocated ahead.
    allocated: u64,
    /// False once the file system has refused to preallocate.
    preallocate: bool,
    /// Next offset to assign.
    next: Offset,
    /// Offset after the last batch written to the file.
    written_next: Offset,
    builder: IndexBuilder,
    index_files: IndexFiles,
    /// Batches of the current group, not yet written.
    buf: Vec<u8>,
    /// Index entries for the batches in `buf`.
    entries: Vec<(Option<OffsetEntry>, Option<TimeEntry>)>,
    /// Appends of the current group, answered once the group is durable.
    replies: Vec<(Reply<Appended>, Appended)>,
    /// Wall-clock time the active segment took its first batch, for rolling by age.
    /// A segment recovered at startup counts from the startup.
    segment_started: Option<TimestampMs>,
    /// When an `interval` policy next owes a sync.
    sync_due: Option<Instant>,
    last_sync: Instant,
    failed: Option<Arc<str>>,
    /// Idempotent producers' recent batches, in the order of the log.
    producers: Producers,
    /// Whether this partition has had an idempotent producer's batch since
    /// it was opened, or had state to rebuild.
    producers_seen: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) -> io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let p = Arc::clone(&self.p);
        rt.block_on(async {
            let mut retention = tokio::time::interval(p.options.retention_check_interval);
            retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            retention.tick().await;
            loop {
                let sync_due = self.sync_due;
                tokio::select! {
                    biased;
                    () = p.shutdown.notified() => break,
                    // Syncs and retention come before new appends so that a queue
                    // that never empties cannot starve them.
                    () = sleep_until(sync_due) => self.sync_interval(),
                    _ = retention.tick() => {
                        if let Err(e) = self.retention() {
                            tracing::warn!(topic = %p.topic, partition = %p.id, error = %e, "retention check failed");
                        }
                    }
                    cmd = rx.recv() => {
                        let Some(cmd) = cmd else { break };
                        self.run_group(gather(cmd, &mut rx));
                    }
                }
            }
        });
        // Appends queued before the close still go in; later ones are refused.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.run_group(gather(cmd, &mut rx));
        }
        self.close()
    }

    fn run_group(&mut self, group: Vec<Command>) {
        self.config = self.p.config();
        debug_assert!(self.buf.is_empty() && self.replies.is_empty());
        for cmd in group {
            match cmd {
                Command::Append { prepared, reply } => self.stage(prepared, reply),
                // Roll and retention see the log in queue order: the appends queued
                // before them are committed first.
                cmd => {
                    self.commit();
                    self.run_command(cmd);
                }
            }
        }
        self.commit();
    }

    fn run_command(&mut self, cmd: Command) {
        match cmd {
            Command::Append { .. } => unreachable!("appends are staged"),
            Command::Roll { reply } => {
                let result = self.check_failed().and_then(|()| self.try_roll());
                let _ = reply.send(result);
            }
            Command::Retention { reply } => {
                // A failed retention pass leaves data in place; it does not stop
                // appends.
                let result = self.check_failed().and_then(|()| {
                    self.retention().map_err(|e| AppendError::Maintenance {
                        topic: self.p.topic.clone(),
                        partition: self.p.id,
                        reason: format!("retention: {e}").into(),
                    })
                });
                let _ = reply.send(result);
            }
        }
    }

    fn check_failed(&self) -> Result<(), AppendError> {
        match &self.failed {
            Some(reason) => Err(self.p.failed(Arc::clone(reason))),
            None => Ok(()),
        }
    }

    /// Adds an append to the current group: rolls first if the segment is full,
    /// assigns offsets and computes index entries.
    fn stage(&mut self, mut prepared: Prepared, reply: Reply<Appended>) {
        if let Err(e) = self.check_failed() {
            let _ = reply.send(Err(e));
            return;
        }
        let count: u64 = prepared.headers.iter().map(BatchHeader::offset_count).sum();
        if self.next.0 + count > Offset::MAX.0 {
            let _ = reply.send(Err(self
                .p
                .failed("the partition has used up its offsets".into())));
            return;
        }
        if self.needs_roll(prepared.bytes.len() as u64, count) {
            // The staged batches must be written before the segment is sealed; if
            // that fails the partition has stopped and this append is refused too.
            if !self.write_buf() {
                let _ = reply.send(Err(self
                    .p
                    .failed(Arc::clone(self.failed.as_ref().expect("set by write_buf")))));
                return;
            }
            if let Err(e) = self.try_roll() {
                let _ = reply.send(Err(e));
                return;
            }
        }
        // Space first, while refusing changes nothing: on a full disk this
        // append is answered `DiskFull` and the partition goes on.
        let end = self.len + (self.buf.len() + prepared.bytes.len()) as u64;
        if let Err(e) = self.reserve(end) {
            let _ = reply.send(Err(self.disk_full(&e)));
            return;
        }
        match self.admit(&prepared) {
            Ok(None) => {}
            Ok(Some(stored)) => {
                // Answered with the original's place once this group is
                // durable: the original may be in it.
                self.replies.push((reply, stored));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        }
        if self.len == 0 && self.buf.is_empty() {
            self.segment_started = Some(self.p.options.clock.now());
        }
        let base_offset = self.next;
        let mut at = 0;
        for header in &prepared.headers {
            batch::stamp(&mut prepared.bytes[at..], self.next);
            let pos = self.len + (self.buf.len() + at) as u64;
            let pos = u32::try_from(pos).expect("segments stay below 4 GiB");
            let rel =
                u32::try_from(self.next.0 - self.active.base.0).expect("checked by needs_roll");
            self.entries.push(self.builder.on_batch(rel, pos, header));
            self.next = self.next.plus(header.offset_count());
            at += header.bytes;
        }
        self.buf.extend_from_slice(&prepared.bytes);
        let last_offset = Offset(self.next.0 - 1);
        self.replies.push((
            reply,
            Appended {
                base_offset,
                last_offset,
                duplicate: false,
            },
        ));
    }

    /// Checks the idempotent producers' batches of an append against their
    /// state and records them at the offsets they are about to get. `Some`
    /// when the append is a batch stored already: where it was stored.
    fn admit(&mut self, prepared: &Prepared) -> Result<Option<Appended>, AppendError> {
        let mut at = 0;
        let mut next = self.next;
        let mut undo = Vec::new();
        for header in &prepared.headers {
            let count = header.offset_count();
            if let Some(id) = BatchId::of(&prepared.bytes[at..], header) {
                let refused = match self.producers.check(&id) {
                    Ok(Verdict::New) => {
                        let last = Offset(next.0 + count - 1);
                        let now = self.p.options.clock.now().0;
                        undo.push(self.producers.record(&id, next, last, now));
                        None
                    }
                    Ok(Verdict::Duplicate { base, last }) if prepared.headers.len() == 1 => {
                        return Ok(Some(Appended {
                            base_offset: base,
                            last_offset: last,
                            duplicate: true,
                        }));
                    }
                    // A retried batch travels alone; beside others it is out
                    // of place.
                    Ok(Verdict::Duplicate { .. }) => Some(SequenceFault::OutOfOrder {
                        expected: self.producers.expected(id.producer_id).unwrap_or(0),
                        received: id.first_seq,
                    }),
                    Err(fault) => Some(fault),
                };
                if let Some(fault) = refused {
                    for u in undo.into_iter().rev() {
                        self.producers.undo(u);
                    }
                    return Err(self.sequence_error(id, fault));
                }
                self.producers_seen = true;
                self.p
                    .producer_id_max
                    .fetch_max(id.producer_id, Ordering::AcqRel);
            }
            next = next.plus(count);
            at += header.bytes;
        }
        Ok(None)
    }

    fn sequence_error(&self, id: BatchId, fault: SequenceFault) -> AppendError {
        let (topic, partition) = (self.p.topic.clone(), self.p.id);
        match fault {
            SequenceFault::StaleEpoch { epoch, current } => AppendError::InvalidProducerEpoch {
                topic,
                partition,
                producer_id: id.producer_id,
                epoch,
                current,
            },
            SequenceFault::OutOfOrder { expected, received } => AppendError::OutOfOrderSequence {
                topic,
                partition,
                producer_id: id.producer_id,
                expected,
                received,
            },
        }
    }

    /// Writes the producer snapshot as of the log's end and forgets idle
    /// producers. A failure costs the next open a longer scan, nothing else.
    fn snapshot_producers(&mut self) {
        let expiration = ms(self.p.options.producer_id_expiration);
        self.producers
            .expire(self.p.options.clock.now().0, expiration);
        if !self.producers_seen {
            // Never an idempotent producer here: no snapshot needed, and none
            // to keep up to date.
            return;
        }
        if let Err(e) = producers::write_snapshot(
            &*self.p.options.storage,
            &self.p.dir,
            &self.producers,
            self.next,
        ) {
            tracing::warn!(topic = %self.p.topic, partition = %self.p.id, error = %e, "cannot write the producer snapshot; the next open scans the log instead");
        }
    }

    fn needs_roll(&self, bytes: u64, count: u64) -> bool {
        let len = self.len + self.buf.len() as u64;
        if len == 0 {
            return false;
        }
        let config = &self.config;
        let full = len + bytes > config.segment_bytes;
        let offsets_full = self.next.0 + count - self.active.base.0 > u64::from(u32::MAX);
        let old = config
            .segment_age
            .zip(self.segment_started)
            .is_some_and(|(age, t)| {
                let now = self.p.options.clock.now().0;
                now.saturating_sub(t.0) >= i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
            });
        full || offsets_full || old
    }

    /// Writes the staged batches and their index entries; returns false on failure.
    fn write_buf(&mut self) -> bool {
        if self.buf.is_empty() || self.failed.is_some() {
            return self.failed.is_none();
        }
        // Staging reserved the space already where the file system allows;
        // where it does not, a full disk fails the write below.
        let _ = self.reserve(self.len + self.buf.len() as u64);
        if let Err(e) = self.file.write_all_at(&self.buf, self.len) {
            self.fail("write the segment", &e);
            return false;
        }
        self.len += self.buf.len() as u64;
        self.written_next = self.next;
        self.buf.clear();
        for (offset, time) in self.entries.drain(..) {
            if offset.is_none() && time.is_none() {
                continue;
            }
            self.active.push_index(offset, time);
            // Index files are derived data: a failed entry write only costs a rebuild.
            let written = offset
                .map_or(Ok(()), |e| self.index_files.push_offset(e))
                .and_then(|()| time.map_or(Ok(()), |e| self.index_files.push_time(e)));
            if let Err(e) = written {
                tracing::warn!(segment = %self.active.path.display(), error = %e, "cannot append to the index file; it will be rebuilt on recovery");
            }
        }
        true
    }

    /// Writes the group, makes it durable as the policy says, and answers it.
    fn commit(&mut self) {
        if !self.write_buf() {
            return self.answer();
        }
        match self.config.fsync {
            FsyncPolicy::Always => {
                if self.len > self.active.readable_len() {
                    if let Err(e) = self.p.options.file_sync.sync_data(&*self.file) {
                        self.fail("fdatasync the segment", &e);
                        return self.answer();
                    }
                    self.last_sync = Instant::now();
                    self.publish();
                }
            }
            FsyncPolicy::Interval(every) => {
                if self.len > self.active.readable_len() && self.sync_due.is_none() {
                    self.sync_due = Some((self.last_sync + every).max(Instant::now()));
                }
            }
            FsyncPolicy::Never => self.publish(),
        }
        self.answer();
    }

    fn sync_interval(&mut self) {
        self.sync_due = None;
        if self.failed.is_some() {
            return;
        }
        match self.p.options.file_sync.sync_data(&*self.file) {
            Ok(()) => {
                self.last_sync = Instant::now();
                self.publish();
            }
            Err(e) => {
                self.fail("fdatasync the segment", &e);
            }
        }
    }

    /// Makes everything written so far visible to readers.
    fn publish(&self) {
        self.active.readable_len.store(self.len, Ordering::Release);
        self.p.high_watermark.store(self.next.0, Ordering::Release);
        self.p.hwm_tx.send_replace(self.next);
    }

    fn answer(&mut self) {
        for (reply, appended) in self.replies.drain(..) {
            let result = match &self.failed {
                Some(reason) => Err(self.p.failed(Arc::clone(reason))),
                None => Ok(appended),
            };
            let _ = reply.send(result);
        }
    }

    /// Fail-stop: after a write or sync error the partition takes no more appends
    /// until recovery on restart. The sync is never retried, because a failed
    /// `fdatasync` may already have dropped the dirty pages it was asked to write.
    fn fail(&mut self, action: &str, e: &io::Error) -> AppendError {
        let reason: Arc<str> =
            format!("cannot {action} {}: {e}", self.active.path.display()).into();
        tracing::error!(topic = %self.p.topic, partition = %self.p.id, %reason, "partition stopped");
        *self.p.failure.lock().expect("failure lock") = Some(Arc::clone(&reason));
        self.failed = Some(Arc::clone(&reason));
        // Offsets of staged batches that never reached the file are not used.
        self.next = self.written_next;
        self.buf.clear();
        self.entries.clear();
        self.p.failed(reason)
    }

    /// Allocates the active segment's file ahead of `end`, the end of the next
    /// write, in steps of [`PREALLOCATE_BYTES`] and never past the segment size.
    ///
    /// An append inside allocated space leaves the file's size alone, so its
    /// `fdatasync` has no size change to commit to the file system's journal: a
    /// quarter less time per sync, and far fewer slow ones. The space reads as
    /// zeros, which recovery recognises as the end of the data; sealing and a clean
    /// close cut it off. Where the file system refuses to preallocate, the writer
    /// goes on without.
    ///
    /// It is also how a full disk is met without stopping: a write into
    /// allocated space needs no new blocks, so staging reserves each append's
    /// space first, and an append that finds no room is answered
    /// [`AppendError::DiskFull`] before anything changed. On a nearly full disk
    /// the step ahead may not fit where the append itself does; then exactly the
    /// append's end is allocated. An error means the disk is full up to `end`.
    fn reserve(&mut self, end: u64) -> io::Result<()> {
        if !self.preallocate || end + PREALLOCATE_BYTES / 2 <= self.allocated {
            return Ok(());
        }
        let target = (end + PREALLOCATE_BYTES).min(self.config.segment_bytes.max(end));
        if target <= self.allocated {
            return Ok(());
        }
        match self.file.allocate(self.allocated, target - self.allocated) {
            Ok(()) => self.allocated = target,
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                if end > self.allocated {
                    self.file.allocate(self.allocated, end - self.allocated)?;
                    self.allocated = end;
                }
            }
            Err(e) => {
                self.preallocate = false;
                tracing::info!(segment = %self.active.path.display(), error = %e, "the file system does not preallocate; appending without");
            }
        }
        Ok(())
    }

    /// The answer to an append that found the disk full.
    fn disk_full(&self, e: &io::Error) -> AppendError {
        tracing::warn!(topic = %self.p.topic, partition = %self.p.id, segment = %self.active.path.display(), error = %e, "disk full: append refused");
        AppendError::DiskFull {
            topic: self.p.topic.clone(),
            partition: self.p.id,
            path: self.active.path.clone(),
        }
    }

    /// [`Writer::roll`], answering a full disk without stopping the partition
    /// and any other failure by stopping it.
    fn try_roll(&mut self) -> Result<(), AppendError> {
        match self.roll() {
            Ok(()) => Ok(()),
            Err(Roll::Full(e)) => Err(self.disk_full(&e)),
            Err(Roll::Failed(e)) => Err(self.fail("seal the segment", &e)),
        }
    }

    /// Cuts the active segment's file back to its data and makes that durable.
    fn trim(&mut self) -> io::Result<()> {
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
        }
        self.allocated = self.len;
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next offset.
    ///
    /// The new segment's files are created after the old segment is synced
    /// and cut to its data (recovery takes every segment but the last as
    /// sealed), and before anything marks the old one sealed. When the disk
    /// has no room for them, what was created is removed durably and the old
    /// segment stays active: [`Roll::Full`], and the next append tries again.
    fn roll(&mut self) -> Result<(), Roll> {
        debug_assert!(self.buf.is_empty() && self.failed.is_none());
        if self.len == 0 {
            return Ok(());
        }
        self.p.options.file_sync.sync_data(&*self.file)?;
        // A sealed segment ends at its data, and is durably so before the next
        // segment exists.
        self.trim()?;

        let dir = &self.p.dir;
        let base = self.next;
        let storage = &self.p.options.storage;
        let created = storage
            .create_durably(&index::log_path(dir, base), &[])
            .and_then(|file| Ok((file, IndexFiles::create(&**storage, dir, base)?)));
        let (file, index_files) = match created {
            Ok(created) => created,
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                for path in [
                    index::log_path(dir, base),
                    index::offset_index_path(dir, base),
                    index::time_index_path(dir, base),
                ] {
                    match storage.remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                storage.sync_dir(dir)?;
                return Err(Roll::Full(e));
            }
            Err(e) => return Err(e.into()),
        };

        let end_rel = u32::try_from(self.next.0 - self.active.base.0).expect("bounded");
        let last = self.builder.final_entry(end_rel);
        // The index is derived: a sealed segment whose index lacks its final
        // entry has it rebuilt when first read.
        if let Err(e) = self
            .index_files
            .push_time(last)
            .and_then(|()| self.index_files.sync())
        {
            tracing::warn!(segment = %self.active.path.display(), error = %e, "cannot complete the sealed segment's index; it will be rebuilt");
        }
        self.active.push_index(None, Some(last));
        let new = Arc::new(Segment::active(
            storage,
            dir,
            base,
            Arc::clone(&file),
            0,
            Default::default(),
        ));
        self.active.seal(self.len);
        {
            let mut segments = self.p.segments.write().expect("segments lock");
            segments.push(Arc::clone(&new));
            debug_assert!(
                segments.iter().filter(|s| s.holds_open_file()).count()
                    <= OPEN_SEGMENTS_PER_PARTITION_MAX
            );
        }
        self.p.high_watermark.store(self.next.0, Ordering::Release);
        self.p.hwm_tx.send_replace(self.next);

        self.active = new;
        self.file = file;
        self.index_files = index_files;
        self.len = 0;
        self.allocated = 0;
        self.builder = IndexBuilder::new(self.config.index_interval_bytes);
        self.segment_started = None;
        self.sync_due = None;
        self.last_sync = Instant::now();
        self.snapshot_producers();
        Ok(())
    }

    /// Deletes the oldest sealed segments that retention by size or age allows.
    fn retention(&mut self) -> io::Result<RetentionOutcome> {
        let config = self.config.clone();
        let segments: Vec<Arc<Segment>> = self.p.segments.read().expect("segments lock").clone();
        let sealed = &segments[..segments.len() - 1];
        let mut delete = 0;
        if let Some(limit) = config.retention_bytes {
            let total: u64 = sealed.iter().map(|s| s.readable_len()).sum::<u64>() + self.len;
            let mut excess = total.saturating_sub(limit);
            while delete < sealed.len() && excess >= sealed[delete].readable_len() {
                excess -= sealed[delete].readable_len();
                delete += 1;
            }
        }
        if let Some(age) = config.retention_age {
            let cutoff = self
                .p
                .options
                .clock
                .now()
                .0
                .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            let mut expired = 0;
            while expired < sealed.len() {
                let end = segments[expired + 1].base;
                let newest = sealed[expired]
                    .with_index(end, config.index_interval_bytes, |ix| {
                        ix.sealed_max_timestamp()
                    })
                    .map_err(|e| io::Error::other(e.to_string()))?;
                if newest.is_some_and(|ts| ts >= cutoff) {
                    break;
                }
                expired += 1;
            }
            delete = delete.max(expired);
        }
        let mut outcome = RetentionOutcome {
            log_start: segments[delete].base,
            ..Default::default()
        };
        if delete == 0 {
            return Ok(outcome);
        }
        let removed: Vec<Arc<Segment>> = self
            .p
            .segments
            .write()
            .expect("segments lock")
            .drain(..delete)
            .collect();
        self.p
            .log_start
            .store(outcome.log_start.0, Ordering::Release);
        for seg in removed {
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += seg.readable_len();
            for path in [
                index::log_path(&self.p.dir, seg.base),
                index::offset_index_path(&self.p.dir, seg.base),
                index::time_index_path(&self.p.dir, seg.base),
            ] {
                match self.p.options.storage.remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        tracing::info!(topic = %self.p.topic, partition = %self.p.id, segments = outcome.segments_deleted, bytes = outcome.bytes_deleted, log_start = %outcome.log_start, "retention deleted segments");
        Ok(outcome)
    }

    /// Final sync and the clean-shutdown marker. A failed partition leaves no
    /// marker, so the next open runs a full recovery.
    fn close(mut self) -> io::Result<()> {
        self.commit();
        if self.failed.is_some() {
            return Ok(());
        }
        self.p.options.file_sync.sync_data(&*self.file)?;
        self.trim()?;
        self.publish();
        self.index_files.sync()?;
        self.snapshot_producers();
        recovery::write_clean_marker(
            &*self.p.options.storage,
            &self.p.dir,
            self.active.base,
            self.len,
            self.next,
        )
    }
}

/// Why a roll did not happen.
enum Roll {
    /// No room for the new segment's files; nothing changed.
    Full(io::Error),
    /// Anything else: the partition stops.
    Failed(io::Error),
}

impl From<io::Error> for Roll {
    fn from(e: io::Error) -> Roll {
        Roll::Failed(e)
    }
}

/// `first` and whatever else is queued, up to one group commit's worth of bytes.
fn gather(first: Command, rx: &mut mpsc::Receiver<Command>) -> Vec<Command> {
    let mut group = vec![first];
    let mut bytes = 0;
    while bytes < GROUP_COMMIT_BYTES_MAX {
        let Ok(cmd) = rx.try_recv() else { break };
        if let Command::Append { prepared, .. } = &cmd {
            bytes += prepared.bytes.len();
        }
        group.push(cmd);
    }
    group
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `segment::scan` of a stored segment from `start` (byte position, offset)
/// to `limit`: its I/O failure, or a batch that fails its checks, as a read
/// error naming the file.
fn scan_stored(
    seg: &Segment,
    file: &dyn StorageFile,
    start: (u64, Offset),
    limit: u64,
    chunk: usize,
    on_batch: impl FnMut(u64, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let scanned = segment::scan_reading(file, seg.base, start.0, start.1, limit, chunk, on_batch)
        .map_err(|source| ReadError::Io {
        path: seg.path.clone(),
        source,
    })?;
    match scanned.fault {
        Some((position, fault)) => Err(ReadError::Corrupt {
            file: seg.path.clone(),
            position,
            fault,
        }),
        None => Ok(()),
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A segment's damage met while opening the partition in `dir`, as the
/// refusal that names the file.
fn damage(dir: &Path, e: ReadError) -> RecoveryError {
    match e {
        ReadError::Corrupt {
            file,
            position,
            fault,
        } => RecoveryError::Corrupt {
            file,
            position,
            fault,
        },
        ReadError::Io { path, source } => RecoveryError::Io {
            action: "read",
            path,
            source,
        },
        other => RecoveryError::Io {
            action: "rebuild the producer state of",
            path: dir.to_owned(),
            source: io::Error::other(other.to_string()),
        },
    }
}

/// The producer state of a partition just recovered: the newest snapshot that
/// reads back, then every batch after it. Without a snapshot, the log from the
/// first segment whose newest timestamp is within the expiration (producers'
/// own timestamps: a skewed one scans more, never less).
fn rebuild_producers(
    dir: &Path,
    segments: &[Arc<Segment>],
    next: Offset,
    config: &TopicConfig,
    options: &LogOptions,
) -> Result<(Producers, bool), RecoveryError> {
    let io_err = |source| RecoveryError::Io {
        action: "rebuild the producer state of",
        path: dir.to_owned(),
        source,
    };
    let now = options.clock.now().0;
    let expiration = ms(options.producer_id_expiration);
    let (from, mut state) =
        match producers::newest_snapshot(&*options.storage, dir, next).map_err(io_err)? {
            Some((offset, state)) => (Some(offset), state),
            None => (None, Producers::default()),
        };
    let mut seen = from.is_some();
    let mut first = 0;
    if from.is_none() {
        let cutoff = now.saturating_sub(expiration);
        while first + 1 < segments.len() {
            let end = segments[first + 1].base;
            let newest = segments[first]
                .with_index(end, config.index_interval_bytes, |ix| {
                    ix.sealed_max_timestamp()
                })
                .map_err(|e| damage(dir, e))?;
            if newest.is_some_and(|ts| ts >= cutoff) {
                break;
            }
            first += 1;
        }
    }
    let from = from.unwrap_or(Offset(0));
    let mut scanned = 0u64;
    for (i, seg) in segments.iter().enumerate().skip(first) {
        let end = segments.get(i + 1).map_or(next, |s| s.base);
        if end <= from {
            continue;
        }
        let file = seg.open_file().map_err(|e| damage(dir, e))?;
        segment::scan(
            &*file,
            seg.base,
            0,
            seg.base,
            seg.readable_len(),
            |_, header, bytes| {
                let base = Offset(u64::try_from(header.base_offset).unwrap_or(0));
                if base >= from {
                    if let Some(id) = BatchId::of(bytes, header) {
                        seen = true;
                        let last = Offset(base.0 + header.offset_count() - 1);
                        // When it was appended is not stored (batches keep the
                        // producer's own timestamps, which may be skewed): count
                        // it as seen now, which keeps state longer, never shorter.
                        state.record(&id, base, last, now);
                    }
                    scanned += 1;
                }
                ControlFlow::Continue(())
            },
        )
        .map_err(io_err)?;
    }
    state.expire(now, expiration);
    if scanned > 0 {
        tracing::debug!(dir = %dir.display(), batches = scanned, producers = state.len(), "producer state rebuilt from the log");
    }
    Ok((state, seen))
}
