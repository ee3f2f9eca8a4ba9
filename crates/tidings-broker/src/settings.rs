//! The broker's own per-topic settings (the dedup window, whether events are
//! checked against their schemas), beside the log's topic metadata:
//! `<data dir>/broker/topics/<topic>.meta`, in the log's small-file format.
//!
//! The body is the dedup window in milliseconds (u64, 0 when dedup is off),
//! then a u64 of flags (bit 0: schemas validated at publish). A file written
//! before the flags existed holds the window alone and reads as flags 0.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidings_log::format::{self, Fields};
use tidings_log::Storage;
use tidings_types::TopicName;

/// Longest dedup window a topic may have.
pub const DEDUP_WINDOW_MAX: Duration = Duration::from_secs(24 * 3600);

const MAGIC: [u8; 4] = *b"TDBT";
const BODY_BYTES: usize = 16;
/// The body before the flags were added.
const BODY_BYTES_WINDOW_ONLY: usize = 8;
const FLAG_VALIDATE_SCHEMAS: u64 = 1;

/// What the settings file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) dedup_window: Option<Duration>,
    pub(crate) validate_schemas: bool,
}

pub(crate) fn path(dir: &Path, topic: &TopicName) -> PathBuf {
    dir.join("broker")
        .join("topics")
        .join(format!("{topic}.meta"))
}

/// Writes the settings durably.
pub(crate) fn write(
    storage: &dyn Storage,
    dir: &Path,
    topic: &TopicName,
    settings: Settings,
) -> io::Result<()> {
    let path = path(dir, topic);
    let ms = settings
        .dedup_window
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let flags = if settings.validate_schemas {
        FLAG_VALIDATE_SCHEMAS
    } else {
        0
    };
    let mut body = [0u8; BODY_BYTES];
    body[..8].copy_from_slice(&ms.to_le_bytes());
    body[8..].copy_from_slice(&flags.to_le_bytes());
    storage.replace_durably(&path, &format::encode_record(MAGIC, &body))
}

/// Reads the settings. A topic created before the broker existed (by the log
/// alone) has none and gets the defaults.
pub(crate) fn read(
    storage: &dyn Storage,
    dir: &Path,
    topic: &TopicName,
) -> Result<Settings, String> {
    let path = path(dir, topic);
    let len = match storage.file_len(&path) {
        Ok(len) => len,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let spec = crate::TopicSpec::default();
            return Ok(Settings {
                dedup_window: spec.dedup_window,
                validate_schemas: spec.schema_validation == crate::SchemaValidation::Validate,
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    let body_len = if len == format::record_len(BODY_BYTES_WINDOW_ONLY) as u64 {
        BODY_BYTES_WINDOW_ONLY
    } else {
        BODY_BYTES
    };
    let bytes = format::read_record_from(storage, &path, body_len).map_err(|e| e.to_string())?;
    let body = format::decode_record(&bytes, MAGIC, body_len).map_err(|e| e.to_string())?;
    let mut fields = Fields(body);
    let ms = fields.u64();
    let flags = if body_len == BODY_BYTES {
        fields.u64()
    } else {
        0
    };
    if flags & !FLAG_VALIDATE_SCHEMAS != 0 {
        return Err(format!(
            "flags {flags:#x} name settings this build does not know"
        ));
    }
    Ok(Settings {
        dedup_window: (ms != 0).then(|| Duration::from_millis(ms)),
        validate_schemas: flags & FLAG_VALIDATE_SCHEMAS != 0,
    })
}

pub(crate) fn remove(storage: &dyn Storage, dir: &Path, topic: &TopicName) -> io::Result<()> {
    match storage.remove_file(&path(dir, topic)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_a_window_only_file_reads_with_validation_off() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("broker/topics")).unwrap();
        let topic = TopicName::new("orders").unwrap();
        let os = tidings_log::OsStorage::shared();
        for s in [
            Settings {
                dedup_window: Some(Duration::from_secs(5)),
                validate_schemas: true,
            },
            Settings {
                dedup_window: None,
                validate_schemas: false,
            },
        ] {
            write(os, dir.path(), &topic, s).unwrap();
            assert_eq!(read(os, dir.path(), &topic).unwrap(), s);
        }
        // The layout before the flags: the window alone.
        let old = format::encode_record(MAGIC, &7000u64.to_le_bytes());
        std::fs::write(path(dir.path(), &topic), old).unwrap();
        assert_eq!(
            read(os, dir.path(), &topic).unwrap(),
            Settings {
                dedup_window: Some(Duration::from_millis(7000)),
                validate_schemas: false,
            }
        );
        // Flags this build does not know are refused, not ignored.
        let mut body = [0u8; BODY_BYTES];
        body[8] = 0b10;
        std::fs::write(
            path(dir.path(), &topic),
            format::encode_record(MAGIC, &body),
        )
        .unwrap();
        assert!(read(os, dir.path(), &topic).unwrap_err().contains("flags"));
    }
}
