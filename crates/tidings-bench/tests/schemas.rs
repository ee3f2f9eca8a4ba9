//! The schema benchmark's smoke run: `tidings-bench schemas --quick` must run
//! both publishes under both fsync policies and time the check alone. It
//! checks that the harness works, never a speed.

use std::process::Command;

#[test]
fn the_quick_schemas_run_reports_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args(["schemas", "--quick", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tidings-bench schemas --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = |prefix: &str| stdout.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(rows("| always |") + rows("| never |"), 2, "{stdout}");
    assert_eq!(rows("| parse the data and validate |"), 1, "{stdout}");
    assert_eq!(rows("| resolve by type"), 1, "{stdout}");
}
