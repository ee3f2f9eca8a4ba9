//! The toolkit benchmark's smoke run: `tidings-bench toolkit --quick` must
//! run both workloads on every backend and print a figure for each. It
//! checks that the harness works, never a speed.

use std::process::Command;

#[test]
fn the_quick_toolkit_run_reports_every_backend() {
    let pg_url = std::env::var("TIDINGS_TEST_PG_URL")
        .expect("TIDINGS_TEST_PG_URL must name a PostgreSQL server (scripts/test starts one)");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args(["toolkit", "--quick", "--dir"])
        .arg(dir.path())
        .env("TIDINGS_TEST_PG_URL", pg_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tidings-bench toolkit --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = |name: &str| {
        stdout
            .lines()
            .filter(|l| l.starts_with(&format!("| {name}")))
            .count()
    };
    assert_eq!(rows("broker used directly"), 1, "{stdout}");
    let mut backends = vec![
        "toolkit, embedded",
        "toolkit, server",
        "toolkit, NATS",
        "toolkit, PostgreSQL",
    ];
    // The test command builds the Kafka backend (`--features tidings/kafka`)
    // and starts an Apache Kafka broker; a plain `cargo test` has neither.
    if std::env::var_os("TIDINGS_TEST_KAFKA").is_some() {
        backends.extend(["toolkit, Kafka (the server's", "toolkit, Kafka (Apache"]);
    }
    for backend in backends {
        // Throughput and end to end.
        assert_eq!(rows(backend), 2, "{backend}:\n{stdout}");
    }
}
