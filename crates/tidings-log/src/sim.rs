//! A simulated disk that knows what is durable, for deterministic fault tests
//! (feature `sim`).
//!
//! [`SimDisk`] holds files and directories in memory and, for each file, two
//! views: what the page cache shows (every read) and what the disk holds.
//! Writes and size changes are *dirty* until a sync of that file succeeds;
//! directory entries (create, rename, remove) are durable only once a sync
//! of a directory they touch follows them. Every decision is drawn from one
//! seeded generator, so a seed replays exactly.
//!
//! The faults, chosen per seed:
//! - **process crash** ([`Crash::Process`], kill -9): the page cache
//!   survives, dirty data is still written later; only the process's open
//!   handles die.
//! - **power loss** ([`Crash::PowerLoss`]): each dirty change is applied,
//!   dropped, or torn — any subset of its 512-byte sectors written, others
//!   left old or filled with garbage (SQLite's crash VFS, TigerBeetle's
//!   "sector writes are not atomic"); unsynced directory operations survive
//!   only as an ordered prefix of those not already made durable (ALICE).
//! - **failed sync** ([`Faults::sync_failure_per_mille`]): the call answers
//!   EIO and the dirty pages become clean without reaching the disk — reads
//!   on the same boot still show the new bytes, a later sync succeeds, power
//!   loss reveals the old ones (Linux ext4/XFS, ATC'20, PostgreSQL's
//!   fsyncgate).
//! - **full disk** ([`Faults::capacity_bytes`]): writes and allocations past
//!   the capacity answer ENOSPC and change nothing.
//! - **bit rot** ([`SimDisk::flip_bit`]): a bit flipped on the disk and in the
//!   cache.
//!
//! A [`SimFs`] is one process's view of the disk: after a crash every
//! operation through a view taken before it fails, as the process is gone.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{DirEntry, OpenMode, Storage, StorageFile, StorageLock};

/// The sector size power loss tears writes at.
pub const SECTOR_BYTES: u64 = 512;

const ROOT: u64 = 0;
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// What a seed turns on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Chance in a thousand that a file or directory sync fails with EIO.
    pub sync_failure_per_mille: u32,
    /// File data past this many bytes (all files' sizes summed) answers
    /// ENOSPC.
    pub capacity_bytes: Option<u64>,
}

/// How the simulated machine stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The process is killed; the kernel, its page cache and every directory
    /// operation survive.
    Process,
    /// The machine loses power: only what was synced survives for certain.
    PowerLoss,
}

/// What the disk has seen; the harness reports it with a failing seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful data writes.
    pub writes: u64,
    /// Successful file syncs.
    pub syncs: u64,
    /// Syncs answered EIO.
    pub sync_failures: u64,
    /// Writes and allocations answered ENOSPC.
    pub full: u64,
    /// Dirty changes a power loss dropped.
    pub dropped: u64,
    /// Dirty writes a power loss tore.
    pub torn: u64,
    /// Directory operations a power loss undid.
    pub lost_entries: u64,
    /// Power losses that kept a later write of a file (or a later sector of
    /// one write) and lost an earlier one: the damage recovery may refuse as
    /// corruption, since it cannot tell it from a corrupted acknowledged
    /// write.
    pub reordered: u64,
    /// Crashes of either kind.
    pub crashes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir(u64),
}

#[derive(Clone, Debug)]
enum Change {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct FileState {
    /// What reads see.
    cache: Vec<u8>,
    /// What the disk holds.
    disk: Vec<u8>,
    /// Changes not yet on the disk, oldest first.
    dirty: Vec<Change>,
}

#[derive(Clone, Debug)]
enum MetaOp {
    Link {
        dir: u64,
        name: OsString,
        node: Node,
    },
    Unlink {
        dir: u64,
        name: OsString,
    },
    Rename {
        from: (u64, OsString),
        to: (u64, OsString),
        node: Node,
    },
}

impl MetaOp {
    fn touches(&self, d: u64) -> bool {
        match self {
            MetaOp::Link { dir, .. } | MetaOp::Unlink { dir, .. } => *dir == d,
            MetaOp::Rename { from, to, .. } => from.0 == d || to.0 == d,
        }
    }

    fn apply(&self, dirs: &mut BTreeMap<u64, BTreeMap<OsString, Node>>) {
        match self {
            MetaOp::Link { dir, name, node } => {
                if let Node::Dir(d) = node {
                    dirs.entry(*d).or_default();
                }
                dirs.entry(*dir).or_default().insert(name.clone(), *node);
            }
            MetaOp::Unlink { dir, name } => {
                dirs.entry(*dir).or_default().remove(name);
            }
            MetaOp::Rename { from, to, node } => {
                // A rename that survives brings its file along, even if the
                // entry it moved from did not survive: a journaling file
                // system logs the rename with the inode it names.
                let entries = dirs.entry(from.0).or_default();
                if entries.get(&from.1) == Some(node) {
                    entries.remove(&from.1);
                }
                if let Node::Dir(d) = node {
                    dirs.entry(*d).or_default();
                }
                dirs.entry(to.0).or_default().insert(to.1.clone(), *node);
            }
        }
    }
}

/// SplitMix64: small, fast and the same everywhere. The disk draws its
/// faults with one; the simulations' workloads draw with their own, from
/// the same seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Debug)]
struct State {
    rng: Rng,
    faults: Faults,
    files: BTreeMap<u64, FileState>,
    /// The namespace as the running system sees it.
    dirs: BTreeMap<u64, BTreeMap<OsString, Node>>,
    /// The namespace at the last boot, and the directory operations since,
    /// each with whether a directory sync has made it durable.
    boot_dirs: BTreeMap<u64, BTreeMap<OsString, Node>>,
    ops: Vec<(MetaOp, bool)>,
    next_id: u64,
    generation: u64,
    locks: BTreeMap<u64, u64>,
    stats: Stats,
}

impl State {
    fn resolve(&self, path: &Path) -> io::Result<Node> {
        let mut node = Node::Dir(ROOT);
        for c in path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(name) => {
                    let Node::Dir(d) = node else {
                        return Err(not_dir(path));
                    };
                    node = *self
                        .dirs
                        .get(&d)
                        .and_then(|e| e.get(name))
                        .ok_or_else(|| not_found(path))?;
                }
                _ => return Err(invalid(path)),
            }
        }
        Ok(node)
    }

    /// The directory that holds `path`, and `path`'s name in it.
    fn parent(&self, path: &Path) -> io::Result<(u64, OsString)> {
        let name = path.file_name().ok_or_else(|| invalid(path))?.to_owned();
        match self.resolve(path.parent().ok_or_else(|| invalid(path))?)? {
            Node::Dir(d) => Ok((d, name)),
            Node::File(_) => Err(not_dir(path)),
        }
    }

    fn record(&mut self, op: MetaOp) {
        op.apply(&mut self.dirs);
        self.ops.push((op, false));
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.cache.len() as u64).sum()
    }

    /// ENOSPC if growing the cached data by `growth` passes the capacity.
    fn reserve(&mut self, growth: u64) -> io::Result<()> {
        if let Some(capacity) = self.faults.capacity_bytes {
            if growth > 0 && self.used_bytes() + growth > capacity {
                self.stats.full += 1;
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        Ok(())
    }

    fn sync_fails(&mut self) -> bool {
        let p = u64::from(self.faults.sync_failure_per_mille);
        p > 0 && self.rng.below(1000) < p
    }

    fn unlink_tree(&mut self, dir: u64, name: &OsString) {
        if let Some(Node::Dir(d)) = self.dirs.get(&dir).and_then(|e| e.get(name)).copied() {
            let names: Vec<OsString> = self
                .dirs
                .get(&d)
                .into_iter()
                .flatten()
                .map(|(n, _)| n.clone())
                .collect();
            for n in names {
                self.unlink_tree(d, &n);
            }
        }
        self.record(MetaOp::Unlink {
            dir,
            name: name.clone(),
        });
    }

    fn power_loss(&mut self) {
        // Directory operations: the durable ones and an ordered prefix of the rest.
        let first_open = self.ops.iter().position(|(_, durable)| !durable);
        let cut = match first_open {
            Some(first) => first + self.rng.below((self.ops.len() - first + 1) as u64) as usize,
            None => self.ops.len(),
        };
        let mut dirs = std::mem::take(&mut self.boot_dirs);
        for (i, (op, durable)) in std::mem::take(&mut self.ops).into_iter().enumerate() {
            if durable || i < cut {
                op.apply(&mut dirs);
            } else {
                self.stats.lost_entries += 1;
            }
        }
        self.dirs = dirs.clone();
        self.boot_dirs = dirs;
        // File data: each dirty change applied, dropped or torn.
        let mut files = std::mem::take(&mut self.files);
        let mut reordered = false;
        for file in files.values_mut() {
            // Whether an earlier change of this file was lost, in part or whole.
            let mut hole = false;
            for change in std::mem::take(&mut file.dirty) {
                match change {
                    Change::SetLen(len) => {
                        if self.rng.below(2) == 0 {
                            file.disk.resize(to_usize(len), 0);
                        } else {
                            self.stats.dropped += 1;
                        }
                    }
                    Change::Write { pos, bytes } => match self.rng.below(4) {
                        0 | 1 => {
                            reordered |= hole;
                            write_into(&mut file.disk, pos, &bytes);
                        }
                        2 => {
                            self.stats.dropped += 1;
                            hole = true;
                        }
                        _ => {
                            self.stats.torn += 1;
                            let tear = self.tear(&mut file.disk, pos, &bytes);
                            reordered |= (hole && tear.wrote) || tear.wrote_after_hole;
                            hole |= tear.hole;
                        }
                    },
                }
            }
            file.cache = file.disk.clone();
        }
        self.stats.reordered += u64::from(reordered);
        self.files = files;
    }

    /// Writes some sectors of a write and leaves others old or fills them
    /// with garbage.
    fn tear(&mut self, disk: &mut Vec<u8>, pos: u64, bytes: &[u8]) -> Tear {
        let end = pos + bytes.len() as u64;
        let mut sector = pos / SECTOR_BYTES * SECTOR_BYTES;
        let mut tear = Tear::default();
        while sector < end {
            let from = sector.max(pos);
            let to = (sector + SECTOR_BYTES).min(end);
            let part = &bytes[to_usize(from - pos)..to_usize(to - pos)];
            match self.rng.below(3) {
                0 => {
                    tear.wrote_after_hole |= tear.hole;
                    tear.wrote = true;
                    write_into(disk, from, part);
                }
                1 => tear.hole = true,
                _ => {
                    tear.hole = true;
                    let garbage: Vec<u8> =
                        (0..part.len()).map(|_| self.rng.next_u64() as u8).collect();
                    write_into(disk, from, &garbage);
                }
            }
            sector += SECTOR_BYTES;
        }
        tear
    }
}

/// What tearing one write did.
#[derive(Default)]
struct Tear {
    /// Some sector got its new bytes.
    wrote: bool,
    /// Some sector kept old bytes or got garbage.
    hole: bool,
    /// A sector got its new bytes after one that did not.
    wrote_after_hole: bool,
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("simulated files fit in memory")
}

fn write_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = to_usize(pos);
    if data.len() < pos + bytes.len() {
        data.resize(pos + bytes.len(), 0);
    }
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
}

fn apply(data: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { pos, bytes } => write_into(data, *pos, bytes),
        Change::SetLen(len) => data.resize(to_usize(*len), 0),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn not_dir(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{}: not a directory", path.display()),
    )
}

fn invalid(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: not an absolute, plain path", path.display()),
    )
}

fn dead() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the simulated process has crashed",
    )
}

/// The simulated disk, shared by the processes that run on it one after
/// another.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk whose every choice follows `seed`.
    pub fn new(seed: u64, faults: Faults) -> SimDisk {
        let mut dirs = BTreeMap::new();
        dirs.insert(ROOT, BTreeMap::new());
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: Rng::new(seed),
                faults,
                files: BTreeMap::new(),
                boot_dirs: dirs.clone(),
                dirs,
                ops: Vec::new(),
                next_id: ROOT,
                generation: 0,
                locks: BTreeMap::new(),
                stats: Stats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A process's view of the disk, valid until the next crash.
    pub fn process(&self) -> SimFs {
        SimFs {
            disk: self.clone(),
            generation: self.lock().generation,
        }
    }

    /// Stops the running process (and, for a power loss, the machine).
    pub fn crash(&self, crash: Crash) {
        let mut s = self.lock();
        s.generation += 1;
        s.locks.clear();
        s.stats.crashes += 1;
        if crash == Crash::PowerLoss {
            s.power_loss();
        }
    }

    /// Changes the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Flips one bit of the file at `path`, on the disk and in the cache;
    /// false when there is no such file or bit.
    pub fn flip_bit(&self, path: &Path, bit: u64) -> bool {
        let mut s = self.lock();
        let Ok(Node::File(ino)) = s.resolve(path) else {
            return false;
        };
        let file = s.files.get_mut(&ino).expect("linked files exist");
        let byte = to_usize(bit / 8);
        let mask = 1u8 << (bit % 8);
        if byte >= file.disk.len() || byte >= file.cache.len() {
            return false;
        }
        file.disk[byte] ^= mask;
        file.cache[byte] ^= mask;
        true
    }

    /// What the disk has seen so far.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Bytes of file data in the cache, all files summed.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }
}

/// One process's view of a [`SimDisk`].
#[derive(Clone, Debug)]
pub struct SimFs {
    disk: SimDisk,
    generation: u64,
}

impl SimFs {
    /// The state, if this process has not crashed.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = self.disk.lock();
        if s.generation == self.generation {
            Ok(s)
        } else {
            Err(dead())
        }
    }

    fn sync_dir_node(&self, s: &mut State, dir: u64) -> io::Result<()> {
        if s.sync_fails() {
            s.stats.sync_failures += 1;
            return Err(io::Error::from_raw_os_error(EIO));
        }
        for (op, durable) in &mut s.ops {
            if op.touches(dir) {
                *durable = true;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    disk: SimDisk,
    ino: u64,
    generation: u64,
}

impl StorageLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.disk.lock();
        if s.locks.get(&self.ino) == Some(&self.generation) {
            s.locks.remove(&self.ino);
        }
    }
}

impl Storage for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.live()?;
        let ino = match (s.resolve(path), mode) {
            (Ok(Node::Dir(_)), _) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    path.display().to_string(),
                ))
            }
            (Ok(Node::File(_)), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ))
            }
            (Ok(Node::File(ino)), OpenMode::Replace) => {
                let file = s.files.get_mut(&ino).expect("linked files exist");
                file.cache.clear();
                file.dirty.push(Change::SetLen(0));
                ino
            }
            (Ok(Node::File(ino)), _) => ino,
            (Err(e), OpenMode::Read | OpenMode::ReadWrite) => return Err(e),
            (Err(e), OpenMode::CreateNew | OpenMode::Replace)
                if e.kind() == io::ErrorKind::NotFound =>
            {
                let (dir, name) = s.parent(path)?;
                let ino = s.id();
                s.files.insert(ino, FileState::default());
                s.record(MetaOp::Link {
                    dir,
                    name,
                    node: Node::File(ino),
                });
                ino
            }
            (Err(e), _) => return Err(e),
        };
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_owned(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let s = self.live()?;
        match s.resolve(path)? {
            Node::File(ino) => Ok(s.files[&ino].cache.len() as u64),
            Node::Dir(_) => Ok(0),
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let s = self.live()?;
        match s.resolve(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let s = self.live()?;
        let Node::Dir(d) = s.resolve(dir)? else {
            return Err(not_dir(dir));
        };
        Ok(s.dirs[&d]
            .iter()
            .map(|(name, node)| DirEntry {
                name: name.clone(),
                is_dir: matches!(node, Node::Dir(_)),
            })
            .collect())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        if s.resolve(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        let (dir, name) = s.parent(path)?;
        let d = s.id();
        s.record(MetaOp::Link {
            dir,
            name,
            node: Node::Dir(d),
        });
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut at = PathBuf::new();
        for c in path.components() {
            at.push(c);
            if !self.exists(&at)? {
                self.create_dir(&at)?;
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        match s.resolve(path)? {
            Node::File(_) => {
                let (dir, name) = s.parent(path)?;
                s.record(MetaOp::Unlink { dir, name });
                Ok(())
            }
            Node::Dir(_) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.display().to_string(),
            )),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        s.resolve(path)?;
        let (dir, name) = s.parent(path)?;
        s.unlink_tree(dir, &name);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let node = s.resolve(from)?;
        let from = s.parent(from)?;
        let to_parent = s.parent(to)?;
        if let (Node::Dir(_), Ok(_)) = (node, s.resolve(to)) {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                to.display().to_string(),
            ));
        }
        s.record(MetaOp::Rename {
            from,
            to: to_parent,
            node,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let Node::Dir(d) = s.resolve(dir)? else {
            return Err(not_dir(dir));
        };
        self.sync_dir_node(&mut s, d)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn StorageLock>>> {
        let resolved = self.live()?.resolve(path);
        let ino = match resolved {
            Ok(Node::File(ino)) => ino,
            Ok(Node::Dir(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    path.display().to_string(),
                ))
            }
            Err(_) => {
                drop(self.open(path, OpenMode::CreateNew)?);
                let created = self.live()?.resolve(path)?;
                let Node::File(ino) = created else {
                    unreachable!("just created a file")
                };
                ino
            }
        };
        let mut s = self.live()?;
        if s.locks.contains_key(&ino) {
            return Ok(None);
        }
        s.locks.insert(ino, self.generation);
        Ok(Some(Box::new(SimLock {
            disk: self.disk.clone(),
            ino,
            generation: self.generation,
        })))
    }
}

/// An open file of a [`SimFs`].
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
    path: PathBuf,
    writable: bool,
}

impl SimFile {
    fn writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is open for reading", self.path.display()),
            ))
        }
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.live()?;
        if s.sync_fails() {
            s.stats.sync_failures += 1;
            // The pages are marked clean without reaching the disk.
            s.files
                .get_mut(&self.ino)
                .expect("open files exist")
                .dirty
                .clear();
            return Err(io::Error::from_raw_os_error(EIO));
        }
        s.stats.syncs += 1;
        let file = s.files.get_mut(&self.ino).expect("open files exist");
        for change in std::mem::take(&mut file.dirty) {
            apply(&mut file.disk, &change);
        }
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let s = self.fs.live()?;
        let cache = &s.files[&self.ino].cache;
        let start = to_usize(pos);
        match cache.get(start..start + buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: read past the end", self.path.display()),
            )),
        }
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.writable()?;
        let mut s = self.fs.live()?;
        let len = s.files[&self.ino].cache.len() as u64;
        s.reserve((pos + buf.len() as u64).saturating_sub(len))?;
        s.stats.writes += 1;
        let file = s.files.get_mut(&self.ino).expect("open files exist");
        write_into(&mut file.cache, pos, buf);
        file.dirty.push(Change::Write {
            pos,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.fs.live()?.files[&self.ino].cache.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        let mut s = self.fs.live()?;
        let old = s.files[&self.ino].cache.len() as u64;
        s.reserve(len.saturating_sub(old))?;
        let file = s.files.get_mut(&self.ino).expect("open files exist");
        file.cache.resize(to_usize(len), 0);
        file.dirty.push(Change::SetLen(len));
        Ok(())
    }

    fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        let mut s = self.fs.live()?;
        let old = s.files[&self.ino].cache.len() as u64;
        let end = pos + len;
        if end <= old {
            return Ok(());
        }
        s.reserve(end - old)?;
        let file = s.files.get_mut(&self.ino).expect("open files exist");
        file.cache.resize(to_usize(end), 0);
        file.dirty.push(Change::SetLen(end));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn evict_clean(&self) -> io::Result<()> {
        let mut s = self.fs.live()?;
        let file = s.files.get_mut(&self.ino).expect("open files exist");
        let mut cache = file.disk.clone();
        for change in &file.dirty {
            apply(&mut cache, change);
        }
        file.cache = cache;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(fs: &SimFs, path: &Path) -> Vec<u8> {
        (fs as &dyn Storage).read_bounded(path, 1 << 20).unwrap()
    }

    #[test]
    fn synced_data_and_entries_survive_power_loss_and_unsynced_may_not() {
        let disk = SimDisk::new(7, Faults::default());
        let fs = disk.process();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let f = (&fs as &dyn Storage)
            .create_durably(Path::new("/d/a"), b"hello")
            .unwrap();
        f.write_all_at(b" world", 5).unwrap();
        fs.open(Path::new("/d/b"), OpenMode::CreateNew).unwrap();
        disk.crash(Crash::PowerLoss);
        assert!(f.len().is_err(), "a crashed process's handles die");
        let fs = disk.process();
        let a = read_all(&fs, Path::new("/d/a"));
        assert!(a.starts_with(b"hello") && a.len() <= 11, "{a:?}");
    }

    #[test]
    fn a_failed_sync_leaves_new_bytes_in_the_cache_only() {
        let disk = SimDisk::new(
            1,
            Faults {
                sync_failure_per_mille: 1000,
                capacity_bytes: None,
            },
        );
        let fs = disk.process();
        let f = fs.open(Path::new("/f"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"new", 0).unwrap();
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(EIO));
        disk.crash(Crash::Process);
        let fs = disk.process();
        let f = fs.open(Path::new("/f"), OpenMode::ReadWrite).unwrap();
        assert_eq!(
            f.len().unwrap(),
            3,
            "the same boot still reads the lost bytes"
        );
        f.evict_clean().unwrap();
        assert_eq!(f.len().unwrap(), 0, "evicting clean pages shows the disk");
    }

    #[test]
    fn a_full_disk_refuses_growth_and_changes_nothing() {
        let disk = SimDisk::new(
            1,
            Faults {
                sync_failure_per_mille: 0,
                capacity_bytes: Some(10),
            },
        );
        let fs = disk.process();
        let f = fs.open(Path::new("/f"), OpenMode::CreateNew).unwrap();
        f.write_all_at(&[1; 8], 0).unwrap();
        let e = f.write_all_at(&[2; 4], 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 8);
        f.write_all_at(&[3; 2], 6).unwrap();
        disk.set_faults(Faults::default());
        f.write_all_at(&[2; 4], 8).unwrap();
        assert_eq!(
            read_all(&fs, Path::new("/f")),
            [1, 1, 1, 1, 1, 1, 3, 3, 2, 2, 2, 2]
        );
    }

    #[test]
    fn an_unsynced_rename_can_be_undone_and_a_synced_one_cannot() {
        let rename = |seed, sync: bool| {
            let disk = SimDisk::new(seed, Faults::default());
            let fs = disk.process();
            let s: &dyn Storage = &fs;
            s.replace_durably(Path::new("/m"), b"one").unwrap();
            let t = s.open(Path::new("/m.tmp"), OpenMode::Replace).unwrap();
            t.write_all_at(b"two", 0).unwrap();
            t.sync_all().unwrap();
            s.rename(Path::new("/m.tmp"), Path::new("/m")).unwrap();
            if sync {
                s.sync_dir(Path::new("/")).unwrap();
            }
            disk.crash(Crash::PowerLoss);
            read_all(&disk.process(), Path::new("/m"))
        };
        let mut undone = 0;
        for seed in 0..64 {
            let m = rename(seed, false);
            assert!(m == b"one" || m == b"two", "{m:?}");
            undone += usize::from(m == b"one");
            assert_eq!(rename(seed, true), b"two");
        }
        assert!(undone > 0 && undone < 64, "{undone}");
    }
}
