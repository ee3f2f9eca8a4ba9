//! Where the log's bytes live: the small file-system interface every file
//! operation of the log goes through.
//!
//! Production uses [`OsStorage`] (`std::fs`, `pwrite`, `fdatasync`,
//! `fallocate`). The interface exists so that a simulated file system (the
//! `sim` feature's [`SimFs`](crate::sim::SimFs)) can stand in for the disk and
//! decide, from a seed, what a power loss keeps, tears or garbles, when a
//! sync fails and when the disk is full — the faults real disks have and a
//! test on a real disk cannot produce on demand.
//!
//! The interface holds only what the log needs: positioned reads and writes,
//! size changes, the two syncs, a directory sync, and the few directory
//! operations topic creation, deletion, recovery and retention use.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How [`Storage::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write a new file; fails if the path exists.
    CreateNew,
    /// Write a file, creating it or cutting it to nothing first.
    Replace,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name in its directory.
    pub name: OsString,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// A held lock on a data directory; dropping it releases the lock.
pub trait StorageLock: Send + Sync + fmt::Debug {}

/// The file operations of the log.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens the file at `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// The size of the file at `path`.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Whether anything exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// The entries of the directory at `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Creates a directory whose parent exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file or directory, replacing a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file at `path`, creating it if needed;
    /// `None` while someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn StorageLock>>>;
}

/// An open file.
// A file's size matters to the log; whether it is empty never does alone.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `pos`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// The file's size.
    fn len(&self) -> io::Result<u64>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Allocates `[pos, pos + len)`, extending the file with zeros
    /// (`fallocate(2)` without flags). A full disk answers
    /// [`io::ErrorKind::StorageFull`].
    fn allocate(&self, pos: u64, len: u64) -> io::Result<()>;
    /// `fdatasync(2)`: the written data, and the size where reading it needs it.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync(2)`: the data and all metadata.
    fn sync_all(&self) -> io::Result<()>;
    /// Drops the file's clean cached pages, so the next reads come from the
    /// disk (`posix_fadvise(POSIX_FADV_DONTNEED)`). Dirty pages stay.
    ///
    /// After a failed `fdatasync` Linux marks the pages it could not write
    /// clean (ATC'20, "Can applications recover from fsync failures?"): a
    /// process started later on the same boot would read bytes that never
    /// reached the disk, and its own sync would succeed. Recovery syncs, then
    /// evicts, then scans, so it reads what the disk holds.
    fn evict_clean(&self) -> io::Result<()>;
}

impl dyn Storage + '_ {
    /// Reads a whole file that must not exceed `bytes_max`; checks the size
    /// before allocating.
    pub fn read_bounded(&self, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenMode::Read)?;
        let len = file.len()?;
        if len > bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {len} bytes, more than the {bytes_max} it may hold",
                    path.display()
                ),
            ));
        }
        let mut bytes = vec![0u8; usize::try_from(len).expect("bounded by bytes_max")];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// Creates `path`, which must not exist, writes `contents`, and makes both
    /// the file and its directory entry durable.
    pub fn create_durably(&self, path: &Path, contents: &[u8]) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.open(path, OpenMode::CreateNew)?;
        file.write_all_at(contents, 0)?;
        file.sync_all()?;
        self.sync_dir(path.parent().expect("files live in a directory"))?;
        Ok(file)
    }

    /// Replaces `path` with `contents` atomically: write a temporary file, sync
    /// it, rename it over `path`, sync the directory.
    pub fn replace_durably(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let tmp = temporary_path(path);
        let file = self.open(&tmp, OpenMode::Replace)?;
        file.write_all_at(contents, 0)?;
        file.sync_all()?;
        drop(file);
        self.rename(&tmp, path)?;
        self.sync_dir(path.parent().expect("files live in a directory"))
    }
}

/// The longest file name Linux file systems take, in bytes.
const FILE_NAME_BYTES_MAX: usize = 255;

/// Where [`replace_durably`](Storage::replace_durably) writes before the
/// rename: `<name>.tmp`, or for a name too long to take the suffix (a topic
/// name of Kafka's 249 characters plus `.meta`), its first 200 bytes, a
/// checksum of the whole name and `.tmp`. Either way it ends in `.tmp`,
/// which is how leftovers are found.
fn temporary_path(path: &Path) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name().expect("files have names").as_bytes();
    let mut tmp = Vec::with_capacity(FILE_NAME_BYTES_MAX);
    if name.len() + b".tmp".len() <= FILE_NAME_BYTES_MAX {
        tmp.extend_from_slice(name);
    } else {
        tmp.extend_from_slice(&name[..200]);
        tmp.extend_from_slice(format!("-{:08x}", crc32c::crc32c(name)).as_bytes());
    }
    tmp.extend_from_slice(b".tmp");
    path.with_file_name(std::ffi::OsStr::from_bytes(&tmp))
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl OsStorage {
    /// The shared instance, for callers that want `&dyn Storage`.
    pub fn shared() -> &'static dyn Storage {
        &OsStorage
    }
}

#[derive(Debug)]
struct OsLock(#[allow(dead_code)] File);

impl StorageLock for OsLock {}

impl Storage for OsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::Replace => options.write(true).create(true).truncate(true),
        };
        Ok(Arc::new(OsFile(options.open(path)?)))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            entries.push(DirEntry {
                name: entry.file_name(),
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        Ok(entries)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn StorageLock>>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(OsLock(file)))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file of the operating system's file system.
#[derive(Debug)]
pub struct OsFile(File);

impl StorageFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        let flags = rustix::fs::FallocateFlags::empty();
        Ok(rustix::fs::fallocate(&self.0, flags, pos, len)?)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn evict_clean(&self) -> io::Result<()> {
        Ok(rustix::fs::fadvise(
            &self.0,
            0,
            None,
            rustix::fs::Advice::DontNeed,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_too_long_for_the_suffix_gets_a_short_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}.meta", "t".repeat(249));
        let path = dir.path().join(&name);
        assert_eq!(
            temporary_path(&dir.path().join("a.meta")),
            dir.path().join("a.meta.tmp")
        );
        let tmp = temporary_path(&path);
        let tmp_name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(tmp_name.len() <= FILE_NAME_BYTES_MAX && tmp_name.ends_with(".tmp"));
        OsStorage::shared().replace_durably(&path, b"one").unwrap();
        OsStorage::shared().replace_durably(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
