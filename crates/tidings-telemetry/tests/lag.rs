//! Lag in seconds, read at the scrape on a broker whose clock the test moves:
//! the age of the oldest event a group has not consumed, per group and
//! partition, and the age of a queue group's oldest dead letter.

use std::sync::Arc;
use std::time::Duration;

use tidings_broker::{
    Broker, BrokerOptions, JoinOptions, LogOptions, QueueConfig, StartPosition, TopicSpec,
};
use tidings_types::{CloudEvent, ManualClock, Offset, PartitionId, TimestampMs};

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_in_seconds_is_the_age_of_the_oldest_event_not_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)));
    let options = BrokerOptions {
        log: LogOptions {
            clock: clock.clone(),
            ..LogOptions::default()
        },
        ..BrokerOptions::default()
    };
    let broker = Arc::new(Broker::open(dir.path(), options).unwrap());
    broker
        .create_topic("orders", TopicSpec::with_partitions(1))
        .unwrap();
    // A stream group that has committed offset 0 (its member then goes
    // away; the group keeps its offsets).
    let member = broker
        .join_group("audit", "orders", JoinOptions::default())
        .unwrap();
    broker
        .poll("audit", &member, 1024, Duration::ZERO)
        .await
        .unwrap();
    broker
        .commit("audit", &member, &[(PartitionId(0), Offset(0))])
        .unwrap();
    broker
        .create_queue_group(
            "billing",
            "orders",
            QueueConfig::default(),
            StartPosition::Earliest,
        )
        .unwrap();
    let group = "tidings_group_lag_seconds{group=\"audit\",topic=\"orders\",partition=\"0\"}";
    let queue = "tidings_queue_lag_seconds{group=\"billing\",topic=\"orders\",partition=\"0\"}";
    let dead = "tidings_queue_oldest_dead_letter_age_seconds{group=\"billing\",topic=\"orders\"}";

    // Nothing waits: no lag.
    let text = tidings_telemetry::render_broker(&broker).await;
    assert_eq!(
        (
            sample(&text, group),
            sample(&text, queue),
            sample(&text, dead)
        ),
        (0.0, 0.0, 0.0)
    );
    assert!(text.contains("# HELP tidings_group_lag_seconds "), "{text}");

    // The first event, then 30 s later a second: the oldest decides.
    broker
        .publish("orders", CloudEvent::new("/shop", "order.placed"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    broker
        .publish("orders", CloudEvent::new("/shop", "order.placed"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(12));
    let text = tidings_telemetry::render_broker(&broker).await;
    assert_eq!(sample(&text, group), 42.0, "{text}");
    assert_eq!(sample(&text, queue), 42.0, "{text}");

    // The queue group rejects the first (a dead letter, appended now) and
    // acks the second: no lag; the dead letter ages from when it was made.
    let deliveries = broker.receive("billing", 2).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    broker
        .reject("billing", &deliveries[0].lease, "bad")
        .await
        .unwrap();
    broker.ack("billing", &deliveries[1].lease).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let text = tidings_telemetry::render_broker(&broker).await;
    assert_eq!(sample(&text, queue), 0.0, "{text}");
    assert_eq!(sample(&text, dead), 5.0, "{text}");
    assert_eq!(
        sample(&text, group),
        47.0,
        "the stream group has committed nothing: {text}"
    );
}
