//! Idempotent producers: a batch sent again is answered where it was stored
//! and not stored twice — within a run, after a crash, after a clean close,
//! and with the producer snapshots lost or damaged.

use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tidings_log::{AppendError, Appended, FsyncPolicy, Log, Partition, TopicConfig};
use tidings_types::{Offset, PartitionId};

use crate::support::{copy_dir, options, partition_dir, Fixture, TOPIC};

/// A batch of `count` records from producer `pid` at `epoch`, its first
/// record carrying sequence `seq` (-1 for no producer).
fn batch(pid: i64, epoch: i16, seq: i32, count: usize, tag: &str) -> BytesMut {
    let records: Vec<kafka_protocol::records::Record> = (0..count)
        .map(|i| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if pid < 0 {
                i as i32 - 1
            } else {
                seq + i as i32
            },
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn append(p: &Partition, bytes: BytesMut) -> Result<Appended, AppendError> {
    rt().block_on(p.append_batches(bytes))
}

fn at(base: u64, last: u64, duplicate: bool) -> Appended {
    Appended {
        base_offset: Offset(base),
        last_offset: Offset(last),
        duplicate,
    }
}

#[test]
fn a_retried_batch_is_answered_where_it_was_stored_and_gaps_and_stale_epochs_are_refused() {
    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    assert_eq!(append(&p, batch(1, 0, 0, 3, "a")).unwrap(), at(0, 2, false));
    assert_eq!(
        append(&p, batch(1, 0, 0, 3, "a")).unwrap(),
        at(0, 2, true),
        "the same batch again"
    );
    assert_eq!(p.high_watermark(), Offset(3), "stored once");
    assert_eq!(append(&p, batch(1, 0, 3, 2, "b")).unwrap(), at(3, 4, false));
    // Another producer in between changes nothing for the first.
    assert_eq!(
        append(&p, batch(2, 0, 40, 1, "x")).unwrap(),
        at(5, 5, false)
    );
    assert_eq!(append(&p, batch(1, 0, 0, 3, "a")).unwrap(), at(0, 2, true));
    match append(&p, batch(1, 0, 6, 1, "gap")) {
        Err(AppendError::OutOfOrderSequence {
            producer_id: 1,
            expected: 5,
            received: 6,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A new epoch starts at 0, and fences the old one.
    assert!(matches!(
        append(&p, batch(1, 1, 5, 1, "c")),
        Err(AppendError::OutOfOrderSequence { expected: 0, .. })
    ));
    assert_eq!(append(&p, batch(1, 1, 0, 1, "c")).unwrap(), at(6, 6, false));
    let stale = append(&p, batch(1, 0, 5, 1, "old")).unwrap_err();
    assert!(
        matches!(
            stale,
            AppendError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            }
        ),
        "{stale}"
    );
    assert_eq!(stale.kind(), tidings_types::ErrorKind::InvalidProducerEpoch);
    // Batches without a producer id are never checked.
    for _ in 0..2 {
        append(&p, batch(-1, -1, -1, 1, "plain")).unwrap();
    }
    assert_eq!(p.high_watermark(), Offset(9));
    assert_eq!(p.producer_id_max(), Some(2));
}

/// Three producers' batches across several segments; each producer's last
/// batch and its offsets.
fn fill(p: &Partition) -> Vec<(i64, i32, Appended)> {
    let mut last = Vec::new();
    for pid in 10..13 {
        let mut seq = 0;
        let mut appended = None;
        for round in 0..12 {
            let count = 1 + (round + pid as usize) % 3;
            appended = Some((seq, append(p, batch(pid, 0, seq, count, "v")).unwrap()));
            seq += count as i32;
        }
        let (first, a) = appended.unwrap();
        last.push((pid, first, a));
    }
    last
}

fn retry_each(p: &Partition, last: &[(i64, i32, Appended)]) {
    for &(pid, first, a) in last {
        let count = (a.last_offset.0 - a.base_offset.0 + 1) as usize;
        let again = append(p, batch(pid, 0, first, count, "v")).unwrap();
        assert_eq!(
            again,
            Appended {
                duplicate: true,
                ..a
            },
            "producer {pid}'s last batch, sent again"
        );
    }
    let hw = p.high_watermark();
    for &(pid, first, a) in last {
        let count = (a.last_offset.0 - a.base_offset.0 + 1) as i32;
        let next = append(p, batch(pid, 0, first + count, 1, "next")).unwrap();
        assert!(!next.duplicate && next.base_offset >= hw, "{pid}: {next:?}");
    }
}

fn small_segments() -> TopicConfig {
    TopicConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 1024,
        ..TopicConfig::default()
    }
}

fn snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "producers"))
        .collect();
    found.sort();
    found
}

fn open_copy(
    from: &Path,
    clock: &std::sync::Arc<tidings_types::ManualClock>,
) -> (tempfile::TempDir, Log) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(from, copy.path());
    let log = Log::open(copy.path(), options(clock)).unwrap();
    (copy, log)
}

fn partition(log: &Log) -> std::sync::Arc<Partition> {
    log.topic(TOPIC).unwrap().partition(PartitionId(0)).unwrap()
}

#[test]
fn producer_state_survives_a_crash_a_clean_close_and_lost_or_damaged_snapshots() {
    let mut fx = Fixture::new(small_segments());
    let last = fill(&fx.partition());
    let dir = fx.partition_dir();
    assert!(
        crate::support::segment_files(&dir).len() > 2,
        "the batches span segments"
    );
    assert!(
        !snapshots(&dir).is_empty(),
        "a sealed segment leaves a snapshot"
    );
    assert!(snapshots(&dir).len() <= 2, "only the newest two are kept");

    // A crash: the files as they are, the log still open.
    let (_crashed, log) = open_copy(fx.dir.path(), &fx.clock);
    retry_each(&partition(&log), &last);
    log.close().unwrap();

    // A clean close, then every snapshot lost: the log alone rebuilds it.
    fx.close();
    let (_lost, log) = {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(fx.dir.path(), copy.path());
        for s in snapshots(&partition_dir(copy.path())) {
            std::fs::remove_file(s).unwrap();
        }
        let log = Log::open(copy.path(), options(&fx.clock)).unwrap();
        (copy, log)
    };
    retry_each(&partition(&log), &last);
    log.close().unwrap();

    // A damaged snapshot is set aside; the one before it, or the log, serves.
    let newest = snapshots(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    fx.reopen();
    assert!(!newest.exists(), "the damaged snapshot is removed");
    retry_each(&fx.partition(), &last);
}

#[test]
fn a_producer_idle_past_its_expiration_is_forgotten() {
    let mut fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    append(&p, batch(5, 0, 0, 1, "a")).unwrap();
    drop(p);
    fx.clock.advance(Duration::from_secs(25 * 3600));
    fx.reopen();
    // Unknown again: its old batch is taken as new (as Kafka does once
    // producer.id.expiration.ms has passed).
    let again = append(&fx.partition(), batch(5, 0, 0, 1, "a")).unwrap();
    assert_eq!(again, at(1, 1, false));
}
