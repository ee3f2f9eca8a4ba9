//! The peer benchmark's smoke run: `tidings-bench peers --quick` must run every
//! workload on every system and write them all as JSON. It checks that the
//! harness works, never a speed.

use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn the_quick_peer_run_reports_every_workload_for_every_system() {
    let pg_url = std::env::var("TIDINGS_TEST_PG_URL")
        .expect("TIDINGS_TEST_PG_URL must name a PostgreSQL server (scripts/test starts one)");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("peers.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-bench"))
        .args(["peers", "--quick", "--dir"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .env("TIDINGS_TEST_PG_URL", pg_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tidings-bench peers --quick failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let field = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap().to_owned();
    let systems: BTreeSet<String> = figures.iter().map(|f| field(f, "system")).collect();
    let workloads: BTreeSet<String> = figures.iter().map(|f| field(f, "workload")).collect();
    assert_eq!(
        systems,
        BTreeSet::from(
            [
                "NATS JetStream",
                "PostgreSQL (queue table)",
                "Redis Streams",
                "Tidings (HTTP)",
                "Tidings (Kafka)",
                "Tidings (embedded)"
            ]
            .map(String::from)
        )
    );
    // Publish at two sizes, durable and not; one-in-flight latency; end to end;
    // work queue.
    assert_eq!(workloads.len(), 7, "{workloads:?}");
    for w in &workloads {
        for s in &systems {
            let got: Vec<f64> = figures
                .iter()
                .filter(|f| field(f, "workload") == *w && field(f, "system") == *s)
                .map(|f| f["value"].as_f64().unwrap())
                .collect();
            // Kafka has no per-event acks: the work queue does not apply to it.
            if s == "Tidings (Kafka)" && w.starts_with("Work queue") {
                assert!(got.is_empty(), "{s} in {w}: {got:?}");
                continue;
            }
            assert!(
                !got.is_empty() && got.iter().all(|v| v.is_finite() && *v > 0.0),
                "{s} in {w}: {got:?}"
            );
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("appendfsync always"),
        "the settings are printed"
    );
}
