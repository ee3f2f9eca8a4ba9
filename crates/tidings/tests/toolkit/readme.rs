//! The README's toolkit example, `examples/order_flow.rs` (the same text), run
//! on all five backends with its one line of configuration, the
//! `TIDINGS_BACKEND` URL, the only change: the embedded engine, a `tidings
//! serve` child process, a NATS JetStream server, a PostgreSQL database and
//! the test command's Apache Kafka broker (with the `kafka` feature).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio_postgres::NoTls;

use crate::support::{fresh, ServerProcess, PATIENCE};

const README: &str = include_str!("../../../../README.md");
const EXAMPLE: &str = include_str!("../../examples/order_flow.rs");

/// The README's block: the first Rust block that calls `tidings::connect`.
fn readme_block() -> &'static str {
    let mut rest = README;
    while let Some(at) = rest.find("```rust\n") {
        let body = &rest[at + "```rust\n".len()..];
        let end = body.find("```\n").expect("a closed code block");
        if body[..end].contains("tidings::connect(") {
            return &body[..end];
        }
        rest = &body[end..];
    }
    panic!("the README shows no Rust block calling tidings::connect");
}

#[test]
fn the_readme_shows_the_example_file() {
    // The file's own lines of documentation first, then what the README shows.
    let shown: String = EXAMPLE
        .lines()
        .skip_while(|l| l.starts_with("//!"))
        .skip_while(|l| l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        shown,
        readme_block(),
        "README.md's toolkit example and crates/tidings/examples/order_flow.rs differ"
    );
}

/// The example as this build compiled it (`cargo test --workspace` builds
/// examples).
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join("order_flow"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p tidings --example order_flow --features kafka), as `cargo test --workspace` does",
        bin.display()
    );
    bin
}

/// Runs the example on `url`; fails the test with its output when it fails.
async fn run_on(name: &str, url: &str) {
    let run = Command::new(example_bin())
        .env("TIDINGS_BACKEND", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE * 3, run)
        .await
        .unwrap_or_else(|_| panic!("the example did not finish on {name} ({url})"))
        .unwrap();
    assert!(
        out.status.success(),
        "the example failed on {name} ({url}): {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One JetStream server on loopback, killed when dropped.
pub(crate) struct NatsServer {
    child: std::process::Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Waits until it takes connections.
    pub(crate) fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (the test command installs it)");
        NatsServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_runs_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    run_on(
        "embedded",
        &format!("embedded:{}", dir.path().join("embedded").display()),
    )
    .await;

    let server_dir = dir.path().join("server");
    std::fs::create_dir(&server_dir).unwrap();
    let server = tokio::task::block_in_place(|| ServerProcess::start(&server_dir, None));
    run_on("server", &format!("http://{}", server.http)).await;
    drop(server);

    let nats = NatsServer::start();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", nats.port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run_on("NATS JetStream", &url).await;
    drop(nats);

    match std::env::var("TIDINGS_TEST_PG_URL") {
        Ok(admin_url) => {
            let (client, connection) = tokio_postgres::connect(&admin_url, NoTls).await.unwrap();
            tokio::spawn(connection);
            let database = fresh("tidings_readme").replace('-', "_");
            client
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await
                .unwrap();
            let url = crate::postgres::database_url(&admin_url, &database);
            run_on("PostgreSQL", &url).await;
        }
        Err(_) => assert_eq!(
            std::env::var("TIDINGS_TEST_PG_SKIP").as_deref(),
            Ok("1"),
            "TIDINGS_TEST_PG_URL is not set: run ./scripts/test, or set TIDINGS_TEST_PG_SKIP=1"
        ),
    }

    #[cfg(feature = "kafka")]
    {
        let address = std::env::var("TIDINGS_TEST_KAFKA").expect(
            "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
        );
        run_on("Apache Kafka", &format!("kafka://{address}")).await;
    }
}
