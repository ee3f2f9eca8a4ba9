//! The real `tidings serve` binary on a free loopback port, and a small HTTP
//! client for talking to it.

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server. Killed when dropped, unless it was terminated.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) addr: SocketAddr,
    /// Where its Kafka listener is.
    pub(crate) kafka_addr: SocketAddr,
    logs: Arc<Mutex<String>>,
}

/// How long a server gets to start or to stop before the test fails.
const PROCESS_WAIT: Duration = Duration::from_secs(30);

impl Server {
    /// Starts `tidings serve` on `data_dir` with port 0 and extra flags, and waits
    /// for its `listening` line to learn the port.
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// [`start`](Self::start) on given HTTP and Kafka addresses, for a restart
    /// that clients must find where they left it.
    pub(crate) fn start_on(data_dir: &Path, http: &str, kafka: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", http])
            .args(["--kafka-addr", kafka])
            .args(extra)
            .env("RUST_LOG", "info,tidings_http=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tidings serve");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .map(|a| a.parse::<SocketAddr>().unwrap())
                    };
                    if let (Some(http), Some(kafka)) = (field("http_addr="), field("kafka_addr=")) {
                        let _ = tx.send((http, kafka));
                    }
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        let (addr, kafka_addr) = match rx.recv_timeout(PROCESS_WAIT) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the server did not report its address; its log:\n{}",
                    logs.lock().unwrap()
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            kafka_addr,
            logs,
        }
    }

    /// Its resident memory now, in bytes (Linux's /proc).
    pub(crate) fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The sum of every series of `/metrics` whose line starts with `series`
    /// (a metric name, with the start of its labels to pick some).
    pub(crate) fn metric(&self, series: &str) -> f64 {
        get(&self.url("/metrics"))
            .text
            .lines()
            .filter(|l| l.starts_with(series))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(self) -> ExitStatus {
        self.signal_term();
        self.wait()
    }

    /// Sends SIGTERM without waiting.
    pub(crate) fn signal_term(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `HUP`) without waiting.
    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit.
    pub(crate) fn wait(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > PROCESS_WAIT {
                let _ = child.kill();
                panic!(
                    "the server did not stop after SIGTERM; its log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response: status, body text, and the body as JSON when it is JSON.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) text: String,
    pub(crate) json: Value,
}

impl Answer {
    /// The `error_code` of an error answer.
    pub(crate) fn code(&self) -> &str {
        self.json["error_code"].as_str().unwrap_or("")
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// Sends one request; `headers` include the content type when there is one.
pub(crate) fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.to_vec()).unwrap();
    let mut response = agent().run(request).expect("the server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        text,
        json,
    }
}

pub(crate) fn get(url: &str) -> Answer {
    call("GET", url, &[], b"")
}

pub(crate) fn post_json(url: &str, body: &Value) -> Answer {
    call(
        "POST",
        url,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Creates a topic and checks it was created.
pub(crate) fn create_topic(server: &Server, body: Value) {
    let answer = post_json(&server.url("/v1/topics"), &body);
    assert_eq!(answer.status, 201, "{}", answer.text);
}

/// Runs the `tidings` command against `server`, feeding `stdin`.
pub(crate) fn tidings(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env("TIDINGS_URL", server.url(""))
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

/// Runs a `tidings` command that works on a data directory itself
/// (`users`, `acls`) with `args`, `--data-dir data_dir` and `stdin`.
pub(crate) fn offline(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TIDINGS_NEW_PASSWORD")
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

/// The standard output of a command that succeeded.
pub(crate) fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The standard error of a command that failed.
pub(crate) fn failure(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// `program`, loading the system's shared libraries: `cargo test` puts the
/// directories where build scripts left native libraries on
/// `LD_LIBRARY_PATH`, and the toolkit's Kafka backend builds a librdkafka of
/// its own (without zstd) that kcat and the librdkafka-based clients would
/// load instead of the system's.
pub(crate) fn third_party(program: &str) -> Command {
    let mut command = Command::new(program);
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        let kept: Vec<std::path::PathBuf> = std::env::split_paths(&paths)
            .filter(|p| !p.to_string_lossy().contains("rdkafka-sys"))
            .collect();
        command.env("LD_LIBRARY_PATH", std::env::join_paths(kept).unwrap());
    }
    command
}

/// Runs kcat against the server with `args`, feeding `input`; returns stdout.
pub(crate) fn kcat(server: &Server, args: &[&str], input: &str) -> String {
    let mut child = third_party("kcat")
        .arg("-b")
        .arg(server.kafka_addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is not installed: run ./scripts/test, or apt-get install kcat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `tidings` command left running, its output lines collected as they come.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    pub(crate) fn start(server: &Server, args: &[&str], dir: &std::path::Path) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(args)
            .env("TIDINGS_URL", server.url(""))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next line, waiting up to 30 s.
    pub(crate) fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from the command")
    }

    pub(crate) fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the exit; the status code, standard error, and the output
    /// lines not read yet.
    pub(crate) fn wait(mut self) -> (Option<i32>, String, Vec<String>) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err)
                    .unwrap();
                // The reader ends with the output; what it read is all here.
                let mut rest = Vec::new();
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
                    rest.push(line);
                }
                return (status.code(), err, rest);
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the command did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `what` until it holds, up to 30 s.
pub(crate) fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
    let started = Instant::now();
    while !holds() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a client script of tests/clients with `program` (`python3`, `node`)
/// and `args`, and parses the one JSON line it prints; a failure shows the
/// script's standard error and `server`'s log.
pub(crate) fn client_script(program: &str, script: &str, args: &[&str], server: &Server) -> Value {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = third_party(program).arg(path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed (run ./scripts/test to install the clients it uses): {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// [`client_script`] with Python.
pub(crate) fn python(script: &str, args: &[&str], server: &Server) -> Value {
    client_script("python3", script, args, server)
}

/// [`client_script`] with Node.js.
pub(crate) fn node(script: &str, args: &[&str], server: &Server) -> Value {
    client_script("node", script, args, server)
}

/// `tidings_logins_total` of one listener, mechanism and outcome in
/// `scraped` metrics (fetched as a client that may read them).
pub(crate) fn logins_in(scraped: &str, listener: &str, mechanism: &str, outcome: &str) -> f64 {
    let series = format!(
        "tidings_logins_total{{listener=\"{listener}\",mechanism=\"{mechanism}\",outcome=\"{outcome}\"}}"
    );
    scraped
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} in\n{scraped}"))
}
