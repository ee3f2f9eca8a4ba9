//! Consumers as users of RabbitMQ, SQS and BullMQ expect them, through the
//! real binary: redrive to the failing group alone, clean stops on Ctrl-C and
//! SIGTERM, prefetch and release, lease extension, a worker running a command
//! per event, start positions, deleting groups and queues.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    call, create_topic, eventually, failure, get, kcat, ok, post_json, tidings, Running, Server,
};

/// Publishes events with these ids and data to `topic`.
fn publish(server: &Server, topic: &str, events: &[(&str, &str)]) {
    let batch: Vec<Value> = events
        .iter()
        .map(|(id, data)| {
            json!({"specversion": "1.0", "id": id, "source": "/t", "type": "job.created",
                   "datacontenttype": "text/plain", "data": data})
        })
        .collect();
    let answer = call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &[("content-type", "application/cloudevents-batch+json")],
        json!(batch).to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// Publishes `e-0`, `e-1`, ... up to `n` events to `topic`.
fn publish_numbered(server: &Server, topic: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("e-{i}")).collect();
    let events: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "x")).collect();
    publish(server, topic, &events);
}

/// The ids in the CLI's JSON event lines.
fn ids_of(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_redrive_reaches_the_group_that_dead_lettered_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs", "partitions": 2}));
    for (name, max) in [("workers", 1), ("audit", 5)] {
        let q = post_json(
            &server.url("/v1/queues"),
            &json!({"name": name, "topic": "jobs", "max_deliveries": max}),
        );
        assert_eq!(q.status, 201, "{}", q.text);
    }
    publish(&server, "jobs", &[("j-1", "a"), ("j-2", "b")]);
    // Workers fail both; the audit group and a Kafka consumer take them once.
    let got = post_json(&server.url("/v1/queues/workers/receive?max=10"), &json!({}));
    for d in got.json["deliveries"].as_array().unwrap() {
        let lease = d["lease"].as_str().unwrap();
        let nack = post_json(
            &server.url(&format!("/v1/queues/workers/leases/{lease}/nack")),
            &json!({"error": "handler failed"}),
        );
        assert_eq!(nack.status, 204, "{}", nack.text);
    }
    let audit = ok(&tidings(
        &server,
        &["--json", "consume", "--queue", "audit"],
        "",
    ));
    assert_eq!(ids_of(&audit).len(), 2);
    let kafka_read = |server: &Server| {
        kcat(server, &["-C", "-t", "jobs", "-e", "-q", "-f", "%o\\n"], "")
            .lines()
            .count()
    };
    assert_eq!(kafka_read(&server), 2);

    let redriven = ok(&tidings(&server, &["dlq", "redrive", "workers"], ""));
    assert_eq!(
        redriven,
        "redrove 2 dead letters: delivered again to workers\n"
    );
    let again = ok(&tidings(
        &server,
        &["--json", "consume", "--queue", "workers"],
        "",
    ));
    let mut ids = ids_of(&again);
    ids.sort();
    assert_eq!(ids, ["j-1", "j-2"]);
    // Nobody else sees them again: not the other queue group, not a Kafka
    // consumer of the topic.
    let audit = ok(&tidings(
        &server,
        &["--json", "consume", "--queue", "audit"],
        "",
    ));
    assert_eq!(audit, "", "the audit group got a redrive");
    assert_eq!(kafka_read(&server), 2, "the topic got a redrive");

    // Publishing to a topic stays available, named.
    let workers = server.url("/v1/queues/workers/receive?max=10");
    publish(&server, "jobs", &[("j-3", "c")]);
    let got = post_json(&workers, &json!({}));
    let lease = got.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    let reject = post_json(
        &server.url(&format!("/v1/queues/workers/leases/{lease}/reject")),
        &json!({}),
    );
    assert_eq!(reject.status, 204);
    let out = ok(&tidings(
        &server,
        &["dlq", "redrive", "workers", "--to", "jobs"],
        "",
    ));
    assert_eq!(out, "redrove 1 dead letter: published to jobs\n");
    assert_eq!(kafka_read(&server), 4, "j-3 and its copy");
}

#[test]
fn ctrl_c_leaves_the_group_at_once_so_it_can_be_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders", "partitions": 2}));
    publish(&server, "orders", &[("o-1", "x")]);
    let consumer = Running::start(
        &server,
        &["consume", "orders", "--group", "billing", "--follow"],
        dir.path(),
    );
    assert!(consumer.line().contains("o-1"));
    let members = |server: &Server| {
        get(&server.url("/v1/groups/billing")).json["members"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(members(&server), 1);
    consumer.signal("INT");
    let (code, err, _) = consumer.wait();
    assert_eq!(code, Some(130), "{err}");
    // Gone now, not after the session timeout: the group can be reset.
    assert_eq!(members(&server), 0);
    let reset = ok(&tidings(
        &server,
        &["groups", "reset", "billing", "--to", "earliest"],
        "",
    ));
    assert!(reset.starts_with("billing\ttopic orders"), "{reset}");
}

#[test]
fn a_stopped_queue_consumer_gives_back_what_it_did_not_handle() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs"}));
    // An hour's ack timeout: only a release makes the events due again soon.
    ok(&tidings(
        &server,
        &[
            "queues",
            "create",
            "workers",
            "--topic",
            "jobs",
            "--ack-timeout-ms",
            "3600000",
        ],
        "",
    ));
    publish_numbered(&server, "jobs", 20);

    // SIGTERM after the first event: the rest of its prefetch goes back.
    let consumer = Running::start(
        &server,
        &[
            "--json",
            "consume",
            "--queue",
            "workers",
            "--follow",
            "--prefetch",
            "5",
        ],
        dir.path(),
    );
    let mut first = vec![consumer.line()];
    consumer.signal("TERM");
    let (code, err, rest) = consumer.wait();
    assert_eq!(code, Some(143), "{err}");
    first.extend(rest);
    let queue = get(&server.url("/v1/queues/workers")).json;
    assert_eq!(queue["in_flight"], 0, "{queue}");
    assert!(
        queue["counters"]["released"].as_u64().unwrap() >= 1,
        "{queue}"
    );

    // A pipe closed by `head`: the same.
    let mut head = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "--json",
            "consume",
            "--queue",
            "workers",
            "--follow",
            "--prefetch",
            "5",
        ])
        .env("TIDINGS_URL", server.url(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(head.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = head.wait().unwrap();
    assert!(status.success(), "a closed pipe ends consume quietly");
    first.push(line.trim_end().to_owned());
    assert_eq!(get(&server.url("/v1/queues/workers")).json["in_flight"], 0);

    // The next consumer gets every event nobody handled, now.
    let rest = ok(&tidings(
        &server,
        &["--json", "consume", "--queue", "workers"],
        "",
    ));
    let mut all: Vec<String> = ids_of(&first.join("\n"));
    all.extend(ids_of(&rest));
    all.sort_by_key(|id| id[2..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..20).map(|i| format!("e-{i}")).collect();
    assert_eq!(all, expected, "each event handled once");
}

#[test]
fn a_queue_stream_holds_max_in_flight_and_gives_back_what_it_holds_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs"}));
    let q = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs", "ack_timeout_ms": 3_600_000}),
    );
    assert_eq!(q.status, 201);
    publish_numbered(&server, "jobs", 5);

    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(server.url("/v1/queues/workers/receive?max=5&max_in_flight=2"))
        .header("accept", "text/event-stream")
        .body(Vec::new())
        .unwrap();
    let response = crate::support::agent().run(request).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut next_lease = || loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let d: Value = serde_json::from_str(data).unwrap();
            break d["lease"].as_str().unwrap().to_owned();
        }
    };
    let first = next_lease();
    let _second = next_lease();
    let in_flight = || get(&server.url("/v1/queues/workers")).json["in_flight"].clone();
    assert_eq!(in_flight(), 2, "two held, no more sent");
    let ack = call(
        "POST",
        &server.url(&format!("/v1/queues/workers/leases/{first}/ack")),
        &[],
        b"",
    );
    assert_eq!(ack.status, 204);
    let _third = next_lease();
    eventually("the third is held", || in_flight() == 2);
    drop(reader);
    // The stream's two held deliveries come back, not counted as attempts.
    eventually("a closed stream gives its deliveries back", || {
        in_flight() == 0
    });
    let queue = get(&server.url("/v1/queues/workers")).json;
    assert_eq!(queue["counters"]["released"], 2, "{queue}");
    let rest = post_json(&server.url("/v1/queues/workers/receive?max=10"), &json!({}));
    let attempts: Vec<u64> = rest.json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 1, 1, 1], "{}", rest.text);
}

#[test]
fn a_lease_is_extended_for_a_long_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs"}));
    let q = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs", "ack_timeout_ms": 300}),
    );
    assert_eq!(q.status, 201);
    publish(&server, "jobs", &[("long", "x")]);
    let got = post_json(&server.url("/v1/queues/workers/receive"), &json!({}));
    let lease = got.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    let extend = |body: Value| {
        post_json(
            &server.url(&format!("/v1/queues/workers/leases/{lease}/extend")),
            &body,
        )
    };
    let extended = extend(json!({"timeout_ms": 60_000}));
    assert_eq!(extended.status, 200, "{}", extended.text);
    assert_eq!(extended.json["lease"], lease.as_str());
    // Past the ack timeout, the event is still this consumer's.
    std::thread::sleep(Duration::from_millis(600));
    let other = post_json(&server.url("/v1/queues/workers/receive"), &json!({}));
    assert_eq!(other.json["deliveries"], json!([]), "{}", other.text);
    let ack = call(
        "POST",
        &server.url(&format!("/v1/queues/workers/leases/{lease}/ack")),
        &[],
        b"",
    );
    assert_eq!(ack.status, 204, "{}", ack.text);
    assert_eq!(extend(json!({"timeout_ms": 1000})).code(), "unknown_lease");
    assert_eq!(extend(json!({"timeout_ms": 0})).code(), "invalid_request");
    assert_eq!(extend(json!({"ms": 10})).code(), "malformed_json");
}

#[test]
fn a_worker_runs_a_command_per_event_and_answers_by_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs"}));
    let created = ok(&tidings(
        &server,
        &[
            "queues",
            "create",
            "work",
            "--topic",
            "jobs",
            "--ack-timeout-ms",
            "1500",
            "--max-deliveries",
            "2",
            "--backoff-initial-ms",
            "10",
            "--backoff-factor",
            "3",
            "--backoff-max-ms",
            "20",
        ],
        "",
    ));
    assert!(
        created.contains("leases of 1500 ms, 2 attempts, backoff 10 ms ×3 up to 20 ms"),
        "{created}"
    );
    publish(
        &server,
        "jobs",
        &[
            ("ok-1", "fine"),
            ("slow-1", "slow"),
            ("fail-1", "fail"),
            ("bad-1", "poison"),
        ],
    );
    // `slow` outlives the ack timeout: the worker extends its lease. (The
    // timeout leaves a loaded machine room to send the extension in time;
    // at 400 ms a full test run once let the lease run out, and `slow`
    // became a third dead letter.)
    let script = r#"data=$(cat); case "$data" in
        *poison*) echo "cannot parse $TIDINGS_EVENT_ID" >&2; exit 65;;
        *fail*) echo "database unavailable" >&2; exit 1;;
        *slow*) sleep 3;;
    esac; echo "$TIDINGS_EVENT_ID attempt $TIDINGS_ATTEMPT" >> done.txt"#;
    let worker = Running::start(
        &server,
        &["consume", "--queue", "work", "--follow", "--exec", script],
        dir.path(),
    );
    let dead = || get(&server.url("/v1/queues/work/dead-letters")).json["dead_letters"].clone();
    eventually("both failures are dead letters", || {
        dead().as_array().unwrap().len() == 2
    });
    eventually("both good events are done", || {
        std::fs::read_to_string(dir.path().join("done.txt"))
            .map(|t| t.lines().count() == 2)
            .unwrap_or(false)
    });
    worker.signal("TERM");
    let (code, err, _) = worker.wait();
    assert_eq!(code, Some(143), "{err}");
    assert!(
        err.contains("2 events acked, 2 nacked, 1 rejected"),
        "{err}"
    );
    let mut done: Vec<String> = std::fs::read_to_string(dir.path().join("done.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    done.sort();
    assert_eq!(done, ["ok-1 attempt 1", "slow-1 attempt 1"], "each once");
    let letters = dead();
    let letter = |id: &str| {
        letters
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["event"]["id"] == id)
            .unwrap()
            .clone()
    };
    let poison = letter("bad-1");
    assert_eq!(poison["attempts"], 1);
    assert!(
        poison["error"]
            .as_str()
            .unwrap()
            .ends_with("exited with 65: cannot parse bad-1"),
        "{poison}"
    );
    let failed = letter("fail-1");
    assert_eq!(failed["attempts"], 2);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .ends_with("exited with 1: database unavailable"),
        "{failed}"
    );
}

#[test]
fn queue_groups_start_where_asked_and_groups_and_queues_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "t", "partitions": 2}));
    publish(&server, "t", &[("old-1", "x"), ("old-2", "x")]);
    ok(&tidings(
        &server,
        &[
            "queues", "create", "fresh", "--topic", "t", "--from", "latest",
        ],
        "",
    ));
    publish(&server, "t", &[("new-1", "x")]);
    let got = ok(&tidings(
        &server,
        &["--json", "consume", "--queue", "fresh"],
        "",
    ));
    assert_eq!(ids_of(&got), ["new-1"]);
    // An offset past what every partition stores is each one's end.
    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "q2", "topic": "t", "from": "7"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    publish(&server, "t", &[("after-q2", "x")]);
    let got = ok(&tidings(
        &server,
        &["--json", "consume", "--queue", "q2"],
        "",
    ));
    assert_eq!(ids_of(&got), ["after-q2"]);

    // A stream group that starts at latest keeps that place while nothing
    // arrives: its next run begins there, not at a later `latest`.
    let quiet = ok(&tidings(
        &server,
        &["consume", "t", "--group", "late", "--from", "latest"],
        "",
    ));
    assert_eq!(quiet, "");
    publish(&server, "t", &[("new-2", "x")]);
    let later = ok(&tidings(
        &server,
        &[
            "--json", "consume", "t", "--group", "late", "--from", "latest",
        ],
        "",
    ));
    assert_eq!(ids_of(&later), ["new-2"]);

    // Deleting: a queue with a lease out is refused, then forced.
    publish(&server, "t", &[("new-3", "x")]);
    let held = post_json(&server.url("/v1/queues/fresh/receive"), &json!({}));
    assert_eq!(held.json["deliveries"].as_array().unwrap().len(), 1);
    let busy = failure(&tidings(&server, &["queues", "delete", "fresh"], ""));
    assert!(
        busy.contains("1 leased deliveries") && busy.contains("group_active"),
        "{busy}"
    );
    let deleted = ok(&tidings(
        &server,
        &["queues", "delete", "fresh", "--force"],
        "",
    ));
    assert_eq!(deleted, "deleted queue group fresh\n");
    assert_eq!(get(&server.url("/v1/queues/fresh")).code(), "unknown_group");
    assert_eq!(
        get(&server.url("/v1/topics/t.fresh.dlq")).code(),
        "unknown_topic"
    );
    let gone = call("DELETE", &server.url("/v1/queues/fresh"), &[], b"");
    assert_eq!(gone.status, 404);

    // A stream group with a member is refused, then deleted once it left.
    let joined = post_json(
        &server.url("/v1/groups/late/members"),
        &json!({"topic": "t"}),
    );
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let active = call("DELETE", &server.url("/v1/groups/late"), &[], b"");
    assert_eq!((active.status, active.code()), (409, "group_active"));
    let left = call(
        "DELETE",
        &server.url(&format!("/v1/groups/late/members/{member}")),
        &[],
        b"",
    );
    assert_eq!(left.status, 204);
    assert_eq!(
        ok(&tidings(&server, &["groups", "delete", "late"], "")),
        "deleted group late\n"
    );
    assert_eq!(get(&server.url("/v1/groups/late")).code(), "unknown_group");
    // Gone across a restart too.
    drop(server);
    let server = Server::start(dir.path(), &[]);
    assert_eq!(get(&server.url("/v1/groups/late")).code(), "unknown_group");
    assert_eq!(get(&server.url("/v1/queues/fresh")).code(), "unknown_group");
}
