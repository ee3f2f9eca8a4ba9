//! [`BatchBuilder`]: a RecordBatch v2 written record by record, straight
//! from borrowed keys, values and header names and values, into the one
//! buffer the log stores. A caller that holds its records in another shape
//! (the broker's CloudEvents) writes them without first building a
//! [`Record`] with owned header strings for each; [`Record`]s go through the
//! same writer ([`BatchBuilder::push`]), so there is one encoder.
//!
//! A record's length prefix and header count are varints written before the
//! bytes they count. The writer leaves room for the longest of each (5 bytes
//! for a length, 1 for a count, which holds up to 63 headers) and, when the
//! record is done, moves the record's bytes back over the room not used (or
//! forward for a count past 63): one `memmove` of the record, which is in
//! cache, instead of a pass over its parts to size them first.

use std::collections::HashSet;

use bytes::{BufMut, BytesMut};
use tidings_types::TimestampMs;

use crate::batch::{
    put_bytes, put_varint, varint_len, zigzag32, zigzag64, Record, CRC_COVERED_FROM, CRC_POSITION,
    LOG_OVERHEAD_BYTES, STORED_LEADER_EPOCH,
};
use crate::limits::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use crate::AppendError;

/// Bytes of the longest varint of an `i32` (zigzag-encoded), which a record's
/// length prefix is.
const LENGTH_ROOM_BYTES: usize = 5;

/// Header counts whose zigzag varint takes one byte.
const ONE_BYTE_COUNT_MAX: usize = 63;
const _: () = assert!(ONE_BYTE_COUNT_MAX * 2 < 0x80);

/// One uncompressed RecordBatch v2 (base offset 0, no producer id, leader
/// epoch 0), byte for byte what `kafka-protocol`'s encoder writes for the same
/// records, built one record at a time. Limits are checked as records are
/// added: no record's key, value and headers past [`RECORD_BYTES_MAX`], no
/// more than [`BATCH_RECORDS_MAX`] records, no batch past [`BATCH_BYTES_MAX`];
/// a record refused leaves the batch as it was.
pub struct BatchBuilder {
    buf: BytesMut,
    /// Records added.
    count: usize,
    /// Timestamp deltas are taken from this (the batch's first timestamp).
    base_ts: i64,
    max_ts: i64,
    /// Key, value and header bytes of the records added.
    payload_bytes: usize,
    /// Where each header name of the record being written is in `buf`, to
    /// refuse a repeated one. Kept between records for its allocation.
    names: Vec<(usize, usize)>,
    /// The same names as a set, once a record has more than
    /// [`PAIRWISE_NAMES_MAX`]: comparing each new name with every earlier one
    /// would take quadratic time in a record of many small headers.
    many: HashSet<Vec<u8>>,
}

/// Header names compared pairwise before a set takes over.
const PAIRWISE_NAMES_MAX: usize = 16;

impl BatchBuilder {
    /// An empty batch whose records' timestamps are given relative to
    /// `base` (the smallest timestamp the batch will hold), with room for
    /// `bytes` of records before its buffer grows.
    pub fn new(base: TimestampMs, bytes: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + bytes.min(BATCH_BYTES_MAX));
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        BatchBuilder {
            buf,
            count: 0,
            base_ts: base.0,
            max_ts: base.0,
            payload_bytes: 0,
            names: Vec::new(),
            many: HashSet::new(),
        }
    }

    /// Records added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Key, value and header bytes of the records added so far.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Starts a record with `key` and `value` (`None`: Kafka's null) at
    /// `timestamp`, which must not be below the batch's base. Its headers
    /// follow through the writer; [`RecordWriter::finish`] adds it.
    pub fn record(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<RecordWriter<'_>, AppendError> {
        let index = self.count;
        if index >= BATCH_RECORDS_MAX {
            return Err(AppendError::TooManyRecords { count: index + 1 });
        }
        let bytes = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        if bytes > RECORD_BYTES_MAX {
            return Err(AppendError::RecordTooLarge { index, bytes });
        }
        if timestamp.0 < self.base_ts {
            return Err(AppendError::Encode(format!(
                "record {index} is stamped {} ms, before the batch's base of {} ms",
                timestamp.0, self.base_ts
            )));
        }
        let start = self.buf.len();
        self.buf.put_bytes(0, LENGTH_ROOM_BYTES);
        self.buf.put_i8(0); // record attributes
        put_varint(&mut self.buf, zigzag64(timestamp.0 - self.base_ts));
        put_varint(
            &mut self.buf,
            zigzag32(i32::try_from(index).expect("bounded by BATCH_RECORDS_MAX")),
        );
        put_bytes(&mut self.buf, key);
        put_bytes(&mut self.buf, value);
        let count_at = self.buf.len();
        self.buf.put_u8(0); // header count, written at the end
        self.names.clear();
        self.many.clear();
        Ok(RecordWriter {
            b: self,
            start,
            count_at,
            timestamp: timestamp.0,
            bytes,
            error: None,
        })
    }

    /// Adds `record` as it is (its own timestamp, headers in order).
    pub fn push(&mut self, record: &Record) -> Result<(), AppendError> {
        let mut w = self.record(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
        )?;
        for h in &record.headers {
            w.header(h.key.as_bytes(), h.value.as_deref());
        }
        w.finish()
    }

    /// The batch's bytes: its header filled in (length, count, timestamps,
    /// CRC). `None` when no record was added.
    pub fn finish(mut self) -> Option<BytesMut> {
        if self.count == 0 {
            return None;
        }
        let count = i32::try_from(self.count).expect("bounded by BATCH_RECORDS_MAX");
        let length =
            i32::try_from(self.buf.len() - LOG_OVERHEAD_BYTES).expect("bounded by BATCH_BYTES_MAX");
        let mut header = &mut self.buf[..BATCH_HEADER_BYTES];
        header.put_i64(0);
        header.put_i32(length);
        header.put_i32(STORED_LEADER_EPOCH);
        header.put_i8(2);
        header.put_u32(0); // CRC, below
        header.put_i16(0); // attributes: uncompressed, creation time
        header.put_i32(count - 1);
        header.put_i64(self.base_ts);
        header.put_i64(self.max_ts);
        header.put_i64(-1); // producer id
        header.put_i16(-1); // producer epoch
        header.put_i32(-1); // base sequence
        header.put_i32(count);
        let crc = crc32c::crc32c(&self.buf[CRC_COVERED_FROM..]);
        self.buf[CRC_POSITION..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        Some(self.buf)
    }
}

/// A record being written into a [`BatchBuilder`]: add its headers, then
/// [`finish`](Self::finish) it. Dropped unfinished, it leaves the batch as it
/// was.
pub struct RecordWriter<'a> {
    b: &'a mut BatchBuilder,
    /// Where the record's length prefix starts.
    start: usize,
    /// Where its header count goes.
    count_at: usize,
    timestamp: i64,
    /// Key, value and header bytes so far.
    bytes: usize,
    /// The first header refused; the record is refused at `finish`.
    error: Option<AppendError>,
}

impl RecordWriter<'_> {
    /// Adds a header. A name the record already has, or one that takes the
    /// record past [`RECORD_BYTES_MAX`], is not written and refuses the
    /// record at [`finish`](Self::finish).
    pub fn header(&mut self, name: &[u8], value: Option<&[u8]>) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        self.bytes += name.len() + value.map_or(0, <[u8]>::len);
        if self.bytes > RECORD_BYTES_MAX {
            self.error = Some(AppendError::RecordTooLarge {
                index: self.b.count,
                bytes: self.bytes,
            });
            return self;
        }
        let b = &mut *self.b;
        let repeated = if b.names.len() < PAIRWISE_NAMES_MAX {
            b.names
                .iter()
                .any(|&(at, len)| &b.buf[at..at + len] == name)
        } else {
            if b.many.is_empty() {
                let buf = &b.buf;
                b.many
                    .extend(b.names.iter().map(|&(at, len)| buf[at..at + len].to_vec()));
            }
            !b.many.insert(name.to_vec())
        };
        if repeated {
            self.error = Some(AppendError::Encode(format!(
                "record {} repeats header key {:?}",
                self.b.count,
                String::from_utf8_lossy(name)
            )));
            return self;
        }
        put_varint(
            &mut self.b.buf,
            zigzag32(i32::try_from(name.len()).expect("bounded by RECORD_BYTES_MAX")),
        );
        self.b.names.push((self.b.buf.len(), name.len()));
        self.b.buf.put_slice(name);
        put_bytes(&mut self.b.buf, value);
        self
    }

    /// Adds the record to the batch, or refuses it (leaving the batch as it
    /// was) for the first header refused or for taking the batch past its
    /// limits.
    pub fn finish(mut self) -> Result<(), AppendError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let payload = self.b.payload_bytes + self.bytes;
        if payload > BATCH_BYTES_MAX {
            return Err(AppendError::BatchTooLarge { bytes: payload });
        }
        let buf = &mut self.b.buf;
        // The header count: one byte was left for it.
        let headers = self.b.names.len();
        if headers > ONE_BYTE_COUNT_MAX {
            let extra = varint_len(zigzag32(count32(headers))) - 1;
            let end = buf.len();
            buf.put_bytes(0, extra);
            buf.copy_within(self.count_at + 1..end, self.count_at + 1 + extra);
        }
        write_varint(buf, self.count_at, zigzag32(count32(headers)));
        // The length prefix: five bytes were left for it.
        let body = self.start + LENGTH_ROOM_BYTES;
        let size = buf.len() - body;
        let size_varint = zigzag32(i32::try_from(size).expect("bounded by RECORD_BYTES_MAX"));
        let prefix = varint_len(size_varint);
        buf.copy_within(body.., self.start + prefix);
        buf.truncate(self.start + prefix + size);
        write_varint(buf, self.start, size_varint);
        if buf.len() > BATCH_BYTES_MAX {
            return Err(AppendError::BatchTooLarge { bytes: buf.len() });
        }
        self.b.count += 1;
        self.b.payload_bytes = payload;
        self.b.max_ts = self.b.max_ts.max(self.timestamp);
        // Finished: nothing to undo.
        self.start = usize::MAX;
        Ok(())
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        if self.start != usize::MAX {
            self.b.buf.truncate(self.start);
        }
    }
}

/// Writes `v` as a varint at `at`, over bytes already in `buf`.
fn write_varint(buf: &mut [u8], mut at: usize, mut v: u64) {
    while v >= 0x80 {
        buf[at] = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
        at += 1;
    }
    buf[at] = v as u8;
}

fn count32(n: usize) -> i32 {
    i32::try_from(n).expect("bounded by RECORD_BYTES_MAX")
}
