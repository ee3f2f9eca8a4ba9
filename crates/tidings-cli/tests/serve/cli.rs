//! The `tidings` command as a client of a running server: publish, tail,
//! consume in both group modes, topic, group, queue and dead-letter
//! administration, replay, and the errors a user sees.

use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::{call, failure, get, ok, post_json, tidings, Server};

#[test]
fn publish_tail_and_administer_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let created = ok(&tidings(
        &server,
        &["topics", "create", "orders", "--partitions", "2"],
        "",
    ));
    assert!(
        created.starts_with("created orders\t2 partitions"),
        "{created}"
    );

    let out = ok(&tidings(
        &server,
        &[
            "publish",
            "orders",
            "--type",
            "order.placed",
            "--key",
            "o-1",
            r#"{"total": 5}"#,
            "plain text",
        ],
        "",
    ));
    assert_eq!(out, "published 2 events to orders\n");
    let lines = concat!(
        r#"{"specversion":"1.0","id":"whole-1","source":"/pos","type":"order.paid"}"#,
        "\n\nsecond line\n"
    );
    let out = ok(&tidings(
        &server,
        &["publish", "orders", "--key", "o-1"],
        lines,
    ));
    assert_eq!(out, "published 2 events to orders\n");
    let again = ok(&tidings(
        &server,
        &["publish", "orders"],
        r#"{"specversion":"1.0","id":"whole-1","source":"/pos","type":"order.paid"}"#,
    ));
    assert_eq!(
        again,
        "published 0 events to orders (1 event was already there within its dedup window: not appended again)\n"
    );

    let all = ok(&tidings(&server, &["--json", "tail", "orders"], ""));
    let events: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    assert!(events.iter().any(|e| e["event"]["id"] == "whole-1"));
    let keyed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"]["partitionkey"] == "o-1")
        .collect();
    assert_eq!(keyed.len(), 3, "{all}");
    let partition = keyed[0]["partition"].as_u64().unwrap();
    assert!(
        keyed.iter().all(|e| e["partition"] == partition),
        "one key, one partition"
    );

    let tail = ok(&tidings(
        &server,
        &["tail", "orders", "--partition", &partition.to_string()],
        "",
    ));
    // The whole CloudEvent carried no key and may share the partition.
    let lines: Vec<&str> = tail.lines().filter(|l| !l.contains("whole-1")).collect();
    assert_eq!(lines.len(), 3, "{tail}");
    assert!(
        lines[0].contains("order.placed") && lines[0].ends_with("{\"total\":5}"),
        "{tail}"
    );
    assert!(lines[1].ends_with("plain text"), "{tail}");
    assert!(lines[2].ends_with("second line"), "{tail}");

    let list = ok(&tidings(&server, &["topics", "list"], ""));
    assert!(
        list.contains("orders\t2 partitions\tfsync always\t4 events"),
        "{list}"
    );
    ok(&tidings(
        &server,
        &[
            "topics",
            "alter",
            "orders",
            "--partitions",
            "3",
            "--dedup-window-ms",
            "0",
        ],
        "",
    ));
    let described = ok(&tidings(
        &server,
        &["--json", "topics", "describe", "orders"],
        "",
    ));
    let described: Value = serde_json::from_str(described.trim()).unwrap();
    assert_eq!(described["config"]["partitions"], 3);
    assert_eq!(described["config"]["dedup_window_ms"], Value::Null);
    let same = ok(&tidings(
        &server,
        &["topics", "alter", "orders", "--partitions", "3"],
        "",
    ));
    assert_eq!(same, "no change: orders has those settings already\n");
    let text = ok(&tidings(&server, &["topics", "describe", "orders"], ""));
    assert!(
        text.contains("fsync always, segments of ") && text.contains("dedup window off"),
        "{text}"
    );
    ok(&tidings(&server, &["topics", "delete", "orders"], ""));
    let err = failure(&tidings(&server, &["tail", "orders"], ""));
    assert!(
        err.contains("topic orders does not exist (unknown_topic, HTTP 404)"),
        "{err}"
    );
}

#[test]
fn consume_in_both_group_modes_and_handle_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    ok(&tidings(&server, &["topics", "create", "jobs"], ""));
    ok(&tidings(
        &server,
        &[
            "queues",
            "create",
            "workers",
            "--topic",
            "jobs",
            "--max-deliveries",
            "1",
        ],
        "",
    ));
    ok(&tidings(&server, &["publish", "jobs", "a", "b", "c"], ""));

    let consumed = ok(&tidings(
        &server,
        &["consume", "jobs", "--group", "billing"],
        "",
    ));
    assert_eq!(consumed.lines().count(), 3, "{consumed}");
    let group = ok(&tidings(
        &server,
        &["--json", "groups", "describe", "billing"],
        "",
    ));
    let group: Value = serde_json::from_str(group.trim()).unwrap();
    assert_eq!(group["lag"], 0, "committed as it went: {group}");
    assert_eq!(group["members"], json!([]), "and left when done");
    let listed = ok(&tidings(&server, &["groups", "list"], ""));
    assert!(listed.starts_with("billing\ttopic jobs"), "{listed}");
    ok(&tidings(
        &server,
        &["groups", "reset", "billing", "--to", "earliest"],
        "",
    ));
    let replayed = ok(&tidings(
        &server,
        &["consume", "jobs", "--group", "billing"],
        "",
    ));
    assert_eq!(replayed.lines().count(), 3, "a reset replays: {replayed}");

    // One event fails once (max_deliveries 1) and is dead-lettered.
    let received = post_json(&server.url("/v1/queues/workers/receive?max=1"), &json!({}));
    let lease = received.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    let nacked = call(
        "POST",
        &server.url(&format!("/v1/queues/workers/leases/{lease}/nack")),
        &[],
        b"",
    );
    assert_eq!(nacked.status, 204, "{}", nacked.text);
    let consumed = ok(&tidings(&server, &["consume", "--queue", "workers"], ""));
    assert_eq!(consumed.lines().count(), 2, "{consumed}");
    let queue = get(&server.url("/v1/queues/workers"));
    assert_eq!(queue.json["lag"], 0, "acked as printed: {}", queue.text);

    let letters = ok(&tidings(&server, &["dlq", "list", "workers"], ""));
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(letters.contains("attempts 1"), "{letters}");
    let shown = ok(&tidings(&server, &["dlq", "show", "workers", "0"], ""));
    assert!(shown.contains("tidings.cli.published"), "{shown}");
    let redriven = ok(&tidings(&server, &["dlq", "redrive", "workers"], ""));
    assert_eq!(
        redriven,
        "redrove 1 dead letter: delivered again to workers\n"
    );
    let again = ok(&tidings(&server, &["consume", "--queue", "workers"], ""));
    assert_eq!(again.lines().count(), 1, "{again}");
    let purged = ok(&tidings(&server, &["dlq", "purge", "workers"], ""));
    assert_eq!(purged, "purged 0 dead letters\n");
    let queues = ok(&tidings(&server, &["queues", "list"], ""));
    assert!(queues.starts_with("workers\ttopic jobs\tlag 0"), "{queues}");
}

#[test]
fn replay_copies_events_and_errors_are_plain_with_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    ok(&tidings(
        &server,
        &["topics", "create", "orders", "--partitions", "2"],
        "",
    ));
    ok(&tidings(&server, &["topics", "create", "rebuilt"], ""));
    let lines: String = (0..50).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    ok(&tidings(
        &server,
        &["publish", "orders", "--batch", "7"],
        &lines,
    ));
    let out = ok(&tidings(
        &server,
        &["replay", "orders", "--to", "rebuilt"],
        "",
    ));
    assert_eq!(out, "replayed 50 events from orders to rebuilt\n");
    let copied = ok(&tidings(
        &server,
        &["--json", "tail", "rebuilt", "-n", "50"],
        "",
    ));
    assert_eq!(copied.lines().count(), 50);

    for (args, expected) in [
        (vec!["publish", "nope", "x"], "topic nope does not exist"),
        (vec!["topics", "create", "bad name"], "invalid_topic"),
        // A value is named by the flag it came in, not the API's parameter.
        (
            vec!["topics", "create", "t", "--fsync", "sometimes"],
            "invalid value 'sometimes' for '--fsync <FSYNC>': expected always, never or interval:<ms>",
        ),
        (
            vec!["topics", "create", "t", "--fsync", "interval:0"],
            "interval:0 would sync after every write",
        ),
        (
            vec!["tail", "orders", "--from", "soon"],
            "invalid value 'soon' for '--from <FROM>'",
        ),
        (
            vec!["consume", "orders", "--group", "g", "--from", "7"],
            "an offset names a place in one partition",
        ),
        (
            vec!["topics", "alter", "orders"],
            "nothing to change: give --partitions",
        ),
        (vec!["groups", "describe", "ghost"], "unknown_group"),
        (vec!["dlq", "list", "ghost"], "unknown_group"),
        (vec!["publish", "orders"], "nothing to publish"),
    ] {
        let err = failure(&tidings(&server, &args, ""));
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{args:?}: {err}"
        );
    }
    let unreachable = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--server", "http://127.0.0.1:9", "topics", "list"])
        .output()
        .unwrap();
    let err = failure(&unreachable);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn a_closed_pipe_ends_tail_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    ok(&tidings(&server, &["topics", "create", "orders"], ""));
    let lines: String = (0..2000)
        .map(|i| format!("event number {i} with some padding to fill the pipe\n"))
        .collect();
    ok(&tidings(&server, &["publish", "orders"], &lines));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["tail", "orders", "--limit", "2000"])
        .env("TIDINGS_URL", server.url(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn streams_append_read_and_list_the_event_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = ok(&tidings(
        &server,
        &[
            "streams",
            "append",
            "order-5",
            "--expected-version",
            "no_stream",
            "--type",
            "order.placed",
            r#"{"total":3}"#,
        ],
        "",
    ));
    assert_eq!(
        out,
        "appended 1 event to order-5 at version 0 (position 0)\n"
    );
    let out = ok(&tidings(
        &server,
        &[
            "streams",
            "append",
            "order-5",
            "--expected-version",
            "0",
            "--type",
            "order.paid",
        ],
        "paid\nshipped\n",
    ));
    assert_eq!(
        out,
        "appended 2 events to order-5: versions 1–2 (positions 1–2)\n"
    );
    let refused = failure(&tidings(
        &server,
        &[
            "streams",
            "append",
            "order-5",
            "--expected-version",
            "0",
            "late",
        ],
        "",
    ));
    assert!(
        refused.contains("wrong_expected_version") || refused.contains("version 2"),
        "{refused}"
    );
    ok(&tidings(
        &server,
        &["streams", "append", "user-1", "--type", "user.joined", "hi"],
        "",
    ));

    let read = ok(&tidings(&server, &["streams", "read", "order-5"], ""));
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines.len(), 3, "{read}");
    assert!(
        lines[0].starts_with("order-5@0#0\torder.placed\t"),
        "{read}"
    );
    assert!(lines[2].ends_with("\tshipped"), "{read}");
    let newest = ok(&tidings(
        &server,
        &["streams", "read", "order-5", "--backward", "--limit", "1"],
        "",
    ));
    assert!(newest.starts_with("order-5@2#2\t"), "{newest}");
    let users = ok(&tidings(
        &server,
        &["streams", "all", "--category", "user"],
        "",
    ));
    assert!(users.starts_with("user-1@0#3\tuser.joined"), "{users}");
    let all = ok(&tidings(
        &server,
        &["--json", "streams", "all", "--from", "1"],
        "",
    ));
    assert_eq!(all.lines().count(), 3, "{all}");
    let info = ok(&tidings(&server, &["streams", "info", "order-5"], ""));
    assert_eq!(info, "order-5\tcategory order\tversion 2\tno read limits\n");
    let missing = failure(&tidings(&server, &["streams", "read", "nosuch"], ""));
    assert!(
        missing.contains("stream nosuch does not exist: no event was ever appended to it"),
        "{missing}"
    );
    let bad = failure(&tidings(
        &server,
        &["streams", "append", "order 6", "x"],
        "",
    ));
    assert!(
        bad.contains("stream name \"order 6\" holds ' '") && bad.contains("invalid_stream"),
        "{bad}"
    );
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (./scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_server_address_takes_host_port_and_https_through_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    ok(&tidings(&server, &["topics", "create", "orders"], ""));
    let run = |server_arg: &str, env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
        command
            .args(["--server", server_arg, "topics", "list"])
            .env_remove("TIDINGS_URL")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    // host:port is plain HTTP.
    let plain = run(&server.addr.to_string(), &[]);
    assert!(ok(&plain).starts_with("orders\t"));

    // https:// through a TLS front (Python's ssl) with a certificate of a
    // test CA: trusted once the CA is among the roots (SSL_CERT_FILE), and
    // refused before.
    let certs = dir.path();
    openssl(
        certs,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Tidings test CA",
        ],
    );
    openssl(
        certs,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        certs.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/tls_proxy.py");
    let mut proxy = Command::new("python3")
        .arg(script)
        .arg(certs.join("server.pem"))
        .arg(certs.join("server.key"))
        .arg(server.addr.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let https = format!("https://localhost:{}", port.trim());
    let ca = certs.join("ca.pem");
    let trusted = run(&https, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let untrusted = run(&https, &[]);
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(ok(&trusted).starts_with("orders\t"));
    // Refused at the handshake (or, on a machine with no roots at all, before).
    let err = failure(&untrusted);
    assert!(err.contains("certificate"), "{err}");

    // What is not an address is named with the flag or variable it came from.
    assert!(failure(&run("ftp://host", &[]))
        .starts_with("error: --server \"ftp://host\": invalid server address"));
    let from_env = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["topics", "list"])
        .env("TIDINGS_URL", "nowhere")
        .output()
        .unwrap();
    assert!(
        failure(&from_env).starts_with("error: TIDINGS_URL \"nowhere\": invalid server address")
    );
}

#[test]
fn human_output_reads_as_words_and_help_shows_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Empty lists say so.
    assert_eq!(
        ok(&tidings(&server, &["topics", "list"], "")),
        "no topics\n"
    );
    assert_eq!(
        ok(&tidings(&server, &["groups", "list"], "")),
        "no stream groups\n"
    );
    assert_eq!(
        ok(&tidings(&server, &["queues", "list"], "")),
        "no queue groups\n"
    );
    ok(&tidings(&server, &["topics", "create", "jobs"], ""));
    ok(&tidings(
        &server,
        &[
            "queues",
            "create",
            "workers",
            "--topic",
            "jobs",
            "--max-deliveries",
            "1",
        ],
        "",
    ));
    assert_eq!(
        ok(&tidings(&server, &["dlq", "list", "workers"], "")),
        "no dead letters in workers\n"
    );
    // A group shows each member, who it is and what it owns.
    let joined = post_json(
        &server.url("/v1/groups/readers/members"),
        &json!({"topic": "jobs"}),
    );
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let described = ok(&tidings(&server, &["groups", "describe", "readers"], ""));
    assert!(
        described.starts_with("readers\ttopic jobs\tgeneration 1\t1 member\tlag 0\n")
            && described.contains(&format!("\n  member {member} (tidings-http): jobs 0\n")),
        "{described}"
    );
    // JSON that does not parse is refused, unless sent as text.
    let refused = failure(&tidings(&server, &["publish", "jobs", "{\"total\": 4"], ""));
    assert!(
        refused.contains("argument 1: this looks like JSON but does not parse")
            && refused.contains("pass --raw"),
        "{refused}"
    );
    assert_eq!(
        ok(&tidings(
            &server,
            &["publish", "jobs", "--raw", "{\"total\": 4"],
            ""
        )),
        "published 1 event to jobs\n"
    );
    // A dead letter shows its event's attributes, not a JSON object.
    let got = post_json(&server.url("/v1/queues/workers/receive"), &json!({}));
    let lease = got.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    let nack = post_json(
        &server.url(&format!("/v1/queues/workers/leases/{lease}/nack")),
        &json!({"error": "no handler"}),
    );
    assert_eq!(nack.status, 204);
    let shown = ok(&tidings(&server, &["dlq", "show", "workers", "0"], ""));
    assert!(
        shown.contains("\n  type: tidings.cli.published\n")
            && shown.contains("\n  data: {\"total\": 4\n")
            && !shown.contains("null"),
        "{shown}"
    );
    let described = ok(&tidings(&server, &["queues", "describe", "workers"], ""));
    assert!(
        described.contains("1 delivered (0 again), 0 acked, 1 nacked") && !described.contains('{'),
        "{described}"
    );
    // Help names only flags a command has; serve's lists only the server's.
    let help = |args: &[&str]| ok(&tidings(&server, args, ""));
    let consume = help(&["consume", "--help"]);
    assert!(!consume.contains("--partition"), "{consume}");
    let serve = help(&["serve", "--help"]);
    assert!(
        serve.contains("--http-addr") && !serve.contains("--server") && !serve.contains("--json"),
        "{serve}"
    );
}

#[test]
fn a_following_consumer_with_retry_carries_on_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (http, kafka) = (server.addr.to_string(), server.kafka_addr.to_string());
    ok(&tidings(&server, &["topics", "create", "jobs"], ""));
    ok(&tidings(
        &server,
        &["queues", "create", "workers", "--topic", "jobs"],
        "",
    ));
    ok(&tidings(&server, &["publish", "jobs", "before"], ""));
    let consumer = crate::support::Running::start(
        &server,
        &["consume", "--queue", "workers", "--follow", "--retry"],
        dir.path(),
    );
    assert!(consumer.line().contains("\tbefore lease="));
    drop(server); // SIGKILL
    let server = Server::start_on(dir.path(), &http, &kafka, &[]);
    ok(&tidings(&server, &["publish", "jobs", "after"], ""));
    // "before" may come again first: its ack may have died with the server.
    while !consumer.line().contains("\tafter lease=") {}
    consumer.signal("INT");
    let (code, err, _) = consumer.wait();
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains("retrying"),
        "it said it lost the server: {err}"
    );
}
