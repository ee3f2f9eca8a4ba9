//! A full disk for real: the data directory on a size-capped tmpfs, HTTP
//! producers and a Kafka client writing until it fills. Each gets a clear
//! error, nothing acknowledged is lost or damaged, and once space is freed
//! the same server takes writes again, without a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::{call, create_topic, get, kcat, third_party, Server};

/// A tmpfs of `size_mib` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u32) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("disk");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {size_mib} MiB tmpfs needs root (the test command runs as root here): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir,
            _parent: parent,
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

const EVENTS_PER_REQUEST: usize = 50;
const DATA_BYTES: usize = 2_000;

/// Publishes one batch of `EVENTS_PER_REQUEST` events named `<prefix>-<i>`,
/// all to one partition (a batch across partitions can be stored in part
/// when one partition's disk is full: the retry's event ids make it whole);
/// the answer's status and error code.
fn publish(server: &Server, prefix: &str) -> (u16, String, String) {
    let data = "x".repeat(DATA_BYTES);
    let events: Vec<_> = (0..EVENTS_PER_REQUEST)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("{prefix}-{i}"), "source": "/disk",
                   "type": "filler", "partitionkey": prefix, "data": data})
        })
        .collect();
    let answer = call(
        "POST",
        &server.url("/v1/topics/fill/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        json!(events).to_string().as_bytes(),
    );
    let message = answer.json["message"].as_str().unwrap_or("").to_owned();
    (answer.status, answer.code().to_owned(), message)
}

fn ids(prefix: &str) -> impl Iterator<Item = String> + '_ {
    (0..EVENTS_PER_REQUEST).map(move |i| format!("{prefix}-{i}"))
}

/// Every event id stored in the topic, reading each partition to its end.
fn stored(server: &Server, partitions: u32) -> BTreeSet<String> {
    let mut stored = BTreeSet::new();
    for partition in 0..partitions {
        let mut from = 0;
        loop {
            let read = get(&server.url(&format!(
                "/v1/topics/fill/events?partition={partition}&from={from}&limit=1000"
            )));
            assert_eq!(read.status, 200, "{}", read.text);
            let events = read.json["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            // Kafka clients' records carry no event id; the kcat checks
            // read them with kcat.
            for id in events.iter().filter_map(|e| e["event"]["id"].as_str()) {
                assert!(stored.insert(id.to_owned()), "an event stored twice");
            }
            from = read.json["next"][partition.to_string()].as_u64().unwrap();
        }
    }
    stored
}

#[test]
fn a_full_disk_refuses_writes_clearly_loses_nothing_and_recovers_when_space_returns() {
    let disk = Tmpfs::mount(24);
    // Space the test frees later, as an operator would.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![7u8; 6 << 20]).unwrap();
    let data_dir = disk.path().join("data");
    let server = Server::start(&data_dir, &[]);
    // Small segments, so rolls meet the full disk too.
    create_topic(
        &server,
        json!({"name": "fill", "partitions": 2, "segment_bytes": 262_144}),
    );

    let mut acknowledged = BTreeSet::new();
    let mut full = Vec::new();
    for round in 0..2_000 {
        let prefix = format!("r{round}");
        let (status, code, message) = publish(&server, &prefix);
        match status {
            200 => acknowledged.extend(ids(&prefix)),
            507 => {
                assert_eq!(code, "storage_full", "{message}");
                assert!(
                    message.contains("disk is full") && message.contains("fill/"),
                    "the message names the partition and the cause: {message}"
                );
                full.push(prefix);
                if full.len() == 20 {
                    break;
                }
            }
            other => panic!(
                "publish answered {other} {code}: {message}\n{}",
                server.logs()
            ),
        }
    }
    assert_eq!(full.len(), 20, "the disk never filled");
    assert!(acknowledged.len() > 1_000, "{}", acknowledged.len());

    // A Kafka producer meets it too: KAFKA_STORAGE_ERROR, which a producer at
    // its defaults retries until its delivery timeout; this one reports the
    // first answer instead of retrying for minutes.
    let out = third_party("kcat")
        .args(["-b", &server.kafka_addr.to_string(), "-P", "-t", "fill"])
        .args(["-X", "message.send.max.retries=0"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                // 6 MB in 60 KB messages: more than the disk has left.
                .write_all(format!("{}\n", "k".repeat(60_000)).repeat(100).as_bytes())?;
            child.wait_with_output()
        })
        .expect("run kcat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Disk error") || stderr.contains("KAFKA_STORAGE_ERROR"),
        "kcat reports the storage error: {stderr}"
    );

    // The server is still serving: reads, health, and what it acknowledged.
    assert_eq!(get(&server.url("/healthz")).status, 200);
    let before = stored(&server, 2);
    let missing: Vec<_> = acknowledged.difference(&before).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing",
        missing.len()
    );
    for prefix in &full {
        assert!(
            ids(prefix).all(|id| !before.contains(&id)),
            "a refused batch ({prefix}) was stored"
        );
    }

    // Space returns: the same server takes writes again, the refused
    // batches sent again among them.
    std::fs::remove_file(&ballast).unwrap();
    for prefix in &full {
        let (status, code, message) = publish(&server, prefix);
        assert_eq!(status, 200, "after freeing space: {code} {message}");
        acknowledged.extend(ids(prefix));
    }
    for round in 0..20 {
        let prefix = format!("after{round}");
        let (status, code, message) = publish(&server, &prefix);
        assert_eq!(status, 200, "after freeing space: {code} {message}");
        acknowledged.extend(ids(&prefix));
    }
    kcat(&server, &["-P", "-t", "fill"], &"k-after\n".repeat(100));

    // Nothing damaged: a restart recovers every partition and every
    // acknowledged event reads back once.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let server = Server::start(&data_dir, &[]);
    assert_eq!(server.metric("tidings_partition_refused"), 0.0);
    let after = stored(&server, 2);
    let missing: Vec<_> = acknowledged.difference(&after).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost",
        missing.len()
    );
    let kafka_after = kcat(
        &server,
        &[
            "-C",
            "-t",
            "fill",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ],
        "",
    );
    assert!(kafka_after.lines().filter(|l| *l == "k-after").count() >= 100);
}
