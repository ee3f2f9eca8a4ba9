//! The README's examples, run: every `sh` block after the first (the two
//! commands that start the server and the suite) runs line by line with bash
//! against a fresh server (the order flow's `cargo run` as the `order-flow`
//! binary `cargo test --workspace` builds), `curl` failing on an error answer, and a command
//! that follows stopped with Ctrl-C after a moment (it must stop cleanly).
//! The TOML example starts a server. (The Rust examples are doc tests of
//! `tidings-server`.)

use std::path::PathBuf;

use crate::support::Server;

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).unwrap()
}

/// The fenced blocks of `text` in `language`, in order.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{language}") => current = Some(String::new()),
            None => {}
            Some(_) if line.starts_with("```") => out.push(current.take().unwrap()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    out
}

/// `line` without a trailing `# comment` (one outside quotes, after a space).
fn without_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        previous = c;
    }
    line
}

/// A block as a bash script: each command on its own, a follower stopped
/// by SIGINT after two seconds and required to exit as interrupted (130).
fn script(block: &str, server: &Server) -> String {
    let mut out =
        String::from("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n");
    let mut command = String::new();
    for line in block.lines() {
        command.push_str(line);
        if let Some(rest) = command.strip_suffix('\\') {
            command = format!("{rest} ");
            continue;
        }
        let text = without_comment(command.trim()).to_owned();
        command.clear();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        // The order flow's command is the binary the workspace's test build
        // made beside `tidings` (on the PATH below), not a release build.
        let text = text
            .replace("localhost:8080", &server.addr.to_string())
            .replace("127.0.0.1:9092", &server.kafka_addr.to_string())
            .replace("cargo run --release -p tidings-order-flow --", "order-flow")
            .replace("cargo run --release -p tidings-order-flow", "order-flow");
        out.push_str(&format!("echo '+ {}' >&2\n", text.replace('\'', "'\\''")));
        if text.contains("--follow") {
            out.push_str(&format!(
                "status=0; timeout --preserve-status -s INT 2 {text} || status=$?\n\
                 [ \"$status\" -eq 130 ] || {{ echo \"a follower exited with $status\" >&2; exit 1; }}\n"
            ));
        } else {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

#[test]
fn every_shell_example_of_the_readme_runs() {
    let text = readme();
    let sh = blocks(&text, "sh");
    assert!(sh.len() >= 4, "the README's sh blocks: {}", sh.len());
    let bin_dir: PathBuf = PathBuf::from(env!("CARGO_BIN_EXE_tidings"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The first block starts the server and the suite: not run here.
    for (n, block) in sh.iter().enumerate().skip(1) {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &[]);
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        // The README's commands run from a clone's root: what they read
        // from the repository is where they look for it.
        let deploy = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy"));
        std::os::unix::fs::symlink(deploy, work.join("deploy")).unwrap();
        let out = crate::support::third_party("bash")
            .arg("-c")
            .arg(script(block, &server))
            .current_dir(&work)
            .env("PATH", &path)
            .env("TIDINGS_URL", server.url(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README sh block {n} failed:\n{block}\n--- its output:\n{}\n{}\n--- the server's log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.logs()
        );
    }
}

#[test]
fn the_readmes_configuration_file_starts_a_server() {
    let toml = blocks(&readme(), "toml");
    assert_eq!(toml.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidings.toml");
    std::fs::write(&file, &toml[0]).unwrap();
    // Its addresses, data directory and log format are overridden by the
    // flags the test server starts with, as flags override the file.
    let server = Server::start(
        dir.path(),
        &["--config", file.to_str().unwrap(), "--log-format", "text"],
    );
    let limits = crate::support::get(&server.url("/v1/limits"));
    assert_eq!(
        limits.json["body_bytes_max"], 1_048_576,
        "the file's [limits]"
    );
}

/// A free loopback port, for a server the README's block starts itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// "Running it for real": its `bash` block adds users and permissions to a
/// data directory, starts a server itself (on free ports here, in place of
/// the defaults it names), and logs in over HTTP, the CLI and Kafka.
#[test]
fn the_running_it_for_real_block_runs() {
    let bash = blocks(&readme(), "bash");
    assert_eq!(bash.len(), 1, "one bash block: Running it for real");
    let (http, kafka) = (free_port(), free_port());
    let script = bash[0]
        .replace("localhost:8080", &format!("127.0.0.1:{http}"))
        .replace("127.0.0.1:9092", &format!("127.0.0.1:{kafka}"));
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_tidings"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = crate::support::third_party("timeout")
        .args(["120", "bash", "-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", &path)
        .env("TIDINGS_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("TIDINGS_KAFKA_ADDR", format!("127.0.0.1:{kafka}"))
        .env_remove("TIDINGS_URL")
        .env_remove("SSL_CERT_FILE")
        .env_remove("TIDINGS_USER")
        .env_remove("TIDINGS_PASSWORD")
        .env_remove("TIDINGS_NEW_PASSWORD")
        .env_remove("TIDINGS_TOKEN")
        .env_remove("TIDINGS_CLIENT_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the bash block failed:\n{}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        bash[0]
    );
    for said in [
        "User:orders-svc Allow Write on Topic Prefixed \"orders\"",
        "\"name\":\"orders\"",
        "refused: orders-svc may write orders, not read it",
        "\"error_code\":\"unauthenticated\"",
        "{\"total\": 7}",
    ] {
        assert!(stdout.contains(said), "{said:?} in\n{stdout}\n{stderr}");
    }
    assert!(
        stderr.contains("User:orders-svc may not Read topic \"orders\""),
        "{stderr}"
    );
    assert!(stderr.contains("TLS certificate reloaded"), "{stderr}");
}
