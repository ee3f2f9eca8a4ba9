//! Stream-mode consumer groups: assignment and rebalancing, durable commits,
//! start positions, replay, fencing and long polls.

use crate::support::{options, Harness};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tidings_broker::{
    Broker, BrokerOptions, CommittedOffset, GroupError, JoinOptions, Payload, StartPosition,
    TopicSpec, COMMIT_METADATA_BYTES_MAX, GROUP_NAME_BYTES_MAX,
};
use tidings_types::Clock;
use tidings_types::{CloudEvent, Offset, PartitionId};

struct Fixture(Harness);

impl std::ops::Deref for Fixture {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.0
    }
}

impl Fixture {
    fn new(partitions: u32) -> Fixture {
        let h = Harness::new();
        let spec = TopicSpec::with_partitions(partitions);
        h.b().create_topic("orders", spec).unwrap();
        Fixture(h)
    }

    fn publish(&self, n: usize) {
        let events = (0..n)
            .map(|i| CloudEvent::new("/shop", "order.placed").with_partitionkey(format!("k{i}")));
        rt().block_on(self.b().publish_batch("orders", events.collect()))
            .unwrap();
    }

    fn poll(&self, member: &str) -> tidings_broker::Polled {
        rt().block_on(self.b().poll("g", member, 1 << 20, Duration::ZERO))
            .unwrap()
    }

    fn poll_group(&self, group: &str, member: &str) -> tidings_broker::Polled {
        rt().block_on(self.b().poll(group, member, 1 << 20, Duration::ZERO))
            .unwrap()
    }

    fn assignment(&self, member: &str) -> BTreeSet<u32> {
        self.poll(member).assignment.iter().map(|p| p.0).collect()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ids(entries: &[tidings_broker::Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match &e.payload {
            Payload::Event(ev) => ev.id().to_owned(),
            Payload::Raw(_) => panic!("raw record"),
        })
        .collect()
}

#[test]
fn partitions_are_shared_out_and_rebalanced_on_join_leave_and_timeout() {
    let fx = Fixture::new(6);
    let short = JoinOptions {
        session_timeout: Duration::from_secs(10),
        ..JoinOptions::default()
    };
    let a = fx.b().join_group("g", "orders", short).unwrap();
    assert_eq!(fx.assignment(&a), (0..6).collect());
    let b = fx.b().join_group("g", "orders", short).unwrap();
    let c = fx.b().join_group("g", "orders", short).unwrap();
    let sets = [fx.assignment(&a), fx.assignment(&b), fx.assignment(&c)];
    assert!(sets.iter().all(|s| s.len() == 2));
    let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
    assert_eq!(
        all,
        (0..6).collect(),
        "every partition has exactly one owner"
    );
    let generation = fx.b().describe_group("g").unwrap().generation;

    fx.b().leave_group("g", &b).unwrap();
    let (sa, sc) = (fx.assignment(&a), fx.assignment(&c));
    assert_eq!(sa.len() + sc.len(), 6);
    assert!(sa.is_disjoint(&sc));
    assert!(fx.b().describe_group("g").unwrap().generation > generation);

    // c stops heartbeating; a keeps polling through the session timeout.
    fx.advance(Duration::from_secs(6));
    fx.poll(&a);
    fx.advance(Duration::from_secs(6));
    assert_eq!(
        fx.assignment(&a),
        (0..6).collect(),
        "a took over c's partitions"
    );
    let err = rt()
        .block_on(fx.b().poll("g", &c, 1024, Duration::ZERO))
        .unwrap_err();
    assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
}

#[test]
fn members_together_read_every_event_once() {
    let fx = Fixture::new(4);
    fx.publish(100);
    let members: Vec<String> = (0..3)
        .map(|_| {
            fx.b()
                .join_group("g", "orders", JoinOptions::default())
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    for m in &members {
        seen.extend(ids(&fx.poll(m).entries));
        assert!(fx.poll(m).entries.is_empty(), "positions advanced");
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (100, 100));
}

#[test]
fn the_longest_group_name_commits_and_a_longer_one_is_refused_by_name() {
    // The offsets file is `<group>.offsets`: at the limit it is a name
    // Linux takes (255 bytes); past it the join is refused before any file.
    let mut fx = Fixture::new(1);
    fx.publish(3);
    let longest = "g".repeat(GROUP_NAME_BYTES_MAX);
    let m = fx
        .b()
        .join_group(&longest, "orders", JoinOptions::default())
        .unwrap();
    assert_eq!(fx.poll_group(&longest, &m).entries.len(), 3);
    fx.b()
        .commit(&longest, &m, &[(PartitionId(0), Offset(2))])
        .unwrap();
    fx.reopen();
    let described = fx.b().describe_group(&longest).unwrap();
    assert_eq!(described.partitions[0].lag, 1);
    let longer = format!("{longest}g");
    match fx.b().join_group(&longer, "orders", JoinOptions::default()) {
        Err(e @ GroupError::InvalidName(_)) => assert_eq!(
            e.to_string(),
            "invalid group name: group name is 248 bytes long; the limit is 247"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn committed_offsets_survive_a_restart_and_give_the_lag() {
    let mut fx = Fixture::new(2);
    fx.publish(20);
    let m = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let polled = fx.poll(&m);
    assert_eq!(polled.entries.len(), 20);
    // Commit half of each partition.
    let d = fx.b().describe_topic("orders").unwrap();
    let half: Vec<(PartitionId, Offset)> = d
        .partitions
        .iter()
        .map(|p| (p.partition, Offset(p.high_watermark.0 / 2)))
        .collect();
    fx.b().commit("g", &m, &half).unwrap();
    let lag: u64 = fx
        .b()
        .describe_group("g")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.lag)
        .sum();
    let expected: u64 = d
        .partitions
        .iter()
        .map(|p| p.high_watermark.0 - p.high_watermark.0 / 2)
        .sum();
    assert_eq!(lag, expected);

    fx.reopen();
    let described = fx.b().describe_group("g").unwrap();
    assert!(
        described.members.is_empty(),
        "membership does not survive a restart"
    );
    assert_eq!(
        described.partitions.iter().map(|p| p.lag).sum::<u64>(),
        expected
    );
    let again = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    assert_eq!(
        fx.poll(&again).entries.len() as u64,
        expected,
        "it resumes at the committed offsets"
    );
}

#[test]
fn new_groups_start_where_asked() {
    let fx = Fixture::new(1);
    fx.publish(5);
    fx.advance(Duration::from_secs(10));
    let since = fx.clock.now();
    fx.publish(3);
    let start = |group: &str, start: StartPosition| {
        let m = fx
            .b()
            .join_group(
                group,
                "orders",
                JoinOptions {
                    start,
                    ..JoinOptions::default()
                },
            )
            .unwrap();
        let polled = rt()
            .block_on(fx.b().poll(group, &m, 1 << 20, Duration::ZERO))
            .unwrap();
        polled
            .entries
            .iter()
            .map(|e| e.offset.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        start("earliest", StartPosition::Earliest),
        (0..8).collect::<Vec<_>>()
    );
    assert!(start("latest", StartPosition::Latest).is_empty());
    assert_eq!(start("offset", StartPosition::Offset(Offset(6))), [6, 7]);
    assert_eq!(
        start("clamped", StartPosition::Offset(Offset(999))),
        Vec::<u64>::new()
    );
    assert_eq!(start("time", StartPosition::Timestamp(since)), [5, 6, 7]);
}

#[test]
fn a_group_replays_after_its_offsets_are_reset() {
    let fx = Fixture::new(2);
    fx.publish(10);
    let m = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let first = fx.poll(&m).entries.len();
    let d = fx.b().describe_topic("orders").unwrap();
    let end: Vec<_> = d
        .partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    fx.b().commit("g", &m, &end).unwrap();
    assert!(matches!(
        fx.b().reset_offsets("g", StartPosition::Earliest),
        Err(GroupError::Active { members: 1, .. })
    ));
    fx.b().leave_group("g", &m).unwrap();
    fx.b().reset_offsets("g", StartPosition::Earliest).unwrap();
    let m = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    assert_eq!((first, fx.poll(&m).entries.len()), (10, 10));
}

#[test]
fn stale_members_and_bad_requests_get_typed_errors() {
    let fx = Fixture::new(2);
    fx.publish(4);
    let a = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let b = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let theirs = fx.assignment(&b).into_iter().next().unwrap();
    let err = fx
        .b()
        .commit("g", &a, &[(PartitionId(theirs), Offset(0))])
        .unwrap_err();
    assert!(matches!(err, GroupError::NotAssigned { .. }), "{err}");
    let mine = fx.assignment(&a).into_iter().next().unwrap();
    let err = fx
        .b()
        .commit("g", &a, &[(PartitionId(mine), Offset(1000))])
        .unwrap_err();
    assert!(matches!(err, GroupError::OffsetBeyondEnd { .. }), "{err}");
    assert!(fx
        .b()
        .describe_group("g")
        .unwrap()
        .partitions
        .iter()
        .all(|p| p.committed.is_none()));

    assert!(matches!(
        fx.b().commit("nope", &a, &[]),
        Err(GroupError::UnknownGroup(_))
    ));
    assert!(matches!(
        fx.b().heartbeat("g", "ghost"),
        Err(GroupError::UnknownMember { .. })
    ));
    assert!(matches!(
        fx.b().join_group("g", "nope", JoinOptions::default()),
        Err(GroupError::UnknownTopic(_))
    ));
    assert!(matches!(
        fx.b().join_group("../g", "orders", JoinOptions::default()),
        Err(GroupError::InvalidName(_))
    ));
    let zero = JoinOptions {
        session_timeout: Duration::ZERO,
        ..JoinOptions::default()
    };
    assert!(matches!(
        fx.b().join_group("g", "orders", zero),
        Err(GroupError::InvalidOptions(_))
    ));
    assert_eq!(
        fx.b().describe_group("g").unwrap().members.len(),
        2,
        "failed joins add no member"
    );
}

#[test]
fn a_long_poll_returns_as_soon_as_an_event_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), BrokerOptions::default()).unwrap());
    broker.create_topic("orders", TopicSpec::default()).unwrap();
    let m = broker
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let polled = rt.block_on(async {
        let b = Arc::clone(&broker);
        let publisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.publish("orders", CloudEvent::new("/shop", "order.placed"))
                .await
                .unwrap();
        });
        // The poll may wait an hour: only the publish's wake-up ends it in time.
        let poll = broker.poll("g", &m, 1 << 20, Duration::from_secs(3600));
        let polled = tokio::time::timeout(Duration::from_secs(20), poll)
            .await
            .expect("the publish wakes the poll")
            .unwrap();
        publisher.await.unwrap();
        polled
    });
    assert_eq!(polled.entries.len(), 1);
}

#[test]
fn a_damaged_group_offsets_file_is_refused_with_its_path() {
    let mut fx = Fixture::new(1);
    fx.publish(2);
    let m = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    fx.poll(&m);
    fx.b()
        .commit("g", &m, &[(PartitionId(0), Offset(2))])
        .unwrap();
    fx.reopen();
    fx.broker.take().unwrap().close().unwrap();
    let path = fx.dir.path().join("broker/groups/g.offsets");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Broker::open(fx.dir.path(), options(&fx.clock)).unwrap_err();
    assert!(err.to_string().contains("g.offsets"), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

/// A commit as the Kafka listener makes it.
fn kafka_commit(topic: &str, partition: u32, offset: u64, metadata: &str) -> CommittedOffset {
    CommittedOffset {
        topic: tidings_types::TopicName::new(topic).unwrap(),
        partition: PartitionId(partition),
        offset: Offset(offset),
        metadata: metadata.to_owned(),
    }
}

#[test]
fn one_group_reads_several_topics_each_shared_among_its_readers() {
    let fx = Fixture::new(2);
    fx.b()
        .create_topic("payments", TopicSpec::with_partitions(3))
        .unwrap();
    fx.publish(10);
    let a = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let b = fx
        .b()
        .join_group("g", "payments", JoinOptions::default())
        .unwrap();
    let c = fx
        .b()
        .join_group("g", "payments", JoinOptions::default())
        .unwrap();
    // The only orders reader owns both orders partitions; the payments
    // readers share three.
    assert_eq!(fx.assignment(&a), BTreeSet::from([0, 1]));
    let (pb, pc) = (fx.assignment(&b), fx.assignment(&c));
    assert_eq!(pb.len() + pc.len(), 3);
    assert!(pb.is_disjoint(&pc));
    assert_eq!(fx.poll(&a).entries.len(), 0, "read already by assignment()");
    fx.b()
        .commit("g", &a, &[(PartitionId(0), Offset(0))])
        .unwrap();
    let mine = *pb.iter().next().unwrap();
    fx.b()
        .commit("g", &b, &[(PartitionId(mine), Offset(0))])
        .unwrap();
    let d = fx.b().describe_group("g").unwrap();
    let topics: Vec<&str> = d.topics.iter().map(|t| t.as_str()).collect();
    assert_eq!(topics, ["orders", "payments"]);
    assert_eq!(d.partitions.len(), 5, "{d:?}");
    let committed: Vec<(String, u32, Option<u64>)> = d
        .partitions
        .iter()
        .map(|p| (p.topic.to_string(), p.partition.0, p.committed.map(|o| o.0)))
        .collect();
    assert!(
        committed.contains(&("orders".into(), 0, Some(0))),
        "{committed:?}"
    );
    assert!(
        committed.contains(&("payments".into(), mine, Some(0))),
        "{committed:?}"
    );
    let member_b = d.members.iter().find(|m| m.member == b).unwrap();
    assert!(member_b
        .partitions
        .iter()
        .all(|(t, _)| t.as_str() == "payments"));
    // A member commits on its own topic only: another topic's partition of
    // the same number is not its own.
    let err = fx
        .b()
        .commit(
            "g",
            &c,
            &[(PartitionId(*pb.iter().next().unwrap()), Offset(0))],
        )
        .unwrap_err();
    assert!(matches!(err, GroupError::NotAssigned { .. }), "{err}");
}

#[test]
fn kafka_commits_span_topics_keep_their_metadata_and_take_any_offset_of_a_partition() {
    let mut fx = Fixture::new(2);
    fx.b()
        .create_topic("payments", TopicSpec::with_partitions(1))
        .unwrap();
    fx.publish(20);
    let answers = fx
        .b()
        .commit_offsets(
            "notify",
            None,
            vec![
                kafka_commit("orders", 0, 1, "host-a"),
                kafka_commit("orders", 1, 1_000_000, ""),
                kafka_commit("payments", 0, 0, "{\"v\":1}"),
                kafka_commit("payments", 7, 0, ""),
                kafka_commit("gone", 0, 0, ""),
                kafka_commit("orders", 0, 3, &"x".repeat(COMMIT_METADATA_BYTES_MAX + 1)),
            ],
        )
        .unwrap();
    let kinds: Vec<Option<tidings_types::ErrorKind>> = answers
        .iter()
        .map(|a| a.as_ref().err().map(GroupError::kind))
        .collect();
    use tidings_types::ErrorKind;
    assert_eq!(
        kinds,
        [
            None,
            None,
            None,
            Some(ErrorKind::UnknownPartition),
            Some(ErrorKind::UnknownTopic),
            Some(ErrorKind::TooLarge),
        ]
    );
    let expected = vec![
        kafka_commit("orders", 0, 1, "host-a"),
        kafka_commit("orders", 1, 1_000_000, ""),
        kafka_commit("payments", 0, 0, "{\"v\":1}"),
    ];
    assert_eq!(fx.b().committed_offsets("notify").unwrap(), expected);
    fx.reopen();
    assert_eq!(
        fx.b().committed_offsets("notify").unwrap(),
        expected,
        "durable, metadata included"
    );
    let d = fx.b().describe_group("notify").unwrap();
    let lag: u64 = d.partitions.iter().map(|p| p.lag).sum();
    let (hw0, hw1) = (
        d.partitions[0].high_watermark.0,
        d.partitions[1].high_watermark.0,
    );
    assert_eq!(lag, hw0 - 1, "past the end is no lag; nothing in payments");
    // An HTTP member of the group resumes at the committed offsets; one past
    // a partition's end starts where the member asked (earliest), as a Kafka
    // consumer resets an offset out of range.
    let m = fx
        .b()
        .join_group("notify", "orders", JoinOptions::default())
        .unwrap();
    let polled = fx.poll_group("notify", &m);
    assert_eq!(polled.entries.len() as u64, hw0 - 1 + hw1);
}

/// A revision-1 group file (one topic, no metadata), built byte by byte as
/// the broker wrote it before groups spanned topics.
fn revision_1_file(topic: &str, offsets: &[(u32, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"TDGO");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for (p, o) in offsets {
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn revision_1_group_files_are_migrated_on_open_and_a_crash_mid_migration_loses_nothing() {
    let mut fx = Fixture::new(2);
    fx.publish(10);
    fx.broker.take().unwrap().close().unwrap();
    let groups = fx.dir.path().join("broker/groups");
    std::fs::create_dir_all(&groups).unwrap();
    let old = revision_1_file("orders", &[(0, 2), (1, 3)]);
    std::fs::write(groups.join("g.offsets"), &old).unwrap();
    // A migration cut short leaves the old file and a partial new one beside
    // it, never a partial file under the real name.
    std::fs::write(groups.join("g.offsets.tmp"), &old[..9]).unwrap();
    fx.broker = Some(Broker::open(fx.dir.path(), options(&fx.clock)).unwrap());
    let expected = vec![
        kafka_commit("orders", 0, 2, ""),
        kafka_commit("orders", 1, 3, ""),
    ];
    assert_eq!(fx.b().committed_offsets("g").unwrap(), expected);
    let migrated = std::fs::read(groups.join("g.offsets")).unwrap();
    assert_eq!(&migrated[0..6], b"TDGO\x02\x00", "rewritten as revision 2");
    fx.reopen();
    assert_eq!(fx.b().committed_offsets("g").unwrap(), expected);
    let m = fx
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    let hw: u64 = fx
        .b()
        .describe_topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark.0)
        .sum();
    assert_eq!(
        fx.poll(&m).entries.len() as u64,
        hw - 5,
        "resumes at the migrated offsets"
    );
    // A damaged revision-1 file is refused with its path, not migrated.
    fx.broker.take().unwrap().close().unwrap();
    let mut bad = revision_1_file("orders", &[(0, 2)]);
    bad[8] ^= 1;
    std::fs::write(groups.join("h.offsets"), &bad).unwrap();
    let err = Broker::open(fx.dir.path(), options(&fx.clock)).unwrap_err();
    assert!(err.to_string().contains("h.offsets"), "{err}");
    assert_eq!(std::fs::read(groups.join("h.offsets")).unwrap(), bad);
}
