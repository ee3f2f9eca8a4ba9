//! The `tidings` command as a user runs it: the README's first command, and the
//! errors a user sees for bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tidings(data_dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env("TIDINGS_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn appended_events_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&tidings(
        dir.path(),
        &["append", "orders", "order 1 placed", "order 2 placed"],
        "",
    ));
    assert_eq!(out, "appended 2 events to orders/0 at offsets 0..=1\n");
    let out = stdout(&tidings(
        dir.path(),
        &["append", "orders", "--key", "o3"],
        "order 3 placed\norder 4 placed\n",
    ));
    assert_eq!(out, "appended 2 events to orders/0 at offsets 2..=3\n");

    let out = stdout(&tidings(dir.path(), &["read", "orders"], ""));
    assert_eq!(
        out,
        "0\torder 1 placed\n1\torder 2 placed\n2\torder 3 placed key=o3\n3\torder 4 placed key=o3\n"
    );
    let out = stdout(&tidings(
        dir.path(),
        &["read", "orders", "--from", "2", "--limit", "1", "--json"],
        "",
    ));
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(event["offset"], 2);
    assert_eq!(event["key"], "o3");
    assert_eq!(event["value"], "order 3 placed");
    let out = stdout(&tidings(dir.path(), &["topics"], ""));
    assert!(
        out.starts_with("orders (fsync always, 1 partitions)\n  partition 0: offsets 0..4"),
        "{out}"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (vec!["append", "../etc", "x"], "contains '/'"),
        (vec!["read", "missing"], "topic missing does not exist"),
        (
            vec!["append", "t", "--fsync", "sometimes", "x"],
            "fsync policy",
        ),
    ] {
        let o = tidings(dir.path(), &args, "");
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    stdout(&tidings(dir.path(), &["append", "t", "x"], ""));
    let o = tidings(dir.path(), &["read", "t", "--from", "soon"], "");
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--from \"soon\" is not earliest, latest or an offset"));
    let o = tidings(dir.path(), &["read", "t", "--partition", "3"], "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("partition 3 does not exist"));
}
