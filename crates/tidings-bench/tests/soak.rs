//! The soak benchmark's smoke run: `tidings-bench soak --quick` must start the
//! server, find a peak, run at half of it and report a sample of the server's
//! memory each second. It checks that the harness works, never a speed or a
//! size.

use std::process::Command;

#[test]
fn the_quick_soak_run_samples_the_servers_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args(["soak", "--quick", "--seconds", "4", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tidings-bench soak --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One row per second of the run (and one at its start), each with a
    // resident set the server reported and the counts so far.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| s "))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert!(rows.len() >= 5, "{stdout}");
    for row in &rows {
        let rss: f64 = row[1].parse().unwrap();
        assert!(rss > 1.0, "a resident set in MiB: {row:?}");
    }
    let published: u64 = rows.last().unwrap()[2].parse().unwrap();
    assert!(published > 0, "{stdout}");
    assert!(stdout.contains("After the warm-up"), "{stdout}");
}
