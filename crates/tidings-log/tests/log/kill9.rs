//! Kill -9: a child process appends under `fsync = always` from several tasks and
//! prints every acknowledged append; the parent kills it at random moments, reopens
//! the log, and checks that every acknowledged record is there, intact, with
//! contiguous offsets. The child is this same test binary, started with an
//! environment variable that makes the test act as the child.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tidings_log::{FsyncPolicy, Log, LogOptions, Record, TopicConfig};
use tidings_types::{Offset, PartitionId, TimestampMs};

const CHILD_DIR_ENV: &str = "TIDINGS_KILL9_CHILD_DIR";
const ROUNDS: u64 = 16;
const PRODUCERS: u64 = 4;

fn value(producer: u64, seq: u64, i: u64) -> Bytes {
    let len = ((producer * 131 + seq * 17 + i * 7) % 400) as usize;
    let mut v = format!("{producer}:{seq}:{i}:").into_bytes();
    v.extend((0..len).map(|j| (j as u64 + seq) as u8));
    Bytes::from(v)
}

fn config() -> TopicConfig {
    TopicConfig {
        fsync: FsyncPolicy::Always,
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

/// Appends until killed, printing `ACK producer seq base count` after each ack.
fn child(dir: &Path) -> ! {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    let topic = log
        .topic("kill9")
        .or_else(|_| log.create_topic("kill9", config()))
        .unwrap();
    let p = topic.partition(PartitionId(0)).unwrap();
    let start_seq: u64 = std::env::var("TIDINGS_KILL9_SEQ").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for producer in 0..PRODUCERS {
            let p = p.clone();
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
                    writeln!(out, "ACK {producer} {seq} {} {count}", appended.base_offset).unwrap();
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
    // offset -> (producer, seq, index in batch)
    let mut acked: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
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
            let (producer, seq, base, count) = (f[0], f[1], f[2], f[3]);
            for i in 0..count {
                let previous = acked.insert(base + i, (producer, seq, i));
                assert!(previous.is_none(), "offset {} acknowledged twice", base + i);
            }
        }
        verify(dir.path(), &acked, round);
    }
    assert!(
        acked.len() > 200,
        "only {} records were acknowledged over {ROUNDS} rounds",
        acked.len()
    );
}

fn verify(dir: &Path, acked: &BTreeMap<u64, (u64, u64, u64)>, round: u64) {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    let Ok(topic) = log.topic("kill9") else {
        assert!(acked.is_empty(), "round {round}: the topic vanished");
        return;
    };
    let p = topic.partition(PartitionId(0)).unwrap();
    let hwm = p.high_watermark();
    if let Some((&last, _)) = acked.last_key_value() {
        assert!(
            hwm.0 > last,
            "round {round}: acknowledged offset {last} is above the high-watermark {hwm}"
        );
    }
    let mut at = Offset(0);
    while at < hwm {
        let records = p.read_records(at, 256 * 1024).unwrap();
        for r in records {
            assert_eq!(r.offset, at, "round {round}: offsets are contiguous");
            if let Some(&(producer, seq, i)) = acked.get(&r.offset.0) {
                assert_eq!(
                    r.record.value,
                    Some(value(producer, seq, i)),
                    "round {round}: offset {}",
                    r.offset
                );
            }
            at = at.next();
        }
    }
    drop(p);
    log.close().unwrap();
}
