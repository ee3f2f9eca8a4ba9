//! Publishing in every CloudEvents mode, reading back, topic administration,
//! health, metrics and the OpenAPI document.

use serde_json::{json, Value};

use crate::support::{call, create_topic, get, post_json, Server};

fn publish_binary(server: &Server, topic: &str, id: &str, extra: &[(&str, &str)]) -> Value {
    let mut headers = vec![
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-source", "/tests"),
        ("ce-type", "order.placed"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let answer = call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &headers,
        br#"{"order":"o-1"}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json
}

#[test]
fn events_published_in_each_mode_read_back_as_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders"}));
    let events_url = server.url("/v1/topics/orders/events");

    let binary = publish_binary(&server, "orders", "e-1", &[("ce-correlationid", "corr-77")]);
    assert_eq!(
        binary["events"][0],
        json!({"id": "e-1", "partition": 0, "offset": 0, "duplicate": false})
    );

    let structured = call(
        "POST",
        &events_url,
        &[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )],
        json!({"specversion": "1.0", "id": "e-2", "source": "/tests", "type": "order.paid",
               "subject": "o-1", "data": {"amount": 42}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(structured.status, 200, "{}", structured.text);
    assert_eq!(structured.json["events"][0]["offset"], 1);

    let batch = call(
        "POST",
        &events_url,
        &[("content-type", "application/cloudevents-batch+json")],
        json!([
            {"specversion": "1.0", "id": "e-3", "source": "/tests", "type": "order.shipped"},
            {"specversion": "1.0", "id": "e-1", "source": "/tests", "type": "order.placed"},
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(
        batch.json["events"],
        json!([
            {"id": "e-3", "partition": 0, "offset": 2, "duplicate": false},
            {"id": "e-1", "partition": 0, "offset": 0, "duplicate": true},
        ]),
        "a repeated id answers its original offset"
    );

    let read = get(&server.url("/v1/topics/orders/events?from=earliest&limit=10"));
    assert_eq!(read.status, 200, "{}", read.text);
    let events = read.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["event"]["id"], "e-1");
    assert_eq!(events[0]["event"]["correlationid"], "corr-77");
    assert_eq!(events[0]["event"]["data"], json!({"order": "o-1"}));
    assert_eq!(events[1]["event"]["subject"], "o-1");
    assert_eq!(events[1]["event"]["data"], json!({"amount": 42}));
    assert_eq!(events[2]["event"]["type"], "order.shipped");
    assert_eq!(read.json["next"], json!({"0": 3}));

    let tail = get(&server.url("/v1/topics/orders/events?from=1&limit=1"));
    assert_eq!(tail.json["events"].as_array().unwrap().len(), 1);
    assert_eq!(tail.json["events"][0]["offset"], 1);
    assert_eq!(tail.json["next"], json!({"0": 2}));
    let latest = get(&server.url("/v1/topics/orders/events?from=latest"));
    assert_eq!(latest.json["events"], json!([]));
    assert_eq!(latest.json["next"], json!({"0": 3}));

    let big = vec![b'x'; 1536 * 1024];
    let too_big = call(
        "POST",
        &events_url,
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "big"),
            ("ce-source", "/tests"),
            ("ce-type", "t"),
            ("content-type", "application/octet-stream"),
        ],
        &big,
    );
    assert_eq!(
        (too_big.status, too_big.code()),
        (413, "too_large"),
        "{}",
        too_big.text
    );

    // The log line follows the answer: wait for it.
    crate::support::eventually("the correlation id on the request's log line", || {
        server
            .logs()
            .lines()
            .any(|l| l.contains("corr-77") && l.contains("request done"))
    });
}

#[test]
fn dedup_keys_on_source_and_id_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |server: &Server| {
        let answer = call(
            "POST",
            &server.url("/v1/topics/orders/events"),
            &[("content-type", "application/cloudevents-batch+json")],
            json!([
                {"specversion": "1.0", "id": "7", "source": "/shop", "type": "order.placed"},
                {"specversion": "1.0", "id": "7", "source": "/billing", "type": "invoice.sent"},
            ])
            .to_string()
            .as_bytes(),
        );
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["duplicate"].as_bool().unwrap())
            .collect::<Vec<_>>()
    };
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders"}));
    assert_eq!(batch(&server), [false, false], "two producers, one id");
    drop(server);
    let server = Server::start(dir.path(), &[]);
    assert_eq!(batch(&server), [true, true], "the same events again");
    let read = get(&server.url("/v1/topics/orders/events?from=earliest&limit=10"));
    let sources: Vec<&str> = read.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["/shop", "/billing"]);
}

#[test]
fn a_read_page_publishes_again_as_records_raw_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-bytes-max", "100000"]);
    let limits = get(&server.url("/v1/limits"));
    assert_eq!(
        limits.json,
        json!({"body_bytes_max": 100000, "batch_events_max": 1000,
               "read_events_max": 1000, "long_poll_wait_max_ms": 30000})
    );
    create_topic(&server, json!({"name": "mixed", "partitions": 4}));
    let records = [("content-type", "application/vnd.tidings.records+json")];
    // "a2V5" is "key", "dmFsdWU=" is "value".
    let body = json!([
        {"record": {"headers": [{"key": "h", "value": "dg=="}], "key": "a2V5", "value": "dmFsdWU="}},
        {"event": {"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t", "partitionkey": "key"}},
        {"record": {"headers": [], "key": "a2V5", "value": null}},
    ]);
    let answer = call(
        "POST",
        &server.url("/v1/topics/mixed/events"),
        &records,
        body.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    let placed = answer.json["events"].as_array().unwrap();
    assert_eq!(placed[0].get("id"), None, "a raw record has no id");
    assert_eq!(placed[1]["id"], "e-1");
    // One key, one partition, in the order given.
    let partition = placed[0]["partition"].clone();
    assert!(placed.iter().all(|p| p["partition"] == partition));
    let offsets: Vec<u64> = placed
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2]);

    let read = get(&server.url(&format!(
        "/v1/topics/mixed/events?partition={partition}&from=earliest"
    )));
    let entries: Vec<Value> = read.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            for member in ["offset", "partition", "timestamp_ms"] {
                e.as_object_mut().unwrap().remove(member);
            }
            e
        })
        .collect();
    assert_eq!(entries[0], body[0]);
    assert_eq!(entries[2], body[2]);
    assert_eq!(entries[1]["event"]["id"], "e-1");
    // The page, published again: events are recognised, raw records are not.
    let again = call(
        "POST",
        &server.url("/v1/topics/mixed/events"),
        &records,
        Value::Array(entries).to_string().as_bytes(),
    );
    let duplicate: Vec<bool> = again.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["duplicate"].as_bool().unwrap())
        .collect();
    assert_eq!(duplicate, [false, true, false]);
}

#[test]
fn keyed_events_spread_over_partitions_and_merge_by_time_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "payments", "partitions": 4}));
    let mut partitions = std::collections::BTreeSet::new();
    for i in 0..20 {
        let key = format!("customer-{i}");
        let answer = publish_binary(
            &server,
            "payments",
            &format!("p-{i}"),
            &[("ce-partitionkey", &key)],
        );
        partitions.insert(answer["events"][0]["partition"].as_u64().unwrap());
    }
    assert!(
        partitions.len() > 1,
        "20 keys over 4 partitions: {partitions:?}"
    );
    let read = get(&server.url("/v1/topics/payments/events?limit=100"));
    let events = read.json["events"].as_array().unwrap();
    assert_eq!(events.len(), 20);
    let next: u64 = read.json["next"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(next, 20, "next offsets add up to everything read");
    let one = get(&server.url("/v1/topics/payments/events?partition=0&limit=100"));
    assert!(one.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["partition"] == 0));
    let needs_partition = get(&server.url("/v1/topics/payments/events?from=3"));
    assert_eq!(needs_partition.status, 400, "{}", needs_partition.text);
}

#[test]
fn topics_are_created_listed_described_altered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let created = post_json(
        &server.url("/v1/topics"),
        &json!({"name": "audit", "partitions": 2, "fsync": "never", "retention_ms": 60000}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["config"]["fsync"], "never");
    assert_eq!(created.json["config"]["retention_ms"], 60000);
    assert_eq!(
        created.json["config"]["dedup_window_ms"], 120000,
        "the default"
    );

    let again = post_json(&server.url("/v1/topics"), &json!({"name": "audit"}));
    assert_eq!((again.status, again.code()), (409, "topic_exists"));

    let list = get(&server.url("/v1/topics"));
    assert_eq!(list.json["topics"][0]["name"], "audit");

    let altered = call(
        "PATCH",
        &server.url("/v1/topics/audit"),
        &[("content-type", "application/json")],
        br#"{"partitions": 3, "dedup_window_ms": null, "fsync": "always"}"#,
    );
    assert_eq!(altered.status, 200, "{}", altered.text);
    assert_eq!(altered.json["config"]["partitions"], 3);
    assert_eq!(altered.json["config"]["dedup_window_ms"], Value::Null);
    assert_eq!(
        altered.json["config"]["retention_ms"], 60000,
        "absent settings stay"
    );
    assert_eq!(altered.json["partitions"].as_array().unwrap().len(), 3);

    let fewer = call(
        "PATCH",
        &server.url("/v1/topics/audit"),
        &[("content-type", "application/json")],
        br#"{"partitions": 1}"#,
    );
    assert_eq!(fewer.status, 400, "{}", fewer.text);
    let described = get(&server.url("/v1/topics/audit"));
    assert_eq!(
        described.json["config"]["partitions"], 3,
        "a refused alteration changes nothing"
    );

    let deleted = call("DELETE", &server.url("/v1/topics/audit"), &[], b"");
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = get(&server.url("/v1/topics/audit"));
    assert_eq!((gone.status, gone.code()), (404, "unknown_topic"));
}

#[test]
fn health_metrics_and_the_openapi_document_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let health = get(&server.url("/healthz"));
    assert_eq!(
        (health.status, health.json["status"].as_str()),
        (200, Some("ok"))
    );

    create_topic(&server, json!({"name": "orders"}));
    for i in 0..3 {
        publish_binary(&server, "orders", &format!("m-{i}"), &[]);
    }
    let metrics = get(&server.url("/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{}",
        metrics.content_type
    );
    let value = |name: &str| -> f64 {
        metrics
            .text
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{}", metrics.text))
    };
    assert_eq!(
        value(r#"tidings_published_events_total{topic="orders",partition="0"}"#),
        3.0
    );
    for histogram in [
        "tidings_fsync_duration_seconds_bucket",
        "tidings_append_duration_seconds_bucket{le=",
    ] {
        assert!(
            metrics.text.contains(histogram),
            "{histogram} in:\n{}",
            metrics.text
        );
    }
    assert_eq!(
        value(r#"tidings_partition_high_watermark{topic="orders",partition="0"}"#),
        3.0
    );
    assert!(metrics
        .text
        .contains("tidings_http_request_duration_seconds_bucket"));
    // Every family says what it is.
    let helped: std::collections::BTreeSet<&str> = metrics
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for line in metrics
        .text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| helped.contains(f))
            .unwrap_or(name);
        assert!(helped.contains(family), "no # HELP for {name}");
    }
    // A deleted topic and group leave no series behind.
    let queue = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "billing", "topic": "orders"}),
    );
    assert_eq!(queue.status, 201);
    assert!(get(&server.url("/metrics"))
        .text
        .contains("group=\"billing\""));
    assert_eq!(
        call("DELETE", &server.url("/v1/queues/billing"), &[], b"").status,
        200
    );
    assert_eq!(
        call("DELETE", &server.url("/v1/topics/orders"), &[], b"").status,
        204
    );
    let after = get(&server.url("/metrics")).text;
    assert!(
        !after.contains("\"orders") && !after.contains("\"billing\""),
        "{after}"
    );

    let openapi = get(&server.url("/openapi.json"));
    assert_eq!(openapi.status, 200);
    let paths = openapi.json["paths"]
        .as_object()
        .expect("an OpenAPI document with paths");
    // The document served is the one `tidings-api` holds to its route table.
    for route in tidings_api::ROUTES {
        let method = route.method.as_str().to_lowercase();
        assert!(
            paths.get(route.path).and_then(|p| p.get(&method)).is_some(),
            "{method} {} is documented",
            route.path
        );
    }
}
