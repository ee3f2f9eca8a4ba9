//! The broker's topics, publishing and producer dedup, through its public API.

use crate::support::Harness;
use std::sync::Arc;
use std::time::Duration;

use tidings_broker::partitioner::partition_for_key;
use tidings_broker::{
    AdminError, Broker, BrokerOptions, Payload, PublishError, ReadError, TopicSpec,
};
use tidings_types::{CloudEvent, Offset, PartitionId};

/// The publish tests need nothing beyond the shared harness.
type Fixture = Harness;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn spec(partitions: u32) -> TopicSpec {
    TopicSpec::with_partitions(partitions)
}

#[test]
fn keyed_events_land_where_kafkas_partitioner_puts_them_and_read_back_as_events() {
    let fx = Fixture::new();
    fx.b().create_topic("orders", spec(6)).unwrap();
    rt().block_on(async {
        for key in ["order-1", "order-2", "customer-77", "x"] {
            let event = CloudEvent::new("/shop", "order.placed")
                .with_partitionkey(key)
                .with_data("text/plain", key.to_owned());
            let published = fx.b().publish("orders", event.clone()).await.unwrap();
            assert_eq!(
                published.partition,
                PartitionId(partition_for_key(key.as_bytes(), 6))
            );
            assert!(!published.duplicate);
            let entries = fx
                .b()
                .read("orders", published.partition, published.offset, 1)
                .unwrap();
            assert_eq!(entries[0].offset, published.offset);
            assert_eq!(entries[0].payload, Payload::Event(event));
        }
    });
    assert!(matches!(
        fx.b().read("orders", PartitionId(0), Offset(99), 1),
        Err(ReadError::Log(
            tidings_log::ReadError::OffsetOutOfRange { .. }
        ))
    ));
    assert!(matches!(
        fx.b().read("nope", PartitionId(0), Offset(0), 1),
        Err(ReadError::UnknownTopic(_))
    ));
}

#[test]
fn unkeyed_events_are_spread_over_the_partitions() {
    let fx = Fixture::new();
    fx.b().create_topic("logs", spec(4)).unwrap();
    rt().block_on(async {
        let batch: Vec<CloudEvent> = (0..40)
            .map(|_| CloudEvent::new("/svc", "log.line"))
            .collect();
        fx.b().publish_batch("logs", batch).await.unwrap();
    });
    assert_eq!(fx.high_watermarks("logs"), [10, 10, 10, 10]);
}

#[test]
fn a_repeated_event_id_answers_the_original_offset() {
    let fx = Fixture::new();
    fx.b().create_topic("payments", spec(3)).unwrap();
    rt().block_on(async {
        let event = CloudEvent::new("/pay", "payment.completed").with_partitionkey("p-1");
        let first = fx.b().publish("payments", event.clone()).await.unwrap();
        let other = fx
            .b()
            .publish("payments", CloudEvent::new("/pay", "payment.completed"))
            .await
            .unwrap();
        let again = fx.b().publish("payments", event.clone()).await.unwrap();
        assert!(!first.duplicate && !other.duplicate && again.duplicate);
        assert_eq!(
            (again.partition, again.offset),
            (first.partition, first.offset)
        );
        // Repeats inside one batch, and of an earlier event, are appended once.
        let fresh = CloudEvent::new("/pay", "payment.failed");
        let answers = fx
            .b()
            .publish_batch(
                "payments",
                vec![fresh.clone(), event.clone(), fresh.clone()],
            )
            .await
            .unwrap();
        assert!(!answers[0].duplicate && answers[1].duplicate && answers[2].duplicate);
        assert_eq!(answers[2].offset, answers[0].offset);
        assert_eq!(answers[1].offset, first.offset);
    });
    assert_eq!(fx.high_watermarks("payments").iter().sum::<u64>(), 3);
}

#[test]
fn dedup_keys_on_source_and_id_so_producers_may_share_ids() {
    let mut fx = Fixture::new();
    fx.b().create_topic("orders", spec(2)).unwrap();
    let shop = CloudEvent::new("/shop", "order.placed").with_id("42");
    let billing = CloudEvent::new("/billing", "order.placed").with_id("42");
    // "/shop" + "42" and "/shop4" + "2" must not make the same key.
    let tricky = CloudEvent::new("/shop4", "order.placed").with_id("2");
    rt().block_on(async {
        for e in [&shop, &billing, &tricky] {
            let published = fx.b().publish("orders", e.clone()).await.unwrap();
            assert!(!published.duplicate, "{} {}", e.source(), e.id());
        }
        let batch = fx
            .b()
            .publish_batch("orders", vec![shop.clone(), billing.clone()])
            .await
            .unwrap();
        assert!(batch.iter().all(|a| a.duplicate));
    });
    assert_eq!(fx.high_watermarks("orders").iter().sum::<u64>(), 3);
    // The index rebuilt from the log keys on both too.
    fx.reopen();
    rt().block_on(async {
        for e in [&shop, &billing, &tricky] {
            assert!(fx.b().publish("orders", e.clone()).await.unwrap().duplicate);
        }
        let other = CloudEvent::new("/crm", "order.placed").with_id("42");
        assert!(!fx.b().publish("orders", other).await.unwrap().duplicate);
    });
    assert_eq!(fx.high_watermarks("orders").iter().sum::<u64>(), 4);
}

#[test]
fn dedup_survives_a_restart_and_ends_with_the_window() {
    let mut fx = Fixture::new();
    let window = Duration::from_secs(60);
    fx.b()
        .create_topic(
            "orders",
            TopicSpec {
                dedup_window: Some(window),
                ..spec(2)
            },
        )
        .unwrap();
    let event = CloudEvent::new("/shop", "order.placed").with_partitionkey("o-9");
    let first = rt()
        .block_on(fx.b().publish("orders", event.clone()))
        .unwrap();
    fx.reopen();
    fx.advance(Duration::from_secs(30));
    let again = rt()
        .block_on(fx.b().publish("orders", event.clone()))
        .unwrap();
    assert!(again.duplicate, "the window outlives the restart");
    assert_eq!(again.offset, first.offset);
    fx.advance(Duration::from_secs(31));
    fx.reopen();
    let late = rt().block_on(fx.b().publish("orders", event)).unwrap();
    assert!(!late.duplicate, "after the window the id is new again");
    assert_eq!(late.offset, first.offset.next());
}

#[test]
fn concurrent_publishes_of_one_id_append_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), BrokerOptions::default()).unwrap());
    broker.create_topic("orders", spec(4)).unwrap();
    let event = CloudEvent::new("/shop", "order.placed");
    let answers = rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let (b, e) = (Arc::clone(&broker), event.clone());
            // Half alone, half inside batches with other events.
            tasks.spawn(async move {
                if i % 2 == 0 {
                    b.publish("orders", e).await.unwrap()
                } else {
                    let batch = vec![CloudEvent::new("/shop", "order.viewed"), e];
                    b.publish_batch("orders", batch)
                        .await
                        .unwrap()
                        .pop()
                        .unwrap()
                }
            });
        }
        tasks.join_all().await
    });
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(answers
        .iter()
        .all(|a| a.offset == answers[0].offset && a.partition == answers[0].partition));
    let total: u64 = broker
        .describe_topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark.0)
        .sum();
    assert_eq!(
        total,
        1 + 8,
        "one copy of the shared event, and the eight others"
    );
}

#[test]
fn with_dedup_off_every_publish_is_appended() {
    let fx = Fixture::new();
    fx.b()
        .create_topic(
            "raw",
            TopicSpec {
                dedup_window: None,
                ..spec(1)
            },
        )
        .unwrap();
    let event = CloudEvent::new("/s", "t");
    rt().block_on(async {
        for _ in 0..3 {
            assert!(
                !fx.b()
                    .publish("raw", event.clone())
                    .await
                    .unwrap()
                    .duplicate
            );
        }
    });
    assert_eq!(fx.high_watermarks("raw"), [3]);
}

#[test]
fn bad_input_gets_typed_errors_and_changes_nothing() {
    let fx = Fixture::new();
    let b = fx.b();
    for bad in [
        TopicSpec {
            dedup_window: Some(Duration::ZERO),
            ..spec(1)
        },
        TopicSpec {
            dedup_window: Some(Duration::from_secs(2 * 24 * 3600)),
            ..spec(1)
        },
        spec(0),
    ] {
        assert!(matches!(
            b.create_topic("t", bad),
            Err(AdminError::InvalidSpec(_))
        ));
    }
    assert!(matches!(
        b.create_topic("../t", spec(1)),
        Err(AdminError::Log(_))
    ));
    assert!(b.list_topics().is_empty());
    assert!(matches!(
        b.describe_topic("nope"),
        Err(AdminError::UnknownTopic(_))
    ));
    assert!(matches!(
        b.delete_topic("nope"),
        Err(AdminError::UnknownTopic(_))
    ));
    b.create_topic("t", spec(1)).unwrap();
    assert!(matches!(
        b.create_topic("t", spec(1)),
        Err(AdminError::Log(_))
    ));
    rt().block_on(async {
        let err = b
            .publish("nope", CloudEvent::new("/s", "t"))
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::UnknownTopic(_)));
        let batch = vec![CloudEvent::new("/s", "t"), CloudEvent::new("", "t")];
        let err = b.publish_batch("t", batch).await.unwrap_err();
        assert!(
            matches!(err, PublishError::InvalidEvent { index: 1, .. }),
            "{err}"
        );
    });
    assert_eq!(
        fx.high_watermarks("t"),
        [0],
        "an invalid batch appends nothing"
    );
    b.delete_topic("t").unwrap();
    assert!(b.list_topics().is_empty());
}

/// A publisher that stops waiting (an HTTP client that goes away, a dropped
/// future) after its publish began: the append goes on, and the event's id is
/// recorded all the same, so publishing it again is answered as a duplicate
/// rather than appended a second time.
#[test]
fn a_publish_whose_caller_stops_waiting_still_records_its_id() {
    let fx = Fixture::new();
    fx.b().create_topic("orders", spec(1)).unwrap();
    rt().block_on(async {
        for n in 0..20 {
            let event = CloudEvent::new("/shop", "order.placed").with_id(format!("o-{n}"));
            // Polled once (the publish starts), then dropped.
            let _ =
                tokio::time::timeout(Duration::ZERO, fx.b().publish("orders", event.clone())).await;
            // The caller publishes it again.
            let again = fx.b().publish("orders", event.clone()).await.unwrap();
            let hw = fx.high_watermarks("orders")[0];
            assert_eq!(hw, n + 1, "event {n} is stored once ({again:?})");
        }
    });
}
