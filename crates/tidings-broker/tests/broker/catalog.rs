//! The catalog's scan: counts by type what the topics store, in steps within
//! a byte budget, and forgets a topic deleted (a new one of the same name
//! starts over).

use serde_json::json;
use tidings_broker::TopicSpec;
use tidings_types::CloudEvent;

use crate::support::Harness;

fn ev(id: u64, ty: &str, source: &str) -> CloudEvent {
    CloudEvent::new(source, ty)
        .with_id(id.to_string())
        .with_json(&json!({"n": id, "pad": "x".repeat(200)}))
        .unwrap()
}

#[tokio::test]
async fn the_scan_counts_by_type_in_steps_and_forgets_deleted_topics() {
    let h = Harness::new();
    let b = h.b();
    b.create_topic("t", TopicSpec::with_partitions(2)).unwrap();
    let mut batch: Vec<CloudEvent> = (0..300).map(|i| ev(i, "a.done", "/one")).collect();
    batch.extend((300..400).map(|i| ev(i, "b.done", if i % 2 == 0 { "/one" } else { "/two" })));
    b.publish_batch("t", batch).await.unwrap();
    // A small budget leaves some for the next step; what is left is said.
    assert!(!b.scan_catalog(4 * 1024));
    let part = b.catalog();
    assert!(part[0].unscanned > 0);
    let mut steps = 1;
    while !b.scan_catalog(4 * 1024) {
        steps += 1;
        assert!(steps < 1000);
    }
    let all = b.catalog();
    assert_eq!(all[0].unscanned, 0);
    let counts: Vec<(Option<&str>, u64, usize)> = all[0]
        .types
        .iter()
        .map(|t| (t.ty.as_deref(), t.count, t.sources.len()))
        .collect();
    assert_eq!(counts, [(Some("a.done"), 300, 1), (Some("b.done"), 100, 2)]);
    // Scanning again counts nothing twice.
    assert!(b.scan_catalog(usize::MAX));
    assert_eq!(b.catalog()[0].types[0].count, 300);

    b.delete_topic("t").unwrap();
    assert!(b.scan_catalog(usize::MAX));
    assert!(b.catalog().is_empty());
    b.create_topic("t", TopicSpec::with_partitions(2)).unwrap();
    b.publish("t", ev(1, "c.done", "/three")).await.unwrap();
    assert!(b.scan_catalog(usize::MAX));
    // Deleted and made again between two scans, with more than before: the
    // new topic is counted from its start.
    b.delete_topic("t").unwrap();
    b.create_topic("t", TopicSpec::with_partitions(2)).unwrap();
    let more: Vec<CloudEvent> = (0..5).map(|i| ev(i, "c.done", "/three")).collect();
    b.publish_batch("t", more).await.unwrap();
    assert!(b.scan_catalog(usize::MAX));
    let again = b.catalog();
    assert_eq!(again[0].types.len(), 1);
    assert_eq!(
        (again[0].types[0].ty.as_deref(), again[0].types[0].count),
        (Some("c.done"), 5)
    );
}
