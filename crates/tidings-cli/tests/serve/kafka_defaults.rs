//! Kafka clients nobody here wrote, each at its default configuration, against
//! the listener: what a team's existing services do when pointed at
//! `tidings serve` without touching their client settings.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{node, python, Server};

/// kafka-python 3's admin client: CreateTopics (whose answer's config
/// sources it parses, refusing one it does not know), DescribeConfigs,
/// IncrementalAlterConfigs, CreatePartitions, DescribeCluster, DeleteTopics.
#[test]
fn kafka_python_admin_manages_topics_their_configs_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = python(
        "kafka_python_admin.py",
        &[&server.kafka_addr.to_string()],
        &server,
    );
    let created = &out["created"];
    assert_eq!(created["admin-plain"]["error_code"], 0, "{out}");
    assert_eq!(created["admin-plain"]["num_partitions"], 2, "{out}");
    assert_eq!(
        created["admin-configured"]["configs"]["retention.ms"],
        json!(["3600000", "DYNAMIC_TOPIC_CONFIG"]),
        "{out}"
    );
    assert_eq!(
        created["admin-configured"]["configs"]["cleanup.policy"],
        json!(["delete", "DEFAULT_CONFIG"]),
        "{out}"
    );
    // DescribeConfigs and IncrementalAlterConfigs.
    assert_eq!(out["modified_before"], json!({}), "{out}");
    assert_eq!(
        out["altered"],
        json!({"topic": {"admin-plain": "OK"}}),
        "{out}"
    );
    assert_eq!(
        out["modified_after"],
        json!({
            "retention.ms": ["60000", "DYNAMIC_TOPIC_CONFIG", false],
            "segment.bytes": ["1048576", "DYNAMIC_TOPIC_CONFIG", false],
        }),
        "{out}"
    );
    assert_eq!(
        out["all_topic_configs"]["min.insync.replicas"],
        json!(["1", "DEFAULT_CONFIG", true]),
        "{out}"
    );
    assert_eq!(
        out["broker_configs"]["num.partitions"],
        json!(["1", "DEFAULT_CONFIG", true]),
        "{out}"
    );
    let bad = out["bad_alter"].as_str().unwrap();
    assert!(
        bad.contains("InvalidConfiguration") && bad.contains("retention.ms=-7"),
        "{bad}"
    );
    let topic = crate::support::get(&server.url("/v1/topics/admin-plain")).json;
    assert_eq!(topic["config"]["retention_ms"], 60000, "{topic}");
    // CreatePartitions, DescribeCluster, DeleteTopics.
    assert_eq!(out["partitions_error"], 0, "{out}");
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 4, "{topic}");
    assert_eq!(out["shrink_error"], "InvalidPartitionsError", "{out}");
    assert_eq!(out["cluster"]["cluster_id"], "tidings", "{out}");
    assert_eq!(
        out["cluster"]["brokers"][0]["port"],
        server.kafka_addr.port(),
        "{out}"
    );
    assert_eq!(out["deleted"], json!([0]), "{out}");
    assert_eq!(
        out["delete_missing"], "UnknownTopicOrPartitionError",
        "{out}"
    );
    assert_eq!(out["listed"], json!(["admin-plain"]));
}

/// Seed 003's order flow: the notification service's group consumes
/// payment.completed and payment.failed, and commits both. Every order is
/// notified, a second instance takes its share after a rebalance, and a
/// fresh instance finds nothing left over.
#[test]
fn the_guides_order_flow_in_kafkajs_notifies_every_order_from_a_group_on_two_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let orders = 200;
    let out = node(
        "kafkajs_order_flow.js",
        &[&server.kafka_addr.to_string(), &orders.to_string()],
        &server,
    );
    assert_eq!(out["notified"], orders, "{out}");
    assert_eq!(out["failed"], orders / 10, "{out}");
    assert_eq!(out["after_resume"], json!([]), "{out}");
    let b = out["by_member"][1].as_u64().unwrap();
    assert!(
        b > 0,
        "the second instance took a share after the rebalance: {out}"
    );
    // The group's offsets, committed over Kafka, cover both topics.
    let group = crate::support::get(&server.url("/v1/groups/notification-service")).json;
    assert_eq!(
        group["topics"],
        json!(["payment.completed", "payment.failed"]),
        "{group}"
    );
    assert_eq!(group["lag"], 0, "{group}");
    // The payment service's idempotent producer asked for a producer id.
    assert!(server.metric("tidings_kafka_requests_total{api=\"InitProducerId\",") >= 1.0);
}

/// kafka-python 3's defaults: an idempotent producer (InitProducerId) and a
/// group on two topics that rebalances half-way and resumes from commits
/// covering both.
#[test]
fn kafka_python_3_produces_idempotently_and_consumes_two_topics_in_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Two partitions each: the range assignor (kafka-python's first) gives
    // each member a partition of each topic.
    for topic in ["payment.completed", "payment.failed"] {
        crate::support::create_topic(&server, json!({"name": topic, "partitions": 2}));
    }
    let count = 100;
    let out = python(
        "kafka_python_two_topics.py",
        &[&server.kafka_addr.to_string(), &count.to_string()],
        &server,
    );
    assert_eq!(out["idempotent"], true, "{out}");
    assert_eq!(out["unique"], 2 * count, "{out}");
    assert!(out["by_member"]["b"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["again"], json!([]), "{out}");
    let group = crate::support::get(&server.url("/v1/groups/notifier")).json;
    assert_eq!(group["lag"], 0, "{group}");
    assert!(
        server.metric("tidings_kafka_requests_total{api=\"InitProducerId\",") >= 1.0,
        "the producer asked for an id"
    );
}

/// One group, a kafka-python consumer and an HTTP member: the Kafka leader
/// gives the HTTP member its share in one rebalance, every record is read
/// once, ListGroups and DescribeGroups show both members with their
/// assignments, DeleteGroups removes the group once they have left.
#[test]
fn a_kafka_consumer_and_an_http_member_share_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = python(
        "kafka_python_mixed_group.py",
        &[&server.kafka_addr.to_string(), &server.url("")],
        &server,
    );
    assert_eq!(
        (out["unique"].as_u64(), out["reads"].as_u64()),
        (Some(60), Some(60)),
        "{out}"
    );
    assert!(out["by"]["http"].as_u64().unwrap() > 0, "{out}");
    assert!(out["by"]["kafka"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(
        (&out["kafka_assigned"], &out["http_assigned"]),
        (&json!([0]), &json!([1])),
        "{out}"
    );
    let listed = &out["listed"][0];
    assert_eq!(
        (
            &listed["group_id"],
            &listed["group_state"],
            &listed["protocol_type"]
        ),
        (&json!("mixed-group"), &json!("Stable"), &json!("consumer")),
        "{out}"
    );
    let members = out["described"]["mixed-group"]["members"]
        .as_array()
        .unwrap();
    let clients: Vec<&str> = members
        .iter()
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert!(clients.contains(&"tidings-http"), "{out}");
    for m in members {
        assert_eq!(
            m["member_assignment"]["assigned_partitions"][0]["partitions"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "each member one partition: {out}"
        );
    }
    assert_eq!(out["deleted"], json!({"mixed-group": "OK"}), "{out}");
    assert_eq!(out["after"]["mixed-group"]["group_state"], "Dead", "{out}");
}

/// The Java client (kafka-clients 4.x) at its defaults: an idempotent
/// producer, two consumers subscribed to two topics in one group with a
/// rebalance in the middle, and the AdminClient on topics and groups.
#[test]
fn the_java_client_at_its_defaults_produces_consumes_and_administers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let java = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/java");
    let out = Command::new("java")
        .current_dir(java)
        .args(["-cp", "lib/*", "KafkaDefaults.java"])
        .arg(server.kafka_addr.to_string())
        .arg("java")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Java client failed (run ./scripts/test to install it): {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["partitions"], json!([2, 2]), "{out}");
    assert_eq!(out["cluster_nodes"], 1, "{out}");
    // Keyed records land by the Java client's murmur2 partitioner, each
    // partition's offsets counting up from 0 in send order.
    let placements: Vec<&str> = out["placements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(placements.len(), 50, "{out}");
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for p in &placements {
        let (partition, offset) = p.rsplit_once('/').unwrap();
        let expected = next.entry(partition.to_owned()).or_default();
        assert_eq!(
            offset.parse::<u64>().unwrap(),
            *expected,
            "{p} in {placements:?}"
        );
        *expected += 1;
    }
    assert_eq!(
        (out["unique"].as_u64(), out["reads"].as_u64()),
        (Some(100), Some(100)),
        "{out}"
    );
    assert!(
        out["by_member"][1].as_u64().unwrap() > 0,
        "the second member took a share: {out}"
    );
    assert_eq!(out["group_state"], "Stable", "{out}");
    assert_eq!(out["group_members"], 2, "{out}");
    assert_eq!(out["listed"], true, "{out}");
    assert_eq!(out["owned_per_member"], json!([2, 2]), "{out}");
    assert_eq!(out["after_resume"], 0, "{out}");
    assert_eq!(out["committed_total"], 100, "{out}");
    assert_eq!(out["topics_after_delete"], json!([]), "{out}");
    // The default producer is idempotent: it asked for a producer id.
    assert!(server.metric("tidings_kafka_requests_total{api=\"InitProducerId\",") >= 1.0);
}

/// librdkafka (through confluent-kafka-python) with `enable.idempotence=true`:
/// librdkafka refuses to produce at all without InitProducerId. Its batches
/// are stored once each, densely; a two-topic group rebalances half-way and
/// resumes from its commits.
#[test]
fn librdkafka_with_idempotence_produces_and_consumes_two_topics_in_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--kafka-default-partitions", "2"]);
    let count = 100;
    let out = python(
        "confluent_kafka_idempotent.py",
        &[&server.kafka_addr.to_string(), &count.to_string()],
        &server,
    );
    assert_eq!(out["errors"], json!([]), "{out}");
    assert_eq!(out["delivered"], 2 * count, "{out}");
    assert_eq!(
        out["offsets_dense"], true,
        "no offset twice, none skipped: {out}"
    );
    assert_eq!(
        (out["unique"].as_u64(), out["reads"].as_u64()),
        (Some(200), Some(200)),
        "{out}"
    );
    assert!(out["by_member"]["b"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["again"], json!([]), "{out}");
    assert!(server.metric("tidings_kafka_requests_total{api=\"InitProducerId\",") >= 1.0);
}
