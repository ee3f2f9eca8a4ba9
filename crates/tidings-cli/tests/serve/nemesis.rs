//! A nemesis on the real binary: while HTTP producers, a queue consumer, a
//! stream group committing offsets, kcat and kafkajs run against
//! `tidings serve`, the test kills it (SIGKILL, then a restart), pauses it
//! (SIGSTOP, SIGCONT) and stops it (SIGTERM, then a restart) at random
//! moments, 200 times. Then, as Kafka's own system tests judge a run:
//! every acknowledged event was consumed (duplicates counted, not failed),
//! each producer's per-key order held, the queue group acknowledged every
//! event, and no group's commit went back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{create_topic, third_party, Server};

const FAULTS: u32 = 200;
/// Where the events of the HTTP producers go, consumed by the queue group
/// and the stream group.
const HTTP_TOPIC: &str = "nem-http";
/// Where kcat and kafkajs produce.
const KAFKA_TOPIC: &str = "nem-kafka";
const PARTITIONS: u32 = 3;

/// SplitMix64, so a run's faults follow its printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// A loopback address nobody listens on yet; the server is restarted on it.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A client that answers `None` when the server is down or paused past a
/// short timeout, instead of failing the test.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    ct: &str,
    body: &[u8],
) -> Option<(u16, Value)> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", ct)
        .body(body.to_vec())
        .unwrap();
    let mut response = agent.run(request).ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Where the server is now: the same addresses across restarts.
struct Target {
    http: String,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

/// An HTTP producer: batches of 4 events, keys `h<p>-k<0..5>`, sequence
/// numbers per key, each batch sent again (same ids) until acknowledged.
fn http_producer(
    p: u32,
    target: Arc<Target>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let agent = agent();
    let mut seq: BTreeMap<u32, u64> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let events: Vec<Value> = (0..4)
            .map(|_| {
                n += 1;
                let key = (n % 5) as u32;
                let s = seq.entry(key).or_default();
                *s += 1;
                json!({"specversion": "1.0", "id": format!("h{p}-k{key}-{s}"), "source": "/nemesis",
                       "type": "nemesis", "partitionkey": format!("h{p}-k{key}")})
            })
            .collect();
        let body = json!(events).to_string();
        loop {
            let url = target.url(&format!("/v1/topics/{HTTP_TOPIC}/events"));
            match send(
                &agent,
                "POST",
                &url,
                "application/cloudevents-batch+json",
                body.as_bytes(),
            ) {
                Some((200, _)) => break,
                Some((status, answer)) if status < 500 => {
                    panic!("publish answered {status}: {answer}")
                }
                // Down, paused, draining (503): the same batch again; its ids
                // make a repeat harmless.
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        acked
            .lock()
            .unwrap()
            .extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        // A steady trickle, not a flood: the checks read everything back.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the queue consumers saw: the places whose ack was answered, and any
/// delivered again after that answer.
#[derive(Default)]
struct QueueSeen {
    acked: BTreeSet<(u64, u64)>,
    acked_ids: BTreeSet<String>,
    redelivered_after_ack: Vec<String>,
}

/// A queue consumer: receives, acknowledges, and records what the server
/// answered as acknowledged. (An ack applied by a server killed before it
/// answered is not recorded: the server's state judges those.)
fn queue_consumer(target: Arc<Target>, stop: Arc<AtomicBool>, seen: Arc<Mutex<QueueSeen>>) {
    let agent = agent();
    while !stop.load(Ordering::Relaxed) {
        let url = target.url("/v1/queues/nem-workers/receive?max=50&wait_ms=200");
        let Some((200, answer)) = send(&agent, "POST", &url, "application/json", b"") else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let deliveries = answer["deliveries"].as_array().cloned().unwrap_or_default();
        if deliveries.is_empty() {
            continue;
        }
        let place = |d: &Value| {
            (
                d["partition"].as_u64().unwrap(),
                d["offset"].as_u64().unwrap(),
            )
        };
        {
            let mut seen = seen.lock().unwrap();
            for d in &deliveries {
                if seen.acked.contains(&place(d)) {
                    let what = format!("{:?} attempt {}", place(d), d["attempt"]);
                    seen.redelivered_after_ack.push(what);
                }
            }
        }
        let leases: Vec<Value> = deliveries.iter().map(|d| d["lease"].clone()).collect();
        let url = target.url("/v1/queues/nem-workers/acks");
        let body = json!({"leases": leases}).to_string();
        if let Some((200, answer)) = send(&agent, "POST", &url, "application/json", body.as_bytes())
        {
            let failed: BTreeSet<&str> = answer["failed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["lease"].as_str())
                .collect();
            let mut seen = seen.lock().unwrap();
            for d in &deliveries {
                if !failed.contains(d["lease"].as_str().unwrap_or_default()) {
                    seen.acked.insert(place(d));
                    seen.acked_ids
                        .insert(d["event"]["id"].as_str().unwrap().to_owned());
                }
            }
        }
        // Otherwise the leases run out and the events come again.
    }
}

/// A stream-group member: joins (again after every restart), polls and
/// commits; records the highest commit the server acknowledged per partition.
fn committer(
    target: Arc<Target>,
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<BTreeMap<u64, u64>>>,
) {
    let agent = agent();
    let mut member: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(id) = member.clone() else {
            let url = target.url("/v1/groups/nem-readers/members");
            let body = json!({"topic": HTTP_TOPIC, "session_timeout_ms": 60000}).to_string();
            match send(&agent, "POST", &url, "application/json", body.as_bytes()) {
                Some((201, answer)) => member = answer["member"].as_str().map(str::to_owned),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
            continue;
        };
        let url = target.url(&format!(
            "/v1/groups/nem-readers/members/{id}/events?wait_ms=200&limit=100"
        ));
        let answer = match send(&agent, "GET", &url, "application/json", b"") {
            Some((200, answer)) => answer,
            Some((404, _)) => {
                // Forgotten across a restart: join again.
                member = None;
                continue;
            }
            _ => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let mut next: BTreeMap<u64, u64> = BTreeMap::new();
        for e in answer["events"].as_array().cloned().unwrap_or_default() {
            let (p, o) = (
                e["partition"].as_u64().unwrap(),
                e["offset"].as_u64().unwrap(),
            );
            let at = next.entry(p).or_default();
            *at = (*at).max(o + 1);
        }
        if next.is_empty() {
            continue;
        }
        let offsets: serde_json::Map<String, Value> = next
            .iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect();
        let url = target.url(&format!("/v1/groups/nem-readers/members/{id}/commit"));
        let body = json!({"offsets": offsets}).to_string();
        match send(&agent, "POST", &url, "application/json", body.as_bytes()) {
            Some((status, _)) if status < 300 => {
                let mut committed = committed.lock().unwrap();
                for (p, o) in next {
                    let at = committed.entry(p).or_default();
                    *at = (*at).max(o);
                }
            }
            Some((404 | 409, _)) => member = None,
            _ => {}
        }
    }
}

/// kcat, run again and again at its defaults (acks=all, retries) with 20
/// keyed messages a run; a run that exits 0 delivered them all.
fn kcat_producer(kafka: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let mut run = 0u64;
    while !stop.load(Ordering::Relaxed) {
        run += 1;
        let lines: Vec<String> = (0..20)
            .map(|i| format!("kc-k{}:kc-{run}-{i}", i % 4))
            .collect();
        let child = third_party("kcat")
            .args(["-b", &kafka, "-P", "-t", KAFKA_TOPIC, "-K:"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kcat is not installed: run ./scripts/test");
        let mut child = child;
        child
            .stdin
            .take()
            .unwrap()
            .write_all((lines.join("\n") + "\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() && !stderr.contains("Delivery failed") {
            acked.lock().unwrap().extend(
                lines
                    .iter()
                    .map(|l| l.split_once(':').unwrap().1.to_owned()),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every event id (HTTP topic) or value (Kafka topic) stored, per partition,
/// in offset order, read over HTTP.
fn read_all(server: &Server, topic: &str) -> Vec<Vec<String>> {
    let mut partitions = Vec::new();
    for p in 0..PARTITIONS {
        let mut from = 0;
        let mut stored = Vec::new();
        loop {
            let read = crate::support::get(&server.url(&format!(
                "/v1/topics/{topic}/events?partition={p}&from={from}&limit=1000"
            )));
            assert_eq!(read.status, 200, "{}", read.text);
            let events = read.json["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            for e in events {
                let item = match topic {
                    HTTP_TOPIC => e["event"]["id"].as_str().unwrap().to_owned(),
                    // A Kafka client's record, as the HTTP read renders it.
                    _ => decode_base64(e["record"]["value"].as_str().unwrap()),
                };
                stored.push(item);
            }
            from = read.json["next"][p.to_string()].as_u64().unwrap();
        }
        partitions.push(stored);
    }
    partitions
}

fn decode_base64(text: &str) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

/// Per key, the sequence of first sightings must rise: `(key, seq)` from
/// each stored item, in offset order within its partition.
fn order_breaks(
    partitions: &[Vec<String>],
    key_seq: impl Fn(&str) -> Option<(String, u64)>,
) -> Vec<String> {
    let mut breaks = Vec::new();
    for stored in partitions {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for item in stored {
            let Some((key, seq)) = key_seq(item) else {
                continue;
            };
            if !seen.insert(item.clone()) {
                continue; // a duplicate: counted, not an order break
            }
            if let Some(&before) = last.get(&key) {
                if seq < before {
                    breaks.push(format!("{key}: {seq} after {before}"));
                }
            }
            last.insert(key, seq);
        }
    }
    breaks
}

/// No partition's committed offset is below one the server acknowledged
/// (checked right after each restart, before the committer is back, and at
/// the end).
fn check_commits(server: &Server, acknowledged: &BTreeMap<u64, u64>) {
    let group = crate::support::get(&server.url("/v1/groups/nem-readers"));
    if group.status == 404 && acknowledged.is_empty() {
        return;
    }
    assert_eq!(group.status, 200, "{}", group.text);
    for (p, o) in acknowledged {
        let now = group.json["partitions"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["partition"].as_u64() == Some(*p)))
            .and_then(|x| x["committed"].as_u64())
            .unwrap_or(0);
        assert!(
            now >= *o,
            "partition {p} is committed at {now}; {o} was acknowledged before: {}",
            group.text
        );
    }
}

#[test]
fn two_hundred_kills_pauses_and_stops_lose_nothing_acknowledged() {
    let seed = std::env::var("TIDINGS_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("nemesis seed {seed} (TIDINGS_NEMESIS_SEED replays the fault schedule)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let (http, kafka) = (free_addr(), free_addr());
    let data: &Path = dir.path();
    // Short shutdowns: SIGTERM must finish in time, and a paused server's
    // drain must not hold the run.
    let flags = ["--shutdown-timeout-ms", "2000"];
    let server = RwLock::new(Some(Server::start_on(data, &http, &kafka, &flags)));
    {
        let s = server.read().unwrap();
        let s = s.as_ref().unwrap();
        create_topic(s, json!({"name": HTTP_TOPIC, "partitions": PARTITIONS}));
        create_topic(s, json!({"name": KAFKA_TOPIC, "partitions": PARTITIONS}));
        let queue = crate::support::post_json(
            &s.url("/v1/queues"),
            &json!({"name": "nem-workers", "topic": HTTP_TOPIC, "ack_timeout_ms": 2000,
                    "max_deliveries": 1000, "from": "earliest"}),
        );
        assert_eq!(queue.status, 201, "{}", queue.text);
    }
    let target = Arc::new(Target { http: http.clone() });
    let stop = Arc::new(AtomicBool::new(false));
    let http_acked = Arc::new(Mutex::new(Vec::new()));
    let kcat_acked = Arc::new(Mutex::new(Vec::new()));
    let queue_seen = Arc::new(Mutex::new(QueueSeen::default()));
    let committed = Arc::new(Mutex::new(BTreeMap::new()));
    let mut clients = Vec::new();
    for p in 0..2 {
        let (t, s, a) = (
            Arc::clone(&target),
            Arc::clone(&stop),
            Arc::clone(&http_acked),
        );
        clients.push(std::thread::spawn(move || http_producer(p, t, s, a)));
    }
    {
        let (t, s, d) = (
            Arc::clone(&target),
            Arc::clone(&stop),
            Arc::clone(&queue_seen),
        );
        clients.push(std::thread::spawn(move || queue_consumer(t, s, d)));
        let (t, s, c) = (
            Arc::clone(&target),
            Arc::clone(&stop),
            Arc::clone(&committed),
        );
        clients.push(std::thread::spawn(move || committer(t, s, c)));
        let (k, s, a) = (kafka.clone(), Arc::clone(&stop), Arc::clone(&kcat_acked));
        clients.push(std::thread::spawn(move || kcat_producer(k, s, a)));
    }
    let kafkajs = third_party("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/kafkajs_nemesis.js"
        ))
        .args([&kafka, KAFKA_TOPIC, "1500"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is not installed: run ./scripts/test");

    // The nemesis.
    let started = Instant::now();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut restarts = 0u32;
    for _ in 0..FAULTS {
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        let mut guard = server.write().unwrap();
        let s = guard.take().unwrap();
        let fault = match rng.below(10) {
            0..=3 => {
                s.signal("STOP");
                std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
                s.signal("CONT");
                *guard = Some(s);
                "SIGSTOP/SIGCONT"
            }
            4..=7 => {
                s.signal("KILL");
                let _ = s.wait();
                let before = committed.lock().unwrap().clone();
                let restarted = Server::start_on(data, &http, &kafka, &flags);
                check_commits(&restarted, &before);
                *guard = Some(restarted);
                restarts += 1;
                "SIGKILL"
            }
            _ => {
                let t = Instant::now();
                let status = s.terminate();
                // Redpanda's rule: a stop that does not finish is a bug.
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "SIGTERM took {:?}",
                    t.elapsed()
                );
                assert!(status.success() || status.code().is_none(), "{status:?}");
                let before = committed.lock().unwrap().clone();
                let restarted = Server::start_on(data, &http, &kafka, &flags);
                check_commits(&restarted, &before);
                *guard = Some(restarted);
                restarts += 1;
                "SIGTERM"
            }
        };
        *counts.entry(fault).or_default() += 1;
    }
    let faulted = started.elapsed();

    // Calm: the clients finish what they have under way, then stop.
    std::thread::sleep(Duration::from_millis(500));
    let js = kafkajs.wait_with_output().unwrap();
    assert!(
        js.status.success(),
        "kafkajs failed: {}",
        String::from_utf8_lossy(&js.stderr)
    );
    let js: Value = serde_json::from_slice(&js.stdout).unwrap();
    let js_acked: Vec<String> = js["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(js_acked.len(), 1500, "kafkajs finished its messages");
    // The queue consumer drains: every published event acknowledged.
    let http_acked: Vec<String> = {
        stop.store(true, Ordering::Relaxed);
        let mut producers = clients;
        let consumer_and_rest = producers.split_off(2);
        for p in producers {
            p.join().unwrap();
        }
        for c in consumer_and_rest {
            c.join().unwrap();
        }
        http_acked.lock().unwrap().clone()
    };
    let guard = server.read().unwrap();
    let s = guard.as_ref().unwrap();
    let drain_stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let (t, st, d) = (
            Arc::clone(&target),
            Arc::clone(&drain_stop),
            Arc::clone(&queue_seen),
        );
        std::thread::spawn(move || queue_consumer(t, st, d))
    };
    let stored_http = read_all(s, HTTP_TOPIC);
    let all_http: BTreeSet<String> = stored_http.iter().flatten().cloned().collect();
    // The queue group acknowledged every event: the server's own state, since
    // an ack it applied just before a kill was never answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queue = crate::support::get(&s.url("/v1/queues/nem-workers")).json;
        let settled = queue["in_flight"] == 0
            && queue["dead_letters"] == 0
            && queue["partitions"].as_array().is_some_and(|ps| {
                ps.iter()
                    .all(|p| p["ack_floor"] == p["high_watermark"] && p["retrying"] == 0)
            });
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue group did not acknowledge every event: {queue}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drain_stop.store(true, Ordering::Relaxed);
    drainer.join().unwrap();
    let redelivered = queue_seen.lock().unwrap().redelivered_after_ack.clone();
    assert!(
        redelivered.is_empty(),
        "events delivered again after their ack was answered: {redelivered:?}"
    );

    // Every acknowledged event consumed (read back), duplicates counted.
    let lost: Vec<&String> = http_acked
        .iter()
        .filter(|id| !all_http.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged HTTP events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let stored_kafka = read_all(s, KAFKA_TOPIC);
    let all_kafka: BTreeMap<&String, usize> =
        stored_kafka
            .iter()
            .flatten()
            .fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v).or_default() += 1;
                m
            });
    let kcat_acked = kcat_acked.lock().unwrap().clone();
    for (who, acked) in [("kcat", &kcat_acked), ("kafkajs", &js_acked)] {
        let lost: Vec<&String> = acked
            .iter()
            .filter(|v| !all_kafka.contains_key(v))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged {who} messages lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }
    let duplicates = stored_http.iter().map(Vec::len).sum::<usize>() - all_http.len()
        + all_kafka.values().filter(|&&n| n > 1).count();

    // Per-key order, for the producers that send one request at a time.
    let http_breaks = order_breaks(&stored_http, |id| {
        let (key, seq) = id.rsplit_once('-')?;
        Some((key.to_owned(), seq.parse().ok()?))
    });
    assert!(
        http_breaks.is_empty(),
        "HTTP per-key order broken: {http_breaks:?}"
    );
    let js_breaks = order_breaks(&stored_kafka, |v| {
        let n: u64 = v.strip_prefix("js-")?.parse().ok()?;
        Some((format!("js-k{}", n % 7), n))
    });
    assert!(
        js_breaks.is_empty(),
        "kafkajs per-key order broken: {js_breaks:?}"
    );

    // No group lost a commit.
    let committed = committed.lock().unwrap().clone();
    check_commits(s, &committed);

    eprintln!(
        "nemesis: {FAULTS} faults in {:.1} s ({counts:?}), {} restarts; acknowledged: {} HTTP events, {} kcat and {} kafkajs messages; queue acks answered {}; commits acknowledged on {} partitions; duplicates {duplicates}; nothing lost",
        faulted.as_secs_f64(),
        restarts,
        http_acked.len(),
        kcat_acked.len(),
        js_acked.len(),
        queue_seen.lock().unwrap().acked.len(),
        committed.len(),
    );
    assert!(!committed.is_empty() && kcat_acked.len() >= 20 && http_acked.len() >= 100);
}
