//! Consuming over HTTP: stream-mode groups (join, long-poll, commit, lag,
//! reset and replay) and queue-mode groups (leases, ack, nack, reject, dead
//! letters listed, inspected, redriven and purged).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{call, create_topic, get, post_json, Server};

fn publish(server: &Server, topic: &str, ids: &[String]) {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"specversion": "1.0", "id": id, "source": "/t", "type": "job.created", "partitionkey": id}))
        .collect();
    let answer = call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &[("content-type", "application/cloudevents-batch+json")],
        json!(batch).to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn event_ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_stream_group_polls_commits_reports_lag_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    // Long-polls may wait an hour, so one that only returns at the end of its
    // wait fails this test (the client gives up after 30 s).
    let server = Server::start(dir.path(), &["--long-poll-wait-max-ms", "3600000"]);
    create_topic(&server, json!({"name": "orders", "partitions": 2}));
    publish(&server, "orders", &ids("o", 10));

    let joined = post_json(
        &server.url("/v1/groups/billing/members"),
        &json!({"topic": "orders", "from": "earliest"}),
    );
    assert_eq!(joined.status, 201, "{}", joined.text);
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let member_url = |what: &str| server.url(&format!("/v1/groups/billing/members/{member}{what}"));

    let mut seen = BTreeSet::new();
    let mut next = Value::Null;
    while seen.len() < 10 {
        let polled = get(&member_url("/events?wait_ms=2000"));
        assert_eq!(polled.status, 200, "{}", polled.text);
        assert_eq!(polled.json["assignment"], json!([0, 1]));
        seen.extend(event_ids(&polled.json["events"]));
        next = polled.json["next"].clone();
        let commit = call(
            "POST",
            &member_url("/commit"),
            &[("content-type", "application/json")],
            json!({ "offsets": next }).to_string().as_bytes(),
        );
        assert_eq!(commit.status, 204, "{}", commit.text);
    }
    assert_eq!(seen, ids("o", 10).into_iter().collect());
    assert!(next.is_object());

    let described = get(&server.url("/v1/groups/billing"));
    assert_eq!(described.json["lag"], 0, "{}", described.text);
    assert_eq!(described.json["members"][0]["member"], member.as_str());

    // A long-poll that starts before the publish returns with it, woken by it.
    let waiting = {
        let url = member_url("/events?wait_ms=3600000");
        std::thread::spawn(move || get(&url))
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    publish(&server, "orders", &ids("late", 1));
    let woke = waiting.join().unwrap();
    assert_eq!(event_ids(&woke.json["events"]), ["late-0"]);

    publish(&server, "orders", &ids("more", 2));
    let lagging = get(&server.url("/v1/groups/billing"));
    assert_eq!(lagging.json["lag"], 3, "{}", lagging.text);
    assert_eq!(server.metric("tidings_group_lag{group=\"billing\""), 3.0);

    let busy = post_json(
        &server.url("/v1/groups/billing/reset"),
        &json!({"to": "earliest"}),
    );
    assert_eq!((busy.status, busy.code()), (409, "group_active"));
    let left = call("DELETE", &member_url(""), &[], b"");
    assert_eq!(left.status, 204, "{}", left.text);
    let gone = get(&member_url("/events"));
    assert_eq!((gone.status, gone.code()), (404, "unknown_member"));
    let reset = post_json(
        &server.url("/v1/groups/billing/reset"),
        &json!({"to": "earliest"}),
    );
    assert_eq!(reset.status, 200, "{}", reset.text);
    assert_eq!(reset.json["lag"], 13);

    let again = post_json(
        &server.url("/v1/groups/billing/members"),
        &json!({"topic": "orders"}),
    );
    let member = again.json["member"].as_str().unwrap().to_owned();
    let mut replayed = 0;
    while replayed < 13 {
        let polled = get(&server.url(&format!(
            "/v1/groups/billing/members/{member}/events?wait_ms=2000"
        )));
        replayed += polled.json["events"].as_array().unwrap().len();
    }
    assert_eq!(replayed, 13, "the replay reads everything again");
    let list = get(&server.url("/v1/groups"));
    assert_eq!(list.json["groups"][0]["group"], "billing");
}

fn receive(server: &Server, max: usize) -> Vec<Value> {
    let answer = call(
        "POST",
        &server.url(&format!(
            "/v1/queues/workers/receive?max={max}&wait_ms=2000"
        )),
        &[],
        b"",
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json["deliveries"].as_array().unwrap().clone()
}

fn answer_lease(server: &Server, delivery: &Value, verb: &str, body: Option<Value>) -> u16 {
    let lease = delivery["lease"].as_str().unwrap();
    let url = server.url(&format!("/v1/queues/workers/leases/{lease}/{verb}"));
    let answer = match body {
        Some(body) => post_json(&url, &body),
        None => call("POST", &url, &[], b""),
    };
    answer.status
}

#[test]
fn a_queue_group_acks_retries_dead_letters_and_redrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs"}));
    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs", "max_deliveries": 2,
                "backoff_initial_ms": 1, "backoff_max_ms": 5, "ack_timeout_ms": 30000}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["dead_letter_topic"], "jobs.workers.dlq");
    publish(&server, "jobs", &ids("j", 3));

    let first = receive(&server, 10);
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|d| d["attempt"] == 1));
    let by_id = |id: &str, list: &[Value]| -> Value {
        list.iter()
            .find(|d| d["event"]["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        answer_lease(&server, &by_id("j-0", &first), "ack", None),
        204
    );
    assert_eq!(
        answer_lease(
            &server,
            &by_id("j-1", &first),
            "reject",
            Some(json!({"reason": "malformed order"}))
        ),
        204
    );
    assert_eq!(
        answer_lease(
            &server,
            &by_id("j-2", &first),
            "nack",
            Some(json!({"error": "db down"}))
        ),
        204
    );
    let ack_again = answer_lease(&server, &by_id("j-0", &first), "ack", None);
    assert!(ack_again == 404 || ack_again == 409, "{ack_again}");
    let unknown = call(
        "POST",
        &server.url("/v1/queues/workers/leases/nope/ack"),
        &[],
        b"",
    );
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_lease"));

    let retry = receive(&server, 10);
    assert_eq!(retry.len(), 1);
    assert_eq!(
        (
            retry[0]["event"]["id"].as_str(),
            retry[0]["attempt"].as_u64()
        ),
        (Some("j-2"), Some(2))
    );
    assert_eq!(
        answer_lease(
            &server,
            &retry[0],
            "nack",
            Some(json!({"error": "db still down"}))
        ),
        204
    );

    let letters = get(&server.url("/v1/queues/workers/dead-letters"));
    assert_eq!(letters.status, 200, "{}", letters.text);
    let letters = letters.json["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 2);
    let rejected = by_id("j-1", &letters);
    assert_eq!(rejected["error"], "malformed order");
    assert_eq!(rejected["attempts"], 1);
    let failed = by_id("j-2", &letters);
    assert_eq!(
        (failed["error"].as_str(), failed["attempts"].as_u64()),
        (Some("db still down"), Some(2))
    );
    let one = get(&server.url(&format!(
        "/v1/queues/workers/dead-letters/{}",
        failed["offset"]
    )));
    assert_eq!(one.json["event"]["id"], "j-2", "{}", one.text);
    let missing = get(&server.url("/v1/queues/workers/dead-letters/999"));
    assert_eq!(
        (missing.status, missing.code()),
        (404, "unknown_dead_letter")
    );

    let stats = get(&server.url("/v1/queues/workers"));
    assert_eq!(stats.json["dead_letters"], 2, "{}", stats.text);
    let metrics = get(&server.url("/metrics")).text;
    for line in [
        "tidings_queue_dead_letters{group=\"workers\",topic=\"jobs\"} 2",
        "tidings_queue_acked_total{group=\"workers\",topic=\"jobs\"} 1",
        "tidings_queue_dead_lettered_total{group=\"workers\",topic=\"jobs\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("tidings_publish_to_deliver_seconds_bucket"));
    assert_eq!(stats.json["lag"], 0);
    assert_eq!(stats.json["counters"]["dead_lettered"], 2);

    let redriven = post_json(
        &server.url("/v1/queues/workers/dead-letters/redrive"),
        &json!({}),
    );
    assert_eq!(redriven.json["redriven"], 2, "{}", redriven.text);
    let again = receive(&server, 10);
    let mut ids_again: Vec<_> = again
        .iter()
        .map(|d| d["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids_again.sort();
    assert_eq!(ids_again, ["j-1", "j-2"]);
    for d in &again[..1] {
        assert_eq!(answer_lease(&server, d, "ack", None), 204);
    }
    assert_eq!(answer_lease(&server, &again[1], "reject", None), 204);
    let purged = call(
        "DELETE",
        &server.url("/v1/queues/workers/dead-letters"),
        &[],
        b"",
    );
    assert_eq!(purged.json["purged"], 1, "{}", purged.text);
    let stats = get(&server.url("/v1/queues/workers"));
    assert_eq!(
        (
            stats.json["lag"].as_u64(),
            stats.json["dead_letters"].as_u64()
        ),
        (Some(0), Some(0))
    );

    let empty = call(
        "POST",
        &server.url("/v1/queues/workers/receive?wait_ms=50"),
        &[],
        b"",
    );
    assert_eq!(empty.json["deliveries"], json!([]));
    let too_long = call(
        "POST",
        &server.url("/v1/queues/workers/receive?wait_ms=999999"),
        &[],
        b"",
    );
    assert_eq!((too_long.status, too_long.code()), (400, "invalid_request"));
    let no_group = call("POST", &server.url("/v1/queues/nope/receive"), &[], b"");
    assert_eq!((no_group.status, no_group.code()), (404, "unknown_group"));
}

#[test]
fn a_batch_ack_acks_every_held_lease_and_lists_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs", "partitions": 2}));
    let created = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    publish(&server, "jobs", &ids("b", 5));
    let got = receive(&server, 10);
    assert_eq!(got.len(), 5);
    let mut leases: Vec<&str> = got.iter().map(|d| d["lease"].as_str().unwrap()).collect();
    leases.push("nope");
    let acks = server.url("/v1/queues/workers/acks");
    let answer = post_json(&acks, &json!({ "leases": leases }));
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["acked"], 5);
    assert_eq!(
        answer.json["failed"],
        json!([{"lease": "nope", "error_code": "unknown_lease",
                "message": "lease \"nope\" is unknown to this group"}])
    );
    // Acked for good: nothing comes back, and acking again is refused per lease.
    let none = call(
        "POST",
        &server.url("/v1/queues/workers/receive?max=10&wait_ms=0"),
        &[],
        b"",
    );
    assert_eq!(none.json["deliveries"], json!([]));
    let again = post_json(&acks, &json!({ "leases": [leases[0]] }));
    assert_eq!(again.json["acked"], 0);
    assert_eq!(again.json["failed"][0]["error_code"], "unknown_lease");

    for (body, code) in [
        (json!({"leases": []}), "invalid_request"),
        (json!({"leases": "x"}), "malformed_json"),
        (json!({"lease": ["x"]}), "malformed_json"),
    ] {
        let bad = post_json(&acks, &body);
        assert_eq!((bad.status, bad.code()), (400, code), "{body}");
    }
    let unknown = post_json(
        &server.url("/v1/queues/nobody/acks"),
        &json!({"leases": ["x"]}),
    );
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_group"));
}
