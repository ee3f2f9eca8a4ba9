//! The outbox benchmark's smoke run: `tidings-bench outbox --quick` must run
//! both workloads for both relays, and for the event store's outbox on both
//! stores, and print a figure for each. It checks
//! that the harness works, never a speed.

use std::process::Command;

#[test]
fn the_quick_outbox_run_reports_every_row() {
    let pg_url = std::env::var("TIDINGS_TEST_PG_URL")
        .expect("TIDINGS_TEST_PG_URL must name a PostgreSQL server (scripts/test starts one)");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args(["outbox", "--quick", "--dir"])
        .arg(dir.path())
        .env("TIDINGS_TEST_PG_URL", pg_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tidings-bench outbox --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = |prefix: &str| stdout.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        rows("| to the "),
        2,
        "relay throughput, both backends:\n{stdout}"
    );
    assert_eq!(rows("| staged in the transaction"), 2, "{stdout}");
    assert_eq!(rows("| published after the commit"), 2, "{stdout}");
    assert_eq!(rows("| from the "), 2, "forwarders, both stores:\n{stdout}");
    assert_eq!(rows("| in one append, forwarded"), 2, "{stdout}");
    assert_eq!(rows("| appended then published"), 2, "{stdout}");
}
