//! What the fuzzers in `fuzz/` run against the log (feature `fuzz`, not an
//! API): each entry point takes arbitrary bytes, feeds them to one parser of
//! the log, and panics when an invariant breaks. `tidings-fuzz` replays the
//! committed corpora through the same functions in the normal tests.
//!
//! A checksum stops a mutation-based fuzzer at the first byte it changes, so
//! an input's first byte can ask for the checksums to be made right before
//! the parser sees the bytes: both the checksum check and everything behind
//! it are explored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tidings_types::{Offset, PartitionId, TimestampMs};

use crate::batch::{self, CRC_COVERED_FROM, CRC_POSITION, LOG_OVERHEAD_BYTES};
use crate::limits::BATCH_HEADER_BYTES;
use crate::producers::Producers;
use crate::sim::{Faults, SimDisk};
use crate::storage::{OpenMode, Storage};
use crate::{format, topic, AppendError, Log, LogOptions, Record, RecoveryError, TopicConfig};

/// Writes the right CRC into every batch of `buf` whose length field fits,
/// walking batch by batch; with `offsets`, also the base offsets a log would
/// have stamped (contiguous from 0) and the stored leader epoch.
fn fix_batches(buf: &mut [u8], offsets: bool) {
    let (mut pos, mut next) = (0usize, 0i64);
    while buf.len() - pos >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().expect("4"));
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|l| (pos + LOG_OVERHEAD_BYTES).checked_add(l))
            .filter(|&end| end <= buf.len() && end >= pos + BATCH_HEADER_BYTES)
        else {
            return;
        };
        if offsets {
            buf[pos..pos + 8].copy_from_slice(&next.to_be_bytes());
            buf[pos + 12..pos + 16].copy_from_slice(&batch::STORED_LEADER_EPOCH.to_be_bytes());
            let delta = i32::from_be_bytes(buf[pos + 23..pos + 27].try_into().expect("4"));
            next += i64::from(delta.max(0)) + 1;
        }
        let crc = crc32c::crc32c(&buf[pos + CRC_COVERED_FROM..end]);
        buf[pos + CRC_POSITION..pos + CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// A producer's batches as `Partition::append_batches` takes them (first
/// byte: odd to make the CRCs right). What the checks accept, stamped with
/// offsets as the writer stamps it, decodes: every record of every batch, at
/// the offsets the headers cover; what they refuse is refused at a position
/// inside the input.
pub fn producer_batches(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = BytesMut::from(rest);
    if flags & 1 == 1 {
        fix_batches(&mut bytes, false);
    }
    let len = bytes.len();
    match crate::partition::prepare_batches(bytes) {
        Err(AppendError::InvalidBatch { position, .. }) => {
            assert!(position < len, "refused at {position} of {len} bytes");
        }
        Err(_) => {}
        Ok(prepared) => {
            // Stamped as the writer stamps them: base offsets from 0 on (a
            // producer's own base offsets are whatever it sent).
            let mut bytes = prepared.bytes;
            let (mut position, mut next) = (0usize, 0u64);
            for header in &prepared.headers {
                batch::stamp(&mut bytes[position..], Offset(next));
                position += header.bytes;
                next += header.offset_count();
            }
            let decoded = batch::decode(bytes.freeze())
                .unwrap_or_else(|e| panic!("accepted batches do not decode: {e}"));
            let offsets: Vec<u64> = decoded.iter().map(|r| r.offset.0).collect();
            assert!(
                offsets.iter().copied().eq(0..next),
                "records at the offsets their headers cover"
            );
        }
    }
}

const DATA: &str = "/data";
const TOPIC: &str = "t";

/// The partition directory of the one-partition topic `t` on a fresh
/// simulated disk, after a clean close.
fn fresh_partition() -> (SimDisk, PathBuf) {
    let disk = SimDisk::new(0, Faults::default());
    let log = Log::open(DATA, options(&disk)).expect("open a fresh log");
    let config = TopicConfig {
        partitions: 1,
        ..TopicConfig::default()
    };
    log.create_topic(TOPIC, config).expect("create the topic");
    log.close().expect("close");
    let dir = Path::new(DATA).join("topics").join(TOPIC).join("0");
    (disk, dir)
}

fn options(disk: &SimDisk) -> LogOptions {
    LogOptions {
        storage: Arc::new(disk.process()) as Arc<dyn Storage>,
        ..LogOptions::default()
    }
}

/// The end of the valid batches at the start of a segment image, checked as
/// the log checks what it stored: (bytes, next offset).
fn valid_prefix(image: &[u8]) -> (usize, u64) {
    let (mut pos, mut next) = (0usize, 0u64);
    while let Ok(header) = batch::check_stored(&image[pos..], Offset(next)) {
        pos += header.bytes;
        next += header.offset_count();
    }
    (pos, next)
}

/// A crash image of a partition's only segment (first byte: odd to make
/// the CRCs and base offsets right), recovered without its index or any
/// producer snapshot. The partition is either refused as corrupt at the
/// first invalid batch, or opened with exactly the valid batches at the
/// start of the image — every byte of them served as it was, nothing after.
pub fn segment_recovery(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut image = rest.to_vec();
    if flags & 1 == 1 {
        fix_batches(&mut image, true);
    }
    let (disk, dir) = fresh_partition();
    let fs = disk.process();
    for entry in fs.list(&dir).expect("list the partition") {
        fs.remove_file(&dir.join(&entry.name)).expect("remove");
    }
    let segment = dir.join(format!("{:020}.log", 0));
    let file = fs.open(&segment, OpenMode::Replace).expect("segment");
    file.write_all_at(&image, 0).expect("write the image");
    file.sync_all().expect("sync");
    fs.sync_dir(&dir).expect("sync the directory");

    let (prefix, next) = valid_prefix(&image);
    let log = Log::open(DATA, options(&disk)).expect("the log opens");
    let topic = log.topic(TOPIC).expect("the topic is there");
    if let Some((_, refusal)) = topic.refused().into_iter().next() {
        match &*refusal {
            RecoveryError::Corrupt { file, position, .. } => {
                assert_eq!(file, &segment, "{refusal}");
                assert_eq!(*position, prefix as u64, "{refusal}");
            }
            RecoveryError::Oversized { .. } => {}
            other => panic!("refused for {other}"),
        }
        return;
    }
    let partition = topic.partition(PartitionId(0)).expect("partition 0");
    assert_eq!(partition.high_watermark(), Offset(next), "recovered end");
    let mut served = Vec::new();
    let mut from = Offset(0);
    while from < Offset(next) {
        let batches = partition
            .read(from, 1 << 20)
            .expect("read what recovery kept");
        assert!(batches.next_offset > from, "a read moves on");
        served.extend_from_slice(&batches.bytes);
        from = batches.next_offset;
    }
    assert!(
        served == image[..prefix],
        "served bytes differ from the image"
    );
    log.close().expect("close");
}

/// Small files of the log, framed as the log frames them (checksums right),
/// the first byte choosing which: a topic's metadata or a partition's
/// producer snapshot. What decodes encodes back to the same state.
pub fn log_metadata(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if u16::try_from(body.len()).is_err() {
            return;
        }
        let bytes = format::encode_record(topic::TOPIC_META_MAGIC, body);
        if let Ok(config) = topic::decode_meta(&bytes) {
            let again = topic::decode_meta(&topic::encode_meta(&config));
            assert_eq!(again, Ok(config), "topic metadata round trip");
        }
    } else {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        if let Ok((offset, producers)) = Producers::decode(&bytes) {
            let encoded = producers.encode(offset);
            let again = Producers::decode(&encoded).expect("a snapshot we wrote reads");
            assert_eq!(again, (offset, producers), "producer snapshot round trip");
        }
    }
}

/// Inputs to start each fuzzer from: valid files and batches of every kind
/// the parsers read, which mutation then bends.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let batch = |n: usize| {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut r = Record::from_value(
                    Bytes::from(format!("value {i} of an order event")),
                    TimestampMs(1_700_000_000_000 + i as i64),
                );
                r.key = (i % 2 == 0).then(|| Bytes::from(format!("key-{i}")));
                r.headers.push(crate::Header {
                    key: "ce_type".into(),
                    value: Some(Bytes::from_static(b"order.placed")),
                });
                r
            })
            .collect();
        batch::encode(&records).expect("a small batch").to_vec()
    };
    match target {
        "producer_batches" => {
            let mut out = vec![
                [&[1u8][..], &batch(1)].concat(),
                [&[1u8][..], &batch(5)].concat(),
            ];
            for codec in 1..=4 {
                out.push([&[1u8][..], &compressed(&batch(8), codec)].concat());
            }
            out.push([&[1u8][..], &batch(2), &batch(3)].concat());
            out
        }
        "segment_recovery" => {
            let mut two = batch(3);
            two.extend_from_slice(&compressed(&batch(4), 1));
            let mut torn = two.clone();
            torn.truncate(two.len() - 7);
            let mut zeros = two.clone();
            zeros.extend_from_slice(&[0; 64]);
            vec![
                [&[1u8][..], &two].concat(),
                [&[1u8][..], &torn].concat(),
                [&[1u8][..], &zeros].concat(),
            ]
        }
        "log_metadata" => {
            let meta = topic::encode_meta(&TopicConfig::default());
            let body = &meta[8..meta.len() - 4];
            let mut producers = Producers::default();
            let id = crate::producers::BatchId {
                producer_id: 7,
                epoch: 0,
                first_seq: 0,
                last_seq: 4,
            };
            producers.record(&id, Offset(0), Offset(4), 0);
            let snapshot = producers.encode(Offset(5));
            vec![
                [&[0u8][..], body].concat(),
                [&[1u8][..], &snapshot[..snapshot.len() - 4]].concat(),
            ]
        }
        other => panic!("no seeds for {other}"),
    }
}

/// An uncompressed batch's records compressed with `codec` (1 gzip, 2
/// snappy, 3 lz4, 4 zstd), with its length, attributes and CRC made right.
fn compressed(plain: &[u8], codec: u8) -> Vec<u8> {
    use std::io::Write;
    let section = &plain[BATCH_HEADER_BYTES..];
    let packed = match codec {
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(section).expect("gzip");
            gz.finish().expect("gzip")
        }
        2 => snap::raw::Encoder::new()
            .compress_vec(section)
            .expect("snappy"),
        3 => {
            let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
            lz.write_all(section).expect("lz4");
            lz.finish().expect("lz4")
        }
        _ => {
            ruzstd::encoding::compress_to_vec(section, ruzstd::encoding::CompressionLevel::Fastest)
        }
    };
    let mut out = plain[..BATCH_HEADER_BYTES].to_vec();
    out.extend_from_slice(&packed);
    let length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES).expect("small");
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = u16::from_be_bytes([out[21], out[22]]) & !0x7 | u16::from(codec);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    fix_batches(&mut out, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_pass_every_check() {
        for target in ["producer_batches", "segment_recovery", "log_metadata"] {
            for seed in seeds(target) {
                match target {
                    "producer_batches" => producer_batches(&seed),
                    "segment_recovery" => segment_recovery(&seed),
                    _ => log_metadata(&seed),
                }
            }
        }
        // The seeds are valid, not merely harmless.
        for seed in seeds("producer_batches") {
            assert!(crate::partition::prepare_batches(BytesMut::from(&seed[1..])).is_ok());
        }
        let two = &seeds("segment_recovery")[0][1..];
        let mut image = two.to_vec();
        fix_batches(&mut image, true);
        assert_eq!(valid_prefix(&image), (image.len(), 7));
    }
}
