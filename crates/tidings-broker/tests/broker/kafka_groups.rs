//! Kafka's classic group protocol in the broker: MEMBER_ID_REQUIRED,
//! generations that fence, session timeouts, the initial rebalance delay,
//! and one group holding Kafka members and HTTP members together.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tidings_broker::{
    ClassicError, CommittedOffset, JoinOptions, JoinWait, Joined, KafkaJoin, SyncOutcome, TopicSpec,
};
use tidings_types::{CloudEvent, Offset, PartitionId, TopicName};

use crate::support::Harness;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A consumer-protocol subscription (v0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

/// A consumer-protocol assignment (v0) of `partitions` of `topic`.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

/// A JoinGroup of a consumer reading `topics`, v4+ (ids required).
fn join(member: &str, topics: &[&str], initial_delay: Duration) -> KafkaJoin {
    KafkaJoin {
        member_id: member.to_owned(),
        client_id: "client".to_owned(),
        client_host: "127.0.0.1".to_owned(),
        session: Duration::from_secs(1),
        rebalance: Duration::from_secs(10),
        protocol_type: "consumer".to_owned(),
        protocols: vec![("range".to_owned(), subscription(topics))],
        require_member_id: true,
        initial_delay,
    }
}

/// A new Kafka member's id (the MEMBER_ID_REQUIRED round) and its join.
fn new_member(h: &Harness, topics: &[&str], delay: Duration) -> (String, JoinWait) {
    let id = match h.b().kafka_join("g", join("", topics, delay)) {
        Err(ClassicError::MemberIdRequired(id)) => id,
        other => panic!("{other:?}"),
    };
    let wait = h.b().kafka_join("g", join(&id, topics, delay)).unwrap();
    (id, wait)
}

fn answered(wait: &mut JoinWait) -> Option<Joined> {
    wait.try_recv().ok().map(|r| r.unwrap())
}

fn sync_now(h: &Harness, member: &str, generation: i32, given: Vec<(String, Bytes)>) -> Bytes {
    match h.b().kafka_sync("g", member, generation, given).unwrap() {
        SyncOutcome::Ready(bytes) => bytes,
        SyncOutcome::Waiting(_) => panic!("{member} waits"),
    }
}

fn fixture() -> Harness {
    let h = Harness::new();
    h.b()
        .create_topic("orders", TopicSpec::with_partitions(2))
        .unwrap();
    h
}

#[test]
fn rebalances_on_join_and_on_session_timeout_and_fences_old_generations() {
    let h = fixture();
    let none = Duration::ZERO;
    // One member: generation 1, it leads.
    let (a, mut a_wait) = new_member(&h, &["orders"], none);
    let joined = answered(&mut a_wait).expect("alone, at once without a delay");
    assert_eq!((joined.generation, joined.leader.as_str()), (1, a.as_str()));
    assert_eq!(joined.members.len(), 1);
    let mine = sync_now(&h, &a, 1, vec![(a.clone(), assignment("orders", &[0, 1]))]);
    assert_eq!(mine, assignment("orders", &[0, 1]));
    h.b().kafka_heartbeat("g", &a, 1).unwrap();

    // A second member: the first learns of the rebalance and rejoins.
    let (b, mut b_wait) = new_member(&h, &["orders"], none);
    assert_eq!(
        h.b().kafka_heartbeat("g", &a, 1),
        Err(ClassicError::RebalanceInProgress)
    );
    assert!(answered(&mut b_wait).is_none(), "waits for a to rejoin");
    let mut a_wait = h.b().kafka_join("g", join(&a, &["orders"], none)).unwrap();
    let (a2, b2) = (
        answered(&mut a_wait).unwrap(),
        answered(&mut b_wait).unwrap(),
    );
    assert_eq!((a2.generation, b2.generation), (2, 2));
    assert_eq!(a2.members.len(), 2, "the leader sees every member");
    assert!(b2.members.is_empty());
    // The follower's sync waits for the leader's.
    let SyncOutcome::Waiting(mut b_sync) = h.b().kafka_sync("g", &b, 2, vec![]).unwrap() else {
        panic!("b must wait")
    };
    sync_now(
        &h,
        &a,
        2,
        vec![
            (a.clone(), assignment("orders", &[0])),
            (b.clone(), assignment("orders", &[1])),
        ],
    );
    assert_eq!(
        b_sync.try_recv().unwrap().unwrap(),
        assignment("orders", &[1])
    );
    assert_eq!(
        h.b().kafka_heartbeat("g", &a, 1),
        Err(ClassicError::IllegalGeneration)
    );
    // Who owns what shows in the group's description.
    let d = h.b().describe_group("g").unwrap();
    let owned: BTreeSet<(String, u32)> = d
        .members
        .iter()
        .flat_map(|m| m.partitions.iter().map(|(_, p)| (m.member.clone(), p.0)))
        .collect();
    assert_eq!(owned, BTreeSet::from([(a.clone(), 0), (b.clone(), 1)]));

    // b goes silent while a heartbeats: past b's session (1 s) it is
    // dropped and a rebalances alone.
    for _ in 0..3 {
        h.advance(Duration::from_millis(500));
        h.b().kafka_heartbeat("g", &a, 2).unwrap_or(());
    }
    h.b().tick_groups();
    assert_eq!(
        h.b().kafka_heartbeat("g", &b, 2),
        Err(ClassicError::UnknownMemberId)
    );
    let mut a_wait = h.b().kafka_join("g", join(&a, &["orders"], none)).unwrap();
    let a3 = answered(&mut a_wait).unwrap();
    assert_eq!((a3.generation, a3.members.len()), (3, 1));
}

#[test]
fn bad_joins_get_their_answers() {
    let h = fixture();
    let none = Duration::ZERO;
    assert_eq!(
        h.b()
            .kafka_join("g", join("nobody", &["orders"], none))
            .err(),
        Some(ClassicError::UnknownMemberId)
    );
    let short = KafkaJoin {
        session: Duration::from_millis(1),
        ..join("", &["orders"], none)
    };
    assert_eq!(
        h.b().kafka_join("g", short).err(),
        Some(ClassicError::InvalidSessionTimeout)
    );
    let empty = KafkaJoin {
        protocols: vec![],
        ..join("", &["orders"], none)
    };
    assert_eq!(
        h.b().kafka_join("g", empty).err(),
        Some(ClassicError::InconsistentGroupProtocol)
    );
    assert_eq!(
        h.b().kafka_join("../g", join("", &["orders"], none)).err(),
        Some(ClassicError::InvalidGroupId)
    );
    // Version 3 has no MEMBER_ID_REQUIRED: the first join is the join.
    let old = KafkaJoin {
        require_member_id: false,
        ..join("", &["orders"], none)
    };
    let mut wait = h.b().kafka_join("g", old).unwrap();
    assert_eq!(answered(&mut wait).unwrap().generation, 1);
    // Another protocol type, or no shared protocol, cannot join.
    let connect = KafkaJoin {
        protocol_type: "connect".to_owned(),
        ..join("", &["orders"], none)
    };
    assert_eq!(
        h.b().kafka_join("g", connect).err(),
        Some(ClassicError::InconsistentGroupProtocol)
    );
    let sticky = KafkaJoin {
        protocols: vec![("sticky".to_owned(), subscription(&["orders"]))],
        ..join("", &["orders"], none)
    };
    assert_eq!(
        h.b().kafka_join("g", sticky).err(),
        Some(ClassicError::InconsistentGroupProtocol)
    );
    // An HTTP member cannot join a group of another protocol type.
    let h2 = fixture();
    let connect = KafkaJoin {
        protocol_type: "connect".to_owned(),
        require_member_id: false,
        ..join("", &["orders"], none)
    };
    let _w = h2.b().kafka_join("g", connect).unwrap();
    let err = h2
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("protocol type connect"), "{err}");
}

#[test]
fn a_new_group_waits_the_initial_delay_for_members_started_together() {
    let h = fixture();
    let delay = Duration::from_secs(3);
    let (_, mut a) = new_member(&h, &["orders"], delay);
    h.b().tick_groups();
    assert!(
        answered(&mut a).is_none(),
        "the delay holds the first generation"
    );
    h.advance(Duration::from_secs(2));
    let (_, mut b) = new_member(&h, &["orders"], delay);
    // b's join extends the delay by 3 s from now.
    h.advance(Duration::from_millis(1500));
    h.b().tick_groups();
    assert!(answered(&mut a).is_none() && answered(&mut b).is_none());
    h.advance(Duration::from_millis(1600));
    h.b().tick_groups();
    let (a, b) = (answered(&mut a).unwrap(), answered(&mut b).unwrap());
    assert_eq!(
        (a.generation, b.generation),
        (1, 1),
        "one generation for both"
    );
    // Later joins of a formed group do not wait the delay.
    let h = fixture();
    let (_, mut c) = new_member(&h, &["orders"], Duration::ZERO);
    assert!(answered(&mut c).is_some());
}

fn publish(h: &Harness, n: usize) {
    let events: Vec<CloudEvent> = (0..n)
        .map(|i| CloudEvent::new("/shop", "order.placed").with_partitionkey(format!("k{i}")))
        .collect();
    rt().block_on(h.b().publish_batch("orders", events))
        .unwrap();
}

fn poll(h: &Harness, member: &str) -> tidings_broker::Polled {
    rt().block_on(h.b().poll("g", member, 1 << 20, Duration::ZERO))
        .unwrap()
}

#[test]
fn kafka_and_http_members_share_one_group_and_its_rebalances() {
    let h = fixture();
    publish(&h, 20);
    let none = Duration::ZERO;
    // A Kafka consumer forms the group and takes both partitions.
    let (k, mut k_wait) = new_member(&h, &["orders"], none);
    let joined = answered(&mut k_wait).unwrap();
    sync_now(
        &h,
        &k,
        joined.generation,
        vec![(k.clone(), assignment("orders", &[0, 1]))],
    );
    // An HTTP member joins: the Kafka member must rejoin; until the leader
    // assigns, the HTTP member owns nothing.
    let web = h
        .b()
        .join_group("g", "orders", JoinOptions::default())
        .unwrap();
    assert_eq!(
        h.b().kafka_heartbeat("g", &k, joined.generation),
        Err(ClassicError::RebalanceInProgress)
    );
    assert!(poll(&h, &web).assignment.is_empty());
    let mut k_wait = h.b().kafka_join("g", join(&k, &["orders"], none)).unwrap();
    let joined = answered(&mut k_wait).unwrap();
    // The leader sees the HTTP member as a consumer subscribed to its topic.
    let theirs = joined
        .members
        .iter()
        .find(|(id, _)| *id == web)
        .expect("the leader sees the HTTP member");
    assert_eq!(theirs.1, subscription(&["orders"]));
    sync_now(
        &h,
        &k,
        joined.generation,
        vec![
            (k.clone(), assignment("orders", &[0])),
            (web.clone(), assignment("orders", &[1])),
        ],
    );
    // The HTTP member reads the partition the leader gave it, and only that.
    let polled = poll(&h, &web);
    assert_eq!(polled.assignment, vec![PartitionId(1)]);
    assert!(polled.entries.iter().all(|e| e.partition == PartitionId(1)));
    h.b()
        .commit("g", &web, &polled.positions)
        .expect("it commits its own partition");
    let err = h
        .b()
        .commit("g", &web, &[(PartitionId(0), Offset(0))])
        .unwrap_err();
    assert!(err.to_string().contains("not assigned"), "{err}");
    // Both show in one description, each with its client.
    let d = h.b().describe_group("g").unwrap();
    let clients: BTreeSet<String> = d.members.iter().map(|m| m.client.clone()).collect();
    assert_eq!(
        clients,
        BTreeSet::from([
            "client".to_owned(),
            tidings_broker::HTTP_CLIENT_ID.to_owned()
        ])
    );
    // A Kafka commit for the HTTP member's partition from the Kafka member's
    // generation lands in the same offsets.
    let topic = TopicName::new("orders").unwrap();
    h.b()
        .commit_offsets(
            "g",
            Some((&k, joined.generation)),
            vec![CommittedOffset {
                topic: topic.clone(),
                partition: PartitionId(0),
                offset: Offset(1),
                metadata: String::new(),
            }],
        )
        .unwrap();
    // A stale generation's commit is fenced.
    let fenced = h
        .b()
        .commit_offsets("g", Some((&k, joined.generation - 1)), vec![])
        .unwrap_err();
    assert!(matches!(
        fenced,
        tidings_broker::GroupError::Fenced(ClassicError::IllegalGeneration)
    ));
    // The Kafka member leaves: the HTTP member, alone, gets both partitions
    // from the broker at once.
    assert_eq!(
        h.b().kafka_leave("g", std::slice::from_ref(&k)),
        vec![Ok(())]
    );
    let polled = poll(&h, &web);
    assert_eq!(polled.assignment, vec![PartitionId(0), PartitionId(1)]);
    // An HTTP member that goes silent is dropped like a Kafka member.
    h.advance(Duration::from_secs(31));
    h.b().tick_groups();
    assert!(h.b().describe_group("g").unwrap().members.is_empty());
}
