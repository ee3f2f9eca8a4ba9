//! Idempotent Kafka producers against the listener: producer ids, a batch
//! retried across a server crash stored once, sequence gaps refused, and
//! transactional producers told at once that there are no transactions.

use std::io::Write;

use serde_json::json;

use crate::kafka::{connect, frame, read_response};
use crate::support::{create_topic, get, Server};

/// Zigzag varint, as record fields are written.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A RecordBatch v2 of `values` from producer `pid`, epoch `epoch`, its
/// first record at sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut body = vec![0u8]; // attributes
        varint(&mut body, 0); // timestamp delta
        varint(&mut body, i as i64); // offset delta
        varint(&mut body, -1); // no key
        varint(&mut body, v.len() as i64);
        body.extend_from_slice(v.as_bytes());
        varint(&mut body, 0); // no headers
        varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut covered = Vec::new();
    covered.extend_from_slice(&0i16.to_be_bytes()); // attributes
    covered.extend_from_slice(&(values.len() as i32 - 1).to_be_bytes());
    covered.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    covered.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    covered.extend_from_slice(&pid.to_be_bytes());
    covered.extend_from_slice(&epoch.to_be_bytes());
    covered.extend_from_slice(&seq.to_be_bytes());
    covered.extend_from_slice(&(values.len() as i32).to_be_bytes());
    covered.extend_from_slice(&records);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&(4 + 1 + 4 + covered.len() as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
    batch.extend_from_slice(&covered);
    batch
}

/// A Produce v3 request body with `acks` all: one partition of `topic`.
fn produce_body(topic: &str, partition: i32, batch: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // acks all
    b.extend_from_slice(&10_000i32.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    b.extend_from_slice(batch);
    b
}

/// Sends a Produce v3 of `batch` and reads its one partition's error code and
/// base offset.
fn produce(server: &Server, topic: &str, batch: &[u8]) -> (i16, i64) {
    let mut s = connect(server);
    s.write_all(&frame(0, 3, 9, &produce_body(topic, 0, batch)))
        .unwrap();
    let (correlation, body) = read_response(&mut s).expect("a Produce answer");
    assert_eq!(correlation, 9);
    // topics(1) name partitions(1) index error base_offset log_append_time throttle
    let at = 4 + 2 + topic.len() + 4 + 4;
    let code = i16::from_be_bytes([body[at], body[at + 1]]);
    let base = i64::from_be_bytes(body[at + 2..at + 10].try_into().unwrap());
    (code, base)
}

/// InitProducerId v0 without a transactional id: the error code, id and epoch.
fn init_producer_id(server: &Server, transactional_id: Option<&str>) -> (i16, i64, i16) {
    let mut body = Vec::new();
    match transactional_id {
        Some(id) => {
            body.extend_from_slice(&(id.len() as i16).to_be_bytes());
            body.extend_from_slice(id.as_bytes());
        }
        None => body.extend_from_slice(&(-1i16).to_be_bytes()),
    }
    body.extend_from_slice(&60_000i32.to_be_bytes());
    let mut s = connect(server);
    s.write_all(&frame(22, 0, 3, &body)).unwrap();
    let (_, answer) = read_response(&mut s).expect("an InitProducerId answer");
    (
        i16::from_be_bytes([answer[4], answer[5]]),
        i64::from_be_bytes(answer[6..14].try_into().unwrap()),
        i16::from_be_bytes([answer[14], answer[15]]),
    )
}

fn high_watermark(server: &Server, topic: &str) -> u64 {
    let t = get(&server.url(&format!("/v1/topics/{topic}"))).json;
    t["partitions"][0]["high_watermark"].as_u64().unwrap()
}

/// The server dies after storing a batch and before its answer reaches the
/// producer, which sends the batch again to the restarted server: it is
/// answered where it was stored, and stored once.
#[test]
fn a_batch_retried_across_a_server_crash_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "ledger", "partitions": 1}));
    let (code, pid, epoch) = init_producer_id(&server, None);
    assert_eq!((code, epoch), (0, 0));
    let (code, second, _) = init_producer_id(&server, None);
    assert_eq!(code, 0);
    assert_ne!(pid, second, "every producer gets its own id");
    let first = idempotent_batch(pid, 0, 0, &["debit 10", "credit 10"]);
    assert_eq!(produce(&server, "ledger", &first), (0, 0));
    assert_eq!(
        produce(&server, "ledger", &idempotent_batch(pid, 0, 2, &["fee 1"])),
        (0, 2)
    );
    let (http, kafka) = (server.addr.to_string(), server.kafka_addr.to_string());
    drop(server); // SIGKILL: no clean close, no producer snapshot at the end
    let server = Server::start_on(dir.path(), &http, &kafka, &[]);
    // The last batch again, as a producer retries one whose answer it lost.
    let retried = idempotent_batch(pid, 0, 2, &["fee 1"]);
    assert_eq!(
        produce(&server, "ledger", &retried),
        (0, 2),
        "its first place"
    );
    assert_eq!(high_watermark(&server, "ledger"), 3, "stored once");
    // A gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), the next one taken.
    let gap = idempotent_batch(pid, 0, 9, &["lost"]);
    assert_eq!(produce(&server, "ledger", &gap).0, 45);
    assert_eq!(
        produce(&server, "ledger", &idempotent_batch(pid, 0, 3, &["fee 2"])),
        (0, 3)
    );
    // Ids handed out after the restart are new ones.
    let (_, after, _) = init_producer_id(&server, None);
    assert!(after > second, "{after} after {second}");
    assert_eq!(high_watermark(&server, "ledger"), 4);
}

#[test]
fn a_transactional_producer_is_told_there_are_no_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (code, pid, _) = init_producer_id(&server, Some("payments-tx"));
    assert_eq!(
        (code, pid),
        (53, -1),
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    );
    crate::support::eventually("the refusal is logged", || {
        server
            .logs()
            .contains("transactions are not supported by Tidings")
    });
}
