//! The HTTP API fuzzed from its own OpenAPI document by schemathesis (PyPI),
//! a property-based API tester nobody here wrote: every answer must be a
//! non-5xx, carry a documented status and content type, and match its
//! documented schema. The test command runs a fast pass (a few examples per
//! operation); `scripts/schemathesis` runs it for as long as asked.

use std::process::Stdio;

use serde_json::json;

use crate::support::{call, create_topic, post_json, third_party, Server};

/// Where `scripts/tools` installs it.
fn schemathesis() -> std::process::Command {
    let program = std::env::var("TIDINGS_SCHEMATHESIS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/tidings-tools/schemathesis/bin/schemathesis")
    });
    third_party(&program)
}

/// A server with something behind the paths the fuzzer will try: a topic
/// with events, a stream group, a queue group with a dead letter, a stream
/// in the event store.
pub(crate) fn seeded_server(dir: &std::path::Path) -> Server {
    let server = Server::start(dir, &[]);
    create_topic(&server, json!({"name": "orders", "partitions": 2}));
    for i in 0..5 {
        let published = call(
            "POST",
            &server.url("/v1/topics/orders/events"),
            &[("content-type", "application/cloudevents+json")],
            json!({"specversion": "1.0", "id": format!("e{i}"), "source": "/seed",
                   "type": "order.placed", "data": {"n": i}})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(published.status, 200, "{}", published.text);
    }
    let group = post_json(
        &server.url("/v1/groups/readers/members"),
        &json!({"topic": "orders"}),
    );
    assert_eq!(group.status, 201, "{}", group.text);
    let queue = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "orders", "max_deliveries": 1}),
    );
    assert_eq!(queue.status, 201, "{}", queue.text);
    let appended = call(
        "POST",
        &server.url("/v1/streams/order-1/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        json!([{"specversion": "1.0", "id": "s1", "source": "/seed", "type": "order.placed"}])
            .to_string()
            .as_bytes(),
    );
    assert!(appended.status < 300, "{}", appended.text);
    server
}

/// Runs schemathesis against `server`; its output, and whether it passed.
pub(crate) fn run(server: &Server, extra: &[&str]) -> (bool, String) {
    // It keeps a cache of what it found in its working directory.
    let scratch = tempfile::tempdir().unwrap();
    let out = schemathesis()
        .current_dir(scratch.path())
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--url", &server.url("")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--workers", "1", "--no-color", "--seed", "20261205"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--generation-database", "none"])
        // Long-polls may wait up to the server's 30 s limit.
        .args(["--request-timeout", "35"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("schemathesis is not installed: run ./scripts/test (scripts/tools installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded_server(dir.path());
    // The test command's pass: a few examples per operation. A longer one
    // (scripts/schemathesis) gives a time budget instead.
    let budget = std::env::var("TIDINGS_SCHEMATHESIS_SECONDS").ok();
    let args: Vec<&str> = match &budget {
        Some(seconds) => vec!["--max-time", seconds],
        None => vec!["--max-examples", "15"],
    };
    let (passed, output) = run(&server, &args);
    if budget.is_some() {
        eprintln!("{output}");
    }
    assert!(
        passed,
        "schemathesis failed:\n{output}\nserver log (tail):\n{}",
        server
            .logs()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // It ran: the summary names the operations it tested.
    assert!(output.contains("passed"), "{output}");
}
