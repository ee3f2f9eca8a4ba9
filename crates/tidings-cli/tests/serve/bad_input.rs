//! Every error status the API promises, and malformed, truncated and oversized
//! bodies against every endpoint that reads one: never a 500, never a crash.

use serde_json::json;

use crate::support::{call, create_topic, get, post_json, Server};

#[test]
fn each_error_has_its_status_and_a_json_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--body-bytes-max", "2048", "--batch-events-max", "3"],
    );
    create_topic(&server, json!({"name": "orders"}));
    let events = server.url("/v1/topics/orders/events");
    let structured = [("content-type", "application/cloudevents+json")];
    let batch = [("content-type", "application/cloudevents-batch+json")];
    let records = [("content-type", "application/vnd.tidings.records+json")];
    let event = |id: &str| json!({"specversion": "1.0", "id": id, "source": "/s", "type": "t"});

    let cases = [
        (
            "malformed JSON",
            call("POST", &events, &structured, b"{\"specversion\":"),
            400,
            "invalid_event",
        ),
        (
            "missing source",
            call(
                "POST",
                &events,
                &structured,
                br#"{"specversion":"1.0","id":"1","type":"t"}"#,
            ),
            400,
            "invalid_event",
        ),
        (
            "wrong specversion",
            call(
                "POST",
                &events,
                &structured,
                br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#,
            ),
            400,
            "invalid_event",
        ),
        (
            "binary mode without ce-id",
            call(
                "POST",
                &events,
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-source", "s"),
                    ("ce-type", "t"),
                ],
                b"x",
            ),
            400,
            "invalid_event",
        ),
        (
            "a records body that is not an array of entries",
            call("POST", &events, &records, br#"{"event": {}}"#),
            400,
            "malformed_json",
        ),
        (
            "a records entry with both an event and a record",
            call(
                "POST",
                &events,
                &records,
                json!([{"event": event("1"), "record": {"headers": [], "key": null, "value": null}}])
                    .to_string()
                    .as_bytes(),
            ),
            400,
            "invalid_event",
        ),
        (
            "a records entry whose value is not base64",
            call(
                "POST",
                &events,
                &records,
                br#"[{"record": {"headers": [], "key": null, "value": "not base64!"}}]"#,
            ),
            400,
            "invalid_event",
        ),
        (
            "a records entry with an unknown member",
            call("POST", &events, &records, br#"[{"offset": 3}]"#),
            400,
            "malformed_json",
        ),
        (
            "no content type",
            call("POST", &events, &[], b"hello"),
            415,
            "unsupported_media_type",
        ),
        (
            "text without ce headers",
            call("POST", &events, &[("content-type", "text/plain")], b"hello"),
            415,
            "unsupported_media_type",
        ),
        (
            "another event format",
            call(
                "POST",
                &events,
                &[("content-type", "application/cloudevents+avro")],
                b"x",
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "unknown topic",
            call(
                "POST",
                &server.url("/v1/topics/nope/events"),
                &structured,
                event("1").to_string().as_bytes(),
            ),
            404,
            "unknown_topic",
        ),
        (
            "unknown topic read",
            get(&server.url("/v1/topics/nope/events")),
            404,
            "unknown_topic",
        ),
        (
            "unknown route",
            get(&server.url("/v2/anything")),
            404,
            "not_found",
        ),
        (
            "wrong method",
            call("PUT", &server.url("/v1/topics"), &[], b""),
            405,
            "method_not_allowed",
        ),
        (
            "body over the limit",
            call("POST", &events, &structured, &vec![b' '; 4096]),
            413,
            "too_large",
        ),
        (
            "batch over the limit",
            call(
                "POST",
                &events,
                &batch,
                json!([event("a"), event("b"), event("c"), event("d")])
                    .to_string()
                    .as_bytes(),
            ),
            413,
            "too_large",
        ),
        (
            "empty batch",
            call("POST", &events, &batch, b"[]"),
            400,
            "invalid_event",
        ),
        (
            "topic exists",
            post_json(&server.url("/v1/topics"), &json!({"name": "orders"})),
            409,
            "topic_exists",
        ),
        (
            "topic name",
            post_json(
                &server.url("/v1/topics"),
                &json!({"name": "no spaces allowed"}),
            ),
            400,
            "invalid_topic",
        ),
        (
            "unknown setting",
            post_json(
                &server.url("/v1/topics"),
                &json!({"name": "x", "partitons": 2}),
            ),
            400,
            "invalid_topic",
        ),
        (
            "zero partitions",
            post_json(
                &server.url("/v1/topics"),
                &json!({"name": "x", "partitions": 0}),
            ),
            400,
            "invalid_topic",
        ),
        (
            "topic JSON as text",
            call(
                "POST",
                &server.url("/v1/topics"),
                &[("content-type", "text/plain")],
                b"{}",
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "bad from",
            get(&format!("{events}?from=yesterday")),
            400,
            "invalid_request",
        ),
        (
            "bad limit",
            get(&format!("{events}?limit=0")),
            400,
            "invalid_request",
        ),
        (
            "unknown query",
            get(&format!("{events}?form=earliest")),
            400,
            "invalid_request",
        ),
        (
            "unknown partition",
            get(&format!("{events}?partition=9")),
            404,
            "unknown_partition",
        ),
    ];
    for (what, answer, status, code) in cases {
        assert_eq!(
            (answer.status, answer.code()),
            (status, code),
            "{what}: {}",
            answer.text
        );
        assert!(
            answer.content_type.starts_with("application/json"),
            "{what}"
        );
        assert!(
            !answer.json["message"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
    }
    let read = get(&server.url("/v1/topics/orders/events"));
    assert_eq!(
        read.json["events"],
        json!([]),
        "no refused request appended anything"
    );
}

/// A small deterministic generator, so a failure names the case that caused it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn settings_errors_say_what_to_give_instead() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let dedup = post_json(
        &server.url("/v1/topics"),
        &json!({"name": "a", "dedup_window_ms": 0}),
    );
    assert_eq!(dedup.code(), "invalid_topic");
    assert_eq!(
        dedup.json["message"],
        "dedup_window_ms is 0; give 1..=86400000 ms, or null to turn dedup off"
    );
    let fsync = post_json(
        &server.url("/v1/topics"),
        &json!({"name": "a", "fsync": "interval:0"}),
    );
    assert!(
        fsync.json["message"]
            .as_str()
            .unwrap()
            .contains("an interval of 0 ms would sync after every write; give 'always'"),
        "{}",
        fsync.text
    );
    // A topic's settings are a JSON Merge Patch, and say so.
    create_topic(&server, json!({"name": "a"}));
    let patched = call(
        "PATCH",
        &server.url("/v1/topics/a"),
        &[("content-type", "application/merge-patch+json")],
        br#"{"retention_ms": null}"#,
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(
        patched.json["config"]["retention_ms"],
        serde_json::Value::Null
    );
    // Stream names are checked as topic names are.
    let stream = call(
        "POST",
        &server.url("/v1/streams/order%201/events"),
        &[("content-type", "application/cloudevents+json")],
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
    );
    assert_eq!(stream.code(), "invalid_stream", "{}", stream.text);
    // A member's poll takes a limit.
    let joined = post_json(&server.url("/v1/groups/g/members"), &json!({"topic": "a"}));
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let batch: Vec<serde_json::Value> = (0..5)
        .map(|i| json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "/s", "type": "t"}))
        .collect();
    let published = call(
        "POST",
        &server.url("/v1/topics/a/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        json!(batch).to_string().as_bytes(),
    );
    assert_eq!(published.status, 200);
    let poll =
        |query: &str| get(&server.url(&format!("/v1/groups/g/members/{member}/events?{query}")));
    let two = poll("limit=2");
    assert_eq!(
        two.json["events"].as_array().unwrap().len(),
        2,
        "{}",
        two.text
    );
    assert_eq!(two.json["next"], json!({"0": 2}));
    assert_eq!(poll("limit=0").code(), "invalid_request");
    assert_eq!(poll("").json["events"].as_array().unwrap().len(), 3);
}

#[test]
fn malformed_truncated_and_oversized_bodies_never_get_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-bytes-max", "65536"]);
    create_topic(&server, json!({"name": "orders"}));
    let valid_event = json!({"specversion": "1.0", "id": "v", "source": "/s", "type": "t",
                              "data": {"nested": [1, 2, {"deep": "value"}]}})
    .to_string();
    let valid_batch = format!("[{valid_event},{valid_event}]");
    let valid_topic = json!({"name": "fuzzed", "partitions": 2, "retention_ms": null}).to_string();
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for valid in [&valid_event, &valid_batch, &valid_topic] {
        for cut in (0..valid.len()).step_by(7) {
            bodies.push(valid.as_bytes()[..cut].to_vec());
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for n in [1, 16, 1000] {
        bodies.push(rng.bytes(n));
    }
    bodies.push(b"[".repeat(10_000));
    bodies.push(format!("{{\"partitions\": {}}}", "9".repeat(500)).into_bytes());
    bodies.push(br#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#.to_vec());
    bodies.push(br#"{"specversion":"1.0","id":"x","source":"/s","type":"t","BadExt":1}"#.to_vec());
    bodies.push(
        br#"{"specversion":"1.0","id":"x","source":"/s","type":"t","data_base64":"!!"}"#.to_vec(),
    );
    bodies.push(
        br#"{"specversion":"1.0","id":"x","source":"/s","type":"t","time":"never"}"#.to_vec(),
    );
    bodies.push(br#"[1, "two", null]"#.to_vec());
    bodies.push(br#"{"name": ["array"]}"#.to_vec());
    bodies.push(br#"{"name": "t2", "fsync": "sometimes"}"#.to_vec());
    bodies.push(br#"{"name": "t3", "segment_bytes": -1}"#.to_vec());
    bodies.push(vec![b'x'; 70_000]);

    let targets = [
        (
            "POST",
            "/v1/topics/orders/events",
            "application/cloudevents+json",
        ),
        (
            "POST",
            "/v1/topics/orders/events",
            "application/cloudevents-batch+json",
        ),
        ("POST", "/v1/topics", "application/json"),
        ("PATCH", "/v1/topics/orders", "application/json"),
    ];
    for (method, path, content_type) in targets {
        for (i, body) in bodies.iter().enumerate() {
            let answer = call(
                method,
                &server.url(path),
                &[("content-type", content_type)],
                body,
            );
            assert!(
                answer.status < 500,
                "{method} {path} with body #{i} ({} bytes) got {}: {}",
                body.len(),
                answer.status,
                answer.text
            );
            if answer.status >= 400 {
                assert!(
                    !answer.code().is_empty(),
                    "{method} {path} body #{i}: {}",
                    answer.text
                );
            }
        }
    }
    let health = get(&server.url("/healthz"));
    assert_eq!(health.status, 200, "the server is still up");
}
