//! Safe defaults of the real binary: without authentication, a listener
//! that would reach beyond this machine is refused before anything opens;
//! idle and slow HTTP clients are closed at the header deadline, and
//! connections past the limit as they come.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{failure, Server};

/// How long anything the server is to do may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn serve_refuses_an_address_beyond_loopback_without_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (flag, other, listener) in [
        ("--http-addr", "--kafka-addr", "HTTP"),
        ("--kafka-addr", "--http-addr", "Kafka"),
    ] {
        let refused = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args([flag, "0.0.0.0:0", other, "127.0.0.1:0"])
            .env_remove("TIDINGS_INSECURE")
            .output()
            .unwrap();
        let err = failure(&refused);
        assert!(
            err.contains(&format!(
                "the {listener} listener would listen on 0.0.0.0:0 (0.0.0.0), beyond this machine"
            )) && err.contains("--insecure"),
            "{err}"
        );
        assert!(
            !data.join("topics").exists(),
            "refused before the broker was opened"
        );
    }
}

/// A health request on a new connection: the stream (kept alive) and the
/// start of the answer, or `None` when the server closed the connection
/// without answering.
fn health(addr: SocketAddr) -> Option<(TcpStream, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A closed connection may refuse the write too.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\n\r\n")
        .ok()?;
    let mut answer = [0_u8; 512];
    match stream.read(&mut answer) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some((stream, String::from_utf8_lossy(&answer[..n]).into_owned())),
    }
}

/// Whether the server closed `stream` (end of stream or reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// A client that connects and sends nothing, and one that trickles its
/// request head a byte at a time, are both closed at the header deadline;
/// others are served meanwhile.
#[test]
fn idle_and_slow_clients_are_closed_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--http-header-timeout-ms", "1000"]);
    let mut idle = TcpStream::connect(server.addr).unwrap();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\n")
        .unwrap();
    let trickling = std::thread::spawn(move || {
        // A header byte every 200 ms: within the deadline each time, never
        // the whole head. Stops once the server closed the connection.
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if slow.write_all(b"X").is_err() {
                return true;
            }
            if closed_within(&mut slow, Duration::from_millis(200)) {
                return true;
            }
        }
        false
    });
    let (_, answer) = health(server.addr).expect("served meanwhile");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed_within(&mut idle, PATIENCE),
        "the idle client was closed"
    );
    assert!(trickling.join().unwrap(), "the slow client was closed");
    // The server counts a connection when it is done with it, just after
    // the client has seen it close: both counted soon, not at once.
    let deadline = Instant::now() + PATIENCE;
    while server.metric("tidings_http_header_timeouts_total") < 2.0 {
        assert!(Instant::now() < deadline, "both closes counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Past `--http-connections-max`, a connection is closed as it comes,
/// without an answer; once one closes, the next is served.
#[test]
fn connections_past_the_limit_are_closed_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--http-connections-max", "3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|n| {
            let (stream, answer) =
                health(server.addr).unwrap_or_else(|| panic!("connection {n} served"));
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            stream
        })
        .collect();
    assert!(
        health(server.addr).is_none(),
        "the fourth is closed unanswered"
    );
    drop(held);
    let started = Instant::now();
    while health(server.addr).is_none() {
        assert!(
            started.elapsed() < PATIENCE,
            "no connection served after the others closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.metric("tidings_http_connections_refused_total") >= 1.0);
}

/// Ten thousand Kafka connections that send nothing: past
/// `--kafka-connections-max` each is closed as it comes, the ones held are
/// closed at the idle timeout, the server's memory stays bounded, and a
/// real client (kcat) is served afterwards.
#[test]
fn ten_thousand_idle_kafka_connections_are_bounded_and_closed() {
    const FLOOD: usize = 10_000;
    const HELD_MAX: usize = 1_000;
    // What 1 000 idle connections may add to the server's memory: a task,
    // a small read buffer and a writer each — far less in practice.
    const GROWTH_BYTES_MAX: u64 = 128 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--kafka-connections-max",
            &HELD_MAX.to_string(),
            "--kafka-idle-timeout-ms",
            "2000",
        ],
    );
    let before = server.rss_bytes();
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(server.kafka_addr).unwrap())
        .collect();
    // Every one is closed: at once past the limit, at the idle timeout
    // within it; meanwhile the server never holds more than the limit, nor
    // much memory.
    let mut peak = (0.0_f64, before);
    let mut closed = 0;
    for stream in &mut flood {
        if closed % 1000 == 0 {
            let open = server.metric("tidings_kafka_connections ");
            peak = (peak.0.max(open), peak.1.max(server.rss_bytes()));
        }
        if closed_within(stream, PATIENCE) {
            closed += 1;
        }
    }
    assert_eq!(closed, FLOOD);
    assert!(peak.0 <= HELD_MAX as f64, "{} open at once", peak.0);
    assert!(
        peak.1.saturating_sub(before) < GROWTH_BYTES_MAX,
        "{HELD_MAX} idle connections took {} MiB",
        (peak.1 - before) / (1024 * 1024)
    );
    let turned_away = server.metric("tidings_kafka_connections_over_limit_total");
    let served = server.metric("tidings_kafka_connections_total");
    assert!(turned_away > 0.0, "the limit was reached");
    assert_eq!(
        turned_away + served,
        FLOOD as f64,
        "each one served or turned away"
    );
    drop(flood);
    let listing = crate::support::kcat(&server, &["-L"], "");
    assert!(listing.contains("broker 1 at"), "{listing}");
}
