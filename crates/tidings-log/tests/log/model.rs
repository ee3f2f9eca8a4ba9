//! The reference-model test: random sequences of appends, reads, timestamp lookups,
//! rolls, retention, clock moves and reopens (clean and after a crash, with and
//! without index files) must agree with a plain in-memory `Vec` of records.

use std::time::Duration;

use proptest::prelude::*;
use tidings_log::{FsyncPolicy, ReadError, Record, TopicConfig};
use tidings_types::{Clock, Offset, TimestampMs};

use crate::support::{record, segment_files, Fixture};

const RETENTION_BYTES: u64 = 6_000;
const RETENTION_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Op {
    Append {
        sizes: Vec<usize>,
        jitter_ms: Vec<i64>,
    },
    Read {
        pick: u64,
        max_bytes: usize,
    },
    TimeLookup {
        delta_ms: i64,
    },
    Roll,
    Advance {
        secs: u64,
    },
    Retention,
    Reopen {
        clean: bool,
        drop_indexes: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(0usize..300, 1..12), prop::collection::vec(-5_000i64..5_000, 12))
            .prop_map(|(sizes, jitter_ms)| Op::Append { sizes, jitter_ms }),
        4 => (any::<u64>(), 1usize..3_000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        2 => (-8_000i64..8_000).prop_map(|delta_ms| Op::TimeLookup { delta_ms }),
        1 => Just(Op::Roll),
        1 => (1u64..50).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Retention),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(clean, drop_indexes)| Op::Reopen { clean, drop_indexes }),
    ]
}

/// The reference: every record still retained, by offset.
struct Model {
    records: Vec<(Offset, Record)>,
    log_start: Offset,
    next: Offset,
    /// The last offset of every batch appended, in order (retention
    /// deletes whole batches, so those left are still right).
    batch_lasts: Vec<Offset>,
}

impl Model {
    fn get(&self, offset: Offset) -> &Record {
        let i = usize::try_from(offset.0 - self.log_start.0).unwrap();
        &self.records[i].1
    }

    /// The last offset of the batch that holds `offset`.
    fn batch_last(&self, offset: Offset) -> Offset {
        self.batch_lasts[self.batch_lasts.partition_point(|&l| l < offset)]
    }
}

fn run(ops: Vec<Op>, fsync: FsyncPolicy) {
    let config = TopicConfig {
        partitions: 1,
        fsync,
        segment_bytes: 2_048,
        segment_age: Some(Duration::from_secs(30)),
        retention_age: Some(RETENTION_AGE),
        retention_bytes: Some(RETENTION_BYTES),
        index_interval_bytes: 128,
    };
    let mut fx = Fixture::new(config);
    let mut model = Model {
        records: Vec::new(),
        log_start: Offset(0),
        next: Offset(0),
        batch_lasts: Vec::new(),
    };
    let mut seed = 0u64;
    for op in ops {
        let p = fx.partition();
        let now = fx.clock.now().0;
        match op {
            Op::Append { sizes, jitter_ms } => {
                let records: Vec<Record> = sizes
                    .iter()
                    .zip(&jitter_ms)
                    .map(|(&size, &jitter)| {
                        seed += 1;
                        record(seed, size, now + jitter)
                    })
                    .collect();
                let appended = p.append_blocking(&records).unwrap();
                assert_eq!(appended.base_offset, model.next);
                for r in records {
                    model.records.push((model.next, r));
                    model.next = model.next.next();
                }
                assert_eq!(appended.last_offset.next(), model.next);
                model.batch_lasts.push(appended.last_offset);
                assert_eq!(p.high_watermark(), model.next);
            }
            Op::Read { pick, max_bytes } => check_read(&p, &model, pick, max_bytes),
            Op::TimeLookup { delta_ms } => {
                let target = TimestampMs(now + delta_ms);
                let expected = model
                    .records
                    .iter()
                    .find(|(_, r)| r.timestamp >= target)
                    .map(|(o, _)| *o);
                assert_eq!(
                    p.offset_for_timestamp(target).unwrap(),
                    expected,
                    "target {target}"
                );
            }
            Op::Roll => block_on(p.roll()).unwrap(),
            Op::Advance { secs } => fx.clock.advance(Duration::from_secs(secs)),
            Op::Retention => {
                let before = p.log_start_offset();
                block_on(p.enforce_retention()).unwrap();
                let after = p.log_start_offset();
                assert!(after >= before && after <= model.next);
                let cutoff = now - i64::try_from(RETENTION_AGE.as_millis()).unwrap();
                let deleted = usize::try_from(after.0 - model.log_start.0).unwrap();
                let all_expired = model.records[..deleted]
                    .iter()
                    .all(|(_, r)| r.timestamp.0 < cutoff);
                assert!(
                    deleted == 0 || all_expired || p.size_bytes() >= RETENTION_BYTES,
                    "retention deleted {deleted} records that neither rule allows"
                );
                model.records.drain(..deleted);
                model.log_start = after;
            }
            Op::Reopen {
                clean,
                drop_indexes,
            } => {
                drop(p);
                fx.close();
                let dir = fx.partition_dir();
                if !clean {
                    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
                }
                if drop_indexes {
                    // Sealed indexes dropped earlier are only rebuilt when first used.
                    for seg in segment_files(&dir) {
                        let _ = std::fs::remove_file(seg.with_extension("index"));
                        let _ = std::fs::remove_file(seg.with_extension("timeindex"));
                    }
                }
                fx.reopen();
                let p = fx.partition();
                assert_eq!(p.high_watermark(), model.next);
                assert_eq!(p.log_start_offset(), model.log_start);
            }
        }
    }
    // Finally, everything retained reads back in order.
    let p = fx.partition();
    let mut at = model.log_start;
    while at < model.next {
        let records = p.read_records(at, 1_000).unwrap();
        assert!(!records.is_empty());
        for r in records {
            assert_eq!(r.offset, at);
            assert_eq!(&r.record, model.get(at));
            at = at.next();
        }
    }
}

fn check_read(p: &tidings_log::Partition, model: &Model, pick: u64, max_bytes: usize) {
    let span = model.next.0 - model.log_start.0;
    let from = Offset(model.log_start.0 + pick % (span + 1));
    let batches = p.read(from, max_bytes).unwrap();
    if from == model.next {
        assert!(batches.is_empty());
    } else {
        assert!(batches.first_offset <= from);
        let records: Vec<_> = batches.records().unwrap();
        let wanted: Vec<_> = records.iter().filter(|r| r.offset >= from).collect();
        assert!(
            !wanted.is_empty(),
            "a read below the high-watermark returns the batch holding it"
        );
        for (i, r) in wanted.iter().enumerate() {
            assert_eq!(r.offset, from.plus(i as u64));
            assert_eq!(&r.record, model.get(r.offset));
        }
        assert_eq!(batches.next_offset, wanted.last().unwrap().offset.next());
        // Reading through `last` gives what the read gives up to the end of
        // the batch that holds `last`, and nothing after it.
        let last = Offset(from.0 + pick.rotate_left(32) % (model.next.0 - from.0));
        let through = p.read_records_through(from, last, max_bytes).unwrap();
        let last_batch_end = model.batch_last(last);
        let expected: Vec<_> = wanted
            .into_iter()
            .filter(|r| r.offset <= last_batch_end)
            .cloned()
            .collect();
        assert_eq!(through, expected, "from {from} through {last}");
    }
    let past = model.next.next();
    assert!(matches!(
        p.read(past, max_bytes),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    if model.log_start.0 > 0 {
        let before = Offset(model.log_start.0 - 1);
        assert!(matches!(
            p.read(before, max_bytes),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_a_vec_of_records(
        ops in prop::collection::vec(op(), 1..60),
        always in any::<bool>(),
    ) {
        run(ops, if always { FsyncPolicy::Always } else { FsyncPolicy::Never });
    }
}
