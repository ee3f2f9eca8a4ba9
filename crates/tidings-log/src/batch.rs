//! RecordBatch v2 ("magic 2"), the unit the log stores byte for byte.
//!
//! The log only needs a batch's header: where it ends, which offsets and timestamps
//! it covers, and whether its CRC holds. Records are decoded with the
//! `kafka-protocol` crate's codec and encoded here, byte for byte as that codec
//! writes them (a test holds the two together), so stored bytes are exactly what
//! a Kafka client sends and expects.
//!
//! Layout (big-endian), from the Kafka protocol:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | base offset (assigned by the log; not covered by the CRC) |
//! | 8..12 | batch length: bytes after this field |
//! | 12..16 | partition leader epoch |
//! | 16 | magic, always 2 |
//! | 17..21 | CRC-32C of bytes 21.. |
//! | 21..23 | attributes |
//! | 23..27 | last offset delta |
//! | 27..35 | first timestamp |
//! | 35..43 | max timestamp |
//! | 43..61 | producer id, producer epoch, base sequence |
//! | 57..61 | record count |

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use tidings_types::{Offset, TimestampMs};

use crate::builder::BatchBuilder;
use crate::compression::{self, DecompressError};
use crate::limits::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::AppendError;

/// Bytes before the batch-length field ends: base offset and the length itself.
pub(crate) const LOG_OVERHEAD_BYTES: usize = 12;
const MAGIC_POSITION: usize = 16;
pub(crate) const CRC_POSITION: usize = 17;
pub(crate) const CRC_COVERED_FROM: usize = 21;
const LEADER_EPOCH_POSITION: usize = 12;

/// The partition leader epoch the log writes into every stored batch, as a Kafka
/// broker does on append. A single node has one leader epoch forever.
pub(crate) const STORED_LEADER_EPOCH: i32 = 0;

/// What a valid batch header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) base_offset: i64,
    /// Whole batch size in bytes, including the base offset and length fields.
    pub(crate) bytes: usize,
    pub(crate) last_offset_delta: u32,
    pub(crate) max_timestamp: i64,
    pub(crate) first_timestamp: i64,
}

impl BatchHeader {
    /// Number of offsets the batch covers.
    pub(crate) fn offset_count(&self) -> u64 {
        u64::from(self.last_offset_delta) + 1
    }
}

/// Why bytes are not a valid batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchFault {
    /// Fewer bytes remain than the header, or than the length the header declares.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The magic byte is not 2.
    Magic(i8),
    /// The declared length is below the header size or above the batch limit.
    Length(i32),
    /// The record count disagrees with the last offset delta, or is outside
    /// 1..=[`BATCH_RECORDS_MAX`].
    RecordCount {
        /// Records declared.
        count: i32,
        /// Last offset delta declared.
        last_offset_delta: i32,
    },
    /// The CRC-32C stored in the header does not match the bytes.
    Crc {
        /// The CRC the header carries.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A stored batch carries a partition leader epoch other than the one the log
    /// writes. The epoch lies outside the CRC, so this check covers its bytes.
    LeaderEpoch(i32),
    /// The batch would make its segment span more offsets than the index can hold.
    OffsetSpan {
        /// The segment's base offset.
        base: u64,
        /// The offset after the batch.
        end: u64,
    },
    /// The attributes name a compression codec Kafka does not define (5..=7).
    UnknownCodec(u8),
    /// The compressed records decompress to more than
    /// [`DECOMPRESSED_BATCH_BYTES_MAX`](crate::limits::DECOMPRESSED_BATCH_BYTES_MAX)
    /// bytes (a decompression bomb, or a batch larger than any producer sends).
    DecompressedTooLarge {
        /// The codec.
        codec: u8,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The compressed records are not valid data for their codec.
    Decompress {
        /// The codec.
        codec: u8,
    },
    /// A record inside the batch is malformed.
    Record {
        /// Index of the record within the batch.
        index: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The base offset is not the one the log expected here.
    BaseOffset {
        /// The offset the log expected.
        expected: i64,
        /// The offset the batch carries.
        found: i64,
    },
}

impl fmt::Display for BatchFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BatchFault::Truncated { needed, available } => {
                write!(f, "batch needs {needed} bytes but only {available} remain")
            }
            BatchFault::Magic(m) => write!(f, "magic byte is {m}, expected 2"),
            BatchFault::Length(l) => write!(
                f,
                "batch length {l} is outside {}..={}",
                BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES,
                BATCH_BYTES_MAX - LOG_OVERHEAD_BYTES
            ),
            BatchFault::RecordCount {
                count,
                last_offset_delta,
            } => write!(
                f,
                "record count {count} does not match last offset delta {last_offset_delta}"
            ),
            BatchFault::Crc { stored, computed } => {
                write!(
                    f,
                    "CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            BatchFault::LeaderEpoch(e) => {
                write!(
                    f,
                    "partition leader epoch {e}, expected {STORED_LEADER_EPOCH}"
                )
            }
            BatchFault::OffsetSpan { base, end } => {
                write!(
                    f,
                    "segment at offset {base} would end at {end}, past 2^32 offsets"
                )
            }
            BatchFault::UnknownCodec(codec) => {
                write!(f, "compression codec {codec} is not one Kafka defines")
            }
            BatchFault::DecompressedTooLarge { codec, limit } => write!(
                f,
                "{} records decompress to more than {limit} bytes",
                compression::codec_name(codec)
            ),
            BatchFault::Decompress { codec } => write!(
                f,
                "records are not valid {} data",
                compression::codec_name(codec)
            ),
            BatchFault::Record { index, reason } => write!(f, "record {index}: {reason}"),
            BatchFault::BaseOffset { expected, found } => {
                write!(f, "base offset {found}, expected {expected}")
            }
        }
    }
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and sanity-checks the header at the start of `buf`, without the CRC.
///
/// `buf` may hold less than the whole batch; the result says how many bytes the
/// batch needs.
pub(crate) fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchFault> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(BatchFault::Truncated {
            needed: BATCH_HEADER_BYTES,
            available: buf.len(),
        });
    }
    let magic = buf[MAGIC_POSITION] as i8;
    if magic != 2 {
        return Err(BatchFault::Magic(magic));
    }
    let length = be_i32(buf, 8);
    let length_ok = usize::try_from(length).is_ok_and(|l| {
        (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES..=BATCH_BYTES_MAX - LOG_OVERHEAD_BYTES)
            .contains(&l)
    });
    if !length_ok {
        return Err(BatchFault::Length(length));
    }
    let last_offset_delta = be_i32(buf, 23);
    let count = be_i32(buf, 57);
    let count_ok = usize::try_from(count).is_ok_and(|c| (1..=BATCH_RECORDS_MAX).contains(&c));
    if !count_ok || last_offset_delta != count - 1 {
        return Err(BatchFault::RecordCount {
            count,
            last_offset_delta,
        });
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, 0),
        bytes: LOG_OVERHEAD_BYTES + length as usize,
        last_offset_delta: last_offset_delta as u32,
        first_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
    })
}

/// Checks the whole batch at the start of `buf`: header, length and CRC.
pub(crate) fn check_batch(buf: &[u8]) -> Result<BatchHeader, BatchFault> {
    let header = parse_header(buf)?;
    if buf.len() < header.bytes {
        return Err(BatchFault::Truncated {
            needed: header.bytes,
            available: buf.len(),
        });
    }
    let stored = u32::from_be_bytes(buf[CRC_POSITION..CRC_COVERED_FROM].try_into().expect("4"));
    let computed = crc32c::crc32c(&buf[CRC_COVERED_FROM..header.bytes]);
    if stored != computed {
        return Err(BatchFault::Crc { stored, computed });
    }
    Ok(header)
}

/// Checks every record of a producer's batch, the way a Kafka broker validates
/// what it is about to store, so that nothing stored can fail to decode later or
/// make a decoder allocate what the bytes do not hold.
///
/// Compressed batches are decompressed under the size cap and their records
/// checked the same way; they are stored compressed, as received.
pub(crate) fn check_records(buf: &[u8], header: &BatchHeader) -> Result<(), BatchFault> {
    let attributes = u16::from_be_bytes(buf[21..23].try_into().expect("2 bytes"));
    let codec = (attributes & 0x7) as u8;
    let section = &buf[BATCH_HEADER_BYTES..header.bytes];
    if codec == 0 {
        return check_record_section(section, header);
    }
    let plain = compression::decompress(codec, section).map_err(|e| match e {
        DecompressError::UnknownCodec(c) => BatchFault::UnknownCodec(c),
        DecompressError::TooLarge { limit } => BatchFault::DecompressedTooLarge { codec, limit },
        DecompressError::Invalid { .. } => BatchFault::Decompress { codec },
    })?;
    check_record_section(&plain, header)
}

/// Checks the records of a batch, uncompressed.
fn check_record_section(section: &[u8], header: &BatchHeader) -> Result<(), BatchFault> {
    let mut r = VarReader { buf: section };
    let count = u32::try_from(header.offset_count()).expect("bounded by BATCH_RECORDS_MAX");
    for index in 0..count {
        let fault = |reason| BatchFault::Record { index, reason };
        let len = r
            .length()
            .ok_or(fault("bad record length"))?
            .ok_or(fault("null record"))?;
        if len > RECORD_BYTES_MAX + BATCH_HEADER_BYTES {
            return Err(fault("record larger than the record limit"));
        }
        let mut body = VarReader {
            buf: r.take(len).ok_or(fault("record runs past the batch"))?,
        };
        body.take(1).ok_or(fault("missing attributes"))?;
        body.varlong().ok_or(fault("bad timestamp delta"))?;
        if body.varlong() != Some(i64::from(index)) {
            return Err(fault("offset delta does not match the record's position"));
        }
        for what in ["key", "value"] {
            let len = body.length().ok_or(fault("bad key or value length"))?;
            if let Some(len) = len {
                body.take(len).ok_or(fault(if what == "key" {
                    "key runs past the record"
                } else {
                    "value runs past the record"
                }))?;
            }
        }
        let headers = body.varlong().ok_or(fault("bad header count"))?;
        // Each header takes at least two bytes, so the count is bounded by what remains.
        if headers < 0 || headers as usize > body.buf.len() / 2 {
            return Err(fault("header count does not fit the record"));
        }
        for _ in 0..headers {
            let key_len = body.length().ok_or(fault("bad header key length"))?;
            let key_len = key_len.ok_or(fault("null header key"))?;
            let key = body
                .take(key_len)
                .ok_or(fault("header key runs past the record"))?;
            std::str::from_utf8(key).map_err(|_| fault("header key is not UTF-8"))?;
            if let Some(len) = body.length().ok_or(fault("bad header value length"))? {
                body.take(len)
                    .ok_or(fault("header value runs past the record"))?;
            }
        }
        if !body.buf.is_empty() {
            return Err(fault("bytes left over after the record's fields"));
        }
    }
    if !r.buf.is_empty() {
        return Err(BatchFault::Record {
            index: count,
            reason: "bytes left over after the last record",
        });
    }
    Ok(())
}

/// Reads Kafka's zigzag varints from a byte slice, never past its end.
struct VarReader<'a> {
    buf: &'a [u8],
}

impl<'a> VarReader<'a> {
    fn varlong(&mut self) -> Option<i64> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// A length field: `None` for a malformed one, `Some(None)` for -1 (null).
    fn length(&mut self) -> Option<Option<usize>> {
        match self.varlong()? {
            -1 => Some(None),
            n => usize::try_from(n).ok().map(Some),
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}

/// Checks a batch as the log stored it: everything [`check_batch`] checks, plus the
/// two fields outside the CRC, which the log itself wrote.
pub(crate) fn check_stored(buf: &[u8], expected: Offset) -> Result<BatchHeader, BatchFault> {
    let header = check_batch(buf)?;
    let epoch = be_i32(buf, LEADER_EPOCH_POSITION);
    if epoch != STORED_LEADER_EPOCH {
        return Err(BatchFault::LeaderEpoch(epoch));
    }
    let expected = i64::try_from(expected.0).expect("offsets stay below i64::MAX");
    if header.base_offset != expected {
        return Err(BatchFault::BaseOffset {
            expected,
            found: header.base_offset,
        });
    }
    Ok(header)
}

/// Stamps the batch at the start of `buf` with its base offset and the stored leader
/// epoch. Both lie outside the CRC, so the batch stays valid.
pub(crate) fn stamp(buf: &mut [u8], offset: Offset) {
    let offset = i64::try_from(offset.0).expect("offsets stay below i64::MAX");
    buf[..8].copy_from_slice(&offset.to_be_bytes());
    buf[LEADER_EPOCH_POSITION..LEADER_EPOCH_POSITION + 4]
        .copy_from_slice(&STORED_LEADER_EPOCH.to_be_bytes());
}

/// One record header: a string key and an optional value. Kafka allows a key to
/// repeat; the typed API refuses repeats because the codec keeps only the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is Kafka's null header value.
    pub value: Option<Bytes>,
}

/// A record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key, if any.
    pub key: Option<Bytes>,
    /// Payload; `None` is Kafka's null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Creation time of the record.
    pub timestamp: TimestampMs,
}

impl Record {
    /// A record with only a value, stamped with `timestamp`.
    pub fn from_value(value: impl Into<Bytes>, timestamp: TimestampMs) -> Record {
        Record {
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp,
        }
    }

    /// Bytes of payload the record carries: key, value, header keys and values.
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// A record read back from the log, with the offset the log gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's offset in its partition.
    pub offset: Offset,
    /// The record's key, value, headers and timestamp.
    pub record: Record,
}

/// Encodes `records` as one uncompressed RecordBatch v2 with base offset 0,
/// byte for byte what `kafka-protocol`'s encoder writes for them (no producer
/// id, epoch or sequence; leader epoch 0), through [`BatchBuilder`].
///
/// The caller has checked counts and sizes against the limits.
pub(crate) fn encode(records: &[Record]) -> Result<BytesMut, AppendError> {
    let Some(first_ts) = records.iter().map(|r| r.timestamp).min() else {
        return Ok(BytesMut::new());
    };
    let bytes = records.iter().map(|r| r.payload_bytes() + 32).sum();
    let mut builder = BatchBuilder::new(first_ts, bytes);
    for r in records {
        builder.push(r)?;
    }
    Ok(builder.finish().expect("records were added"))
}

pub(crate) fn zigzag32(n: i32) -> u64 {
    u64::from(((n << 1) ^ (n >> 31)) as u32)
}

pub(crate) fn zigzag64(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A length-prefixed byte string; `None` is length -1.
pub(crate) fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, zigzag32(i32::try_from(b.len()).expect("sized before")));
            buf.put_slice(b);
        }
        None => put_varint(buf, zigzag32(-1)),
    }
}

/// Decompresses a batch's records section for the codec, with the cap.
fn decompress_section(section: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    let n = match codec {
        Compression::None => return Ok(std::mem::take(section)),
        Compression::Gzip => compression::GZIP,
        Compression::Snappy => compression::SNAPPY,
        Compression::Lz4 => compression::LZ4,
        Compression::Zstd => compression::ZSTD,
    };
    Ok(compression::decompress(n, section)?.into())
}

/// The offset and key of every record of the batches in `bytes`, in order: what
/// [`decode`] gives for them, without the values and headers. Uncompressed
/// batches are walked in place (only keys are copied out); compressed ones
/// are decoded whole.
pub(crate) fn decode_keys(bytes: Bytes) -> Result<Vec<(Offset, Option<Bytes>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = parse_header(&bytes[at..]).map_err(|f| f.to_string())?;
        let end = at + header.bytes;
        if end > bytes.len() {
            return Err(format!(
                "a batch of {} bytes at {at} runs past the {} read",
                header.bytes,
                bytes.len()
            ));
        }
        let attributes = u16::from_be_bytes([bytes[at + 21], bytes[at + 22]]);
        if attributes & 0x07 != 0 {
            for r in decode(bytes.slice(at..end))? {
                out.push((r.offset, r.record.key));
            }
            at = end;
            continue;
        }
        let section = &bytes[at + BATCH_HEADER_BYTES..end];
        let mut r = VarReader { buf: section };
        for index in 0..header.offset_count() {
            let bad = |what: &str| format!("record {index} of the batch at {at}: {what}");
            let len = r
                .length()
                .flatten()
                .ok_or_else(|| bad("bad record length"))?;
            let mut body = VarReader {
                buf: r
                    .take(len)
                    .ok_or_else(|| bad("record runs past the batch"))?,
            };
            body.take(1).ok_or_else(|| bad("missing attributes"))?;
            body.varlong().ok_or_else(|| bad("bad timestamp delta"))?;
            let delta = body.varlong().ok_or_else(|| bad("bad offset delta"))?;
            let offset = header
                .base_offset
                .checked_add(delta)
                .and_then(|o| u64::try_from(o).ok())
                .ok_or_else(|| bad("offset out of range"))?;
            let key = match body.length().ok_or_else(|| bad("bad key length"))? {
                None => None,
                // A copy, not a slice of `bytes`: a caller that keeps keys (a
                // queue group's pending set) would otherwise keep the whole
                // read alive with them.
                Some(len) => Some(Bytes::copy_from_slice(
                    body.take(len)
                        .ok_or_else(|| bad("key runs past the record"))?,
                )),
            };
            out.push((Offset(offset), key));
        }
        at = end;
    }
    Ok(out)
}

/// Decodes every record of the batches in `bytes`, decompressing compressed
/// ones (each through the decompressed-size cap).
pub fn decode(bytes: Bytes) -> Result<Vec<StoredRecord>, String> {
    let mut buf = bytes;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set =
            RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress_section))
                .map_err(|e| e.to_string())?;
        for r in set.records {
            let offset = u64::try_from(r.offset).map_err(|_| "negative record offset")?;
            out.push(StoredRecord {
                offset: Offset(offset),
                record: Record {
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| Header {
                            key: k.to_string(),
                            value: v,
                        })
                        .collect(),
                    timestamp: TimestampMs(r.timestamp),
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// The batch as `kafka-protocol`'s encoder writes it: what [`encode`] must
    /// match byte for byte.
    fn codec_encode(records: &[Record]) -> Result<BytesMut, String> {
        let mut kafka_records = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let mut headers = IndexMap::with_capacity(r.headers.len());
            for h in &r.headers {
                if headers
                    .insert(StrBytes::from_string(h.key.clone()), h.value.clone())
                    .is_some()
                {
                    return Err(format!("record {i} repeats header key {:?}", h.key));
                }
            }
            let i = i64::try_from(i).expect("record count is bounded");
            kafka_records.push(kafka_protocol::records::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: kafka_protocol::records::NO_PRODUCER_ID,
                producer_epoch: kafka_protocol::records::NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // Offset minus sequence must stay constant for the codec to keep the
                // records in one batch; this yields base sequence -1 (no idempotence).
                sequence: i32::try_from(i).expect("bounded") - 1,
                timestamp: r.timestamp.0,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            });
        }
        let estimate = records
            .iter()
            .map(|r| r.payload_bytes() + 32)
            .sum::<usize>();
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + estimate);
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &kafka_records, &options)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    }

    #[test]
    fn encode_writes_what_the_kafka_codec_writes() {
        // A small deterministic generator: keys and values absent, empty, short
        // and past one-byte varints; header values null or not; timestamps up
        // and down; batches long enough for two-byte offset deltas.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for case in 0..200 {
            let n = 1 + next(if case % 10 == 0 { 300 } else { 8 }) as usize;
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                let bytes = |next: &mut dyn FnMut(u64) -> u64| match next(4) {
                    0 => None,
                    1 => Some(Bytes::new()),
                    2 => Some(Bytes::from(vec![b'a'; next(40) as usize])),
                    _ => Some(Bytes::from(vec![b'z'; 60 + next(20_000) as usize])),
                };
                let key = bytes(&mut next);
                let value = bytes(&mut next);
                // Now and then more headers than a one-byte count holds.
                let header_count = if n < 10 && next(12) == 0 {
                    60 + next(10)
                } else {
                    next(4)
                };
                let headers = (0..header_count)
                    .map(|h| Header {
                        key: format!("h{h}-{}", "k".repeat(next(70) as usize)),
                        value: bytes(&mut next),
                    })
                    .collect();
                let timestamp =
                    TimestampMs(1_700_000_000_000 + next(10_000_000) as i64 - 5_000_000);
                records.push(Record {
                    key,
                    value,
                    headers,
                    timestamp,
                });
            }
            let ours = encode(&records).unwrap();
            assert_eq!(ours, codec_encode(&records).unwrap(), "case {case}");
            let decoded = decode(ours.freeze()).unwrap();
            assert_eq!(
                decoded.into_iter().map(|r| r.record).collect::<Vec<_>>(),
                records
            );
        }
    }

    #[test]
    fn keys_are_what_a_whole_decode_gives() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut bytes = BytesMut::new();
        let mut base = 0u64;
        for _ in 0..20 {
            let n = 1 + next(50) as usize;
            let records: Vec<Record> = (0..n)
                .map(|i| Record {
                    key: match next(3) {
                        0 => None,
                        1 => Some(Bytes::new()),
                        _ => Some(Bytes::from(
                            format!("key-{}", next(1000)).repeat(1 + next(30) as usize),
                        )),
                    },
                    value: Some(Bytes::from(vec![b'v'; next(300) as usize])),
                    headers: vec![Header {
                        key: "h".into(),
                        value: Some(Bytes::from(format!("{i}"))),
                    }],
                    timestamp: TimestampMs(1_000 + next(100) as i64),
                })
                .collect();
            let mut batch = encode(&records).unwrap();
            stamp(&mut batch, Offset(base));
            base += n as u64;
            bytes.extend_from_slice(&batch);
        }
        let bytes = bytes.freeze();
        let whole: Vec<(Offset, Option<Bytes>)> = decode(bytes.clone())
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, r.record.key))
            .collect();
        assert_eq!(whole.len() as u64, base);
        assert_eq!(decode_keys(bytes.clone()).unwrap(), whole);
        // A read cut inside a batch, at either end: refused, never a panic.
        for cut in [1, 30, 61, 70, bytes.len() - 1] {
            assert!(decode_keys(bytes.slice(cut..)).is_err(), "{cut}");
            assert!(
                decode_keys(bytes.slice(..bytes.len() - cut)).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn encode_refuses_a_repeated_header_key() {
        let mut r = Record::from_value("v", TimestampMs(1));
        r.headers = ["a", "b", "a"]
            .map(|k| Header {
                key: k.into(),
                value: None,
            })
            .into();
        let err = encode(&[Record::from_value("ok", TimestampMs(1)), r]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot encode records: record 1 repeats header key \"a\""
        );
        // Past the pairwise comparison's reach, too.
        let mut many = Record::from_value("v", TimestampMs(1));
        many.headers = (0..100)
            .chain([57])
            .map(|k| Header {
                key: format!("k{k}"),
                value: None,
            })
            .collect();
        let err = encode(&[many]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot encode records: record 0 repeats header key \"k57\""
        );
    }

    #[test]
    fn encoded_batch_passes_its_own_checks_and_keeps_crc_after_offset_rewrite() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record::from_value(format!("v{i}"), TimestampMs(1_000 + i)))
            .collect();
        let mut buf = encode(&records).unwrap();
        let header = check_batch(&buf).unwrap();
        assert_eq!(header.bytes, buf.len());
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1_002);
        stamp(&mut buf, Offset(77));
        assert_eq!(check_stored(&buf, Offset(77)).unwrap().base_offset, 77);
        let decoded = decode(buf.freeze()).unwrap();
        assert_eq!(
            decoded.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            [77, 78, 79]
        );
        assert_eq!(decoded[1].record, records[1]);
    }

    #[test]
    fn records_of_encoded_batches_pass_the_record_checks() {
        let mut r = Record::from_value("v", TimestampMs(3));
        r.key = Some(Bytes::from_static(b"k"));
        r.headers = vec![Header {
            key: "h".into(),
            value: None,
        }];
        let records = vec![r, Record::from_value(Bytes::new(), TimestampMs(4))];
        let buf = encode(&records).unwrap();
        let header = check_batch(&buf).unwrap();
        assert_eq!(check_records(&buf, &header), Ok(()));
    }

    #[test]
    fn any_flipped_bit_in_a_stored_batch_is_detected() {
        let mut buf = encode(&[Record::from_value("hello", TimestampMs(5))]).unwrap();
        stamp(&mut buf, Offset(9));
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.to_vec();
                damaged[byte] ^= 1 << bit;
                assert!(
                    check_stored(&damaged, Offset(9)).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }
}
