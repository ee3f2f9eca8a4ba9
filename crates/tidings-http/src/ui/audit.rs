//! The dashboard's audit log: every change made from its pages, who made
//! it, to what, and how it ended, one JSON line each in
//! `<data dir>/dashboard-audit.ndjson`, synced before the answer says the
//! change is done. The file is capped: past [`AUDIT_FILE_BYTES_MAX`] it is
//! renamed to `dashboard-audit.1.ndjson` (replacing the one before) and a
//! new one begins. The audit page shows the newest [`AUDIT_SHOWN_MAX`].
//!
//! A record that cannot be written does not undo the change (it is done by
//! then); the page that reports the change says the record is missing and
//! why, and the server logs it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Bytes of one audit file before it is rotated.
pub(crate) const AUDIT_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Records the audit page shows, newest first.
pub(crate) const AUDIT_SHOWN_MAX: usize = 500;
/// Bytes read from the end of the file to find them.
const AUDIT_TAIL_BYTES_MAX: u64 = 1024 * 1024;
const _: () = assert!(AUDIT_TAIL_BYTES_MAX <= AUDIT_FILE_BYTES_MAX);

const FILE: &str = "dashboard-audit.ndjson";
const ROTATED: &str = "dashboard-audit.1.ndjson";

/// One change made from the dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) time_ms: i64,
    /// Who: `User:<name>`, or `User:ANONYMOUS` on a server without users.
    pub(crate) principal: String,
    /// What: `create topic`, `delete topic`, `publish`, `reset offsets`,
    /// `redrive dead letters`, `purge dead letters`.
    pub(crate) action: String,
    /// To what: `topic orders`, `group billing`, `queue shipping`.
    pub(crate) target: String,
    /// With what: the settings the change was made with.
    pub(crate) detail: String,
    /// How it ended: `done: ...` or `failed: ...`.
    pub(crate) outcome: String,
}

/// The audit file of a data directory.
pub(crate) struct AuditLog {
    dir: Option<PathBuf>,
    /// One writer at a time, so records never interleave.
    writing: Mutex<()>,
}

impl AuditLog {
    /// The log in `dir`; without a directory nothing is kept.
    pub(crate) fn new(dir: Option<PathBuf>) -> AuditLog {
        AuditLog {
            dir,
            writing: Mutex::new(()),
        }
    }

    /// Appends `record` and syncs it; blocking.
    pub(crate) fn append(&self, record: &Record) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Err("the server has no data directory to keep an audit log in".to_owned());
        };
        let _one = self.writing.lock().expect("audit lock");
        let path = dir.join(FILE);
        if std::fs::metadata(&path).map_or(0, |m| m.len()) >= AUDIT_FILE_BYTES_MAX {
            std::fs::rename(&path, dir.join(ROTATED))
                .map_err(|e| format!("cannot rotate {}: {e}", path.display()))?;
        }
        let mut line = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The newest records, newest first, at most [`AUDIT_SHOWN_MAX`];
    /// blocking. A line that does not parse (a write cut by a crash) is
    /// left out.
    pub(crate) fn newest(&self) -> Result<Vec<Record>, String> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut records = tail(&dir.join(FILE))?;
        if records.len() < AUDIT_SHOWN_MAX {
            let mut older = tail(&dir.join(ROTATED))?;
            older.append(&mut records);
            records = older;
        }
        records.reverse();
        records.truncate(AUDIT_SHOWN_MAX);
        Ok(records)
    }
}

/// The whole records in the last [`AUDIT_TAIL_BYTES_MAX`] of `path`, oldest
/// first; none when it does not exist.
fn tail(path: &Path) -> Result<Vec<Record>, String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let from = len.saturating_sub(AUDIT_TAIL_BYTES_MAX);
    file.seek(SeekFrom::Start(from))
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(AUDIT_TAIL_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    // Starting mid-file, the first line may be cut: skip it.
    let lines = text.lines().skip(usize::from(from > 0));
    Ok(lines
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> Record {
        Record {
            time_ms: n,
            principal: "User:alice".into(),
            action: "purge dead letters".into(),
            target: "queue shipping".into(),
            detail: String::new(),
            outcome: "done: 3 purged".into(),
        }
    }

    #[test]
    fn records_come_back_newest_first_and_a_torn_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Some(dir.path().to_owned()));
        for n in 0..3 {
            log.append(&record(n)).unwrap();
        }
        // A crash in the middle of a write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"time_ms\":9,\"princ").unwrap();
        let newest = log.newest().unwrap();
        assert_eq!(
            newest.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
            [2, 1, 0]
        );
    }

    #[test]
    fn a_full_file_is_rotated_and_both_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Some(dir.path().to_owned()));
        log.append(&record(1)).unwrap();
        // Make the file look full.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.set_len(AUDIT_FILE_BYTES_MAX).unwrap();
        log.append(&record(2)).unwrap();
        assert!(dir.path().join(ROTATED).exists());
        let newest = log.newest().unwrap();
        assert_eq!(newest[0].time_ms, 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE))
                .unwrap()
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn without_a_directory_nothing_is_kept_and_the_reason_is_given() {
        let log = AuditLog::new(None);
        assert!(log
            .append(&record(1))
            .unwrap_err()
            .contains("no data directory"));
        assert!(log.newest().unwrap().is_empty());
    }
}
