//! Segments: one file of consecutive batches each, and the scans that validate them.
//!
//! A segment file `<base_offset:020>.log` holds RecordBatch v2 batches back to back
//! and nothing else, so any byte range of whole batches can be served to a Kafka
//! consumer as it is. The active segment is the last one; every other segment is
//! sealed: synced, never written again, and only deleted whole by retention.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tidings_types::Offset;

use crate::batch::{self, BatchFault, BatchHeader};
use crate::error::ReadError;
use crate::index::{self, IndexBuilder, IndexFiles, OffsetEntry, SegmentIndex};
use crate::limits::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES};
use crate::storage::{OpenMode, Storage, StorageFile};

/// Bytes a scan reads from disk at a time, unless it is told it needs less
/// ([`scan_reading`]).
pub(crate) const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// A segment as readers and the writer share it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: Offset,
    pub(crate) path: PathBuf,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    /// Bytes of readable data: durable data of the active segment, the whole file
    /// once sealed.
    pub(crate) readable_len: AtomicU64,
    sealed: AtomicBool,
    /// The active segment's handle. Sealed segments are opened for each read.
    file: Mutex<Option<Arc<dyn StorageFile>>>,
    /// Loaded lazily for sealed segments; always present for the active one.
    index: RwLock<Option<SegmentIndex>>,
}

impl Segment {
    pub(crate) fn active(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base: Offset,
        file: Arc<dyn StorageFile>,
        readable_len: u64,
        index: SegmentIndex,
    ) -> Segment {
        Segment {
            base,
            path: index::log_path(dir, base),
            dir: dir.to_owned(),
            storage: Arc::clone(storage),
            readable_len: AtomicU64::new(readable_len),
            sealed: AtomicBool::new(false),
            file: Mutex::new(Some(file)),
            index: RwLock::new(Some(index)),
        }
    }

    pub(crate) fn sealed(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base: Offset,
        len: u64,
    ) -> Segment {
        Segment {
            base,
            path: index::log_path(dir, base),
            dir: dir.to_owned(),
            storage: Arc::clone(storage),
            readable_len: AtomicU64::new(len),
            sealed: AtomicBool::new(true),
            file: Mutex::new(None),
            index: RwLock::new(None),
        }
    }

    /// The batch's base offset relative to this segment's base.
    pub(crate) fn rel(&self, header: &BatchHeader) -> u32 {
        let rel = u64::try_from(header.base_offset).expect("checked batches") - self.base.0;
        u32::try_from(rel).expect("a segment spans fewer than 2^32 offsets")
    }

    pub(crate) fn readable_len(&self) -> u64 {
        self.readable_len.load(Ordering::Acquire)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Called by the writer once the segment is synced and its index complete.
    pub(crate) fn seal(&self, len: u64) {
        self.readable_len.store(len, Ordering::Release);
        self.sealed.store(true, Ordering::Release);
        *self.file.lock().expect("segment file lock") = None;
    }

    /// Adds entries to the active segment's in-memory index.
    pub(crate) fn push_index(&self, offset: Option<OffsetEntry>, time: Option<index::TimeEntry>) {
        let mut guard = self.index.write().expect("segment index lock");
        let index = guard
            .as_mut()
            .expect("the active segment's index is loaded");
        index.offsets.extend(offset);
        index.times.extend(time);
    }

    /// Whether the segment holds an open file handle between reads.
    pub(crate) fn holds_open_file(&self) -> bool {
        self.file.lock().expect("segment file lock").is_some()
    }

    pub(crate) fn open_file(&self) -> Result<Arc<dyn StorageFile>, ReadError> {
        if let Some(f) = self.file.lock().expect("segment file lock").as_ref() {
            return Ok(Arc::clone(f));
        }
        self.storage
            .open(&self.path, OpenMode::Read)
            .map_err(|source| ReadError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Runs `f` on the segment's index, loading (and if needed rebuilding) a sealed
    /// segment's index first. `end` is the sealed segment's end offset.
    pub(crate) fn with_index<T>(
        &self,
        end: Offset,
        interval: u32,
        f: impl FnOnce(&SegmentIndex) -> T,
    ) -> Result<T, ReadError> {
        if let Some(index) = self.index.read().expect("segment index lock").as_ref() {
            return Ok(f(index));
        }
        let loaded = self.load_sealed_index(end, interval)?;
        let mut guard = self.index.write().expect("segment index lock");
        Ok(f(guard.get_or_insert(loaded)))
    }

    fn load_sealed_index(&self, end: Offset, interval: u32) -> Result<SegmentIndex, ReadError> {
        let len = self.readable_len();
        let io_err = |source| ReadError::Io {
            path: self.path.clone(),
            source,
        };
        let end_rel = u32::try_from(end.0 - self.base.0).expect("segments span < 2^32 offsets");
        let loaded = index::load(&*self.storage, &self.dir, self.base, len).map_err(io_err)?;
        let complete = loaded.intact && loaded.index.times.last().is_some_and(|e| e.rel == end_rel);
        if complete {
            return Ok(loaded.index);
        }
        tracing::warn!(segment = %self.path.display(), "index missing or damaged; rebuilding it from the segment");
        let file = self.open_file()?;
        let mut builder = IndexBuilder::new(interval);
        let mut rebuilt = SegmentIndex::default();
        let scan = scan(&*file, self.base, 0, self.base, len, |pos, h, _| {
            let (o, t) = builder.on_batch(self.rel(h), u32::try_from(pos).expect("bounded"), h);
            rebuilt.offsets.extend(o);
            rebuilt.times.extend(t);
            ControlFlow::Continue(())
        })
        .map_err(io_err)?;
        if let Some((position, fault)) = scan.fault {
            return Err(ReadError::Corrupt {
                file: self.path.clone(),
                position,
                fault,
            });
        }
        rebuilt.times.push(builder.final_entry(end_rel));
        if let Err(e) = IndexFiles::rewrite(&*self.storage, &self.dir, self.base, &rebuilt) {
            tracing::warn!(segment = %self.path.display(), error = %e, "cannot write the rebuilt index; keeping it in memory");
        }
        Ok(rebuilt)
    }
}

/// Reads byte ranges of a file through a reusable buffer, never past `end`.
pub(crate) struct Window<'a> {
    file: &'a dyn StorageFile,
    end: u64,
    buf: Vec<u8>,
    start: u64,
    /// Bytes read at a time (more when one `get` asks for more).
    chunk: usize,
}

impl<'a> Window<'a> {
    pub(crate) fn new(file: &'a dyn StorageFile, end: u64) -> Window<'a> {
        Window::reading(file, end, SCAN_CHUNK_BYTES)
    }

    /// A window that reads `chunk` bytes at a time: a reader that wants a few
    /// kilobytes does not copy (and zero first) a megabyte for them.
    pub(crate) fn reading(file: &'a dyn StorageFile, end: u64, chunk: usize) -> Window<'a> {
        Window {
            file,
            end,
            buf: Vec::new(),
            start: 0,
            chunk: chunk.max(BATCH_HEADER_BYTES),
        }
    }

    /// Up to `len` bytes at `pos`; fewer only where the range passes `end`.
    pub(crate) fn get(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        let len = len.min(usize::try_from(self.end.saturating_sub(pos)).unwrap_or(usize::MAX));
        let have = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let want = len.max(self.chunk);
            let want = want.min(usize::try_from(self.end - pos).unwrap_or(usize::MAX));
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let at = usize::try_from(pos - self.start).expect("inside the buffer");
        Ok(&self.buf[at..at + len])
    }
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Byte position after the last valid batch.
    pub(crate) pos: u64,
    /// Offset after the last valid batch.
    pub(crate) next: Offset,
    /// The invalid batch that stopped the scan before `end`, if any.
    pub(crate) fault: Option<(u64, BatchFault)>,
}

/// Walks the batches in `[pos, end)` of `file`, checking each as stored, and calls
/// `on_batch` with each valid one's position, header and bytes. Stops at the first
/// invalid batch, or before the batch for which `on_batch` breaks.
pub(crate) fn scan(
    file: &dyn StorageFile,
    segment_base: Offset,
    pos: u64,
    next: Offset,
    end: u64,
    on_batch: impl FnMut(u64, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> io::Result<ScanEnd> {
    scan_reading(
        file,
        segment_base,
        pos,
        next,
        end,
        SCAN_CHUNK_BYTES,
        on_batch,
    )
}

/// [`scan`], reading `chunk` bytes from the file at a time.
pub(crate) fn scan_reading(
    file: &dyn StorageFile,
    segment_base: Offset,
    mut pos: u64,
    mut next: Offset,
    end: u64,
    chunk: usize,
    mut on_batch: impl FnMut(u64, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> io::Result<ScanEnd> {
    let mut window = Window::reading(file, end, chunk);
    while pos < end {
        let head = window.get(pos, BATCH_HEADER_BYTES)?;
        let header = match batch::parse_header(head) {
            Ok(h) => h,
            Err(fault) => {
                return Ok(ScanEnd {
                    pos,
                    next,
                    fault: Some((pos, fault)),
                })
            }
        };
        let whole = window.get(pos, header.bytes)?;
        let stored = batch::check_stored(whole, next).and_then(|h| {
            // The index keeps offsets relative to the segment base in 32 bits, and
            // the writer rolls before a segment would span more.
            let end = next.0 - segment_base.0 + h.offset_count();
            if end > u64::from(u32::MAX) {
                return Err(BatchFault::OffsetSpan {
                    base: segment_base.0,
                    end: next.0 + h.offset_count(),
                });
            }
            Ok(h)
        });
        let header = match stored {
            Ok(h) => h,
            Err(fault) => {
                return Ok(ScanEnd {
                    pos,
                    next,
                    fault: Some((pos, fault)),
                })
            }
        };
        if on_batch(pos, &header, whole).is_break() {
            break;
        }
        pos += header.bytes as u64;
        next = next.plus(header.offset_count());
    }
    Ok(ScanEnd {
        pos,
        next,
        fault: None,
    })
}

/// Whether every byte of `file` from `from` to `end` is zero.
pub(crate) fn zeros_from(file: &dyn StorageFile, from: u64, end: u64) -> io::Result<bool> {
    let mut window = Window::new(file, end);
    let mut pos = from;
    while pos < end {
        let chunk = window.get(pos, SCAN_CHUNK_BYTES)?;
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += chunk.len() as u64;
    }
    Ok(true)
}

/// Whether any valid batch starts in `(after, end)`: the test that tells corruption
/// (valid data follows) from a torn tail (nothing valid follows).
pub(crate) fn valid_batch_after(
    file: &dyn StorageFile,
    after: u64,
    end: u64,
    min_offset: Offset,
) -> io::Result<Option<u64>> {
    let mut window = Window::new(file, end);
    let mut pos = after + 1;
    while pos + BATCH_HEADER_BYTES as u64 <= end {
        let head = window.get(pos, BATCH_HEADER_BYTES)?;
        if let Ok(h) = batch::parse_header(head) {
            let plausible = h.bytes <= BATCH_BYTES_MAX
                && pos + h.bytes as u64 <= end
                && u64::try_from(h.base_offset).is_ok_and(|b| b >= min_offset.0);
            if plausible {
                let whole = window.get(pos, h.bytes)?;
                if batch::check_stored(whole, Offset(h.base_offset as u64)).is_ok() {
                    return Ok(Some(pos));
                }
            }
        }
        pos += 1;
    }
    Ok(None)
}
