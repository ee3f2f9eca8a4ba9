//! Queue-mode groups: leases, acks, retries with backoff, dead letters, key
//! ordering, restarts — and the delivery invariant under a randomized workload.

use crate::support::Harness;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tidings_broker::{
    Backoff, Delivery, LeaseId, QueueConfig, QueueError, RedriveTarget, StartPosition, TopicSpec,
};
use tidings_types::Clock;
use tidings_types::{CloudEvent, Offset, PartitionId};

struct Fixture {
    h: Harness,
    rt: tokio::runtime::Runtime,
}

impl std::ops::Deref for Fixture {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut Harness {
        &mut self.h
    }
}

impl Fixture {
    fn new(partitions: u32, config: QueueConfig) -> Fixture {
        let h = Harness::new();
        let spec = TopicSpec {
            dedup_window: None,
            ..TopicSpec::with_partitions(partitions)
        };
        h.b().create_topic("jobs", spec).unwrap();
        h.b()
            .create_queue_group("workers", "jobs", config, StartPosition::Earliest)
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Fixture { h, rt }
    }

    fn publish(&self, key: Option<&str>) -> (PartitionId, Offset) {
        let mut e = CloudEvent::new("/jobs", "job.created");
        if let Some(k) = key {
            e = e.with_partitionkey(k);
        }
        let p = self.rt.block_on(self.b().publish("jobs", e)).unwrap();
        (p.partition, p.offset)
    }

    fn receive(&self, max: usize) -> Vec<Delivery> {
        self.rt.block_on(self.b().receive("workers", max)).unwrap()
    }

    fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        self.rt.block_on(self.b().ack("workers", &d.lease))
    }

    fn nack(&self, d: &Delivery, delay: Option<Duration>) -> Result<(), QueueError> {
        self.rt
            .block_on(self.b().nack("workers", &d.lease, delay, "handler failed"))
    }

    fn dead(&self) -> Vec<tidings_broker::DeadLetter> {
        self.rt
            .block_on(self.b().dead_letters("workers", Offset(0), 1 << 20))
            .unwrap()
    }
}

fn place(d: &Delivery) -> (PartitionId, Offset) {
    (d.entry.partition, d.entry.offset)
}

#[test]
fn an_acked_event_is_never_delivered_again_even_after_a_restart() {
    let mut fx = Fixture::new(2, QueueConfig::default());
    let a = fx.publish(Some("a"));
    let b = fx.publish(Some("b"));
    let got = fx.receive(10);
    assert_eq!(
        got.iter().map(place).collect::<BTreeSet<_>>(),
        [a, b].into_iter().collect()
    );
    assert!(
        fx.receive(10).is_empty(),
        "leased events are not handed out twice"
    );
    let acked = got.iter().find(|d| place(d) == a).unwrap();
    fx.ack(acked).unwrap();
    fx.reopen();
    // The other lease died with the restart: that event comes back, the acked one not.
    let again = fx.receive(10);
    assert_eq!(again.iter().map(place).collect::<Vec<_>>(), [b]);
    assert_eq!(again[0].attempt, 2, "attempts are durable");
    assert!(matches!(fx.ack(acked), Err(QueueError::UnknownLease(_))));
}

#[test]
fn a_nack_with_a_delay_redelivers_after_the_delay() {
    let fx = Fixture::new(1, QueueConfig::default());
    fx.publish(None);
    let first = fx.receive(1).remove(0);
    fx.nack(&first, Some(Duration::from_secs(10))).unwrap();
    fx.advance(Duration::from_millis(9_999));
    assert!(fx.receive(1).is_empty());
    fx.advance(Duration::from_millis(1));
    let second = fx.receive(1).remove(0);
    assert_eq!((place(&second), second.attempt), (place(&first), 2));
    assert!(matches!(fx.ack(&first), Err(QueueError::LeaseExpired(_))));
    fx.ack(&second).unwrap();
}

#[test]
fn retries_back_off_exponentially_with_jitter() {
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        factor: 3,
        max: Duration::from_secs(2),
    };
    let config = QueueConfig {
        backoff,
        max_deliveries: 10,
        ..QueueConfig::default()
    };
    let fx = Fixture::new(1, config);
    fx.publish(None);
    let mut d = fx.receive(1).remove(0);
    for retry in 1..=5u32 {
        let ceiling = backoff.ceiling(retry);
        assert_eq!(
            ceiling,
            Duration::from_millis(100 * 3u64.pow(retry - 1)).min(Duration::from_secs(2))
        );
        fx.nack(&d, None).unwrap();
        // Never before half the ceiling ...
        fx.advance(ceiling / 2 - Duration::from_millis(1));
        assert!(
            fx.receive(1).is_empty(),
            "retry {retry} came before half its backoff"
        );
        // ... always by the ceiling.
        fx.advance(ceiling - ceiling / 2 + Duration::from_millis(1));
        d = fx
            .receive(1)
            .pop()
            .unwrap_or_else(|| panic!("retry {retry} not due by its ceiling"));
        assert_eq!(d.attempt, retry + 1);
    }
}

#[test]
fn an_expired_lease_is_a_failed_attempt() {
    let config = QueueConfig {
        ack_timeout: Duration::from_secs(5),
        ..QueueConfig::default()
    };
    let fx = Fixture::new(1, config);
    fx.publish(None);
    let first = fx.receive(1).remove(0);
    fx.advance(Duration::from_secs(5));
    // The retry is due one backoff after the lease ran out.
    fx.advance(QueueConfig::default().backoff.ceiling(1));
    let second = fx.receive(1).remove(0);
    assert_eq!(second.attempt, 2);
    assert!(matches!(fx.ack(&first), Err(QueueError::LeaseExpired(_))));
}

#[test]
fn after_max_deliveries_the_event_is_dead_lettered_with_its_history() {
    let config = QueueConfig {
        max_deliveries: 3,
        ..QueueConfig::default()
    };
    let fx = Fixture::new(2, config);
    let origin = fx.publish(Some("k"));
    for attempt in 1..=3 {
        let d = fx.receive(1).remove(0);
        assert_eq!(d.attempt, attempt);
        fx.nack(&d, Some(Duration::ZERO)).unwrap();
    }
    assert!(fx.receive(1).is_empty(), "nothing left to deliver");
    let dead = fx.dead();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].source_partition, dead[0].source_offset), origin);
    assert_eq!(
        (dead[0].attempts, dead[0].error.as_str()),
        (3, "handler failed")
    );
}

#[test]
fn a_rejected_event_is_dead_lettered_at_once() {
    let fx = Fixture::new(1, QueueConfig::default());
    fx.publish(None);
    let d = fx.receive(1).remove(0);
    fx.rt
        .block_on(fx.b().reject("workers", &d.lease, "poison message"))
        .unwrap();
    let dead = fx.dead();
    assert_eq!(
        (dead.len(), dead[0].attempts, dead[0].error.as_str()),
        (1, 1, "poison message")
    );
    assert!(fx.receive(1).is_empty());
}

#[test]
fn with_key_ordering_one_event_per_key_is_in_flight_and_a_failing_key_blocks_no_other() {
    let config = QueueConfig {
        key_ordering: true,
        ..QueueConfig::default()
    };
    let fx = Fixture::new(1, config);
    let a1 = fx.publish(Some("a"));
    let a2 = fx.publish(Some("a"));
    let b1 = fx.publish(Some("b"));
    let first = fx.receive(10);
    assert_eq!(
        first.iter().map(place).collect::<Vec<_>>(),
        [a1, b1],
        "a2 waits behind a1"
    );
    let (da1, db1) = (&first[0], &first[1]);
    fx.ack(db1).unwrap();
    let b2 = fx.publish(Some("b"));
    // a1 keeps failing; b proceeds regardless.
    fx.nack(da1, Some(Duration::from_secs(60))).unwrap();
    let next = fx.receive(10);
    assert_eq!(next.iter().map(place).collect::<Vec<_>>(), [b2]);
    fx.ack(&next[0]).unwrap();
    fx.advance(Duration::from_secs(60));
    let retry = fx.receive(10);
    assert_eq!(
        retry.iter().map(place).collect::<Vec<_>>(),
        [a1],
        "still a1 before a2"
    );
    fx.ack(&retry[0]).unwrap();
    assert_eq!(fx.receive(10).iter().map(place).collect::<Vec<_>>(), [a2]);
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let fx = Fixture::new(1, QueueConfig::default());
    let b = fx.b();
    for config in [
        QueueConfig {
            max_deliveries: 0,
            ..QueueConfig::default()
        },
        QueueConfig {
            ack_timeout: Duration::ZERO,
            ..QueueConfig::default()
        },
        QueueConfig {
            backoff: Backoff {
                factor: 0,
                ..Backoff::default()
            },
            ..QueueConfig::default()
        },
        QueueConfig {
            backoff: Backoff {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(1),
                factor: 2,
            },
            ..QueueConfig::default()
        },
    ] {
        assert!(matches!(
            b.create_queue_group("g2", "jobs", config, StartPosition::Earliest),
            Err(QueueError::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        b.create_queue_group(
            "g2",
            "nope",
            QueueConfig::default(),
            StartPosition::Earliest
        ),
        Err(QueueError::UnknownTopic(_))
    ));
    assert!(matches!(
        b.create_queue_group(
            "workers",
            "jobs",
            QueueConfig::default(),
            StartPosition::Earliest
        ),
        Err(QueueError::Exists(_))
    ));
    assert!(matches!(
        b.create_queue_group(
            "../g",
            "jobs",
            QueueConfig::default(),
            StartPosition::Earliest
        ),
        Err(QueueError::InvalidName(_))
    ));
    // The group's dead-letter topic `jobs.<group>.dlq` would be a valid
    // name (249 bytes) but its retry topic `jobs.<group>.retry` not (251):
    // refused when the group is made, not at its first delayed nack.
    let long = "w".repeat(249 - "jobs..dlq".len());
    match b.create_queue_group(
        &long,
        "jobs",
        QueueConfig::default(),
        StartPosition::Earliest,
    ) {
        Err(e @ QueueError::DerivedTopicName { .. }) => {
            let e = e.to_string();
            assert!(
                e.contains(&format!(
                    "its retry topic jobs.{long}.retry is no topic name"
                )) && e.contains("251 bytes long"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fx.rt.block_on(b.receive(&long, 1)),
        Err(QueueError::UnknownGroup(_))
    ));
    assert!(matches!(
        fx.rt.block_on(b.receive("nope", 1)),
        Err(QueueError::UnknownGroup(_))
    ));
    for lease in ["", "garbage", "0.0", "9.0.1", "0.0.999", "0.0.1.2"] {
        // Texts that are no lease are refused as leases this group never gave.
        let err = match lease.parse::<LeaseId>() {
            Err(e) => e,
            Ok(lease) => fx.rt.block_on(b.ack("workers", &lease)).unwrap_err(),
        };
        assert!(
            matches!(err, QueueError::UnknownLease(_)),
            "{lease:?}: {err}"
        );
    }
    fx.publish(None);
    let d = fx.receive(1).remove(0);
    fx.ack(&d).unwrap();
    assert!(
        matches!(fx.ack(&d), Err(QueueError::UnknownLease(_))),
        "a second ack is refused"
    );
    assert!(fx.dead().is_empty());
}

/// The invariant of DESIGN §4 under random failures: every event ends acked or
/// dead-lettered, none is lost, none acked is delivered again, and with key
/// ordering no key has two events in flight or runs out of order. Restarts
/// are clean closes and crashes; a crash forgets the receives whose leases
/// were not synced yet, which may only deliver those events again: no event
/// is delivered more than its limit plus once per crash.
#[test]
fn every_event_ends_acked_or_dead_lettered_under_random_failures() {
    for seed in 1..=4u64 {
        run_invariant(seed);
    }
}

fn run_invariant(seed: u64) {
    let config = QueueConfig {
        ack_timeout: Duration::from_secs(5),
        max_deliveries: 4,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            factor: 2,
            max: Duration::from_secs(2),
        },
        key_ordering: true,
    };
    let mut fx = Fixture::new(3, config);
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut published: BTreeMap<(PartitionId, Offset), String> = BTreeMap::new();
    let mut acked: BTreeSet<(PartitionId, Offset)> = BTreeSet::new();
    let mut rejected: BTreeSet<(PartitionId, Offset)> = BTreeSet::new();
    // Leases the simulated consumers hold: place -> (delivery, when delivered).
    let mut held: HashMap<(PartitionId, Offset), (Delivery, i64)> = HashMap::new();
    let mut deliveries: HashMap<(PartitionId, Offset), u32> = HashMap::new();
    let mut crashes = 0u32;
    for step in 0..400 {
        // Leases past the ack timeout are gone, whether or not the consumer knows.
        let now = fx.clock.now().0;
        held.retain(|_, (_, at)| now - *at < 5_000);
        match next() % 10 {
            0..=2 => {
                let key = format!("k{}", next() % 7);
                let place = fx.publish(Some(&key));
                published.insert(place, key);
            }
            3..=5 => {
                for d in fx.receive(1 + (next() % 4) as usize) {
                    let place = place(&d);
                    assert!(
                        !acked.contains(&place),
                        "seed {seed} step {step}: {place:?} delivered after its ack"
                    );
                    let n = deliveries.entry(place).or_default();
                    *n += 1;
                    assert!(
                        *n <= 4 + crashes,
                        "seed {seed} step {step}: {place:?} delivered {n} times, past its limit of 4 and {crashes} crashes"
                    );
                    let key = &published[&place];
                    let same_key_in_flight =
                        held.keys().any(|p| p != &place && published[p] == *key);
                    assert!(
                        !same_key_in_flight,
                        "seed {seed} step {step}: two events of key {key} in flight"
                    );
                    let earlier_open = published.iter().any(|(p, k)| {
                        k == key
                            && p.0 == place.0
                            && p.1 < place.1
                            && !acked.contains(p)
                            && !rejected.contains(p)
                    });
                    // An earlier event of the key may only be open if it was dead-lettered.
                    if earlier_open {
                        let dead: BTreeSet<_> = fx
                            .dead()
                            .iter()
                            .map(|d| (d.source_partition, d.source_offset))
                            .collect();
                        let all_dead = published.iter().all(|(p, k)| {
                            !(k == key && p.0 == place.0 && p.1 < place.1)
                                || acked.contains(p)
                                || dead.contains(p)
                        });
                        assert!(all_dead, "seed {seed} step {step}: {place:?} delivered before an earlier event of key {key}");
                    }
                    held.insert(place, (d, fx.clock.now().0));
                }
            }
            6 => {
                // Answer a random held lease.
                if let Some(place) = held
                    .keys()
                    .nth((next() as usize) % held.len().max(1))
                    .copied()
                {
                    let (d, _) = held.remove(&place).unwrap();
                    let answer = match next() % 10 {
                        0..=5 => fx.ack(&d).map(|()| {
                            acked.insert(place);
                        }),
                        6..=8 => fx.nack(&d, None),
                        _ => fx
                            .rt
                            .block_on(fx.b().reject("workers", &d.lease, "bad"))
                            .map(|()| {
                                rejected.insert(place);
                            }),
                    };
                    // A lease may have run out meanwhile; that is the only allowed error.
                    if let Err(e) = answer {
                        assert!(matches!(e, QueueError::LeaseExpired(_)), "seed {seed}: {e}");
                    }
                }
            }
            7 => {
                // A consumer crashes: its leases are forgotten and run out.
                held.clear();
                fx.advance(Duration::from_secs(6));
            }
            8 => fx.advance(Duration::from_millis(next() % 3_000)),
            _ => match next() % 8 {
                0 => {
                    held.clear();
                    fx.reopen();
                }
                1 => {
                    held.clear();
                    crashes += 1;
                    fx.crash();
                }
                _ => {}
            },
        }
    }
    // Drain: keep acking until nothing is pending.
    held.clear();
    for _ in 0..200 {
        fx.advance(Duration::from_secs(6));
        let got = fx.receive(100);
        for d in got {
            let place = place(&d);
            assert!(!acked.contains(&place));
            fx.ack(&d).unwrap();
            acked.insert(place);
        }
    }
    let dead: Vec<(PartitionId, Offset)> = fx
        .dead()
        .iter()
        .map(|d| (d.source_partition, d.source_offset))
        .collect();
    let dead_set: BTreeSet<_> = dead.iter().copied().collect();
    assert_eq!(
        dead.len(),
        dead_set.len(),
        "seed {seed}: an event was dead-lettered twice"
    );
    assert!(
        acked.is_disjoint(&dead_set),
        "seed {seed}: an event was both acked and dead-lettered"
    );
    assert!(
        rejected.is_subset(&dead_set),
        "seed {seed}: a rejected event is missing from the dead letters"
    );
    let ended: BTreeSet<_> = acked.union(&dead_set).copied().collect();
    let all: BTreeSet<_> = published.keys().copied().collect();
    assert_eq!(
        ended, all,
        "seed {seed}: every published event is acked or dead-lettered, none lost"
    );
    assert!(
        !published.is_empty() && !dead.is_empty() && !acked.is_empty(),
        "seed {seed}: the workload exercised every outcome"
    );
}

impl Fixture {
    fn redrive(&self, target: RedriveTarget) -> usize {
        self.rt
            .block_on(self.b().redrive_dead_letters("workers", target, 100))
            .unwrap()
    }

    fn high_watermark_sum(&self, topic: &str) -> u64 {
        self.b()
            .describe_topic(topic)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.high_watermark.0)
            .sum()
    }
}

#[test]
fn a_redrive_delivers_again_to_the_group_alone_from_where_the_events_were() {
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let mut fx = Fixture::new(2, config);
    fx.b()
        .create_queue_group(
            "audit",
            "jobs",
            QueueConfig::default(),
            StartPosition::Earliest,
        )
        .unwrap();
    let origin: BTreeSet<_> = (0..3).map(|i| fx.publish(Some(&format!("k{i}")))).collect();
    for d in fx.receive(10) {
        fx.nack(&d, None).unwrap();
    }
    assert_eq!(fx.dead().len(), 3);
    // The other group takes everything once.
    let audit = fx.rt.block_on(fx.b().receive("audit", 10)).unwrap();
    assert_eq!(audit.len(), 3);
    for d in &audit {
        fx.rt.block_on(fx.b().ack("audit", &d.lease)).unwrap();
    }

    assert_eq!(fx.redrive(RedriveTarget::Group), 3);
    assert!(fx.dead().is_empty(), "redriven dead letters are handled");
    assert_eq!(
        fx.high_watermark_sum("jobs"),
        3,
        "nothing is published to the topic"
    );
    assert!(
        fx.rt
            .block_on(fx.b().receive("audit", 10))
            .unwrap()
            .is_empty(),
        "no other group sees a redrive"
    );
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    assert_eq!((stats.redriven.lag, stats.counters.redriven), (3, 3));

    // Redriven events survive a restart, and show the place they first had.
    fx.reopen();
    let again = fx.receive(10);
    assert_eq!(again.len(), 3);
    assert_eq!(again.iter().map(place).collect::<BTreeSet<_>>(), origin);
    for d in &again {
        assert_eq!(d.attempt, 1, "a redriven event starts over");
        let tidings_broker::Payload::Event(e) = &d.entry.payload else {
            panic!("raw")
        };
        assert!(
            e.extension("dlqoffset").is_none(),
            "the dead-letter headers are gone"
        );
    }
    // Failing again, an event is dead-lettered again under its first place.
    fx.nack(&again[0], None).unwrap();
    let dead = fx.dead();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].source_partition, dead[0].source_offset),
        place(&again[0])
    );
    for d in &again[1..] {
        fx.ack(d).unwrap();
    }
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    assert_eq!(stats.redriven.lag, 0);
    assert_eq!(stats.partitions.iter().map(|p| p.lag).sum::<u64>(), 0);
}

/// A redrive of the dead letters with one error takes only those, wherever
/// they are among the others; those stay, are counted and listed, and a
/// later redrive of everything sends each of them once, across a restart.
#[test]
fn a_redrive_of_one_error_takes_only_its_dead_letters_and_none_twice() {
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let mut fx = Fixture::new(1, config);
    let mut by_error: BTreeMap<&str, BTreeSet<(PartitionId, Offset)>> = BTreeMap::new();
    for i in 0..9 {
        fx.publish(Some(&format!("k{i}")));
    }
    for (i, d) in fx.receive(10).into_iter().enumerate() {
        // Interleaved: timeout, card declined, timeout, ...
        let error = if i % 3 == 1 {
            "card declined"
        } else {
            "timeout"
        };
        fx.rt
            .block_on(fx.b().reject("workers", &d.lease, error))
            .unwrap();
        by_error.entry(error).or_default().insert(place(&d));
    }
    assert_eq!(fx.dead().len(), 9);

    let redriven = fx
        .rt
        .block_on(fx.b().redrive_dead_letters_with(
            "workers",
            RedriveTarget::Group,
            2,
            Some("card declined"),
        ))
        .unwrap();
    assert_eq!(redriven, 2, "at most max");
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    assert_eq!(stats.dead_letters, 7);
    let listed = fx.dead();
    assert_eq!(listed.len(), 7);
    assert_eq!(
        listed.iter().filter(|d| d.error == "card declined").count(),
        1,
        "the third card declined is still a dead letter"
    );
    let again: BTreeSet<_> = fx.receive(10).iter().map(place).collect();
    assert_eq!(again.len(), 2);
    assert!(again.is_subset(&by_error["card declined"]), "{again:?}");

    // Kept across a restart: the rest of that error, then everything else,
    // each once.
    fx.reopen();
    assert_eq!(fx.dead().len(), 7);
    let rest = fx
        .rt
        .block_on(fx.b().redrive_dead_letters_with(
            "workers",
            RedriveTarget::Group,
            100,
            Some("card declined"),
        ))
        .unwrap();
    assert_eq!(rest, 1);
    assert_eq!(fx.redrive(RedriveTarget::Group), 6);
    assert!(fx.dead().is_empty());
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    assert_eq!((stats.dead_letters, stats.counters.redriven), (0, 7));
    let mut delivered: Vec<_> = Vec::new();
    for _ in 0..3 {
        delivered.extend(fx.receive(20).iter().map(place));
    }
    let unique: BTreeSet<_> = delivered.iter().copied().collect();
    assert_eq!(
        delivered.len(),
        unique.len(),
        "a dead letter came back twice"
    );
    let all: BTreeSet<_> = by_error.values().flatten().copied().collect();
    // The first two were received before the restart and are leased no
    // more: after the restart they are due again.
    assert!(unique.is_subset(&all));
    assert!(unique.len() >= 7, "{unique:?}");
    assert_eq!(
        fx.rt
            .block_on(fx.b().redrive_dead_letters_with(
                "workers",
                RedriveTarget::Group,
                100,
                Some("timeout"),
            ))
            .unwrap(),
        0,
        "nothing is left to redrive"
    );
}

#[test]
fn a_redrive_to_a_topic_publishes_for_every_consumer_of_it() {
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let fx = Fixture::new(2, config);
    let origin: BTreeSet<_> = (0..3).map(|i| fx.publish(Some(&format!("k{i}")))).collect();
    for d in fx.receive(10) {
        fx.nack(&d, None).unwrap();
    }
    assert_eq!(fx.redrive(RedriveTarget::Topic("jobs".into())), 3);
    assert!(fx.dead().is_empty());
    assert_eq!(fx.high_watermark_sum("jobs"), 6);
    let again = fx.receive(10);
    assert_eq!(again.len(), 3);
    for d in &again {
        assert_eq!(d.attempt, 1);
        assert!(
            !origin.contains(&place(d)),
            "it is a new event in the topic"
        );
        fx.ack(d).unwrap();
    }
    assert!(matches!(
        fx.rt.block_on(fx.b().redrive_dead_letters(
            "workers",
            RedriveTarget::Topic("nope".into()),
            1
        )),
        Err(QueueError::UnknownTopic(_))
    ));
}

#[test]
fn released_deliveries_are_due_at_once_and_do_not_count_as_attempts() {
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let mut fx = Fixture::new(1, config);
    for _ in 0..3 {
        fx.publish(None);
    }
    let got = fx.receive(3);
    let leases: Vec<LeaseId> = got.iter().map(|d| d.lease).collect();
    fx.ack(&got[0]).unwrap();
    let answers = fx.rt.block_on(fx.b().release("workers", &leases)).unwrap();
    assert!(
        matches!(answers[0], Err(QueueError::UnknownLease(_))),
        "acked already"
    );
    assert!(answers[1].is_ok() && answers[2].is_ok());
    // With one delivery allowed, a release that counted would dead-letter.
    fx.reopen();
    let again = fx.receive(3);
    assert_eq!(again.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1, 1]);
    assert!(fx.dead().is_empty());
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    assert_eq!(
        stats.counters.released, 0,
        "counters start over with the broker"
    );
}

#[test]
fn an_extended_lease_outlives_its_ack_timeout() {
    let config = QueueConfig {
        ack_timeout: Duration::from_secs(10),
        ..QueueConfig::default()
    };
    let fx = Fixture::new(1, config);
    fx.publish(None);
    let d = fx.receive(1).remove(0);
    fx.advance(Duration::from_secs(8));
    let extend = |timeout| {
        fx.rt
            .block_on(fx.b().extend_lease("workers", &d.lease, timeout))
    };
    let deadline = extend(Duration::from_secs(60)).unwrap();
    assert_eq!(deadline, fx.b().clock().now().0 + 60_000);
    fx.advance(Duration::from_secs(50));
    assert!(fx.receive(1).is_empty(), "still leased");
    fx.ack(&d).unwrap();
    assert!(matches!(
        extend(Duration::from_secs(1)),
        Err(QueueError::UnknownLease(_))
    ));
    fx.publish(None);
    let late = fx.receive(1).remove(0);
    fx.advance(Duration::from_secs(11));
    assert!(matches!(
        fx.rt.block_on(
            fx.b()
                .extend_lease("workers", &late.lease, Duration::from_secs(5))
        ),
        Err(QueueError::LeaseExpired(_))
    ));
    assert!(matches!(
        fx.rt.block_on(
            fx.b()
                .extend_lease("workers", &late.lease, Duration::from_secs(7200))
        ),
        Err(QueueError::InvalidConfig(_))
    ));
}

#[test]
fn a_queue_group_starts_from_latest_or_a_time() {
    let fx = Fixture::new(2, QueueConfig::default());
    fx.publish(Some("a"));
    fx.publish(Some("b"));
    fx.b()
        .create_queue_group(
            "fresh",
            "jobs",
            QueueConfig::default(),
            StartPosition::Latest,
        )
        .unwrap();
    fx.advance(Duration::from_secs(5));
    let cut = fx.b().clock().now();
    let late = fx.publish(Some("c"));
    fx.b()
        .create_queue_group(
            "since",
            "jobs",
            QueueConfig::default(),
            StartPosition::Timestamp(cut),
        )
        .unwrap();
    for group in ["fresh", "since"] {
        let got = fx.rt.block_on(fx.b().receive(group, 10)).unwrap();
        assert_eq!(got.iter().map(place).collect::<Vec<_>>(), [late], "{group}");
    }
    assert_eq!(fx.receive(10).len(), 3, "from earliest");
}

#[test]
fn a_deleted_queue_group_takes_its_dead_letters_and_files_with_it() {
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let mut fx = Fixture::new(1, config);
    fx.publish(None);
    fx.publish(None);
    let got = fx.receive(2);
    fx.nack(&got[0], None).unwrap();
    fx.redrive(RedriveTarget::Group);
    fx.publish(None);
    let held = fx.receive(1);
    assert_eq!(held.len(), 1);
    assert!(matches!(
        fx.rt.block_on(fx.b().delete_queue_group("workers", false)),
        Err(QueueError::Busy { leased: 2, .. })
    ));
    let dropped = fx
        .rt
        .block_on(fx.b().delete_queue_group("workers", true))
        .unwrap();
    assert_eq!(dropped, 0, "the one dead letter was redriven");
    assert!(matches!(fx.ack(&got[1]), Err(QueueError::UnknownGroup(_))));
    assert!(fx.b().describe_topic("jobs.workers.dlq").is_err());
    assert!(fx.b().describe_topic("jobs.workers.retry").is_err());
    fx.reopen();
    assert!(!fx.b().has_queue_group("workers"));
    // The name is free again, and the new group starts clean.
    fx.b()
        .create_queue_group(
            "workers",
            "jobs",
            QueueConfig::default(),
            StartPosition::Earliest,
        )
        .unwrap();
    assert_eq!(fx.receive(10).len(), 3);
    assert!(fx.dead().is_empty());
}

#[test]
fn purged_dead_letters_are_no_longer_listed() {
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let fx = Fixture::new(1, config);
    fx.publish(None);
    fx.publish(None);
    for d in fx.receive(10) {
        fx.rt
            .block_on(fx.b().reject("workers", &d.lease, "bad"))
            .unwrap();
    }
    assert_eq!(
        fx.rt
            .block_on(fx.b().purge_dead_letters("workers"))
            .unwrap(),
        2
    );
    assert!(fx.dead().is_empty());
    assert_eq!(
        fx.rt
            .block_on(fx.b().queue_stats("workers"))
            .unwrap()
            .dead_letters,
        0
    );
}

#[test]
fn stats_show_lag_leases_retries_and_counters() {
    let fx = Fixture::new(1, QueueConfig::default());
    for _ in 0..5 {
        fx.publish(None);
    }
    let got = fx.receive(3);
    fx.ack(&got[0]).unwrap();
    fx.nack(&got[1], Some(Duration::from_secs(60))).unwrap();
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    let p = stats.partitions[0];
    assert_eq!(
        (
            p.ack_floor,
            p.high_watermark,
            p.lag,
            p.in_flight,
            p.retrying
        ),
        (Offset(1), Offset(5), 4, 1, 1)
    );
    let c = stats.counters;
    assert_eq!(
        (
            c.delivered,
            c.redelivered,
            c.acked,
            c.nacked,
            c.dead_lettered
        ),
        (3, 0, 1, 1, 0)
    );
    assert_eq!(fx.b().describe_topic("jobs").unwrap().published, 5);
}

#[test]
fn shutdown_stops_leasing_and_waits_for_held_leases() {
    let fx = Fixture::new(1, QueueConfig::default());
    fx.publish(None);
    fx.publish(None);
    let got = fx.receive(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let left = rt.block_on(async {
        let b = fx.b();
        let shutdown = b.shutdown(Duration::from_secs(30));
        let answer = async {
            // The consumer finishes its work while the broker waits for it.
            tokio::task::yield_now().await;
            assert!(matches!(
                b.receive("workers", 1).await,
                Err(QueueError::ShuttingDown)
            ));
            b.ack("workers", &got[0].lease).await.unwrap();
        };
        let (left, ()) = tokio::join!(shutdown, answer);
        left.unwrap()
    });
    assert_eq!(
        left, 0,
        "the held lease was answered before the broker closed"
    );
}

#[test]
fn shutdown_gives_up_on_leases_at_its_deadline() {
    let fx = Fixture::new(1, QueueConfig::default());
    fx.publish(None);
    let _held = fx.receive(1);
    let left = fx
        .rt
        .block_on(fx.b().shutdown(Duration::from_millis(50)))
        .unwrap();
    assert_eq!(left, 1);
}

fn journal_len(fx: &Fixture) -> u64 {
    let path = fx.dir.path().join("broker/queues/workers.journal");
    std::fs::metadata(path).unwrap().len()
}

/// A receive's attempt counts are staged in the journal without waiting for
/// a sync: a clean close syncs them, a crash forgets them (the event comes
/// back as the same attempt again; leases end at any restart), and an ack
/// after a receive carries the receive's records with it.
#[test]
fn a_close_keeps_the_attempts_of_receives_and_a_crash_only_forgets_them() {
    let mut fx = Fixture::new(1, QueueConfig::default());
    fx.publish(None);
    let first = fx.receive(1).remove(0);
    assert_eq!(first.attempt, 1);
    fx.reopen();
    let second = fx.receive(1).remove(0);
    assert_eq!(place(&second), place(&first));
    assert_eq!(second.attempt, 2, "the close kept the first attempt");

    fx.crash();
    let again = fx.receive(1).remove(0);
    assert_eq!(place(&again), place(&first));
    assert_eq!(again.attempt, 2, "the crash forgot the second attempt");

    // An ack syncs the receives staged before it.
    fx.publish(None);
    fx.publish(None);
    fx.crash();
    let got = fx.receive(3);
    assert_eq!(got.iter().map(|d| d.attempt).collect::<Vec<_>>(), [2, 1, 1]);
    fx.ack(&got[1]).unwrap();
    fx.crash();
    let back = fx.receive(3);
    assert_eq!(
        back.iter()
            .map(|d| (place(d), d.attempt))
            .collect::<Vec<_>>(),
        [(place(&got[0]), 3), (place(&got[2]), 2)]
    );
}

#[test]
fn the_journal_is_folded_into_a_snapshot_and_answers_survive_it() {
    let config = QueueConfig {
        max_deliveries: 1000,
        ..QueueConfig::default()
    };
    let mut fx = Fixture::new(1, config);
    for _ in 0..40 {
        fx.publish(None);
    }
    // Nacks with long errors grow the journal past the compaction threshold
    // (1 MiB) in about a thousand answers.
    let error = "e".repeat(tidings_broker::ERROR_TEXT_BYTES_MAX);
    let mut largest = 0;
    let mut shrank = false;
    for _round in 0..30 {
        for d in fx.receive(100) {
            fx.rt
                .block_on(
                    fx.b()
                        .nack("workers", &d.lease, Some(Duration::ZERO), &error),
                )
                .unwrap();
            let len = journal_len(&fx);
            shrank |= len < largest;
            largest = largest.max(len);
        }
    }
    assert!(shrank, "the journal started over after a snapshot");
    assert!(largest < 3 * 1024 * 1024, "the journal stays bounded");
    // Ack half, restart: the acked half never comes back, the rest keep their
    // attempt counts across snapshot and journal.
    let delivered = fx.receive(100);
    assert_eq!(delivered.len(), 40);
    let attempts = delivered[0].attempt;
    for d in delivered.iter().step_by(2) {
        fx.ack(d).unwrap();
    }
    fx.reopen();
    let again = fx.receive(100);
    let want: BTreeSet<_> = delivered.iter().skip(1).step_by(2).map(place).collect();
    assert_eq!(again.iter().map(place).collect::<BTreeSet<_>>(), want);
    assert!(again.iter().all(|d| d.attempt == attempts + 1));
}

#[test]
fn a_torn_journal_tail_is_cut_and_everything_answered_holds() {
    let mut fx = Fixture::new(1, QueueConfig::default());
    for _ in 0..3 {
        fx.publish(None);
    }
    let got = fx.receive(10);
    fx.ack(&got[0]).unwrap();
    fx.ack(&got[1]).unwrap();
    fx.broker.take().unwrap().close().unwrap();
    // A write that was under way when the machine stopped: half a record.
    let path = fx.dir.path().join("broker/queues/workers.journal");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&path, &bytes).unwrap();
    fx.broker = Some(
        tidings_broker::Broker::open(fx.dir.path(), crate::support::options(&fx.clock)).unwrap(),
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
    let again = fx.receive(10);
    assert_eq!(
        again.iter().map(place).collect::<Vec<_>>(),
        [place(&got[2])]
    );
}

#[test]
fn concurrent_acks_share_syncs_and_all_hold_after_a_restart() {
    let mut fx = Fixture::new(4, QueueConfig::default());
    for i in 0..200 {
        fx.publish(Some(&format!("k{i}")));
    }
    let broker = fx.broker.take().unwrap();
    let broker = std::sync::Arc::new(broker);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let b = std::sync::Arc::clone(&broker);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = b.receive("workers", 8).await.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    // Answered together, so their records can share a sync.
                    let mut answers = tokio::task::JoinSet::new();
                    for d in &batch {
                        let (b, lease) = (std::sync::Arc::clone(&b), d.lease);
                        answers.spawn(async move { b.ack("workers", &lease).await });
                    }
                    while let Some(r) = answers.join_next().await {
                        r.unwrap().unwrap();
                    }
                    mine.extend(batch.iter().map(place));
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(acked.len(), 200);
    assert_eq!(
        acked.iter().collect::<BTreeSet<_>>().len(),
        200,
        "each once"
    );
    std::sync::Arc::into_inner(broker).unwrap().close().unwrap();
    fx.broker = Some(
        tidings_broker::Broker::open(fx.dir.path(), crate::support::options(&fx.clock)).unwrap(),
    );
    assert!(fx.receive(100).is_empty(), "every ack was durable");
}

#[test]
fn ack_many_answers_each_lease_on_its_own_and_the_acks_hold_after_a_restart() {
    let mut fx = Fixture::new(2, QueueConfig::default());
    for i in 0..6 {
        fx.publish(Some(&format!("k{i}")));
    }
    let got = fx.receive(10);
    assert_eq!(got.len(), 6);
    // Acked on its own first, so the batch finds it gone.
    fx.ack(&got[0]).unwrap();
    let mut leases: Vec<LeaseId> = got.iter().map(|d| d.lease).collect();
    // The same lease twice: the second finds it acked.
    leases.push(got[1].lease);
    let results = fx.rt.block_on(fx.b().ack_many("workers", &leases)).unwrap();
    assert_eq!(
        results.len(),
        leases.len(),
        "one result per lease, in order"
    );
    assert!(matches!(results[0], Err(QueueError::UnknownLease(_))));
    for r in &results[1..6] {
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(matches!(results[6], Err(QueueError::UnknownLease(_))));
    let unknown_group = fx.rt.block_on(fx.b().ack_many("nobody", &leases));
    assert!(matches!(unknown_group, Err(QueueError::UnknownGroup(_))));
    let stats = fx.rt.block_on(fx.b().queue_stats("workers")).unwrap();
    assert_eq!(stats.counters.acked, 6);
    fx.reopen();
    assert!(
        fx.receive(10).is_empty(),
        "every ack in the batch was durable"
    );
}
