//! A partition that is not served shows in `/metrics` as
//! `tidings_partition_refused`, with its cause: one that stopped accepting
//! appends after a failed sync, and one that recovery refused at start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tidings_broker::{Broker, BrokerOptions, FsyncPolicy, LogOptions, TopicSpec};
use tidings_types::CloudEvent;

const STORAGE: &str =
    "tidings_partition_refused{topic=\"orders\",partition=\"1\",cause=\"storage\"} 1";
const RECOVERY: &str =
    "tidings_partition_refused{topic=\"orders\",partition=\"0\",cause=\"recovery\"} 1";

/// Fails every `fdatasync` once `fail` is set.
#[derive(Debug, Default)]
struct FailingSync {
    fail: AtomicBool,
}

impl tidings_broker::FileSync for FailingSync {
    fn sync_data(&self, file: &dyn tidings_broker::StorageFile) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }
}

fn spec() -> TopicSpec {
    let mut spec = TopicSpec::with_partitions(2);
    spec.log.fsync = FsyncPolicy::Always;
    spec
}

fn keyed(key: &str) -> CloudEvent {
    CloudEvent::new("/shop", "order.placed")
        .with_extension("partitionkey", key)
        .unwrap()
}

/// A key whose events go to `partition` of two.
fn key_for(partition: u32) -> String {
    (0..)
        .map(|n| format!("k{n}"))
        .find(|k| tidings_broker::partitioner::partition_for_key(k.as_bytes(), 2) == partition)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stopped_by_a_failed_sync_is_refused_for_storage() {
    let dir = tempfile::tempdir().unwrap();
    let sync = Arc::new(FailingSync::default());
    let options = BrokerOptions {
        log: LogOptions {
            file_sync: sync.clone(),
            ..LogOptions::default()
        },
        ..BrokerOptions::default()
    };
    let broker = Arc::new(Broker::open(dir.path(), options).unwrap());
    broker.create_topic("orders", spec()).unwrap();
    broker.publish("orders", keyed(&key_for(1))).await.unwrap();
    let text = tidings_telemetry::render_broker(&broker).await;
    assert!(!text.contains("tidings_partition_refused"), "{text}");

    sync.fail.store(true, Ordering::SeqCst);
    let failed = broker.publish("orders", keyed(&key_for(1))).await;
    assert!(failed.is_err(), "{failed:?}");
    sync.fail.store(false, Ordering::SeqCst);
    // The partition stays stopped; the other one still takes appends.
    broker.publish("orders", keyed(&key_for(0))).await.unwrap();
    let text = tidings_telemetry::render_broker(&broker).await;
    assert!(text.contains(STORAGE), "{text}");
    assert!(!text.contains("partition=\"0\",cause"), "{text}");
    assert!(text.contains("# HELP tidings_partition_refused "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_recovery_refused_is_refused_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = Broker::open(dir.path(), BrokerOptions::default()).unwrap();
        broker.create_topic("orders", spec()).unwrap();
        for _ in 0..3 {
            broker.publish("orders", keyed(&key_for(0))).await.unwrap();
        }
        broker.close().unwrap();
    }
    // The first batch's CRC (bytes 17..21 of its header) no longer matches,
    // and valid batches follow it: recovery refuses the partition rather
    // than drop them.
    let partition = dir.path().join("topics/orders/0");
    let segment = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap_or_else(|| panic!("no segment in {}", partition.display()));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[18] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let broker = Arc::new(Broker::open(dir.path(), BrokerOptions::default()).unwrap());
    let text = tidings_telemetry::render_broker(&broker).await;
    assert!(text.contains(RECOVERY), "{text}");
    // Partition 1 is served and counted as usual.
    assert!(
        text.contains("tidings_partition_high_watermark{topic=\"orders\",partition=\"1\"} 0"),
        "{text}"
    );
    // The broker opened, but the topic's dedup index lacks partition 0's
    // events: the topic takes no events, whichever partition they go to.
    let refused = broker.publish("orders", keyed(&key_for(1))).await;
    match refused {
        Err(e @ tidings_broker::PublishError::DedupIncomplete { .. }) => {
            assert_eq!(e.kind(), tidings_types::ErrorKind::StorageFailed);
            let said = e.to_string();
            assert!(said.contains("partition 0 is refused"), "{said}");
            assert!(said.contains("CRC-32C mismatch"), "{said}");
        }
        other => panic!("{other:?}"),
    }
    // A topic without a dedup window has nothing to lose by it.
    broker
        .alter_topic(
            "orders",
            tidings_broker::TopicChanges {
                dedup_window: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
    broker.publish("orders", keyed(&key_for(1))).await.unwrap();
}
