//! Safe defaults of the real binary: without authentication, a listener
//! that would reach beyond this machine is refused before anything opens.

use std::process::Command;

use crate::support::failure;

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
        assert!(!data.exists(), "refused before anything was opened");
    }
}
