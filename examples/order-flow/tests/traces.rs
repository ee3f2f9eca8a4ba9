//! Every hop of an order traced (feature `otlp`): the flow exports its
//! spans to a real OpenTelemetry Collector (the test command builds it),
//! and each order's spans — its `POST /orders`, the outbox's publish, every
//! service's processing and what each publishes — are one trace of its
//! own.
#![cfg(feature = "otlp")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

// Shared with the server's and the toolkit's trace tests.
#[allow(dead_code)]
#[path = "../../../crates/tidings-cli/tests/serve/collector.rs"]
mod collector;

use collector::Collector;

#[test]
fn each_order_is_one_trace_through_every_service() {
    let collector = Collector::start();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_order-flow"))
        .arg("--data")
        .arg(data.path())
        .args(["--orders", "12", "--rate", "0", "--seed", "7"])
        .args(["--decline-percent", "25", "--poison-percent", "0"])
        .args(["--transient-percent", "0", "--json", "--quiet"])
        .args(["--otlp-endpoint", &collector.endpoint()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["check"]["problem_count"], 0, "{report:#}");

    // The flow has exported everything before it exited; the collector
    // writes it out a little later: read until the count holds still.
    collector.until("order-flow", "process orders");
    let mut spans = collector.spans();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let again = collector.spans();
        if again.len() == spans.len() {
            break;
        }
        spans = again;
    }
    // The trace each order's POST started.
    let posts: BTreeMap<String, String> = spans
        .iter()
        .filter(|s| s.name == "POST /orders")
        .map(|s| {
            let order = s.attribute("order").and_then(|v| v.as_str()).unwrap();
            (order.to_owned(), s.trace_id.clone())
        })
        .collect();
    assert_eq!(posts.len(), 12, "one POST span per order");
    let traces: BTreeSet<&String> = posts.values().collect();
    assert_eq!(traces.len(), 12, "a trace of its own per order");
    // Every service's processing of an order's events, in its trace.
    let mut groups: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for span in spans.iter().filter(|s| s.name.starts_with("process ")) {
        // The correlation id, or the event's own id for the `order.placed`
        // that starts the flow.
        let correlation = span
            .attribute("messaging.message.conversation_id")
            .or_else(|| span.attribute("messaging.message.id"))
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("a process span without the order's correlation: {span:#?}"));
        let order = correlation.strip_suffix(".placed").unwrap();
        assert_eq!(
            Some(&span.trace_id),
            posts.get(order),
            "{order}'s processing outside its trace: {span:#?}"
        );
        let group = span
            .attribute("messaging.consumer.group.name")
            .and_then(|v| v.as_str())
            .unwrap();
        groups.entry(order).or_default().insert(group.to_owned());
    }
    for order in posts.keys() {
        let seen = groups.get(order.as_str()).cloned().unwrap_or_default();
        for group in [
            "payments",
            "inventory",
            "orders",
            "notifications",
            "analytics",
        ] {
            assert!(seen.contains(group), "{order}: no {group} span in {seen:?}");
        }
    }
}
