//! A queue group's journal: the changes since its last snapshot, appended as
//! checksummed records and made durable with group commit — answers that arrive
//! together share one `fdatasync`.
//!
//! File: a 16-byte header (magic `TDQJ`, format version, the generation of the
//! snapshot it follows), then records `[len: u32][crc32c(body): u32][body]`, all
//! little-endian. A journal whose generation is not its snapshot's is left over
//! from before a compaction and holds nothing the snapshot lacks. Only the tail
//! can be torn (every record before it was synced before anyone was answered),
//! so reading stops at the first record that does not check out and the file is
//! cut there.
//!
//! A failed write or sync stops the journal for good (fail-stop, as the log's
//! partitions do): memory may then be ahead of the disk, so nothing more is
//! answered until a restart reloads the group from what is durable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tidings_log::{format, OpenMode, Storage, StorageFile};
use tokio::sync::Notify;

const MAGIC: [u8; 4] = *b"TDQJ";
pub(crate) const HEADER_BYTES: u64 = 16;
/// Longest record body: the largest key plus the longest error text, with room.
pub(crate) const RECORD_BYTES_MAX: usize = 2 * 1024 * 1024;

struct State {
    file: Arc<dyn StorageFile>,
    generation: u64,
    /// Framed records not yet written.
    staged: Vec<u8>,
    /// Number of the last `stage` call.
    staged_seq: u64,
    /// Every `stage` call up to this number is durable.
    durable_seq: u64,
    flushing: bool,
    /// Bytes in the file.
    len: u64,
    failed: Option<Arc<str>>,
}

pub(crate) struct Journal {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    state: Mutex<State>,
    flushed: Notify,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

pub(crate) fn header(generation: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES as usize);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&generation.to_le_bytes());
    h
}

/// Appends one framed record holding `body` to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, body: &[u8]) {
    debug_assert!(body.len() <= RECORD_BYTES_MAX);
    format::frame(out, body);
}

/// The valid records of a journal image and the length they end at.
pub(crate) fn records(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let (frames, end) = format::frames(bytes, HEADER_BYTES as usize, RECORD_BYTES_MAX);
    (frames.into_iter().map(<[u8]>::to_vec).collect(), end)
}

impl Journal {
    /// Starts an empty journal following the snapshot of `generation`, replacing
    /// any file at `path`.
    pub(crate) fn create(
        storage: Arc<dyn Storage>,
        path: &Path,
        generation: u64,
    ) -> io::Result<Journal> {
        storage.replace_durably(path, &header(generation))?;
        let file = storage.open(path, OpenMode::ReadWrite)?;
        Ok(Journal::with_file(
            storage,
            path,
            file,
            generation,
            HEADER_BYTES,
        ))
    }

    fn with_file(
        storage: Arc<dyn Storage>,
        path: &Path,
        file: Arc<dyn StorageFile>,
        generation: u64,
        len: u64,
    ) -> Journal {
        Journal {
            storage,
            path: path.to_owned(),
            state: Mutex::new(State {
                file,
                generation,
                staged: Vec::new(),
                staged_seq: 0,
                durable_seq: 0,
                flushing: false,
                len,
                failed: None,
            }),
            flushed: Notify::new(),
        }
    }

    /// Opens the journal following the snapshot of `generation` and returns its
    /// records, in order. A missing journal, or one from another generation,
    /// holds nothing to replay and is started afresh; a torn tail is cut off.
    ///
    /// What is read is what the disk holds: the file is synced, then its
    /// clean cached pages dropped, before it is read — as the log's recovery
    /// does, for the same reason: after a failed sync the page cache can hold
    /// records that never reached the disk, marked clean, and a process
    /// started later on the same boot would replay them.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        path: &Path,
        generation: u64,
    ) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let file = match storage.open(path, OpenMode::ReadWrite) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((Journal::create(storage, path, generation)?, Vec::new()));
            }
            Err(e) => return Err(e),
        };
        file.sync_data()?;
        file.evict_clean()?;
        let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)?;
        if bytes.len() < HEADER_BYTES as usize
            || bytes[..HEADER_BYTES as usize] != header(generation)
        {
            drop(file);
            return Ok((Journal::create(storage, path, generation)?, Vec::new()));
        }
        let (records, end) = records(&bytes);
        if end < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - end,
                "cutting a torn tail off a queue journal"
            );
            file.set_len(end as u64)?;
            file.sync_all()?;
        }
        Ok((
            Journal::with_file(storage, path, file, generation, end as u64),
            records,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("journal lock")
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Bytes written and staged.
    pub(crate) fn len(&self) -> u64 {
        let s = self.lock();
        s.len + s.staged.len() as u64
    }

    /// Queues framed records (taking them out of `records`) for the next write;
    /// returns the number to pass to [`sync_to`](Self::sync_to).
    pub(crate) fn stage(&self, records: &mut Vec<u8>) -> Result<u64, Arc<str>> {
        let mut s = self.lock();
        if let Some(f) = &s.failed {
            return Err(Arc::clone(f));
        }
        if records.is_empty() {
            return Ok(s.staged_seq);
        }
        s.staged.append(records);
        s.staged_seq += 1;
        Ok(s.staged_seq)
    }

    /// Waits until everything staged up to `seq` is durable. Whoever finds no
    /// write under way starts one for everything staged so far; the others wait
    /// for it. The write runs on its own task, so a caller that gives up waiting
    /// does not leave the journal stuck.
    pub(crate) async fn sync_to(self: &Arc<Self>, seq: u64) -> Result<(), Arc<str>> {
        loop {
            let notified = self.flushed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(f) = &s.failed {
                    return Err(Arc::clone(f));
                }
                if s.durable_seq >= seq {
                    return Ok(());
                }
                if !s.flushing {
                    s.flushing = true;
                    let journal = Arc::clone(self);
                    tokio::spawn(async move { journal.flush().await });
                }
            }
            notified.await;
        }
    }

    async fn flush(&self) {
        // Tasks that are ready to run go first: a consumer woken by the last
        // flush that is about to stage its acks then shares this one. Taken
        // at once, the write would hold the first caller's records alone, and
        // the others would wait a whole sync more for the next.
        tokio::task::yield_now().await;
        let (file, bytes, upto, at) = {
            let mut s = self.lock();
            (
                Arc::clone(&s.file),
                std::mem::take(&mut s.staged),
                s.staged_seq,
                s.len,
            )
        };
        let n = bytes.len() as u64;
        let written = tokio::task::spawn_blocking(move || {
            file.write_all_at(&bytes, at)?;
            file.sync_data()
        })
        .await;
        {
            let mut s = self.lock();
            s.flushing = false;
            match written {
                Ok(Ok(())) => {
                    s.len += n;
                    s.durable_seq = upto;
                }
                Ok(Err(e)) => {
                    tracing::error!(path = %self.path.display(), error = %e, "queue journal write failed; the group stops until a restart");
                    s.failed = Some(format!("writing the journal failed: {e}").into());
                }
                Err(e) => s.failed = Some(format!("the journal writer stopped: {e}").into()),
            }
        }
        self.flushed.notify_waiters();
    }

    /// Writes and syncs everything staged, on the caller's thread, after any
    /// write under way: a clean close leaves nothing staged behind.
    pub(crate) fn flush_blocking(&self) -> Result<(), Arc<str>> {
        let mut s = loop {
            let s = self.lock();
            if !s.flushing {
                break s;
            }
            drop(s);
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if let Some(f) = &s.failed {
            return Err(Arc::clone(f));
        }
        if s.staged.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut s.staged);
        match s
            .file
            .write_all_at(&bytes, s.len)
            .and_then(|()| s.file.sync_data())
        {
            Ok(()) => {
                s.len += bytes.len() as u64;
                s.durable_seq = s.staged_seq;
                Ok(())
            }
            Err(e) => {
                let reason: Arc<str> = format!("writing the journal failed: {e}").into();
                s.failed = Some(Arc::clone(&reason));
                Err(reason)
            }
        }
    }

    /// Starts the journal over for the snapshot of `generation`, which holds
    /// everything it had. Everything staged must be durable already.
    pub(crate) fn restart(&self, generation: u64) -> io::Result<()> {
        let mut s = self.lock();
        debug_assert!(s.staged.is_empty() && !s.flushing);
        let reopened = self
            .storage
            .replace_durably(&self.path, &header(generation))
            .and_then(|()| self.storage.open(&self.path, OpenMode::ReadWrite));
        match reopened {
            Ok(file) => {
                s.file = file;
                s.generation = generation;
                s.len = HEADER_BYTES;
                Ok(())
            }
            Err(e) => {
                // The snapshot is newer than this journal now: records added to
                // it would be ignored at the next load. Stop instead.
                s.failed = Some(format!("starting the journal over failed: {e}").into());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stop_at_a_torn_or_damaged_tail() {
        let mut image = header(3);
        frame(&mut image, b"one");
        frame(&mut image, b"two");
        let whole = image.len();
        frame(&mut image, b"three");
        for cut in whole..image.len() {
            let (got, end) = records(&image[..cut]);
            assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
            assert_eq!(end, whole);
        }
        let mut flipped = image.clone();
        flipped[whole + 9] ^= 1;
        assert_eq!(records(&flipped).0.len(), 2);
        assert_eq!(records(&image).0.len(), 3);
    }
}
