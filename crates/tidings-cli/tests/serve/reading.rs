//! Reading as users of `tail`, browsers and Kafka clients expect: the last
//! events by default, output cut at a limit said so, a follow that reports a
//! server gone and resumes with `--retry`, Server-Sent Events resumed with
//! `Last-Event-ID`, CORS when configured, the Kafka listener's advertised
//! address, and standard input published as it arrives.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::{
    call, create_topic, eventually, failure, get, kcat, ok, tidings, Running, Server,
};

/// Publishes one event in structured mode.
fn post_event(server: &Server, topic: &str, event: &Value) {
    let answer = call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &[("content-type", "application/cloudevents+json")],
        event.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// Publishes `ids` to `topic`, one request each, so append times ascend.
fn publish_ids(server: &Server, topic: &str, ids: impl IntoIterator<Item = String>) {
    for id in ids {
        post_event(
            server,
            topic,
            &json!({"specversion": "1.0", "id": id, "source": "/t", "type": "t", "partitionkey": id}),
        );
    }
}

/// The event ids of the CLI's text event lines (`<place>\t<type>\t<id>\t...`).
fn ids(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split('\t').nth(2).unwrap().to_owned())
        .collect()
}

fn numbered(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn tail_prints_the_last_events_and_says_when_output_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "t"}));
    publish_ids(&server, "t", numbered("e", 0..30));

    assert_eq!(
        ids(&ok(&tidings(&server, &["tail", "t"], ""))),
        numbered("e", 20..30)
    );
    assert_eq!(
        ids(&ok(&tidings(&server, &["tail", "t", "-n", "3"], ""))),
        numbered("e", 27..30)
    );

    let cut = tidings(&server, &["tail", "t", "--from", "earliest", "-n", "5"], "");
    assert_eq!(ids(&ok(&cut)), numbered("e", 0..5));
    let note = String::from_utf8(cut.stderr).unwrap();
    assert!(
        note.contains("stopped after 5 events; 25 more in t"),
        "{note}"
    );
    let all = tidings(&server, &["tail", "t", "--from", "earliest"], "");
    assert_eq!(ids(&ok(&all)).len(), 30);
    assert!(all.stderr.is_empty(), "nothing was cut");

    // Every partition's last events, merged by time.
    create_topic(&server, json!({"name": "wide", "partitions": 3}));
    publish_ids(&server, "wide", numbered("w", 0..12));
    assert_eq!(
        ids(&ok(&tidings(&server, &["tail", "wide", "-n", "4"], ""))),
        numbered("w", 8..12)
    );

    // A plain Kafka client's record prints as text.
    kcat(&server, &["-P", "-t", "t", "-K:"], "order-9:shipped\n");
    let raw = ok(&tidings(&server, &["tail", "t", "-n", "1"], ""));
    assert!(
        raw.ends_with("\t(raw record)\tkey=order-9\tvalue=shipped\n"),
        "{raw}"
    );
}

#[test]
fn tail_follow_reports_a_server_that_went_away_and_with_retry_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (http, kafka) = (server.addr.to_string(), server.kafka_addr.to_string());
    create_topic(&server, json!({"name": "t", "partitions": 2}));
    publish_ids(&server, "t", numbered("a", 0..3));

    let plain = Running::start(&server, &["tail", "t", "-f"], dir.path());
    for _ in 0..3 {
        plain.line();
    }
    assert_eq!(server.terminate().code(), Some(0));
    let (code, err, _) = plain.wait();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the server went away or is shutting down"),
        "{err}"
    );

    let server = Server::start_on(dir.path(), &http, &kafka, &[]);
    let retrying = Running::start(&server, &["tail", "t", "-f", "--retry"], dir.path());
    let mut seen: Vec<String> = (0..3).map(|_| retrying.line()).collect();
    publish_ids(&server, "t", numbered("b", 0..2));
    seen.push(retrying.line());
    seen.push(retrying.line());
    drop(server); // SIGKILL
    let server = Server::start_on(dir.path(), &http, &kafka, &[]);
    publish_ids(&server, "t", numbered("c", 0..2));
    seen.push(retrying.line());
    seen.push(retrying.line());
    retrying.signal("INT");
    let (code, err, rest) = retrying.wait();
    assert_eq!(code, Some(130), "{err}");
    assert!(rest.is_empty(), "{rest:?}");
    let got: Vec<String> = ids(&seen.join("\n"));
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "nothing twice: {got:?}");
    let mut got = got.clone();
    got.sort();
    let mut expected = numbered("a", 0..3);
    expected.extend(numbered("b", 0..2));
    expected.extend(numbered("c", 0..2));
    expected.sort();
    assert_eq!(got, expected, "nothing missed");
}

/// Reads Server-Sent Events messages of a request: `(id, data)` pairs.
struct Sse {
    reader: Box<dyn BufRead + Send>,
}

impl Sse {
    fn open(url: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = ureq::http::Request::builder()
            .method("GET")
            .uri(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = crate::support::agent()
            .run(request.body(Vec::new()).unwrap())
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        Sse {
            reader: Box::new(BufReader::new(response.into_body().into_reader())),
        }
    }

    fn next(&mut self) -> (String, Value) {
        let (mut id, mut data) = (String::new(), Value::Null);
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "the stream ended"
            );
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap();
            } else if line.is_empty() && !data.is_null() {
                return (id, data);
            }
        }
    }
}

#[test]
fn event_streams_resume_after_last_event_id_without_a_gap_or_a_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "t", "partitions": 3}));
    publish_ids(&server, "t", numbered("e", 0..9));
    let url = server.url("/v1/topics/t/events?from=earliest");
    let mut first = Sse::open(&url, None);
    let mut seen = Vec::new();
    let mut last = String::new();
    for _ in 0..4 {
        let (id, data) = first.next();
        seen.push(data["event"]["id"].as_str().unwrap().to_owned());
        last = id;
    }
    drop(first);
    publish_ids(&server, "t", numbered("e", 9..12));
    let mut resumed = Sse::open(&url, Some(&last));
    for _ in 0..8 {
        seen.push(resumed.next().1["event"]["id"].as_str().unwrap().to_owned());
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 12, "nothing twice, nothing missed: {seen:?}");

    let bad = call(
        "GET",
        &url,
        &[("accept", "text/event-stream"), ("last-event-id", "7:x")],
        b"",
    );
    assert_eq!(bad.code(), "invalid_request", "{}", bad.text);

    // The event store's subscription resumes after a global position.
    for n in 0..3 {
        let appended = call(
            "POST",
            &server.url("/v1/streams/order-1/events"),
            &[("content-type", "application/cloudevents+json")],
            json!({"specversion": "1.0", "id": format!("s-{n}"), "source": "/t", "type": "t"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(appended.status, 200, "{}", appended.text);
    }
    let all = server.url("/v1/store/events");
    let mut sub = Sse::open(&all, None);
    sub.next();
    let (second, _) = sub.next();
    drop(sub);
    let mut sub = Sse::open(&all, Some(&second));
    assert_eq!(sub.next().1["event"]["id"], "s-2");
}

#[test]
fn cors_is_off_by_default_and_answers_the_configured_origins() {
    let dir = tempfile::tempdir().unwrap();
    let header = |answer: &ureq::http::Response<ureq::Body>, name: &str| {
        answer
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let send = |server: &Server, method: &str, origin: &str, extra: &[(&str, &str)]| {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(server.url("/v1/topics"))
            .header("origin", origin);
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        crate::support::agent()
            .run(request.body(Vec::new()).unwrap())
            .unwrap()
    };
    let server = Server::start(dir.path(), &[]);
    let plain = send(&server, "GET", "https://app.example.com", &[]);
    assert_eq!(header(&plain, "access-control-allow-origin"), None);
    drop(server);

    let server = Server::start(dir.path(), &["--cors-origin", "https://app.example.com"]);
    let preflight = send(
        &server,
        "OPTIONS",
        "https://app.example.com",
        &[
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, last-event-id",
            ),
        ],
    );
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert!(header(&preflight, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(
        header(&preflight, "access-control-allow-headers").as_deref(),
        Some("content-type, last-event-id")
    );
    let allowed = send(&server, "GET", "https://app.example.com", &[]);
    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&allowed, "access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
    let other = send(&server, "GET", "https://evil.example.com", &[]);
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    drop(server);

    let refused = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
        .args(["--cors-origin", "app.example.com"])
        .output()
        .unwrap();
    let err = failure(&refused);
    assert!(
        err.contains("cors origin \"app.example.com\" is not an origin"),
        "{err}"
    );
}

#[test]
fn the_kafka_listener_advertises_the_address_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let listing = kcat(&server, &["-L"], "");
    assert!(
        listing.contains(&format!("broker 1 at {}", server.kafka_addr)),
        "{listing}"
    );
    drop(server);
    let server = Server::start(
        dir.path(),
        &["--kafka-advertised-addr", "kafka.example.test:19092"],
    );
    let listing = kcat(&server, &["-L"], "");
    assert!(
        listing.contains("broker 1 at kafka.example.test:19092"),
        "{listing}"
    );
    drop(server);
    let refused = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--kafka-advertised-addr", "kafka.example.test"])
        .output()
        .unwrap();
    let err = failure(&refused);
    assert!(
        err.contains("kafka.advertised_addr is \"kafka.example.test\": no port"),
        "{err}"
    );
}

#[test]
fn addresses_take_host_names_such_as_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(dir.path(), "localhost:0", "localhost:0", &[]);
    assert!(server.addr.ip().is_loopback());
    assert_eq!(get(&server.url("/healthz")).json["status"], "ok");
    let listing = kcat(&server, &["-L"], "");
    assert!(listing.contains("1 brokers"), "{listing}");
}

#[test]
fn piped_standard_input_is_published_as_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "logs"}));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["publish", "logs"])
        .env("TIDINGS_URL", server.url(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let count = || {
        get(&server.url("/v1/topics/logs")).json["partitions"][0]["high_watermark"]
            .as_u64()
            .unwrap()
    };
    stdin.write_all(b"GET /index.html 200\n").unwrap();
    stdin.flush().unwrap();
    // Published while standard input is still open, as `tail -f` feeds it.
    eventually("the first line is published", || count() == 1);
    stdin.write_all(b"GET /missing 404\n").unwrap();
    stdin.flush().unwrap();
    eventually("the second line is published", || count() == 2);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(ok(&out), "published 2 events to logs\n");
    let lines = ok(&tidings(&server, &["tail", "logs"], ""));
    assert!(
        lines
            .lines()
            .next()
            .unwrap()
            .ends_with("\tGET /index.html 200"),
        "{lines}"
    );
}
