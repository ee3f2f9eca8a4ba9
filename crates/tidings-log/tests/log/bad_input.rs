//! Bad input of every kind gets a typed error and writes nothing.

use bytes::{Bytes, BytesMut};
use tidings_log::limits::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, RECORD_BYTES_MAX};
use tidings_log::{
    AppendError, BatchFault, ConfigError, Log, LogOptions, ReadError, Record, TopicConfig,
    TopicError,
};
use tidings_types::{Offset, PartitionId, TimestampMs, TopicNameError};

use crate::support::{record, segment_files, Fixture};

/// Runs `append` against a partition holding one record and checks that it fails
/// as `expected` says and leaves the partition as it was.
fn check_refused(
    append: impl FnOnce(&tidings_log::Partition) -> AppendError,
    expected: impl Fn(&AppendError) -> bool,
) {
    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    p.append_blocking(&[record(1, 10, 0)]).unwrap();
    let sizes = || -> Vec<u64> {
        segment_files(&fx.partition_dir())
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .collect()
    };
    let before = sizes();
    let err = append(&p);
    assert!(expected(&err), "unexpected error: {err}");
    assert!(!err.to_string().is_empty());
    assert_eq!(p.high_watermark(), Offset(1));
    assert_eq!(sizes(), before, "nothing was written");
    assert_eq!(
        p.append_blocking(&[record(2, 10, 0)]).unwrap().base_offset,
        Offset(1)
    );
}

fn raw_append(p: &tidings_log::Partition, bytes: &[u8]) -> AppendError {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(p.append_batches(BytesMut::from(bytes)))
        .unwrap_err()
}

/// A valid raw batch as a Kafka producer would send it.
fn kafka_batch() -> Vec<u8> {
    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    p.append_blocking(&[record(5, 30, 0), record(6, 30, 0)])
        .unwrap();
    p.read(Offset(0), 1 << 20).unwrap().bytes.to_vec()
}

#[test]
fn invalid_topic_names_are_refused_before_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let long = "x".repeat(250);
    for name in ["../x", "", &long, "a/b", "a b", "..", ".", "tøpic", "a\\b"] {
        let err = log.create_topic(name, TopicConfig::default()).unwrap_err();
        assert!(matches!(err, TopicError::InvalidName(_)), "{name:?}: {err}");
    }
    assert!(matches!(
        log.create_topic("", TopicConfig::default()),
        Err(TopicError::InvalidName(TopicNameError::Empty))
    ));
    let topics = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .count();
    assert_eq!(topics, 0);
    assert!(!dir.path().parent().unwrap().join("x").exists());
    assert!(matches!(log.topic("../x"), Err(TopicError::NotFound(_))));
}

#[test]
fn invalid_configurations_and_duplicate_topics_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let bad = TopicConfig {
        partitions: 0,
        ..TopicConfig::default()
    };
    assert!(matches!(
        log.create_topic("t", bad),
        Err(TopicError::InvalidConfig(ConfigError::Partitions(0)))
    ));
    let bad = TopicConfig {
        segment_bytes: 10,
        ..TopicConfig::default()
    };
    assert!(matches!(
        log.create_topic("t", bad),
        Err(TopicError::InvalidConfig(_))
    ));
    log.create_topic("t", TopicConfig::default()).unwrap();
    assert!(matches!(
        log.create_topic("t", TopicConfig::default()),
        Err(TopicError::Exists(_))
    ));
    let topic = log.topic("t").unwrap();
    assert!(matches!(
        topic.partition(PartitionId(1)),
        Err(TopicError::NoSuchPartition { count: 1, .. })
    ));
}

#[test]
fn oversized_records_and_batches_are_refused() {
    check_refused(
        |p| {
            p.append_blocking(&[record(1, RECORD_BYTES_MAX + 1, 0)])
                .unwrap_err()
        },
        |e| matches!(e, AppendError::RecordTooLarge { index: 0, .. }),
    );
    let big: Vec<Record> = (0..5)
        .map(|i| record(i, RECORD_BYTES_MAX - 100, 0))
        .collect();
    check_refused(
        |p| p.append_blocking(&big).unwrap_err(),
        |e| matches!(e, AppendError::BatchTooLarge { .. }),
    );
    let many: Vec<Record> = (0..=BATCH_RECORDS_MAX as u64)
        .map(|i| record(i, 0, 0))
        .collect();
    check_refused(
        |p| p.append_blocking(&many).unwrap_err(),
        |e| matches!(e, AppendError::TooManyRecords { .. }),
    );
    check_refused(
        |p| p.append_blocking(&[]).unwrap_err(),
        |e| matches!(e, AppendError::Empty),
    );
    check_refused(
        |p| raw_append(p, &vec![0u8; BATCH_BYTES_MAX + 1]),
        |e| matches!(e, AppendError::BatchTooLarge { .. }),
    );
}

#[test]
fn repeated_header_keys_are_refused() {
    let mut r = Record::from_value("v", TimestampMs(0));
    r.headers = vec![
        tidings_log::Header {
            key: "k".into(),
            value: None,
        },
        tidings_log::Header {
            key: "k".into(),
            value: Some(Bytes::from_static(b"x")),
        },
    ];
    check_refused(
        |p| p.append_blocking(&[r]).unwrap_err(),
        |e| matches!(e, AppendError::Encode(_)),
    );
}

#[test]
fn malformed_raw_batches_are_refused_with_their_position() {
    let good = kafka_batch();
    check_refused(
        |p| raw_append(p, &good[..good.len() - 1]),
        |e| {
            matches!(
                e,
                AppendError::InvalidBatch {
                    position: 0,
                    fault: BatchFault::Truncated { .. }
                }
            )
        },
    );
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    check_refused(
        |p| raw_append(p, &bad_crc),
        |e| {
            matches!(
                e,
                AppendError::InvalidBatch {
                    fault: BatchFault::Crc { .. },
                    ..
                }
            )
        },
    );
    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    check_refused(
        |p| raw_append(p, &bad_magic),
        |e| {
            matches!(
                e,
                AppendError::InvalidBatch {
                    fault: BatchFault::Magic(1),
                    ..
                }
            )
        },
    );
    let mut bad_len = good.clone();
    bad_len[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    check_refused(
        |p| raw_append(p, &bad_len),
        |e| {
            matches!(
                e,
                AppendError::InvalidBatch {
                    fault: BatchFault::Length(-5),
                    ..
                }
            )
        },
    );
    // A good batch followed by a bad one: the whole append is refused.
    let mut two = good.clone();
    two.extend_from_slice(&bad_crc);
    let at = good.len();
    check_refused(
        |p| raw_append(p, &two),
        |e| matches!(e, AppendError::InvalidBatch { position, .. } if *position == at),
    );
    check_refused(
        |p| raw_append(p, b"not a batch"),
        |e| matches!(e, AppendError::InvalidBatch { .. }),
    );
}

#[test]
fn reads_outside_the_log_are_typed_errors() {
    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    p.append_blocking(&[record(1, 10, 0), record(2, 10, 0)])
        .unwrap();
    assert!(
        p.read(Offset(2), 100).unwrap().is_empty(),
        "a read at the high-watermark is empty"
    );
    for offset in [3, 1_000, i64::MAX as u64, u64::MAX] {
        match p.read(Offset(offset), 100) {
            Err(ReadError::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark,
            }) => {
                assert_eq!(
                    (requested, log_start, high_watermark),
                    (Offset(offset), Offset(0), Offset(2))
                );
            }
            other => panic!("offset {offset}: {other:?}"),
        }
    }
    assert_eq!(p.high_watermark(), Offset(2));
}

#[test]
fn a_second_process_cannot_open_the_same_data_dir() {
    let fx = Fixture::new(TopicConfig::default());
    let err = Log::open(fx.dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(err, tidings_log::OpenError::Locked { .. }),
        "{err}"
    );
}

/// Rewrites a batch's CRC after the test edited covered bytes, so that only the
/// record checks can catch the edit.
fn with_crc(mut batch: Vec<u8>) -> Vec<u8> {
    let crc = crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// CRC-32C (Castagnoli), bit by bit: the test's own, independent of the engine.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn raw_batches_whose_records_do_not_match_the_header_are_refused() {
    let good = kafka_batch();
    let fault = |e: &AppendError| match e {
        AppendError::InvalidBatch {
            fault: BatchFault::Record { reason, .. },
            ..
        } => reason.to_string(),
        other => panic!("expected a record fault, got {other}"),
    };
    // A batch that claims 100 records but carries 2.
    let mut lying = good.clone();
    lying[23..27].copy_from_slice(&99i32.to_be_bytes());
    lying[57..61].copy_from_slice(&100i32.to_be_bytes());
    check_refused(
        |p| raw_append(p, &with_crc(lying)),
        |e| !fault(e).is_empty(),
    );
    // The first record's header count made huge (zigzag varint of 2^30).
    let mut headers = good.clone();
    let first_record_end = 61 + 1 + usize::from(good[61] >> 1);
    headers[first_record_end - 1] = 0x7f;
    check_refused(
        |p| raw_append(p, &with_crc(headers)),
        |e| !fault(e).is_empty(),
    );
    // Plain records flagged as gzip are not gzip data; codec 5 is no codec.
    for (codec, expected) in [
        (1u8, BatchFault::Decompress { codec: 1 }),
        (5, BatchFault::UnknownCodec(5)),
    ] {
        let mut flagged = good.clone();
        flagged[22] |= codec;
        check_refused(
            |p| raw_append(p, &with_crc(flagged)),
            |e| matches!(e, AppendError::InvalidBatch { fault, .. } if *fault == expected),
        );
    }
    // The unedited batch, CRC recomputed by the test's own CRC, goes in.
    let fx = Fixture::new(TopicConfig::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(
        fx.partition()
            .append_batches(BytesMut::from(&with_crc(good)[..])),
    )
    .unwrap();
}

/// `batch` with its records section compressed by `compress` and the codec set.
pub(crate) fn compressed(batch: &[u8], codec: u8, compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = batch[..61].to_vec();
    out.extend_from_slice(&compress(&batch[61..]));
    let length = u32::try_from(out.len() - 12).unwrap();
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[22] = (out[22] & !7) | codec;
    with_crc(out)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn lz4(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn snappy_raw(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

/// Snappy in the Java client's (xerial) framing.
fn snappy_xerial(data: &[u8]) -> Vec<u8> {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for chunk in data.chunks(16) {
        let block = snappy_raw(chunk);
        out.extend_from_slice(&u32::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

type Compressor = fn(&[u8]) -> Vec<u8>;

#[test]
fn compressed_batches_are_stored_as_sent_and_read_back_decompressed() {
    let good = kafka_batch();
    let codecs: [(u8, Compressor); 5] = [
        (1, gzip),
        (2, snappy_raw),
        (2, snappy_xerial),
        (3, lz4),
        (4, zstd),
    ];
    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(p.append_batches(BytesMut::from(&good[..])))
        .unwrap();
    let plain = p.read(Offset(0), 1).unwrap().records().unwrap();
    for (i, (codec, compress)) in codecs.into_iter().enumerate() {
        let batch = compressed(&good, codec, compress);
        let appended = rt
            .block_on(p.append_batches(BytesMut::from(&batch[..])))
            .unwrap();
        let offset = Offset(2 * i as u64 + 2);
        assert_eq!(appended.base_offset, offset);
        let read = p.read(offset, 1).unwrap();
        // Stored byte for byte apart from the base offset.
        assert_eq!(read.bytes[8..], batch[8..], "codec {codec}");
        let records = read.records().unwrap();
        assert_eq!(records.len(), 2);
        for (got, want) in records.iter().zip(&plain) {
            assert_eq!(got.record, want.record, "codec {codec}");
        }
        assert_eq!(records[1].offset, offset.next());
    }
    // Offsets and keys alone, compressed batches among plain ones.
    let whole: Vec<_> = p
        .read_records(Offset(1), 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, r.record.key))
        .collect();
    assert_eq!(whole.len(), 11);
    assert_eq!(p.read_keys(Offset(1), 1 << 20).unwrap(), whole);
    // Truncated compressed data and a bomb past the cap are refused.
    let mut truncated = compressed(&good, 1, gzip);
    truncated.truncate(truncated.len() - 4);
    let length = u32::try_from(truncated.len() - 12).unwrap();
    truncated[8..12].copy_from_slice(&length.to_be_bytes());
    check_refused(
        |p| raw_append(p, &with_crc(truncated)),
        |e| {
            matches!(
                e,
                AppendError::InvalidBatch {
                    fault: BatchFault::Decompress { codec: 1 },
                    ..
                }
            )
        },
    );
    let limit = tidings_log::limits::DECOMPRESSED_BATCH_BYTES_MAX;
    let bomb = compressed(&good, 1, |_| gzip(&vec![0; limit + 1]));
    check_refused(
        |p| raw_append(p, &bomb),
        |e| {
            matches!(
                e,
                AppendError::InvalidBatch {
                    fault: BatchFault::DecompressedTooLarge { codec: 1, .. },
                    ..
                }
            )
        },
    );
}
