//! The Kafka listener against a real Kafka client: kcat (librdkafka), as
//! installed by the test command, and raw frames for what clients never send.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{call, create_topic, eventually, get, kcat, Server};

/// Every record of `topic` as (partition, offset, key, value), read to the end.
fn consume_all(server: &Server, topic: &str, extra: &[&str]) -> Vec<(u32, u64, String, String)> {
    let mut args = vec!["-C", "-t", topic, "-e", "-q", "-f", "%p %o %k %s\\n"];
    args.extend_from_slice(extra);
    let mut out: Vec<_> = kcat(server, &args, "")
        .lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let mut next = || f.next().unwrap().to_owned();
            (
                next().parse().unwrap(),
                next().parse().unwrap(),
                next(),
                next(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn kcat_produces_and_consumes_keyed_records_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders", "partitions": 3}));
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let mut sent = Vec::new();
    for codec in codecs {
        let lines: Vec<String> = (0..20)
            .map(|i| format!("order-{}:{codec}-{i}", i % 7))
            .collect();
        // murmur2_random is the Java client's partitioner, which Tidings uses.
        kcat(
            &server,
            &[
                "-P",
                "-t",
                "orders",
                "-K:",
                "-z",
                codec,
                "-X",
                "topic.partitioner=murmur2_random",
            ],
            &(lines.join("\n") + "\n"),
        );
        sent.extend(lines);
    }
    let got = consume_all(&server, "orders", &[]);
    assert_eq!(got.len(), sent.len(), "{got:?}");
    let mut per_key: BTreeMap<String, Vec<(u32, u64, String)>> = BTreeMap::new();
    for (partition, offset, key, value) in &got {
        assert_eq!(
            *partition,
            tidings_broker::partitioner::partition_for_key(key.as_bytes(), 3),
            "key {key} landed on partition {partition}"
        );
        per_key
            .entry(key.clone())
            .or_default()
            .push((*partition, *offset, value.clone()));
    }
    // Within a key, offsets follow the order the records were sent in.
    for (key, records) in per_key {
        let expected: Vec<&String> = sent
            .iter()
            .filter(|l| l.starts_with(&format!("{key}:")))
            .collect();
        let values: Vec<String> = records.iter().map(|r| format!("{key}:{}", r.2)).collect();
        assert_eq!(values.iter().collect::<Vec<_>>(), expected, "key {key}");
    }
    // Every partition's lag shows over HTTP: the data is the broker's own.
    let topic = get(&server.url("/v1/topics/orders")).json;
    let total: u64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!(total, sent.len() as u64, "{topic}");
    // The listener records its requests: one kcat run per codec produced.
    assert!(server.metric("tidings_kafka_requests_total{api=\"Produce\",") >= 5.0);
    assert!(server.metric("tidings_kafka_requests_total{api=\"Fetch\",") >= 1.0);
    assert!(server.metric("tidings_kafka_request_duration_seconds_count{api=\"Metadata\"}") >= 1.0);
}

/// The codec bits (attributes & 7) of every batch stored for `topic`, read
/// from its segment files: RecordBatch v2 back to back, base offset (8
/// bytes), length (4), then 9 bytes to the attributes.
fn stored_codecs(data_dir: &std::path::Path, topic: &str) -> Vec<u16> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "log") {
                out.push(path);
            }
        }
    }
    let mut segments = Vec::new();
    walk(&data_dir.join("topics").join(topic), &mut segments);
    assert!(!segments.is_empty(), "no segment of {topic}");
    let mut codecs = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).unwrap();
        let mut at = 0;
        // The active segment is allocated ahead: zeros end its batches.
        while at + 23 <= bytes.len() {
            let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            if len <= 0 {
                break;
            }
            codecs.push(u16::from_be_bytes([bytes[at + 21], bytes[at + 22]]) & 7);
            at += 12 + len as usize;
        }
    }
    codecs
}

/// librdkafka before 2.11.1 (Debian's kcat among them) compresses gzip,
/// snappy and lz4 only if the broker advertises Produce v0; the batches it
/// sends must be stored compressed, not merely arrive.
#[test]
fn kcat_batches_are_stored_with_the_codec_they_were_produced_with() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for (codec, bits) in [
        ("none", 0),
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
    ] {
        let topic = format!("codec-{codec}");
        create_topic(&server, json!({"name": topic, "partitions": 1}));
        let lines: Vec<String> = (0..50)
            .map(|i| format!("k{i}:{codec} value {i} "))
            .collect();
        kcat(
            &server,
            &["-P", "-t", &topic, "-K:", "-z", codec],
            &(lines.join("\n") + "\n"),
        );
        let codecs = stored_codecs(dir.path(), &topic);
        assert!(!codecs.is_empty(), "{codec}: nothing stored");
        // librdkafka sends a batch uncompressed when compressing would not
        // shrink it (a batch of one short line, when the lines arrive apart):
        // every batch is stored as it came, and at least one came compressed.
        assert!(
            codecs.iter().all(|c| *c == bits || *c == 0) && codecs.contains(&bits),
            "{codec}: stored batches carry codecs {codecs:?}, not {bits}"
        );
        assert_eq!(consume_all(&server, &topic, &[]).len(), 50, "{codec}");
    }
}

/// Produce v0–2 are advertised (for old librdkafka) and refused when used,
/// partition by partition, as Kafka 4.0 does; the connection goes on (but
/// for acks=0, which takes no answer: that closes it).
#[test]
fn produce_before_v3_is_answered_unsupported_version_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "old", "partitions": 2}));
    let body = |acks: i16| {
        let mut b = Vec::new();
        b.extend_from_slice(&acks.to_be_bytes());
        b.extend_from_slice(&1000i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes()); // one topic
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(b"old");
        b.extend_from_slice(&2i32.to_be_bytes()); // two partitions
        for p in 0..2i32 {
            b.extend_from_slice(&p.to_be_bytes());
            b.extend_from_slice(&5i32.to_be_bytes());
            b.extend_from_slice(b"hello"); // a v0 message set, never read
        }
        b
    };
    let mut s = connect(&server);
    for version in 0..3i16 {
        s.write_all(&frame(0, version, 40 + i32::from(version), &body(1)))
            .unwrap();
        let (correlation, answer) = read_response(&mut s).expect("an answer");
        assert_eq!(correlation, 40 + i32::from(version));
        let per_partition = 4 + 2 + 8 + if version >= 2 { 8 } else { 0 };
        let throttle = if version >= 1 { 4 } else { 0 };
        assert_eq!(answer.len(), 4 + 2 + 3 + 4 + 2 * per_partition + throttle);
        for p in 0..2 {
            let at = 4 + 2 + 3 + 4 + p * per_partition;
            assert_eq!(
                i32::from_be_bytes(answer[at..at + 4].try_into().unwrap()),
                p as i32
            );
            assert_eq!(
                i16::from_be_bytes([answer[at + 4], answer[at + 5]]),
                35,
                "v{version} partition {p}: UNSUPPORTED_VERSION"
            );
        }
    }
    // acks 0 takes no answer: the refusal closes the connection (as any
    // failed acks=0 Produce does, so that the producer finds out).
    s.write_all(&frame(0, 2, 50, &body(0))).unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "closed, unanswered"
    );
    let mut s = connect(&server);
    let topic = get(&server.url("/v1/topics/old")).json;
    for p in topic["partitions"].as_array().unwrap() {
        assert_eq!(p["high_watermark"], 0, "{topic}");
    }
    // ApiVersions says Produce 0..=10.
    s.write_all(&frame(18, 0, 52, &[])).unwrap();
    let (_, answer) = read_response(&mut s).unwrap();
    let count = i32::from_be_bytes(answer[2..6].try_into().unwrap()) as usize;
    let produce = (0..count)
        .map(|i| &answer[6 + i * 6..12 + i * 6])
        .find(|e| e[0..2] == [0, 0])
        .expect("Produce listed");
    assert_eq!((produce[3], produce[5]), (0, 10), "Produce min and max");
    assert_serving(&server);
    // Every refusal counts in the metrics, by API and Kafka's error name:
    // four requests (the acks 0 one too), two partitions each.
    assert_eq!(
        server.metric(
            "tidings_kafka_request_errors_total{api=\"Produce\",error=\"UNSUPPORTED_VERSION\"}"
        ),
        8.0
    );
}

/// Kafka's connections.max.idle.ms: a connection that sends nothing for the
/// idle timeout is closed; one that keeps asking is not.
#[test]
fn idle_kafka_connections_are_closed_and_busy_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--kafka-idle-timeout-ms", "1000"]);
    let mut idle = connect(&server);
    let mut busy = connect(&server);
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        busy.write_all(&frame(18, 0, i, &[])).unwrap();
        assert_eq!(
            read_response(&mut busy).unwrap().0,
            i,
            "the busy one is answered"
        );
    }
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "closed, nothing sent"
    );
    assert_eq!(
        server.metric("tidings_kafka_connections_idle_closed_total"),
        1.0
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--kafka-idle-timeout-ms", "10"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("kafka.idle_timeout_ms is 10; it must be at least 1000"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// A client that sends a frame's size and then trickles its bytes is
/// closed at the idle timeout too, as one that sends nothing.
#[test]
fn a_frame_that_does_not_arrive_within_the_idle_timeout_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--kafka-idle-timeout-ms", "1000"]);
    let mut slow = connect(&server);
    let whole = frame(18, 0, 7, &[]);
    slow.write_all(&whole[..6]).unwrap();
    let started = std::time::Instant::now();
    // A byte every 300 ms: the connection is never idle that long, but
    // the frame is not whole within the timeout.
    for &byte in &whole[6..whole.len() - 1] {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(&[byte]).is_err() || started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut rest = Vec::new();
    assert_eq!(
        slow.read_to_end(&mut rest).unwrap_or(0),
        0,
        "closed unanswered"
    );
    // The close comes before the log line and the count: wait for both.
    eventually("the slow frame logged", || {
        server.logs().contains("did not all arrive within 1000 ms")
    });
    eventually("the slow frame counted", || {
        server.metric("tidings_kafka_connections_idle_closed_total") == 1.0
    });
}

/// A Produce with acks=0 takes no answer, so one that fails closes its
/// connection (as Kafka does) and the producer finds out when it next
/// writes; one that succeeds keeps the connection.
#[test]
fn an_unanswered_produce_that_fails_closes_its_connection() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--kafka-auto-create-topics", "false"]);
    create_topic(&server, json!({"name": "orders", "partitions": 1}));
    let produce = |topic: &'static str| {
        ProduceRequest::default()
            .with_acks(0)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(crate::wire::record_batch(b"unanswered")))])])
    };
    let mut wire = crate::wire::Wire::open(&server);
    wire.send(ApiKey::Produce, 8, &produce("orders"));
    let answered: ApiVersionsResponse =
        wire.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(answered.error_code, 0, "still open after a good one");
    wire.send(ApiKey::Produce, 8, &produce("no-such-topic"));
    assert!(wire.closed_within(Duration::from_secs(10)));
    eventually("the failed unanswered Produce logged", || {
        server
            .logs()
            .contains("a Produce with acks=0 failed (no-such-topic/0: UNKNOWN_TOPIC_OR_PARTITION)")
    });
    let events = get(&server.url("/v1/topics/orders/events?partition=0&from=0"));
    assert_eq!(
        events.json["events"].as_array().unwrap().len(),
        1,
        "{}",
        events.text
    );
}

/// The listener's settings reach it from the configuration file and from flags.
#[test]
fn kafka_settings_come_from_the_configuration_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidings.toml");
    std::fs::write(&file, "[kafka]\ndefault_partitions = 3\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", file.to_str().unwrap()]);
    kcat(&server, &["-P", "-t", "wide"], "a\nb\n");
    let listing = kcat(&server, &["-L", "-t", "wide"], "");
    assert!(
        listing.contains("topic \"wide\" with 3 partitions"),
        "{listing}"
    );
    drop(server);

    let server = Server::start(&data, &["--kafka-auto-create-topics", "false"]);
    let listing = kcat(&server, &["-L", "-t", "absent"], "");
    assert!(listing.contains("Unknown topic or partition"), "{listing}");
    let absent = get(&server.url("/v1/topics/absent"));
    assert_eq!(absent.status, 404, "no topic was created: {}", absent.text);
}

/// The server's limit of partitions over all topics refuses, with the same
/// reason, a topic created over HTTP, partitions added over HTTP, and a topic
/// a Kafka client would auto-create.
#[test]
fn partitions_past_the_servers_limit_are_refused_on_every_surface() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--partitions-total-max", "3"]);
    create_topic(&server, json!({"name": "orders", "partitions": 2}));
    let refused = crate::support::post_json(
        &server.url("/v1/topics"),
        &json!({"name": "payments", "partitions": 2}),
    );
    assert_eq!((refused.status, refused.code()), (409, "limit_reached"));
    assert!(refused.text.contains("limit of 3"), "{}", refused.text);
    let grown = call(
        "PATCH",
        &server.url("/v1/topics/orders"),
        &[("content-type", "application/json")],
        br#"{"partitions": 4}"#,
    );
    assert_eq!((grown.status, grown.code()), (409, "limit_reached"));
    create_topic(&server, json!({"name": "payments", "partitions": 1}));
    let listing = kcat(&server, &["-L", "-t", "fresh"], "");
    assert!(listing.contains("Policy violation"), "{listing}");
    assert_eq!(get(&server.url("/v1/topics/fresh")).status, 404);
}

#[test]
fn auto_created_topics_take_acks_zero_and_read_from_offsets_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    kcat(
        &server,
        &["-P", "-t", "fresh", "-X", "acks=0"],
        "one\ntwo\nthree\n",
    );
    let listing = kcat(&server, &["-L", "-t", "fresh"], "");
    assert!(
        listing.contains("topic \"fresh\" with 1 partitions"),
        "{listing}"
    );
    // acks=0 gets no answer, but the records are stored before the next request.
    let got = consume_all(&server, "fresh", &[]);
    let values: Vec<&str> = got.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(values, ["one", "two", "three"]);
    // Reading from an offset and from the end.
    let tail = consume_all(&server, "fresh", &["-o", "1"]);
    assert_eq!(tail.len(), 2);
    assert!(consume_all(&server, "fresh", &["-o", "end"]).is_empty());
    // From a time (ListOffsets by timestamp): records appended after it only.
    std::thread::sleep(Duration::from_millis(20));
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(20));
    kcat(&server, &["-P", "-t", "fresh"], "four\n");
    let since = consume_all(&server, "fresh", &["-o", &format!("s@{cut}")]);
    let values: Vec<&str> = since.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(values, ["four"]);
}

#[test]
fn cloud_events_cross_between_http_and_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "payments", "partitions": 1}));
    // Published over HTTP: Kafka consumers see the binary mode's ce_* headers.
    let event = json!({
        "specversion": "1.0", "id": "evt-1", "source": "/billing",
        "type": "payment.failed", "datacontenttype": "application/json",
        "data": {"amount": 42}
    });
    let answer = call(
        "POST",
        &server.url("/v1/topics/payments/events"),
        &[("content-type", "application/cloudevents+json")],
        event.to_string().as_bytes(),
    );
    assert!(answer.status < 300, "{}", answer.text);
    let seen = kcat(
        &server,
        &["-C", "-t", "payments", "-e", "-q", "-f", "%h|%s\\n"],
        "",
    );
    assert!(seen.contains("ce_id=evt-1"), "{seen}");
    assert!(seen.contains("ce_type=payment.failed"), "{seen}");
    assert!(seen.contains("ce_source=/billing"), "{seen}");
    assert!(seen.trim_end().ends_with(r#"|{"amount":42}"#), "{seen}");

    // Produced by a Kafka client with ce_* headers: read over HTTP as a CloudEvent.
    kcat(
        &server,
        &[
            "-P",
            "-t",
            "payments",
            "-H",
            "ce_specversion=1.0",
            "-H",
            "ce_id=evt-2",
            "-H",
            "ce_source=/kafka",
            "-H",
            "ce_type=payment.retried",
            "-H",
            "content-type=application/json",
        ],
        "{\"amount\":7}\n",
    );
    let read = get(&server.url("/v1/topics/payments/events?from=1")).json;
    let events = read["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{read}");
    let e: &Value = &events[0]["event"];
    assert_eq!(e["id"], "evt-2", "{read}");
    assert_eq!(e["type"], "payment.retried");
    assert_eq!(e["source"], "/kafka");
    assert_eq!(e["data"], json!({"amount": 7}));
}

/// A hand-made request frame: API key, version, correlation id, client id
/// (header v1), then `body`.
pub(crate) fn frame(api: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&api.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes());
    f.extend_from_slice(body);
    let mut out = (f.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

pub(crate) fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.kafka_addr).unwrap_or_else(|e| {
        panic!(
            "cannot connect to the Kafka listener: {e}; server log:\n{}",
            server.logs()
        )
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response frame: its correlation id and the rest.
pub(crate) fn read_response(s: &mut TcpStream) -> Option<(i32, Vec<u8>)> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut body = vec![0; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).ok()?;
    let correlation = i32::from_be_bytes(body[..4].try_into().unwrap());
    Some((correlation, body[4..].to_vec()))
}

/// ApiVersions v0 works: the server is alive and answers in order.
fn assert_serving(server: &Server) {
    let mut s = connect(server);
    s.write_all(&frame(18, 0, 7, &[])).unwrap();
    s.write_all(&frame(18, 0, 8, &[])).unwrap();
    let (first, body) = read_response(&mut s).expect("an ApiVersions answer");
    assert_eq!(first, 7);
    assert_eq!(i16::from_be_bytes([body[0], body[1]]), 0, "no error");
    assert_eq!(
        read_response(&mut s).unwrap().0,
        8,
        "answers in request order"
    );
}

#[test]
fn api_versions_of_an_unknown_version_answers_error_35_with_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut s = connect(&server);
    // Version 99 with a flexible header (tagged fields byte) and an empty body.
    s.write_all(&frame(18, 99, 5, &[0])).unwrap();
    let (correlation, body) = read_response(&mut s).unwrap();
    assert_eq!(correlation, 5);
    assert_eq!(i16::from_be_bytes([body[0], body[1]]), 35);
    let count = i32::from_be_bytes(body[2..6].try_into().unwrap());
    let keys: Vec<i16> = (0..count as usize)
        .map(|i| i16::from_be_bytes([body[6 + i * 6], body[7 + i * 6]]))
        .collect();
    for key in [0, 1, 2, 3, 18, 19] {
        assert!(keys.contains(&key), "api {key} missing from {keys:?}");
    }
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut cases: Vec<Vec<u8>> = vec![
        // Sizes that are negative, too small, or far past the frame limit.
        (-1i32).to_be_bytes().to_vec(),
        3i32.to_be_bytes().to_vec(),
        i32::MAX.to_be_bytes().to_vec(),
        // An unknown API key, and an API this listener does not speak.
        frame(999, 0, 1, &[]),
        // SaslHandshake (17): not offered.
        frame(17, 0, 1, &[0, 0]),
        // Metadata v1 whose topic array claims 2^31-1 entries.
        frame(3, 1, 1, &i32::MAX.to_be_bytes()),
        // Metadata v9 (flexible) whose compact topic array claims 2^32-2 entries.
        frame(3, 9, 1, &[0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        // Produce v3 cut off inside its body.
        frame(0, 3, 1, &[0xff, 0xff, 0, 1]),
        // A frame announcing more bytes than ever arrive.
        {
            let mut f = frame(3, 1, 1, &[0, 0, 0, 0]);
            f[3] += 10;
            f
        },
    ];
    // Random bodies for every API the listener speaks, at random versions.
    for _ in 0..400 {
        let apis = [0i16, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 19];
        let api = apis[(next() % apis.len() as u64) as usize];
        let version = (next() % 14) as i16;
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        cases.push(frame(api, version, 1, &body));
    }
    for case in &cases {
        let mut s = connect(&server);
        let _ = s.write_all(case);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Either an answer (random bytes can be a valid request) or a close.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert_serving(&server);
    assert_eq!(get(&server.url("/healthz")).status, 200);
    eventually("malformed requests are logged", || {
        server.logs().contains("closing Kafka connection")
    });
    eventually("malformed requests are counted", || {
        server.metric("tidings_kafka_connections_refused_total") >= 9.0
    });
}

#[test]
fn http_and_tls_sent_to_the_kafka_port_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut s = connect(&server);
    s.write_all(b"GET /v1/topics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n")
            && answer.contains("This port speaks the Kafka protocol, not HTTP"),
        "{answer}"
    );
    // A TLS ClientHello's first bytes.
    let mut s = connect(&server);
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no Kafka answer to TLS");
    // The log lines come from the server's stderr, a moment later.
    eventually("both are logged as what they are", || {
        let logs = server.logs();
        logs.contains("the client sent HTTP (\"GET\"...) to the Kafka listener")
            && logs.contains("the client started a TLS handshake")
    });
    assert_serving(&server);
}

#[test]
fn a_kcat_consumer_group_commits_offsets_the_http_api_shows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "jobs", "partitions": 3}));
    let produce = |from: usize, to: usize| {
        let lines: String = (from..to)
            .map(|i| format!("job-{i}:payload-{i}\n"))
            .collect();
        kcat(
            &server,
            &[
                "-P",
                "-t",
                "jobs",
                "-K:",
                "-X",
                "topic.partitioner=murmur2_random",
            ],
            &lines,
        );
    };
    let consume = || -> Vec<String> {
        let out = kcat(
            &server,
            &[
                "-G",
                "workers",
                "-e",
                "-q",
                "-f",
                "%s\\n",
                "-X",
                "auto.offset.reset=earliest",
                "jobs",
            ],
            "",
        );
        let mut values: Vec<String> = out.lines().map(str::to_owned).collect();
        values.sort();
        values
    };
    produce(0, 60);
    let first = consume();
    assert_eq!(first.len(), 60, "{first:?}");
    // The group's commits are the broker's: lag 0 on every partition.
    let group = get(&server.url("/v1/groups/workers")).json;
    assert_eq!(group["topics"], json!(["jobs"]), "{group}");
    assert_eq!(group["lag"], 0, "{group}");
    let committed: u64 = group["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(committed, 60, "{group}");
    // Joining again resumes from the committed offsets: only new records.
    produce(60, 75);
    let second = consume();
    let mut expected: Vec<String> = (60..75).map(|i| format!("payload-{i}")).collect();
    expected.sort();
    assert_eq!(second, expected);
}

/// Starts the kafkajs script with `args`; stdout and stderr piped.
fn kafkajs(args: &[&str]) -> std::process::Child {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/kafkajs_group.js"
    );
    Command::new("node")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is not installed")
}

/// Waits for the script and parses its one JSON line.
fn script_result(child: std::process::Child, server: &Server) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafkajs failed (run ./scripts/test to install it): {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn a_kafkajs_group_of_three_shares_the_work_and_takes_over_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let broker = server.kafka_addr.to_string();
    let child = kafkajs(&[&broker, "work", "crew", "rebalance", "300"]);
    let result = script_result(child, &server);
    let sent = strings(&result["sent"]);
    let received = strings(&result["received"]);
    assert_eq!(sent.len(), 600);
    // Every message exactly once across the members, before and after one left.
    assert_eq!(received, sent);
    assert_eq!(result["members_first"], json!(["a", "b", "c"]), "{result}");
    // After c left, only a and b consumed, and the last rebalance gave the two of
    // them every partition. (Which of them consumed the rest depends on timing:
    // a member keeps fetching its old partitions until it learns of the
    // rebalance, as with any Kafka broker.)
    let after = result["members_after"].as_array().unwrap();
    assert!(
        !after.is_empty() && !after.contains(&json!("c")),
        "{result}"
    );
    let mut last: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for join in result["joins"].as_array().unwrap() {
        let partitions = join["assigned"].as_array().unwrap();
        let member = join["member"].as_str().unwrap().to_owned();
        last.insert(
            member,
            partitions.iter().map(|p| p.as_u64().unwrap()).collect(),
        );
    }
    let mut covered: Vec<u64> = ["a", "b"]
        .iter()
        .flat_map(|m| last.get(*m).cloned().unwrap_or_default())
        .collect();
    covered.sort_unstable();
    assert_eq!(
        covered,
        [0, 1, 2],
        "{result}\nserver log:\n{}",
        server.logs()
    );
    // The group's offsets are the broker's: nothing left to read.
    let group = get(&server.url("/v1/groups/crew")).json;
    assert_eq!(group["lag"], 0, "{group}");
}

#[test]
fn kafkajs_clients_reconnect_after_the_server_is_killed_and_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "ledger", "partitions": 3}));
    let (http, kafka) = (server.addr.to_string(), server.kafka_addr.to_string());
    let mut child = kafkajs(&[&kafka, "ledger", "auditors", "restart", "3000"]);
    // Follow the producer's progress; kill the server once it is mid-stream.
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let progress = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufRead::lines(stderr) {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                let _ = tx.send(n.parse::<usize>().unwrap());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let at_kill = loop {
        let n = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the producer makes progress");
        if n >= 500 {
            break n;
        }
    };
    drop(server); // SIGKILL
    let server = Server::start_on(dir.path(), &http, &kafka, &[]);
    let out = child.wait_with_output().unwrap();
    let log = progress.join().unwrap();
    assert!(
        out.status.success(),
        "kafkajs failed: {log}\nserver log:\n{}",
        server.logs()
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let acked = strings(&result["acked"]);
    assert!(at_kill < 3000, "the kill came mid-stream");
    assert_eq!(
        acked.len(),
        3000,
        "the producer carried on after the restart"
    );
    let received: std::collections::BTreeSet<String> =
        strings(&result["received"]).into_iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|v| !received.contains(*v)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[test]
fn kafka_python_consumes_in_a_group_and_resumes_from_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "py", "partitions": 2}));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/kafka_python_group.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args([&server.kafka_addr.to_string(), "py", "py-group", "100"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-python failed (run ./scripts/test to install it): {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = strings(&result["first"]);
    let mut expected: Vec<String> = (0..100).map(|i| format!("py-{i}")).collect();
    expected.sort();
    assert_eq!(first, expected);
    assert_eq!(
        result["again"],
        json!([]),
        "a rejoin resumes after the commits"
    );
    let group = get(&server.url("/v1/groups/py-group")).json;
    assert_eq!(group["lag"], 0, "{group}");
}

/// The listener counts requests by API and version, and the bytes of each
/// request and answer exactly as they crossed the connection.
#[test]
fn requests_are_counted_by_version_with_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut s = connect(&server);
    let (mut received, mut sent) = (0, 0);
    // ApiVersions v0 twice, and v3 (flexible: client name and version).
    let v3_body = [0x05, b't', b'e', b's', b't', 0x02, b'1', 0x00];
    for (version, correlation, body) in [(0i16, 1, &[][..]), (0, 2, &[]), (3, 3, &v3_body[..])] {
        let mut request = frame(18, version, correlation, body);
        if version >= 3 {
            // The flexible request header's tagged fields, after the client id.
            request.insert(14, 0);
            let size = (request.len() - 4) as i32;
            request[..4].copy_from_slice(&size.to_be_bytes());
        }
        s.write_all(&request).unwrap();
        received += request.len();
        let (answered, body) = read_response(&mut s).expect("an ApiVersions answer");
        assert_eq!(answered, correlation);
        sent += 4 + 4 + body.len();
    }
    let versions = |v: i16| {
        server.metric(&format!(
            "tidings_kafka_requests_total{{api=\"ApiVersions\",version=\"{v}\"}}"
        ))
    };
    assert_eq!(versions(0), 2.0);
    assert_eq!(versions(3), 1.0);
    assert_eq!(
        server.metric("tidings_kafka_received_bytes_total{api=\"ApiVersions\"}"),
        received as f64
    );
    assert_eq!(
        server.metric("tidings_kafka_sent_bytes_total{api=\"ApiVersions\"}"),
        sent as f64
    );
    let text = get(&server.url("/metrics")).text;
    for family in [
        "tidings_kafka_received_bytes_total",
        "tidings_kafka_sent_bytes_total",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
}
