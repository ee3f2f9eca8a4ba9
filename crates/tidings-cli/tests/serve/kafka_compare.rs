//! The same Java client scenarios against Tidings and against Apache Kafka
//! itself (4.3, KRaft, started on loopback by the test command with
//! `scripts/kafka`): what the clients observe must agree — where each keyed
//! record lands and at which offset, how a group on two topics shares them
//! and resumes, and the error each bad request gets.

use std::process::Command;

use serde_json::Value;

use crate::support::Server;

/// The Apache Kafka broker the test command started.
fn kafka() -> String {
    std::env::var("TIDINGS_TEST_KAFKA").expect(
        "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
    )
}

/// Runs a Java scenario of `tests/clients/java` against `bootstrap`.
fn java(class: &str, args: &[&str], against: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/java");
    let out = Command::new("java")
        .current_dir(dir)
        .args(["-cp", "lib/*", &format!("{class}.java")])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{class} against {against} failed (run ./scripts/test to install the Java client): {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_java_clients_at_their_defaults_see_the_same_on_tidings_as_on_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ours = server.kafka_addr.to_string();
    // Fresh names on the long-lived Kafka broker; the same on both.
    let prefix = format!("java{}", std::process::id());
    let mut on_tidings = java("KafkaDefaults", &[&ours, &prefix], "Tidings");
    let mut on_kafka = java("KafkaDefaults", &[&kafka(), &prefix], "Apache Kafka");
    // How many records each member happened to read depends on timing alone.
    for out in [&mut on_tidings, &mut on_kafka] {
        out.as_object_mut().unwrap().remove("by_member");
    }
    assert_eq!(on_tidings, on_kafka, "left: Tidings, right: Apache Kafka");
}

#[test]
fn bad_requests_get_the_errors_kafka_gives_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let prefix = format!("cmp{}", std::process::id());
    let on_tidings = java(
        "KafkaErrors",
        &[&server.kafka_addr.to_string(), &prefix],
        "Tidings",
    );
    let on_kafka = java("KafkaErrors", &[&kafka(), &prefix], "Apache Kafka");
    assert_eq!(on_tidings, on_kafka, "left: Tidings, right: Apache Kafka");
    // And the answers are the refusals they should be, not a shared failure.
    assert_eq!(on_kafka["create"], "ok", "{on_kafka}");
    assert_eq!(
        on_kafka["create_again"], "TopicExistsException",
        "{on_kafka}"
    );
    assert_eq!(
        on_kafka["delete_busy_group"], "GroupNotEmptyException",
        "{on_kafka}"
    );
}
