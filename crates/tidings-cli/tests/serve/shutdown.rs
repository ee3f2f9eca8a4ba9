//! SIGTERM while producers publish: the server stops accepting, finishes what is
//! under way, exits 0, and after a restart every acknowledged event is there.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::support::{call, create_topic, get, Server};

#[test]
fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders", "partitions": 3}));
    let url = server.url("/v1/topics/orders/events");
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let url = url.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut refused = 0;
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("p{p}-{i}");
                    let body = json!([
                        {"specversion": "1.0", "id": format!("{id}-a"), "source": "/load", "type": "t", "partitionkey": id},
                        {"specversion": "1.0", "id": format!("{id}-b"), "source": "/load", "type": "t"},
                    ]);
                    let request = ureq::http::Request::builder()
                        .method("POST")
                        .uri(&url)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(body.to_string().into_bytes())
                        .unwrap();
                    match crate::support::agent().run(request) {
                        Ok(r) if r.status() == 200 => {
                            let mut acked = acknowledged.lock().unwrap();
                            acked.insert(format!("{id}-a"));
                            acked.insert(format!("{id}-b"));
                        }
                        Ok(r) => {
                            assert_eq!(r.status(), 503, "while stopping, only 503 is expected");
                            refused += 1;
                        }
                        // The listener is closed.
                        Err(_) => refused += 1,
                    }
                    if refused > 0 {
                        break;
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 400 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = server.terminate();
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    assert!(status.success(), "exit status {status:?}");

    let server = Server::start(dir.path(), &[]);
    let mut stored = BTreeSet::new();
    for partition in 0..3 {
        let mut from = 0;
        loop {
            let read = get(&server.url(&format!(
                "/v1/topics/orders/events?partition={partition}&from={from}&limit=1000"
            )));
            assert_eq!(read.status, 200, "{}", read.text);
            let events = read.json["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            for e in events {
                stored.insert(e["event"]["id"].as_str().unwrap().to_owned());
            }
            from = read.json["next"][partition.to_string()].as_u64().unwrap();
        }
    }
    let acknowledged = acknowledged.lock().unwrap();
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(acknowledged.len() >= 400);
    let health = call("GET", &server.url("/healthz"), &[], b"");
    assert_eq!(health.status, 200);
}

/// Long-polls and event streams end when the server starts draining, instead of holding the
/// shutdown for their whole wait: with a shutdown timeout far longer than the
/// test waits for a process, the server still stops.
#[test]
fn waiting_long_polls_and_streams_do_not_hold_up_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shutdown-timeout-ms", "600000"]);
    create_topic(&server, json!({"name": "jobs"}));
    let created = crate::support::post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let joined = crate::support::post_json(
        &server.url("/v1/groups/readers/members"),
        &json!({"topic": "jobs"}),
    );
    let member = joined.json["member"].as_str().unwrap().to_owned();
    let receive = server.url("/v1/queues/workers/receive?wait_ms=30000");
    let poll = server.url(&format!(
        "/v1/groups/readers/members/{member}/events?wait_ms=30000"
    ));
    let waiting = [
        std::thread::spawn(move || call("POST", &receive, &[], b"")),
        std::thread::spawn(move || get(&poll)),
    ];
    let stream = {
        let request = ureq::http::Request::builder()
            .uri(server.url("/v1/topics/jobs/events"))
            .header("accept", "text/event-stream")
            .body(Vec::new())
            .unwrap();
        let response = crate::support::agent().run(request).unwrap();
        assert_eq!(response.status(), 200);
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ =
                std::io::Read::read_to_string(&mut response.into_body().into_reader(), &mut rest);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = server.terminate();
    stream.join().unwrap();
    assert!(status.success(), "exit status {status:?}");
    for w in waiting {
        let answer = w.join().unwrap();
        assert!(
            answer.status == 200 || answer.status == 503,
            "{}: {}",
            answer.status,
            answer.text
        );
    }
}

/// While the server drains it hands out no new work but still takes answers to
/// the work it handed out: the shutdown waits for the lease to be acked, and
/// after a restart the acked event is not delivered again.
#[test]
fn consumers_answer_their_leases_while_the_server_drains() {
    let dir = tempfile::tempdir().unwrap();
    // A lease wait far longer than the test waits for a process: the server
    // can only stop in time because the ack gets through.
    let server = Server::start(dir.path(), &["--shutdown-timeout-ms", "600000"]);
    create_topic(&server, json!({"name": "jobs"}));
    let created = crate::support::post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let event = json!({"specversion": "1.0", "id": "only", "source": "/t", "type": "t"});
    let events = server.url("/v1/topics/jobs/events");
    let structured = [("content-type", "application/cloudevents+json")];
    assert_eq!(
        call("POST", &events, &structured, event.to_string().as_bytes()).status,
        200
    );
    let receive = server.url("/v1/queues/workers/receive?max=1");
    let received = call("POST", &receive, &[], b"");
    let lease = received.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();

    server.signal_term();
    let started = std::time::Instant::now();
    loop {
        let refused = call("POST", &receive, &[], b"");
        if refused.status == 503 {
            assert_eq!(refused.code(), "shutting_down");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "never drained"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let publish = call("POST", &events, &structured, event.to_string().as_bytes());
    assert_eq!(publish.status, 503, "no new events while draining");
    let ack = call(
        "POST",
        &server.url(&format!("/v1/queues/workers/leases/{lease}/ack")),
        &[],
        b"",
    );
    assert_eq!(ack.status, 204, "{}", ack.text);
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");

    let server = Server::start(dir.path(), &[]);
    let again = call(
        "POST",
        &server.url("/v1/queues/workers/receive?max=1&wait_ms=300"),
        &[],
        b"",
    );
    assert_eq!(again.json["deliveries"], json!([]), "{}", again.text);
}

#[test]
fn a_draining_server_says_what_it_waits_for_and_a_second_signal_stops_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A minute to drain: only the second signal ends this test in time.
    let server = Server::start(dir.path(), &["--shutdown-timeout-ms", "60000"]);
    create_topic(&server, json!({"name": "jobs"}));
    let q = crate::support::post_json(
        &server.url("/v1/queues"),
        &json!({"name": "workers", "topic": "jobs", "ack_timeout_ms": 3_600_000}),
    );
    assert_eq!(q.status, 201);
    let published = call(
        "POST",
        &server.url("/v1/topics/jobs/events"),
        &[("content-type", "application/cloudevents+json")],
        json!({"specversion": "1.0", "id": "j-1", "source": "/t", "type": "t"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(published.status, 200);
    let held = crate::support::post_json(&server.url("/v1/queues/workers/receive"), &json!({}));
    assert_eq!(held.json["deliveries"].as_array().unwrap().len(), 1);

    server.signal_term();
    crate::support::eventually("the drain names the lease it waits for", || {
        server
            .logs()
            .contains("draining: waiting for consumers to answer their leases")
            && server.logs().contains("groups=workers: 1")
    });
    server.signal_term();
    let status = server.wait();
    assert_eq!(status.code(), Some(143));
}

#[test]
fn log_lines_are_colored_on_a_terminal_unless_no_color_is_set() {
    // `script` (util-linux) runs the server on a pseudo-terminal; `timeout`
    // stops it once its first lines are out.
    let run = |no_color: bool| {
        let dir = tempfile::tempdir().unwrap();
        let serve = format!(
            "{} serve --data-dir {} --http-addr 127.0.0.1:0 --kafka-addr 127.0.0.1:0",
            env!("CARGO_BIN_EXE_tidings"),
            dir.path().display()
        );
        let mut command = std::process::Command::new("timeout");
        command.args(["-s", "TERM", "2", "script", "-qfec", &serve, "/dev/null"]);
        if no_color {
            command.env("NO_COLOR", "1");
        } else {
            command.env_remove("NO_COLOR");
        }
        let out = command.output().expect("timeout and script are installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let colored = run(false);
    assert!(
        colored.contains("listening") && colored.contains("\u{1b}["),
        "{colored:?}"
    );
    let plain = run(true);
    assert!(
        plain.contains("listening") && !plain.contains("\u{1b}["),
        "{plain:?}"
    );
}
