//! Behaviour a user of the log relies on: offsets, group commit, fsync policies,
//! segment rolls, retention, timestamps and the topic lifecycle.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tidings_log::{FsyncPolicy, Log, LogOptions, TopicConfig, TopicError};
use tidings_types::{Clock, Offset, PartitionId, TimestampMs};

use crate::support::{copy_dir, data_end, options, record, segment_files, Fixture, TOPIC};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn concurrent_appends_get_contiguous_offsets_and_all_land() {
    let fx = Fixture::new(TopicConfig {
        fsync: FsyncPolicy::Always,
        ..TopicConfig::default()
    });
    let p = fx.partition();
    let rt = runtime();
    let mut results = rt.block_on(async {
        let mut tasks = Vec::new();
        for producer in 0..16u64 {
            let p = Arc::clone(&p);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..50u64 {
                    let seed = producer * 1000 + i;
                    let batch = [record(seed, 50, 0), record(seed + 500, 50, 0)];
                    out.push((p.append(&batch).await.unwrap(), seed));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    results.sort_by_key(|(a, _)| a.base_offset);
    for (i, (appended, seed)) in results.iter().enumerate() {
        assert_eq!(appended.base_offset, Offset(i as u64 * 2));
        assert_eq!(appended.last_offset, Offset(i as u64 * 2 + 1));
        let read = p.read_records(appended.base_offset, 1).unwrap();
        assert_eq!(read[0].record, record(*seed, 50, 0));
    }
    assert_eq!(p.high_watermark(), Offset(16 * 50 * 2));
}

#[test]
fn raw_kafka_batches_are_stored_byte_for_byte_with_offsets_assigned() {
    let source = Fixture::new(TopicConfig::default());
    let sp = source.partition();
    sp.append_blocking(&[record(1, 40, 7), record(2, 40, 8), record(3, 40, 9)])
        .unwrap();
    let batch = sp.read(Offset(0), 1 << 20).unwrap().bytes;

    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    p.append_blocking(&[record(9, 5, 0)]).unwrap();
    let rt = runtime();
    let mut two = BytesMut::from(&batch[..]);
    two.extend_from_slice(&batch);
    let appended = rt.block_on(p.append_batches(two)).unwrap();
    assert_eq!(
        (appended.base_offset, appended.last_offset),
        (Offset(1), Offset(6))
    );
    let stored = p.read(Offset(1), 1 << 20).unwrap();
    assert_eq!(stored.bytes.len(), batch.len() * 2);
    // Everything but the base offset is the producer's bytes.
    assert_eq!(stored.bytes[8..batch.len()], batch[8..]);
    let offsets: Vec<u64> = stored
        .records()
        .unwrap()
        .iter()
        .map(|r| r.offset.0)
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_read_inside_a_batch_returns_the_whole_batch_and_respects_the_byte_budget() {
    let fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    for b in 0..10u64 {
        p.append_blocking(
            &(0..5)
                .map(|i| record(b * 5 + i, 100, 0))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let one = p.read(Offset(7), 1).unwrap();
    assert_eq!((one.first_offset, one.next_offset), (Offset(5), Offset(10)));
    let size = |at| p.read(Offset(at), 1).unwrap().bytes.len();
    let three = size(5) + size(10) + size(15);
    let read = p.read(Offset(7), three).unwrap();
    assert_eq!((read.bytes.len(), read.next_offset), (three, Offset(20)));
    let read = p.read(Offset(7), three - 1).unwrap();
    assert_eq!(
        read.next_offset,
        Offset(15),
        "a batch that does not fit the budget waits"
    );
    let records = p.read_records(Offset(7), 1).unwrap();
    assert_eq!(records.first().unwrap().offset, Offset(7));
}

#[test]
fn interval_policy_acknowledges_on_write_and_shows_data_after_the_sync() {
    let fx = Fixture::new(TopicConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(50)),
        ..TopicConfig::default()
    });
    let p = fx.partition();
    let rt = runtime();
    rt.block_on(async {
        let mut watch = p.watch_high_watermark();
        let appended = p.append(&[record(1, 10, 0)]).await.unwrap();
        assert_eq!(appended.base_offset, Offset(0));
        tokio::time::timeout(
            Duration::from_secs(5),
            watch.wait_for(|hwm| *hwm == Offset(1)),
        )
        .await
        .expect("the interval sync publishes the append")
        .unwrap();
    });
    assert_eq!(p.read_records(Offset(0), 100).unwrap().len(), 1);
}

#[test]
fn never_policy_shows_data_right_after_the_write() {
    let fx = Fixture::new(TopicConfig {
        fsync: FsyncPolicy::Never,
        ..TopicConfig::default()
    });
    let p = fx.partition();
    p.append_blocking(&[record(1, 10, 0)]).unwrap();
    assert_eq!(p.high_watermark(), Offset(1));
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let mut fx = Fixture::new(TopicConfig {
        segment_bytes: 4096,
        segment_age: Some(Duration::from_secs(60)),
        ..TopicConfig::default()
    });
    let p = fx.partition();
    for i in 0..20 {
        p.append_blocking(&[record(i, 1000, 0)]).unwrap();
    }
    let by_size = p.segment_count();
    assert!(by_size >= 5, "{by_size} segments for 20 KB at 4 KB each");
    for f in segment_files(&fx.partition_dir()) {
        assert!(std::fs::metadata(&f).unwrap().len() <= 4096 + 1200);
    }
    p.append_blocking(&[record(100, 10, 0)]).unwrap();
    let before = p.segment_count();
    fx.clock.advance(Duration::from_secs(61));
    p.append_blocking(&[record(101, 10, 0)]).unwrap();
    assert_eq!(
        p.segment_count(),
        before + 1,
        "an old segment is sealed on the next append"
    );
    drop(p);
    fx.reopen();
    let p = fx.partition();
    assert_eq!(p.segment_count(), before + 1);
    assert_eq!(p.high_watermark(), Offset(22));
}

/// The writer allocates the active segment ahead of its data, so a synced append
/// does not change the file's size. Sealing and closing cut each file back to its
/// data, and a crash image holding the allocated space reopens with every record.
#[test]
fn the_active_segment_is_allocated_ahead_and_cut_back_to_its_data() {
    let mut fx = Fixture::new(TopicConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 64 * 1024,
        ..TopicConfig::default()
    });
    let p = fx.partition();
    for i in 0..10 {
        p.append_blocking(&[record(i, 100, 0)]).unwrap();
    }
    let dir = fx.partition_dir();
    let active = segment_files(&dir).pop().unwrap();
    let data = data_end(&active);
    assert!(data > 1_000, "ten records of 100 bytes are in the file");
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        64 * 1024,
        "allocated ahead up to the segment size"
    );
    let image = tempfile::tempdir().unwrap();
    copy_dir(fx.dir.path(), image.path());

    for i in 10..1_000 {
        p.append_blocking(&[record(i, 100, 0)]).unwrap();
    }
    let files = segment_files(&dir);
    assert!(files.len() > 2, "{} segments", files.len());
    for sealed in &files[..files.len() - 1] {
        let len = std::fs::metadata(sealed).unwrap().len();
        assert_eq!(
            len,
            data_end(sealed),
            "{} ends at its data",
            sealed.display()
        );
    }
    drop(p);
    fx.close();
    let active = segment_files(&dir).pop().unwrap();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), data_end(&active));

    let log = Log::open(image.path(), options(&fx.clock)).unwrap();
    let p = log.topic(TOPIC).unwrap().partition(PartitionId(0)).unwrap();
    assert_eq!(
        p.high_watermark(),
        Offset(10),
        "every synced record survives"
    );
    let read = p.read_records(Offset(0), 1 << 20).unwrap();
    assert_eq!(read.len(), 10);
    for (i, r) in read.iter().enumerate() {
        assert_eq!(r.record, record(i as u64, 100, 0));
    }
    let copied = segment_files(&crate::support::partition_dir(image.path()))
        .pop()
        .unwrap();
    assert_eq!(
        std::fs::metadata(&copied).unwrap().len(),
        data,
        "recovery cut the allocated space"
    );
    let appended = p.append_blocking(&[record(10, 100, 0)]).unwrap();
    assert_eq!(appended.base_offset, Offset(10));
    drop(p);
    log.close().unwrap();
}

#[test]
fn retention_by_bytes_keeps_at_least_the_limit_and_never_touches_the_active_segment() {
    let fx = Fixture::new(TopicConfig {
        segment_bytes: 4096,
        retention_bytes: Some(10_000),
        retention_age: None,
        ..TopicConfig::default()
    });
    let p = fx.partition();
    for i in 0..40 {
        p.append_blocking(&[record(i, 1000, 0)]).unwrap();
    }
    let rt = runtime();
    let outcome = rt.block_on(p.enforce_retention()).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(p.size_bytes() >= 10_000);
    assert!(
        p.size_bytes() < 10_000 + 4096 + 1200,
        "{} bytes kept",
        p.size_bytes()
    );
    assert_eq!(p.log_start_offset(), outcome.log_start);
    let first = p.read_records(outcome.log_start, 1).unwrap();
    assert_eq!(first[0].record, record(outcome.log_start.0, 1000, 0));
    assert_eq!(segment_files(&fx.partition_dir()).len(), p.segment_count());
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_too_old() {
    let mut fx = Fixture::new(TopicConfig {
        segment_bytes: 4096,
        retention_age: Some(Duration::from_secs(3600)),
        ..TopicConfig::default()
    });
    let p = fx.partition();
    let t0 = fx.clock.now().0;
    for i in 0..10 {
        p.append_blocking(&[record(i, 1000, t0)]).unwrap();
    }
    let old_segments = p.segment_count() - 1;
    fx.clock.advance(Duration::from_secs(1800));
    let t1 = fx.clock.now().0;
    for i in 10..20 {
        p.append_blocking(&[record(i, 1000, t1)]).unwrap();
    }
    let rt = runtime();
    assert_eq!(
        rt.block_on(p.enforce_retention()).unwrap().segments_deleted,
        0
    );
    fx.clock.advance(Duration::from_secs(1801));
    let outcome = rt.block_on(p.enforce_retention()).unwrap();
    assert!(outcome.segments_deleted >= old_segments - 1, "{outcome:?}");
    let kept = p.read_records(p.log_start_offset(), 1).unwrap();
    assert!(kept[0].offset.0 <= 10, "segments holding new records stay");
    drop(p);
    fx.reopen();
    assert_eq!(fx.partition().log_start_offset(), outcome.log_start);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let fx = Fixture::new(TopicConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        ..TopicConfig::default()
    });
    let p = fx.partition();
    for i in 0..100i64 {
        p.append_blocking(&[record(i as u64, 50, i * 10)]).unwrap();
    }
    assert_eq!(
        p.offset_for_timestamp(TimestampMs(0)).unwrap(),
        Some(Offset(0))
    );
    assert_eq!(
        p.offset_for_timestamp(TimestampMs(455)).unwrap(),
        Some(Offset(46))
    );
    assert_eq!(
        p.offset_for_timestamp(TimestampMs(990)).unwrap(),
        Some(Offset(99))
    );
    assert_eq!(p.offset_for_timestamp(TimestampMs(991)).unwrap(), None);
}

#[test]
fn topics_survive_reopen_and_deletion_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let config = TopicConfig {
            partitions: 3,
            fsync: FsyncPolicy::Never,
            ..TopicConfig::default()
        };
        let topic = log.create_topic("orders", config).unwrap();
        for id in 0..3 {
            topic
                .partition(PartitionId(id))
                .unwrap()
                .append_blocking(&[record(id.into(), 10, 0)])
                .unwrap();
        }
        log.create_topic("gone", TopicConfig::default()).unwrap();
        log.delete_topic("gone").unwrap();
        assert!(matches!(
            log.delete_topic("gone"),
            Err(TopicError::NotFound(_))
        ));
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let names: Vec<String> = log.topics().iter().map(|t| t.name().to_string()).collect();
    assert_eq!(names, ["orders"]);
    let topic = log.topic("orders").unwrap();
    assert_eq!(topic.config().fsync, FsyncPolicy::Never);
    for id in 0..3 {
        let p = topic.partition(PartitionId(id)).unwrap();
        assert_eq!(
            p.read_records(Offset(0), 100).unwrap()[0].record,
            record(id.into(), 10, 0)
        );
    }
    assert!(!dir.path().join("topics").join("gone").exists());
    let _ = TOPIC;
}

#[test]
fn appends_after_close_are_refused() {
    let mut fx = Fixture::new(TopicConfig::default());
    let p = fx.partition();
    fx.close();
    assert!(matches!(
        p.append_blocking(&[record(1, 1, 0)]),
        Err(tidings_log::AppendError::Closed { .. })
    ));
}

/// Fails every `fdatasync` once `fail` is set.
#[derive(Debug, Default)]
struct FailingSync {
    fail: std::sync::atomic::AtomicBool,
}

impl tidings_log::FileSync for FailingSync {
    fn sync_data(&self, file: &dyn tidings_log::StorageFile) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }
}

#[test]
fn an_fsync_failure_stops_the_partition_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(FailingSync::default());
    let options = LogOptions {
        file_sync: sync.clone(),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    let topic = log
        .create_topic(
            "t",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .unwrap();
    let (p0, p1) = (
        topic.partition(PartitionId(0)).unwrap(),
        topic.partition(PartitionId(1)).unwrap(),
    );
    p0.append_blocking(&[record(1, 10, 0)]).unwrap();

    sync.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = p0.append_blocking(&[record(2, 10, 0)]).unwrap_err();
    assert!(
        matches!(&err, tidings_log::AppendError::Failed { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("injected fdatasync failure"),
        "{err}"
    );
    assert_eq!(
        p0.high_watermark(),
        Offset(1),
        "the unsynced append is not visible"
    );

    // The sync is not retried: appends stay refused even once syncing would work.
    sync.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        p0.append_blocking(&[record(3, 10, 0)]),
        Err(tidings_log::AppendError::Failed { .. })
    ));
    assert_eq!(
        p0.read_records(Offset(0), 100).unwrap().len(),
        1,
        "durable data stays readable"
    );
    // Other partitions are unaffected.
    p1.append_blocking(&[record(4, 10, 0)]).unwrap();

    drop((p0, p1, topic));
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let p0 = log.topic("t").unwrap().partition(PartitionId(0)).unwrap();
    let next = p0.append_blocking(&[record(5, 10, 0)]).unwrap();
    assert!(
        next.base_offset >= Offset(1),
        "recovery keeps every acknowledged record"
    );
    assert_eq!(
        p0.read_records(Offset(0), 100).unwrap()[0].record,
        record(1, 10, 0)
    );
}

#[test]
fn interval_policy_publishes_while_appends_keep_coming() {
    let fx = Fixture::new(TopicConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
        ..TopicConfig::default()
    });
    let p = fx.partition();
    let rt = runtime();
    rt.block_on(async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut producers = Vec::new();
        for i in 0..16 {
            let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
            producers.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    p.append(&[record(i, 10, 0)]).await.unwrap();
                }
            }));
        }
        // While producers keep the queue busy, the high-watermark must still move.
        let mut watch = p.watch_high_watermark();
        tokio::time::timeout(
            Duration::from_secs(10),
            watch.wait_for(|hwm| hwm.0 >= 1_000),
        )
        .await
        .expect("interval syncs are not starved by a busy queue")
        .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in producers {
            t.await.unwrap();
        }
    });
}

/// Counts syncs, and holds each one until the gate is open.
#[derive(Debug, Default)]
struct GatedSync {
    syncs: std::sync::atomic::AtomicUsize,
    gate: std::sync::Mutex<()>,
}

impl tidings_log::FileSync for GatedSync {
    fn sync_data(&self, file: &dyn tidings_log::StorageFile) -> std::io::Result<()> {
        let _open = self.gate.lock().unwrap();
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        file.sync_data()
    }
}

fn gated_log(sync: &Arc<GatedSync>) -> (tempfile::TempDir, Log, Arc<tidings_log::Partition>) {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        file_sync: sync.clone(),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    let p = log
        .create_topic("t", TopicConfig::default())
        .unwrap()
        .partition(PartitionId(0))
        .unwrap();
    (dir, log, p)
}

#[test]
fn readers_see_nothing_that_is_written_but_not_yet_synced() {
    let sync = Arc::new(GatedSync::default());
    let (dir, _log, p) = gated_log(&sync);
    let segment = dir.path().join("topics/t/0/00000000000000000000.log");
    let gate = sync.gate.lock().unwrap();
    let writer = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.append_blocking(&[record(1, 100, 0)]).unwrap())
    };
    // Wait until the batch is in the file; its sync is held at the gate.
    while std::fs::metadata(&segment).unwrap().len() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.high_watermark(), Offset(0));
    assert!(p.read(Offset(0), 1 << 20).unwrap().is_empty());
    assert_eq!(p.offset_for_timestamp(TimestampMs(0)).unwrap(), None);
    drop(gate);
    assert_eq!(writer.join().unwrap().base_offset, Offset(0));
    assert_eq!(p.high_watermark(), Offset(1));
    assert_eq!(p.read_records(Offset(0), 1 << 20).unwrap().len(), 1);
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let sync = Arc::new(GatedSync::default());
    let (_dir, _log, p) = gated_log(&sync);
    let appends = 16 * 20;
    // Hold the first sync so that every producer's next append queues behind it.
    let gate = sync.gate.lock().unwrap();
    let producers: Vec<_> = (0..16u64)
        .map(|i| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for j in 0..20 {
                    p.append_blocking(&[record(i * 100 + j, 10, 0)]).unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    drop(gate);
    for t in producers {
        t.join().unwrap();
    }
    let syncs = sync.syncs.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(p.high_watermark(), Offset(appends));
    assert!(
        syncs < appends as usize / 2,
        "{syncs} fsyncs for {appends} appends"
    );
}

/// Counts the syncs the log asks for.
#[derive(Debug, Default)]
struct CountingSync(std::sync::atomic::AtomicU64);

impl tidings_log::FileSync for CountingSync {
    fn sync_data(&self, file: &dyn tidings_log::StorageFile) -> std::io::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        file.sync_data()
    }
}

#[test]
fn altering_a_topic_changes_its_policy_in_place_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let syncs = Arc::new(CountingSync::default());
    let options = LogOptions {
        file_sync: Arc::clone(&syncs) as Arc<dyn tidings_log::FileSync>,
        ..LogOptions::default()
    };
    let never = TopicConfig {
        fsync: FsyncPolicy::Never,
        ..TopicConfig::default()
    };
    {
        let log = Log::open(dir.path(), options.clone()).unwrap();
        let topic = log.create_topic("orders", never.clone()).unwrap();
        let p = topic.partition(PartitionId(0)).unwrap();
        p.append_blocking(&[record(1, 10, 0)]).unwrap();
        let count = |s: &CountingSync| s.0.load(std::sync::atomic::Ordering::SeqCst);
        let before = count(&syncs);

        let always = TopicConfig {
            fsync: FsyncPolicy::Always,
            retention_age: Some(Duration::from_secs(3600)),
            retention_bytes: Some(1 << 30),
            ..never.clone()
        };
        let altered = log.alter_topic("orders", always.clone()).unwrap();
        assert_eq!(altered.config(), always);
        // The partition handle taken before the change follows it.
        assert_eq!(p.config(), always);
        p.append_blocking(&[record(2, 10, 0)]).unwrap();
        assert!(
            count(&syncs) > before,
            "an append after switching to `always` is synced"
        );
    }
    let log = Log::open(dir.path(), options).unwrap();
    let topic = log.topic("orders").unwrap();
    assert_eq!(topic.config().fsync, FsyncPolicy::Always);
    assert_eq!(topic.config().retention_bytes, Some(1 << 30));
    let records = topic
        .partition(PartitionId(0))
        .unwrap()
        .read_records(Offset(0), 1 << 20)
        .unwrap();
    assert_eq!(records.len(), 2);
}

#[test]
fn partitions_can_be_added_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let two = TopicConfig {
        partitions: 2,
        ..TopicConfig::default()
    };
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let topic = log.create_topic("orders", two.clone()).unwrap();
        topic
            .partition(PartitionId(1))
            .unwrap()
            .append_blocking(&[record(1, 10, 0)])
            .unwrap();
        // A directory left by an alteration that crashed before writing the
        // metadata: it was never served, so it is replaced.
        let stray = dir.path().join("topics/orders/3");
        std::fs::create_dir(&stray).unwrap();
        std::fs::write(stray.join("00000000000000000000.log"), b"junk").unwrap();

        let four = TopicConfig {
            partitions: 4,
            ..two.clone()
        };
        let topic = log.alter_topic("orders", four).unwrap();
        assert_eq!(topic.partition_count(), 4);
        for id in 2..4 {
            let p = topic.partition(PartitionId(id)).unwrap();
            assert_eq!(p.high_watermark(), Offset(0));
            p.append_blocking(&[record(id.into(), 10, 0)]).unwrap();
        }

        let err = log.alter_topic("orders", two.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                TopicError::InvalidConfig(tidings_log::ConfigError::PartitionsDecrease {
                    from: 4,
                    to: 2
                })
            ),
            "{err}"
        );
        assert!(matches!(
            log.alter_topic("nope", two.clone()),
            Err(TopicError::NotFound(_))
        ));
        let zero = TopicConfig {
            partitions: 0,
            ..two.clone()
        };
        assert!(matches!(
            log.alter_topic("orders", zero),
            Err(TopicError::InvalidConfig(_))
        ));
        assert_eq!(log.topic("orders").unwrap().partition_count(), 4);
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let topic = log.topic("orders").unwrap();
    assert_eq!(topic.partition_count(), 4);
    for id in 1..4 {
        let records = topic
            .partition(PartitionId(id))
            .unwrap()
            .read_records(Offset(0), 1 << 20)
            .unwrap();
        assert_eq!(records.len(), 1, "partition {id}");
        assert_eq!(records[0].record, record(id.into(), 10, 0));
    }
}
