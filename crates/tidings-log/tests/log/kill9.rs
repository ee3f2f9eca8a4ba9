//! Kill -9: a child process appends from several tasks to three topics, one per
//! fsync policy, and prints every acknowledged append; the parent kills it at random
//! moments, reopens the log, and checks that every acknowledged record is there,
//! intact, with contiguous offsets. (A killed process keeps its page cache, so even
//! `never` must lose nothing acknowledged here; power loss is another matter.) The
//! child is this same test binary, started with an environment variable that makes
//! the test act as the child.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tidings_log::{Log, LogOptions, Partition, Record, TopicConfig};
use tidings_types::{Offset, PartitionId, TimestampMs};

const CHILD_DIR_ENV: &str = "TIDINGS_KILL9_CHILD_DIR";
const ROUNDS: u64 = 16;
const PRODUCERS: u64 = 6;
const TOPICS: [(&str, &str); 3] = [
    ("kill9-always", "always"),
    ("kill9-interval", "interval:5"),
    ("kill9-never", "never"),
];

fn value(producer: u64, seq: u64, i: u64) -> Bytes {
    let len = ((producer * 131 + seq * 17 + i * 7) % 400) as usize;
    let mut v = format!("{producer}:{seq}:{i}:").into_bytes();
    v.extend((0..len).map(|j| (j as u64 + seq) as u8));
    Bytes::from(v)
}

fn config(fsync: &str) -> TopicConfig {
    TopicConfig {
        fsync: fsync.parse().unwrap(),
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..TopicConfig::default()
    }
}

#[test]
fn kill9_never_loses_an_acknowledged_append() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        child(Path::new(&dir));
    }
    parent();
}

/// Appends until killed, printing `ACK topic producer seq base count` after each ack.
fn child(dir: &Path) -> ! {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    let partitions: Vec<_> = TOPICS
        .iter()
        .map(|(name, fsync)| {
            let topic = log
                .topic(name)
                .or_else(|_| log.create_topic(name, config(fsync)))
                .unwrap();
            topic.partition(PartitionId(0)).unwrap()
        })
        .collect();
    let start_seq: u64 = std::env::var("TIDINGS_KILL9_SEQ").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for producer in 0..PRODUCERS {
            let p = partitions[(producer % 3) as usize].clone();
            tasks.push(tokio::spawn(async move {
                for seq in start_seq.. {
                    let count = 1 + (seq + producer) % 4;
                    let records: Vec<Record> = (0..count)
                        .map(|i| Record {
                            key: None,
                            value: Some(value(producer, seq, i)),
                            headers: Vec::new(),
                            timestamp: TimestampMs(seq as i64),
                        })
                        .collect();
                    let appended = p.append(&records).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    let topic = producer % 3;
                    writeln!(
                        out,
                        "ACK {topic} {producer} {seq} {} {count}",
                        appended.base_offset
                    )
                    .unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    unreachable!("the child appends until it is killed")
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Per topic: offset -> (producer, seq, index in batch).
    let mut acked: [BTreeMap<u64, (u64, u64, u64)>; 3] = Default::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_ms = 30 + rng % 250;
        let mut child = Command::new(&exe)
            .args([
                "kill9::kill9_never_loses_an_acknowledged_append",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env("TIDINGS_KILL9_SEQ", (round * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ACK ").map(str::to_owned))
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let f: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let (topic, producer, seq, base, count) = (f[0] as usize, f[1], f[2], f[3], f[4]);
            for i in 0..count {
                let previous = acked[topic].insert(base + i, (producer, seq, i));
                assert!(previous.is_none(), "offset {} acknowledged twice", base + i);
            }
        }
        verify(dir.path(), &acked, round);
    }
    for (acked, (name, _)) in acked.iter().zip(TOPICS) {
        assert!(
            acked.len() > 100,
            "{name}: only {} records acknowledged in {ROUNDS} rounds",
            acked.len()
        );
        println!(
            "{name}: {} acknowledged records verified after {ROUNDS} kills",
            acked.len()
        );
    }
}

fn verify(dir: &Path, acked: &[BTreeMap<u64, (u64, u64, u64)>; 3], round: u64) {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    for (acked, (name, _)) in acked.iter().zip(TOPICS) {
        let Ok(topic) = log.topic(name) else {
            assert!(acked.is_empty(), "round {round}: topic {name} vanished");
            continue;
        };
        verify_partition(&topic.partition(PartitionId(0)).unwrap(), acked, round);
    }
    log.close().unwrap();
}

fn verify_partition(p: &Partition, acked: &BTreeMap<u64, (u64, u64, u64)>, round: u64) {
    let name = p.topic();
    let hwm = p.high_watermark();
    if let Some((&last, _)) = acked.last_key_value() {
        assert!(
            hwm.0 > last,
            "{name} round {round}: acknowledged offset {last} is above the high-watermark {hwm}"
        );
    }
    let mut at = Offset(0);
    while at < hwm {
        let records = p.read_records(at, 256 * 1024).unwrap();
        for r in records {
            assert_eq!(r.offset, at, "{name} round {round}: offsets are contiguous");
            if let Some(&(producer, seq, i)) = acked.get(&r.offset.0) {
                assert_eq!(
                    r.record.value,
                    Some(value(producer, seq, i)),
                    "{name} round {round}: offset {}",
                    r.offset
                );
            }
            at = at.next();
        }
    }
}
