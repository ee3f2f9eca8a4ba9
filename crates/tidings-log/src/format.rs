//! Small files of our own, and the durable steps for writing them: the log's topic
//! metadata, clean-shutdown marker and index headers, and the state files of the
//! layers above (the broker's group offsets, for one). All are fixed-width
//! little-endian with a magic, a version and a CRC-32C, and all are created or
//! replaced by the steps of DESIGN §3.
//!
//! A metadata record is laid out as:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic |
//! | 4..6 | version (u16) |
//! | 6..8 | body length (u16) |
//! | 8..8+n | body |
//! | 8+n..12+n | CRC-32C of bytes 0..8+n |

use std::io;
use std::path::Path;

use crate::storage::{OpenMode, OsStorage, Storage};

/// Version written into every file of ours; readers refuse other versions.
pub const FORMAT_VERSION: u16 = 1;
const META_OVERHEAD_BYTES: usize = 12;

/// Why a metadata record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file is shorter or longer than the record it should hold.
    #[error("expected {expected} bytes, found {found}")]
    Length {
        /// Expected size.
        expected: usize,
        /// Actual size.
        found: usize,
    },
    /// The magic does not name this kind of file.
    #[error("magic {found:?} is not {expected:?}")]
    Magic {
        /// Expected magic.
        expected: [u8; 4],
        /// Magic found.
        found: [u8; 4],
    },
    /// A version this build does not read.
    #[error("format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    Version(u16),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// Builds a metadata record around `body`.
pub fn encode_record(magic: [u8; 4], body: &[u8]) -> Vec<u8> {
    let body_len = u16::try_from(body.len()).expect("metadata bodies are small");
    let mut out = Vec::with_capacity(META_OVERHEAD_BYTES + body.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Size of a record whose body is `body_len` bytes.
pub const fn record_len(body_len: usize) -> usize {
    META_OVERHEAD_BYTES + body_len
}

/// Checks a metadata record and returns its body, which must be `body_len` bytes.
pub fn decode_record(bytes: &[u8], magic: [u8; 4], body_len: usize) -> Result<&[u8], FormatError> {
    let expected = record_len(body_len);
    if bytes.len() != expected {
        return Err(FormatError::Length {
            expected,
            found: bytes.len(),
        });
    }
    let found: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if found != magic {
        return Err(FormatError::Magic {
            expected: magic,
            found,
        });
    }
    let version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
    if version != FORMAT_VERSION {
        return Err(FormatError::Version(version));
    }
    let declared = usize::from(u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes")));
    if declared != body_len {
        return Err(FormatError::Length {
            expected,
            found: record_len(declared),
        });
    }
    let crc_at = expected - 4;
    let stored = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    if stored != crc32c::crc32c(&bytes[..crc_at]) {
        return Err(FormatError::Checksum);
    }
    Ok(&bytes[8..crc_at])
}

/// Reads little-endian fields, in order, from a checked record body.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        let (head, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_le_bytes(head.try_into().expect("4 bytes"))
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        let (head, rest) = self.0.split_at(8);
        self.0 = rest;
        u64::from_le_bytes(head.try_into().expect("8 bytes"))
    }
}

/// Appends one journal frame holding `body` to `out`:
/// `[len: u32][crc32c(body): u32][body]`, little-endian. The journals of the
/// layers above (a queue group's, the schema registry's) are a header of their
/// own followed by these frames.
pub fn frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("frames are bounded")
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The frames of a journal image from byte `start`, each body no longer than
/// `body_bytes_max`, and the offset where the valid ones end. Only a journal's
/// tail can be torn (every frame before it was synced before anyone was
/// answered), so reading stops at the first frame that does not check out.
pub fn frames(bytes: &[u8], start: usize, body_bytes_max: usize) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = start;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4"));
        if len > body_bytes_max {
            break;
        }
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        out.push(body);
        at += 8 + len;
    }
    (out, at)
}

/// Reads a metadata file that holds a record with a body of `body_len` bytes,
/// refusing (before allocating) a file of any other size.
pub fn read_record_from(
    storage: &dyn Storage,
    path: &Path,
    body_len: usize,
) -> io::Result<Vec<u8>> {
    let file = storage.open(path, OpenMode::Read)?;
    let len = file.len()?;
    let expected = record_len(body_len);
    if len != expected as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is {len} bytes; expected {expected}", path.display()),
        ));
    }
    let mut bytes = vec![0u8; expected];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// [`read_record_from`] the operating system's file system.
pub fn read_record_file(path: &Path, body_len: usize) -> io::Result<Vec<u8>> {
    read_record_from(OsStorage::shared(), path, body_len)
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    OsStorage.sync_dir(dir)
}

/// Replaces `path` with `contents` atomically: write a temporary file, sync it,
/// rename it over `path`, sync the directory.
pub fn replace_durably(path: &Path, contents: &[u8]) -> io::Result<()> {
    OsStorage::shared().replace_durably(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_damage_is_caught() {
        let rec = encode_record(*b"TEST", &[1, 2, 3, 4]);
        assert_eq!(decode_record(&rec, *b"TEST", 4), Ok(&[1u8, 2, 3, 4][..]));
        assert!(decode_record(&rec[..rec.len() - 1], *b"TEST", 4).is_err());
        assert!(decode_record(&rec, *b"NOPE", 4).is_err());
        for byte in 0..rec.len() {
            let mut bad = rec.clone();
            bad[byte] ^= 0x10;
            assert!(decode_record(&bad, *b"TEST", 4).is_err(), "byte {byte}");
        }
    }
}
