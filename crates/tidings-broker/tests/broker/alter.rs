//! Altering a topic: log settings, the dedup window, and partitions added under
//! running stream and queue groups.

use crate::support::Harness;
use std::collections::BTreeSet;
use std::time::Duration;

use tidings_broker::FsyncPolicy;
use tidings_broker::{
    AdminError, Broker, BrokerOptions, JoinOptions, QueueConfig, StartPosition, TopicChanges,
    TopicSpec,
};
use tidings_types::{CloudEvent, ErrorKind, PartitionId};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn event(id: &str) -> CloudEvent {
    CloudEvent::new("/shop", "order.placed").with_id(id)
}

#[test]
fn log_settings_and_the_dedup_window_change_and_survive_a_restart() {
    let mut h = Harness::new();
    h.b().create_topic("orders", TopicSpec::default()).unwrap();
    let rt = rt();
    let first = rt.block_on(h.b().publish("orders", event("a"))).unwrap();

    let changes = TopicChanges {
        fsync: Some(FsyncPolicy::Interval(Duration::from_millis(5))),
        retention_age: Some(None),
        retention_bytes: Some(Some(1 << 30)),
        dedup_window: Some(None),
        ..TopicChanges::default()
    };
    let d = h.b().alter_topic("orders", changes).unwrap();
    assert_eq!(
        d.spec.log.fsync,
        FsyncPolicy::Interval(Duration::from_millis(5))
    );
    assert_eq!(d.spec.log.retention_age, None);
    assert_eq!(d.spec.log.retention_bytes, Some(1 << 30));
    assert_eq!(d.spec.dedup_window, None);
    // Dedup is off: the same id is appended again.
    let again = rt.block_on(h.b().publish("orders", event("a"))).unwrap();
    assert!(!again.duplicate);
    assert_ne!(again.offset, first.offset);

    // Turned back on, the window is refilled from the log: the id is known.
    let on = TopicChanges {
        dedup_window: Some(Some(Duration::from_secs(60))),
        ..TopicChanges::default()
    };
    h.b().alter_topic("orders", on).unwrap();
    let third = rt.block_on(h.b().publish("orders", event("a"))).unwrap();
    assert!(third.duplicate);

    h.reopen();
    // Two appends: the first event, and the repeat made while dedup was off.
    assert_eq!(h.high_watermarks("orders"), [2]);
    let spec = h.b().describe_topic("orders").unwrap().spec;
    assert_eq!(
        spec.log.fsync,
        FsyncPolicy::Interval(Duration::from_millis(5))
    );
    assert_eq!(spec.log.retention_bytes, Some(1 << 30));
    assert_eq!(spec.dedup_window, Some(Duration::from_secs(60)));
    let fourth = rt.block_on(h.b().publish("orders", event("a"))).unwrap();
    assert!(fourth.duplicate, "the window survives the restart");
}

/// Creating a topic that exists is refused before anything of the existing
/// topic is touched: its dedup window stays, also after a restart.
#[test]
fn creating_an_existing_topic_changes_nothing_of_it() {
    let mut h = Harness::new();
    h.b().create_topic("orders", TopicSpec::default()).unwrap();
    let other = TopicSpec {
        dedup_window: None,
        ..TopicSpec::with_partitions(3)
    };
    let err = h.b().create_topic("orders", other).unwrap_err();
    assert!(
        matches!(err, AdminError::Log(tidings_log::TopicError::Exists(_))),
        "{err:?}"
    );
    h.reopen();
    let d = h.b().describe_topic("orders").unwrap();
    assert_eq!(d.spec, TopicSpec::default());
}

#[test]
fn bad_alterations_are_refused_and_change_nothing() {
    let h = Harness::new();
    let spec = TopicSpec::with_partitions(3);
    h.b().create_topic("orders", spec.clone()).unwrap();
    let before = h.b().describe_topic("orders").unwrap().spec;
    let refused = [
        TopicChanges {
            partitions: Some(2),
            ..TopicChanges::default()
        },
        TopicChanges {
            partitions: Some(0),
            ..TopicChanges::default()
        },
        TopicChanges {
            // Valid, but the window below is not: nothing of either is applied.
            fsync: Some(FsyncPolicy::Never),
            dedup_window: Some(Some(Duration::ZERO)),
            ..TopicChanges::default()
        },
        TopicChanges {
            fsync: Some(FsyncPolicy::Interval(Duration::ZERO)),
            ..TopicChanges::default()
        },
        TopicChanges {
            segment_bytes: Some(1),
            ..TopicChanges::default()
        },
    ];
    for changes in refused {
        let err = h.b().alter_topic("orders", changes.clone()).unwrap_err();
        assert!(
            matches!(err, AdminError::InvalidSpec(_)),
            "{changes:?}: {err}"
        );
        assert_eq!(h.b().describe_topic("orders").unwrap().spec, before);
    }
    assert!(matches!(
        h.b().alter_topic("nope", TopicChanges::default()),
        Err(AdminError::UnknownTopic(_))
    ));
}

#[test]
fn added_partitions_reach_stream_and_queue_groups_from_their_first_event() {
    let mut h = Harness::new();
    let spec = TopicSpec {
        dedup_window: None,
        ..TopicSpec::with_partitions(1)
    };
    h.b().create_topic("orders", spec).unwrap();
    let rt = rt();
    let latest = JoinOptions {
        start: StartPosition::Latest,
        ..JoinOptions::default()
    };
    let member = h.b().join_group("g", "orders", latest).unwrap();
    h.b()
        .create_queue_group(
            "workers",
            "orders",
            QueueConfig::default(),
            StartPosition::Earliest,
        )
        .unwrap();
    let poll = |h: &Harness| {
        rt.block_on(h.b().poll("g", &member, 1 << 20, Duration::ZERO))
            .unwrap()
    };
    let before = poll(&h);
    assert_eq!(before.assignment, [PartitionId(0)]);

    let d = h
        .b()
        .alter_topic(
            "orders",
            TopicChanges {
                partitions: Some(4),
                ..TopicChanges::default()
            },
        )
        .unwrap();
    assert_eq!(d.partitions.len(), 4);
    let events: Vec<CloudEvent> = (0..40)
        .map(|i| event(&format!("e{i}")).with_partitionkey(format!("key-{i}")))
        .collect();
    let published = rt.block_on(h.b().publish_batch("orders", events)).unwrap();
    let used: BTreeSet<u32> = published.iter().map(|p| p.partition.0).collect();
    assert_eq!(used, BTreeSet::from([0, 1, 2, 3]), "keys hash over 4 now");

    // The member that started at `latest` still reads the new partitions from
    // their first event: they were created after it joined.
    let after = poll(&h);
    assert!(after.generation > before.generation, "a rebalance");
    assert_eq!(after.assignment.len(), 4);
    assert_eq!(after.entries.len(), 40);

    // The queue group takes every event of every partition.
    let mut got = BTreeSet::new();
    loop {
        let batch = rt.block_on(h.b().receive("workers", 100)).unwrap();
        if batch.is_empty() {
            break;
        }
        for d in batch {
            got.insert((d.entry.partition.0, d.entry.offset.0));
            rt.block_on(h.b().ack("workers", &d.lease)).unwrap();
        }
    }
    let want: BTreeSet<(u32, u64)> = published
        .iter()
        .map(|p| (p.partition.0, p.offset.0))
        .collect();
    assert_eq!(got, want);
    let stats = rt.block_on(h.b().queue_stats("workers")).unwrap();
    assert_eq!(stats.partitions.len(), 4);
    assert!(stats.partitions.iter().all(|p| p.lag == 0));

    h.reopen();
    assert_eq!(h.b().describe_topic("orders").unwrap().partitions.len(), 4);
    assert!(rt
        .block_on(h.b().receive("workers", 100))
        .unwrap()
        .is_empty());
}

/// The broker holds at most its limit of partitions over all topics; topics,
/// added partitions and dead-letter topics that would pass it are refused with
/// nothing made, and deleting a topic frees its partitions.
#[test]
fn partitions_over_all_topics_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let options = BrokerOptions {
            partitions_total_max: 4,
            ..BrokerOptions::default()
        };
        Broker::open(dir.path(), options).unwrap()
    };
    let b = open();
    b.create_topic("a", TopicSpec::with_partitions(3)).unwrap();
    let refused = b
        .create_topic("b", TopicSpec::with_partitions(2))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            AdminError::TooManyPartitions {
                have: 3,
                asked: 2,
                limit: 4
            }
        ),
        "{refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::LimitReached);
    assert!(b.describe_topic("b").is_err(), "nothing of b was made");
    b.create_topic("b", TopicSpec::with_partitions(1)).unwrap();
    let more = TopicChanges {
        partitions: Some(4),
        ..TopicChanges::default()
    };
    let refused = b.alter_topic("a", more.clone()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::LimitReached);
    assert_eq!(b.describe_topic("a").unwrap().spec.log.partitions, 3);
    // A queue group's dead-letter topic takes a partition too.
    let refused = b
        .create_queue_group(
            "workers",
            "b",
            QueueConfig::default(),
            StartPosition::Earliest,
        )
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::LimitReached, "{refused}");
    assert!(b.list_queue_groups().is_empty());
    b.close().unwrap();
    drop(b);
    // The count holds across a restart; a deleted topic frees its partitions.
    let b = open();
    assert!(b.create_topic("c", TopicSpec::default()).is_err());
    b.delete_topic("b").unwrap();
    b.alter_topic("a", more).unwrap();
    assert_eq!(b.describe_topic("a").unwrap().spec.log.partitions, 4);
}
