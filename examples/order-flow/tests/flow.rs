//! The order flow, run by its own command on every backend the toolkit has,
//! each a real engine: the embedded one, a `tidings serve`, PostgreSQL
//! (`TIDINGS_TEST_PG_URL`), a NATS JetStream server (Debian's
//! `nats-server`), Apache Kafka (`TIDINGS_TEST_KAFKA`). Each run places
//! orders of a fixed seed, so the test knows how many must end confirmed,
//! cancelled and rejected, and holds the command's final check (read back
//! from the event store) to those figures.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use order_flow::check::expected_outcome;
use order_flow::load::Mix;
use order_flow::model;

/// The seed every run places its orders with.
const SEED: u64 = 20_261_205;
const ORDERS: usize = 80;
const DECLINE_PERCENT: u32 = 20;
const POISON_PERCENT: u32 = 10;

/// What the seed's orders must end as: (confirmed, cancelled, rejected).
fn expected() -> (u64, u64, u64) {
    let mix = Mix {
        decline_percent: DECLINE_PERCENT,
        poison_percent: POISON_PERCENT,
        run: "r".into(),
        seed: SEED,
    };
    let mut counts = (0, 0, 0);
    for n in 0..ORDERS {
        match expected_outcome(&mix.order(n)) {
            model::ORDER_CONFIRMED => counts.0 += 1,
            model::ORDER_CANCELLED => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    counts
}

/// Runs `order-flow` with `args` and the test's mix; its JSON report.
/// Orders are placed as fast as the customers go unless `args` set a
/// `--rate`.
fn run_flow(data: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_order-flow"))
        .arg("--data")
        .arg(data)
        .args(["--orders", &ORDERS.to_string()])
        .args(["--seed", &SEED.to_string()])
        .args(["--decline-percent", &DECLINE_PERCENT.to_string()])
        .args(["--poison-percent", &POISON_PERCENT.to_string()])
        .args(["--transient-percent", "30", "--timeout", "180"])
        .args(["--json", "--quiet"])
        .args(args)
        .args(if args.contains(&"--rate") {
            &[][..]
        } else {
            &["--rate", "0"][..]
        })
        .stderr(Stdio::inherit())
        .output()
        .expect("run order-flow");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "order-flow {args:?} exited with {} and printed no report ({e}): {stdout}",
            output.status
        )
    });
    assert!(output.status.success(), "{report:#}");
    report
}

/// The report's check passed, with the seed's outcomes, and the paths that
/// matter were taken: time-outs retried, stock released.
fn assert_passed(report: &serde_json::Value, backend: &str) {
    let check = &report["check"];
    assert_eq!(report["backend"], backend, "{report:#}");
    assert_eq!(check["problem_count"], 0, "{report:#}");
    assert_eq!(report["placed"], ORDERS, "{report:#}");
    let (confirmed, cancelled, rejected) = expected();
    assert!(cancelled > 0 && rejected > 0, "the seed takes every path");
    assert_eq!(check["confirmed"], confirmed, "{report:#}");
    assert_eq!(check["cancelled"], cancelled, "{report:#}");
    assert_eq!(check["rejected"], rejected, "{report:#}");
    assert_eq!(
        check["compensated"].as_u64().unwrap() + check["voided"].as_u64().unwrap(),
        cancelled + rejected,
        "{report:#}"
    );
    // Counted where the services ran in the test's own process (not in
    // fault mode, where their process is killed).
    if report["faults"] == 0 {
        assert!(
            report["gateway_timeouts"].as_u64().unwrap() > 0,
            "{report:#}"
        );
        assert_eq!(report["outbox_dead"], 0, "{report:#}");
    }
}

#[test]
fn the_flow_passes_its_check_on_the_embedded_engine() {
    let data = tempfile::tempdir().unwrap();
    let report = run_flow(data.path(), &[]);
    assert_passed(&report, "embedded");
    // A second run on the same data directory: its own orders, the same
    // topics, groups and schemas.
    let again = run_flow(data.path(), &[]);
    assert_passed(&again, "embedded");
}

/// A `tidings serve` of this build on free loopback ports.
struct Server {
    child: Child,
    http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tidings_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TIDINGS_BIN") {
        return bin.into();
    }
    // cargo test --workspace builds every binary of the workspace beside
    // this test's directory.
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("tidings")
}

fn serve(data: &Path) -> Server {
    let mut child = Command::new(tidings_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn,tidings_server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidings serve (cargo test --workspace builds it)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http_addr="))
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server reports its address");
    Server { child, http }
}

#[test]
fn the_flow_passes_its_check_on_a_server() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(&data.path().join("server"));
    let url = format!("http://{}", server.http);
    let report = run_flow(
        &data.path().join("flow"),
        &["--backend", "server", "--url", &url],
    );
    assert_passed(&report, "server");
}

/// A fresh database on the test command's PostgreSQL server; `None` when
/// the PostgreSQL tests are skipped.
fn fresh_database() -> Option<String> {
    let Ok(admin) = std::env::var("TIDINGS_TEST_PG_URL") else {
        if std::env::var("TIDINGS_TEST_PG_SKIP").as_deref() == Ok("1") {
            eprintln!("skipped: TIDINGS_TEST_PG_SKIP=1");
            return None;
        }
        panic!(
            "TIDINGS_TEST_PG_URL is not set: run ./scripts/test, which starts a PostgreSQL \
             server, or set TIDINGS_TEST_PG_SKIP=1 to skip the PostgreSQL tests"
        );
    };
    let database = format!("order_flow_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap();
    });
    let (base, query) = admin
        .split_once('?')
        .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
    let base = &base[..base.rfind('/').unwrap()];
    Some(match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    })
}

#[test]
fn the_flow_passes_its_check_on_postgresql() {
    let Some(url) = fresh_database() else { return };
    let data = tempfile::tempdir().unwrap();
    // The backend's tables and the event store in one database.
    let report = run_flow(data.path(), &["--backend", "postgres", "--url", &url]);
    assert_passed(&report, "postgres");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_flow_passes_its_check_on_nats_jetstream() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(data.path().join("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server (./scripts/test installs Debian's)");
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = run_flow(
        &data.path().join("flow"),
        &["--backend", "nats", "--url", &url],
    );
    let _ = nats.kill();
    let _ = nats.wait();
    assert_passed(&report, "nats");
}

#[test]
fn the_flow_passes_its_check_on_apache_kafka() {
    let Ok(address) = std::env::var("TIDINGS_TEST_KAFKA") else {
        panic!(
            "TIDINGS_TEST_KAFKA is not set: run ./scripts/test, which starts an Apache Kafka \
             broker and builds the Kafka backend"
        );
    };
    let data = tempfile::tempdir().unwrap();
    // The broker is the test command's, shared: names of this run's own.
    let prefix = format!("flow{}-", std::process::id());
    let url = format!("kafka://{address}");
    let report = run_flow(
        data.path(),
        &["--backend", "kafka", "--url", &url, "--prefix", &prefix],
    );
    assert_passed(&report, "kafka");
}

/// Fault mode on the embedded engine: the process that holds the engine,
/// the store and every service is killed with SIGKILL again and again
/// while customers order, and started again each time.
#[test]
fn the_flow_passes_its_check_with_its_engine_killed_again_and_again() {
    let data = tempfile::tempdir().unwrap();
    // 80 orders over 2 s: the faults fall among the orders' placing too.
    let report = run_flow(data.path(), &["--faults", "6", "--rate", "40"]);
    assert_passed(&report, "embedded");
    assert_eq!(report["faults"], 6, "{report:#}");
}

/// Fault mode on a server the flow starts itself: the server and the
/// services' process are killed at random, eight times in all.
#[test]
fn the_flow_passes_its_check_with_the_server_and_services_killed_at_random() {
    let data = tempfile::tempdir().unwrap();
    let bin = tidings_bin();
    let report = run_flow(
        data.path(),
        &[
            "--backend",
            "server",
            "--serve",
            bin.to_str().unwrap(),
            "--faults",
            "8",
            "--rate",
            "40",
        ],
    );
    assert_passed(&report, "server");
    assert_eq!(report["faults"], 8, "{report:#}");
}
