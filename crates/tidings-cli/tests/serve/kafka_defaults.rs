//! Kafka clients nobody here wrote, each at its default configuration, against
//! the listener: what a team's existing services do when pointed at
//! `tidings serve` without touching their client settings.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::Server;

/// Runs a client script of `tests/clients` with `args`; its one JSON line.
fn python(script: &str, args: &[&str], server: &Server) -> Value {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed (run ./scripts/test to install kafka-python): {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// kafka-python 3 reads every config's source in a CreateTopics answer and
/// refuses one it does not know.
#[test]
fn kafka_python_admin_creates_topics_and_reads_where_each_config_comes_from() {
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
    assert_eq!(out["listed"], json!(["admin-configured", "admin-plain"]));
}
