//! Opening a partition after any kind of shutdown, as DESIGN §3 prescribes.
//!
//! Sealed segments were synced before the segment after them was created, so only
//! the active segment can hold a torn write. After a clean shutdown its index was
//! synced too, and the scan starts at the last index entry whose batch checks out;
//! the clean-shutdown marker is only believed if that scan ends exactly where the
//! marker says. Otherwise the whole active segment is scanned (bounded by the
//! topic's segment size, never by the size of the log).
//!
//! The first invalid batch ends the scan. If any valid batch follows it, the damage
//! is not a torn write but corruption of data that may have been acknowledged: the
//! partition is refused with the file and byte position. If nothing valid follows,
//! the tail is torn: it is truncated and the truncation synced. A tail of zeros is
//! space the writer preallocated and never filled (see `Writer::reserve`); it is
//! cut the same way, without a warning.

use std::io;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use tidings_types::Offset;

use crate::batch;
use crate::config::TopicConfig;
use crate::error::RecoveryError;
use crate::format::{self, Fields};
use crate::index::{self, IndexBuilder, IndexFiles, OffsetEntry, SegmentIndex};
use crate::limits::{BATCH_HEADER_BYTES, SEGMENT_FILE_BYTES_MAX};
use crate::segment::{self, Segment};
use crate::storage::{OpenMode, Storage, StorageFile};

const CLEAN_MARKER_FILE: &str = "clean-shutdown";
const CLEAN_MARKER_MAGIC: [u8; 4] = *b"TDCS";
const CLEAN_MARKER_BODY_BYTES: usize = 24;

/// The state a partition's writer starts from.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) sealed: Vec<Arc<Segment>>,
    pub(crate) active_base: Offset,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) len: u64,
    pub(crate) next: Offset,
    pub(crate) index: SegmentIndex,
    pub(crate) builder: IndexBuilder,
    pub(crate) index_files: IndexFiles,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CleanMarker {
    active_base: Offset,
    len: u64,
    next: Offset,
}

/// Leaves the marker that says the partition was closed cleanly at this point.
pub(crate) fn write_clean_marker(
    storage: &dyn Storage,
    dir: &Path,
    base: Offset,
    len: u64,
    next: Offset,
) -> io::Result<()> {
    let mut body = Vec::with_capacity(CLEAN_MARKER_BODY_BYTES);
    body.extend_from_slice(&base.0.to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(&next.0.to_le_bytes());
    storage.replace_durably(
        &dir.join(CLEAN_MARKER_FILE),
        &format::encode_record(CLEAN_MARKER_MAGIC, &body),
    )
}

fn read_clean_marker(storage: &dyn Storage, dir: &Path) -> Option<CleanMarker> {
    let path = dir.join(CLEAN_MARKER_FILE);
    let bytes = match format::read_record_from(storage, &path, CLEAN_MARKER_BODY_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(marker = %path.display(), error = %e, "ignoring an unreadable clean-shutdown marker");
            return None;
        }
    };
    match format::decode_record(&bytes, CLEAN_MARKER_MAGIC, CLEAN_MARKER_BODY_BYTES) {
        Ok(body) => {
            let mut f = Fields(body);
            Some(CleanMarker {
                active_base: Offset(f.u64()),
                len: f.u64(),
                next: Offset(f.u64()),
            })
        }
        Err(e) => {
            tracing::warn!(marker = %path.display(), error = %e, "ignoring a damaged clean-shutdown marker");
            None
        }
    }
}

fn parse_base(name: &str, suffix: &str) -> Option<Offset> {
    let stem = name.strip_suffix(suffix)?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok().map(Offset))
        .flatten()
        // The log never names a segment past the largest offset; such a file is not ours.
        .filter(|&base| base <= Offset::MAX)
}

pub(crate) fn recover(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    config: &TopicConfig,
) -> Result<Recovered, RecoveryError> {
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| RecoveryError::Io {
            action,
            path,
            source,
        }
    };

    let mut bases = Vec::new();
    let mut index_bases = Vec::new();
    for entry in storage.list(dir).map_err(io_err("list", dir))? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let entry_path = dir.join(name);
        if name.ends_with(".tmp") {
            // A replacement that never got renamed into place.
            storage
                .remove_file(&entry_path)
                .map_err(io_err("remove", &entry_path))?;
        } else if let Some(base) = parse_base(name, ".log") {
            bases.push(base);
        } else if let Some(base) =
            parse_base(name, ".index").or_else(|| parse_base(name, ".timeindex"))
        {
            index_bases.push((base, entry_path));
        }
    }
    bases.sort_unstable();
    // The files found here may have been created by a process on this boot
    // whose directory sync failed or never ran; they are about to be served
    // and written, so their entries must be durable first.
    storage.sync_dir(dir).map_err(io_err("sync", dir))?;
    for (base, path) in index_bases {
        if bases.binary_search(&base).is_err() {
            // Retention removed the segment but not yet its index.
            storage
                .remove_file(&path)
                .map_err(io_err("remove", &path))?;
        }
    }
    if bases.is_empty() {
        let path = index::log_path(dir, Offset(0));
        storage
            .create_durably(&path, &[])
            .map_err(io_err("create", &path))?;
        bases.push(Offset(0));
    }

    for pair in bases.windows(2) {
        if pair[1].0 - pair[0].0 > u64::from(u32::MAX) {
            let file = index::log_path(dir, pair[0]);
            return Err(RecoveryError::SegmentSpan {
                file,
                base: pair[0],
                next: pair[1],
            });
        }
    }
    let active_base = *bases.last().expect("at least one segment");
    let mut sealed = Vec::with_capacity(bases.len() - 1);
    for &base in &bases[..bases.len() - 1] {
        let path = index::log_path(dir, base);
        let len = storage.file_len(&path).map_err(io_err("stat", &path))?;
        check_segment_len(&path, len)?;
        sealed.push(Arc::new(Segment::sealed(storage, dir, base, len)));
    }

    let path = index::log_path(dir, active_base);
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .map_err(io_err("open", &path))?;
    // Read what the disk holds, not what the page cache says. A killed
    // process's unsynced writes are dirty pages: the sync writes them (or
    // fails, and the partition is refused). Writes an earlier failed sync
    // could not make durable are clean pages the disk never got: Linux keeps
    // serving them until they are evicted, and would let the scan below pass
    // them and the sync after it "succeed". So sync, then evict, then scan.
    file.sync_data().map_err(io_err("sync", &path))?;
    file.evict_clean()
        .map_err(io_err("drop the cached pages of", &path))?;
    let file_len = file.len().map_err(io_err("stat", &path))?;
    check_segment_len(&path, file_len)?;
    let marker = read_clean_marker(&**storage, dir);

    let interval = config.index_interval_bytes;
    let after_clean = marker
        .filter(|m| m.active_base == active_base)
        .map(|m| {
            scan_after_clean_shutdown(&**storage, dir, &*file, active_base, file_len, interval, m)
        })
        .transpose()
        .map_err(io_err("scan", &path))?
        .flatten();
    let (index, builder, len, next) = match after_clean {
        Some(state) => state,
        None => {
            if marker.is_some() {
                tracing::warn!(segment = %path.display(), "the clean-shutdown marker does not match the log tail; scanning the whole active segment");
            }
            let mut index = SegmentIndex::default();
            let mut builder = IndexBuilder::new(interval);
            let end = segment::scan(
                &*file,
                active_base,
                0,
                active_base,
                file_len,
                |pos, h, _| {
                    let rel = rel(active_base, h.base_offset);
                    let (o, t) = builder.on_batch(rel, u32::try_from(pos).expect("bounded"), h);
                    index.offsets.extend(o);
                    index.times.extend(t);
                    ControlFlow::Continue(())
                },
            )
            .map_err(io_err("scan", &path))?;
            if let Some((position, fault)) = end.fault {
                if segment::zeros_from(&*file, position, file_len).map_err(io_err("scan", &path))? {
                    // Space the writer allocated ahead and had not filled yet.
                    tracing::debug!(segment = %path.display(), position, file_len, "cutting preallocated space after the last batch");
                } else {
                    let follows = segment::valid_batch_after(&*file, position, file_len, end.next)
                        .map_err(io_err("scan", &path))?;
                    if follows.is_some() {
                        return Err(RecoveryError::Corrupt {
                            file: path,
                            position,
                            fault,
                        });
                    }
                    tracing::warn!(segment = %path.display(), position, file_len, %fault, "truncating a torn tail");
                }
                file.set_len(position).map_err(io_err("truncate", &path))?;
                file.sync_all().map_err(io_err("sync", &path))?;
            }
            (index, builder, end.pos, end.next)
        }
    };
    // Bytes a killed process wrote but never synced are still in the page cache and
    // pass every check; they become readable now, so they must be durable first.
    file.sync_data().map_err(io_err("sync", &path))?;

    let index_files = IndexFiles::rewrite(&**storage, dir, active_base, &index)
        .map_err(io_err("rewrite the index of", &path))?;
    let marker_path = dir.join(CLEAN_MARKER_FILE);
    if storage
        .exists(&marker_path)
        .map_err(io_err("stat", &marker_path))?
    {
        // From here on a crash is not a clean shutdown.
        storage
            .remove_file(&marker_path)
            .map_err(io_err("remove", &marker_path))?;
        storage.sync_dir(dir).map_err(io_err("sync", dir))?;
    }
    Ok(Recovered {
        sealed,
        active_base,
        file,
        len,
        next,
        index,
        builder,
        index_files,
    })
}

/// No segment the log writes exceeds this; a larger file was not written by it.
fn check_segment_len(path: &Path, len: u64) -> Result<(), RecoveryError> {
    if len > SEGMENT_FILE_BYTES_MAX {
        return Err(RecoveryError::Oversized {
            file: path.to_owned(),
            len,
        });
    }
    Ok(())
}

fn rel(base: Offset, offset: i64) -> u32 {
    let offset = u64::try_from(offset).expect("checked batches");
    u32::try_from(offset - base.0).expect("a segment spans < 2^32 offsets")
}

type TailState = (SegmentIndex, IndexBuilder, u64, Offset);

/// After a clean shutdown: resume from the last index entry whose batch checks out
/// and scan the rest. `None` when the tail disagrees with the marker.
fn scan_after_clean_shutdown(
    storage: &dyn Storage,
    dir: &Path,
    file: &dyn StorageFile,
    base: Offset,
    file_len: u64,
    interval: u32,
    marker: CleanMarker,
) -> io::Result<Option<TailState>> {
    if marker.len != file_len {
        return Ok(None);
    }
    let loaded = index::load(storage, dir, base, file_len)?;
    if !loaded.intact {
        return Ok(None);
    }
    let mut index = loaded.index;
    let mut header = [0u8; BATCH_HEADER_BYTES];
    let start = loop {
        let Some(&entry) = index.offsets.last() else {
            break OffsetEntry { rel: 0, pos: 0 };
        };
        let expected = base.plus(u64::from(entry.rel));
        let checks_out = file
            .read_exact_at(&mut header, u64::from(entry.pos))
            .is_ok()
            && batch::parse_header(&header).is_ok_and(|h| h.base_offset == expected.0 as i64);
        if checks_out {
            break entry;
        }
        index.offsets.pop();
    };
    index.times.retain(|t| t.rel <= start.rel);
    let mut builder = IndexBuilder::resume(interval, &index);
    let end = segment::scan(
        file,
        base,
        u64::from(start.pos),
        base.plus(u64::from(start.rel)),
        file_len,
        |pos, h, _| {
            // The resumed builder adds no entry at the start entry's own batch.
            let (o, t) = builder.on_batch(
                rel(base, h.base_offset),
                u32::try_from(pos).expect("bounded"),
                h,
            );
            index.offsets.extend(o);
            index.times.extend(t);
            ControlFlow::Continue(())
        },
    )?;
    let matches = end.fault.is_none() && end.pos == marker.len && end.next == marker.next;
    Ok(matches.then_some((index, builder, end.pos, end.next)))
}
