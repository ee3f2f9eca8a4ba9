//! The broker's own per-topic settings (the dedup window), beside the log's topic
//! metadata: `<data dir>/broker/topics/<topic>.meta`, in the log's small-file format.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidings_log::format::{self, Fields};
use tidings_types::TopicName;

/// Longest dedup window a topic may have.
pub const DEDUP_WINDOW_MAX: Duration = Duration::from_secs(24 * 3600);

const MAGIC: [u8; 4] = *b"TDBT";
const BODY_BYTES: usize = 8;

pub(crate) fn path(dir: &Path, topic: &TopicName) -> PathBuf {
    dir.join("broker")
        .join("topics")
        .join(format!("{topic}.meta"))
}

/// Writes the settings durably; 0 ms means dedup is off.
pub(crate) fn write(
    dir: &Path,
    topic: &TopicName,
    dedup_window: Option<Duration>,
) -> io::Result<()> {
    let path = path(dir, topic);
    std::fs::create_dir_all(path.parent().expect("a directory"))?;
    let ms = dedup_window.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    format::replace_durably(&path, &format::encode_record(MAGIC, &ms.to_le_bytes()))
}

/// Reads the settings. A topic created before the broker existed (by the log
/// alone) has none and gets the default window.
pub(crate) fn read(dir: &Path, topic: &TopicName) -> Result<Option<Duration>, String> {
    let path = path(dir, topic);
    let bytes = match format::read_record_file(&path, BODY_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(crate::TopicSpec::default().dedup_window)
        }
        Err(e) => return Err(e.to_string()),
    };
    let body = format::decode_record(&bytes, MAGIC, BODY_BYTES).map_err(|e| e.to_string())?;
    let ms = Fields(body).u64();
    Ok((ms != 0).then(|| Duration::from_millis(ms)))
}

pub(crate) fn remove(dir: &Path, topic: &TopicName) -> io::Result<()> {
    match std::fs::remove_file(path(dir, topic)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
