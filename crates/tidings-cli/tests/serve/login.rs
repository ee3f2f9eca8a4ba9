//! Logging in on the Kafka listener: users added with `tidings users`, and
//! real clients — kcat (librdkafka), kafka-python and kafkajs — logging in
//! with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 over plaintext; wrong
//! passwords answered with Kafka's authentication error; nothing but
//! ApiVersions and the SASL APIs answered before a login.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    client_script, eventually, failure, get, offline, ok, python, third_party, Server,
};

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// `tidings users <args>` on `data_dir`, the password on standard input.
fn users(data_dir: &Path, args: &[&str], password: &str) -> Output {
    let args = [&["users"][..], args].concat();
    offline(data_dir, &args, &format!("{password}\n"))
}

/// A server whose data dir has alice (both SCRAM mechanisms) and bob
/// (SCRAM-SHA-512 only).
fn server_with_users(dir: &Path) -> Server {
    ok(&users(dir, &["add", "alice"], "alice-pw"));
    ok(&users(
        dir,
        &["add", "bob", "--mechanism", "SCRAM-SHA-512"],
        "bob-pw",
    ));
    Server::start(dir, &[])
}

/// kcat logging in as `user`; its output, whether it succeeded or not.
fn kcat_as(server: &Server, login: (&str, &str, &str), args: &[&str], input: &str) -> Output {
    let (mechanism, user, password) = login;
    let mut child = third_party("kcat")
        .arg("-b")
        .arg(server.kafka_addr.to_string())
        .args(["-X", "security.protocol=SASL_PLAINTEXT"])
        .args(["-X", &format!("sasl.mechanisms={mechanism}")])
        .args(["-X", &format!("sasl.username={user}")])
        .args(["-X", &format!("sasl.password={password}")])
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
    child.wait_with_output().unwrap()
}

#[test]
fn users_are_kept_without_their_passwords_and_not_changed_under_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    ok(&users(dir.path(), &["add", "alice"], "a-secret-pw"));
    let listed = ok(&users(dir.path(), &["list"], ""));
    assert!(
        listed.contains("alice  SCRAM-SHA-256 (8192 iterations), SCRAM-SHA-512 (8192 iterations)"),
        "{listed}"
    );
    let stored = std::fs::read(dir.path().join("auth").join("auth.state")).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("a-secret-pw"));
    let said = failure(&users(dir.path(), &["add", "bob"], ""));
    assert!(said.contains("no password"), "{said}");

    let server = Server::start(dir.path(), &[]);
    let said = failure(&users(dir.path(), &["add", "bob"], "bob-pw"));
    assert!(
        said.contains("held by another process (a running `tidings serve`?)"),
        "{said}"
    );
    server.terminate();
    ok(&users(dir.path(), &["remove", "alice"], ""));
    let listed = ok(&users(dir.path(), &["list"], ""));
    assert!(listed.starts_with("no users"), "{listed}");
}

#[test]
fn kcat_logs_in_with_each_mechanism_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path());
    for mechanism in MECHANISMS {
        let produced = kcat_as(
            &server,
            (mechanism, "alice", "alice-pw"),
            &["-P", "-t", "logins"],
            &format!("kcat {mechanism}\n"),
        );
        ok(&produced);
    }
    // bob has a SCRAM-SHA-512 credential only; PLAIN checks it too.
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let read = kcat_as(
            &server,
            (mechanism, "bob", "bob-pw"),
            &["-C", "-t", "logins", "-e", "-q"],
            "",
        );
        assert_eq!(
            ok(&read).lines().collect::<Vec<_>>(),
            ["kcat PLAIN", "kcat SCRAM-SHA-256", "kcat SCRAM-SHA-512"]
        );
    }
    for (mechanism, user, password) in [
        ("PLAIN", "alice", "wrong"),
        ("SCRAM-SHA-256", "alice", "wrong"),
        ("SCRAM-SHA-512", "nobody", "alice-pw"),
        ("SCRAM-SHA-256", "bob", "bob-pw"), // no credential for this mechanism
    ] {
        let refused = kcat_as(&server, (mechanism, user, password), &["-L", "-m", "5"], "");
        let said = failure(&refused);
        assert!(
            said.contains(&format!(
                "SASL authentication error: Authentication failed with {mechanism}: authentication failed"
            )),
            "{mechanism} {user}: {said}"
        );
    }
    assert!(logins(&server, "kafka", "SCRAM-SHA-256", "failed") >= 2.0);
    assert!(logins(&server, "kafka", "PLAIN", "ok") >= 2.0);
    eventually("the failures logged", || {
        server.logs().contains("a Kafka client failed to log in")
    });
}

#[test]
fn kafka_python_and_kafkajs_log_in_with_each_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path());
    let broker = server.kafka_addr.to_string();
    for mechanism in MECHANISMS {
        let topic = format!("py-{mechanism}");
        let value = format!("kafka-python {mechanism}");
        let out = python(
            "kafka_python_login.py",
            &[&broker, mechanism, "alice", "alice-pw", &topic, &value],
            &server,
        );
        assert_eq!(out["values"], serde_json::json!([value]), "{out}");

        let js = mechanism.to_lowercase();
        let topic = format!("js-{js}");
        let value = format!("kafkajs {mechanism}");
        let out = client_script(
            "node",
            "kafkajs_login.js",
            &[&broker, &js, "alice", "alice-pw", &topic, &value],
            &server,
        );
        assert_eq!(out["values"], serde_json::json!([value]), "{out}");
    }
    let refused = python(
        "kafka_python_login.py",
        &[&broker, "SCRAM-SHA-256", "alice", "wrong", "py-x", "x"],
        &server,
    );
    let logged = refused["logged"].to_string();
    assert!(
        logged.contains("[Error 58] SaslAuthenticationFailedError")
            && logged.contains("Authentication failed with SCRAM-SHA-256"),
        "{refused}"
    );
    let refused = client_script(
        "node",
        "kafkajs_login.js",
        &[&broker, "plain", "alice", "wrong", "js-x", "x"],
        &server,
    );
    assert_eq!(
        refused["error"], "KafkaJSSASLAuthenticationError",
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("Authentication failed with PLAIN")),
        "{refused}"
    );
}

/// A request frame: size, API key, version, correlation id, client id, body.
fn request(api: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&api.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    frame.extend_from_slice(&4_i16.to_be_bytes());
    frame.extend_from_slice(b"test");
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend(frame);
    out
}

/// One size-prefixed frame from the server, or `None` at end of stream.
fn frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).unwrap();
    Some(body)
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

const SASL_HANDSHAKE: i16 = 17;
const METADATA: i16 = 3;

/// A client from before Kafka 1.0: SaslHandshake v0, then the PLAIN token
/// bare, then requests. And a request before any login closes the
/// connection unanswered.
#[test]
fn a_bare_token_after_a_v0_handshake_logs_in_and_nothing_is_answered_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path());
    let connect = || {
        let s = TcpStream::connect(server.kafka_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // Metadata v0 for every topic, before logging in: closed, unanswered.
    let mut early = connect();
    early
        .write_all(&request(METADATA, 0, 1, &0_i32.to_be_bytes()))
        .unwrap();
    assert_eq!(frame(&mut early), None);
    eventually("the refusal logged", || {
        server.logs().contains("Metadata before logging in")
    });

    // Before a login, a frame is at most 512 KiB (Kafka's
    // sasl.server.max.receive.size): a larger size closes the connection
    // before anything is read into memory.
    let mut large = connect();
    large.write_all(&1_000_000_i32.to_be_bytes()).unwrap();
    assert_eq!(frame(&mut large), None);
    eventually("the oversized frame refused", || {
        server
            .logs()
            .contains("frame size 1000000 is outside 8..=524288 bytes")
    });

    for (password, logs_in) in [("alice-pw", true), ("wrong", false)] {
        let mut s = connect();
        s.write_all(&request(SASL_HANDSHAKE, 0, 1, &string("PLAIN")))
            .unwrap();
        let answer = frame(&mut s).unwrap();
        // Correlation id, error code 0, then the mechanisms.
        assert_eq!(&answer[..6], &[0, 0, 0, 1, 0, 0]);
        assert!(String::from_utf8_lossy(&answer).contains("SCRAM-SHA-512"));
        let token = format!("\0alice\0{password}");
        s.write_all(&(token.len() as i32).to_be_bytes()).unwrap();
        s.write_all(token.as_bytes()).unwrap();
        if !logs_in {
            // No way to say why in this framing: the connection closes.
            assert_eq!(frame(&mut s), None);
            continue;
        }
        assert_eq!(frame(&mut s), Some(Vec::new()), "an empty token back");
        s.write_all(&request(METADATA, 0, 2, &0_i32.to_be_bytes()))
            .unwrap();
        let metadata = frame(&mut s).unwrap();
        assert_eq!(&metadata[..4], &2_i32.to_be_bytes(), "answered");
    }
}

/// A server without users answers a client that asks to log in with
/// ILLEGAL_SASL_STATE and says why in its log.
#[test]
fn asking_to_log_in_to_a_server_without_users_is_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let refused = kcat_as(&server, ("PLAIN", "alice", "pw"), &["-L", "-m", "5"], "");
    failure(&refused);
    eventually("the refusal logged", || {
        server
            .logs()
            .contains("a client asked to log in, but this server has no users")
    });
    let value: Value = python(
        "kafka_python_login.py",
        &[
            &server.kafka_addr.to_string(),
            "PLAIN",
            "alice",
            "pw",
            "t",
            "x",
        ],
        &server,
    );
    assert!(value.get("error").is_some(), "{value}");
}

/// curl against the server: its status line and headers, then the body.
fn curl(server: &Server, args: &[&str], path: &str) -> String {
    let out = third_party("curl")
        .args(["-s", "-i", "--max-time", "30"])
        .args(args)
        .arg(server.url(path))
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "curl {args:?} {path}");
    String::from_utf8(out.stdout).unwrap()
}

/// `tidings_logins_total` of one listener, mechanism and outcome, scraped
/// as alice (Prometheus logs in like any client).
fn logins(server: &Server, listener: &str, mechanism: &str, outcome: &str) -> f64 {
    let scraped = curl(server, &["-u", "alice:alice-pw"], "/metrics");
    crate::support::logins_in(&scraped, listener, mechanism, outcome)
}

/// Once the server has users, HTTP requests log in with Basic (the same
/// users as the Kafka listener's); `/healthz` stays open to probes.
#[test]
fn http_requests_log_in_with_basic_and_the_cli_logs_in_from_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_users(dir.path());
    assert_eq!(
        get(&server.url("/healthz")).status,
        200,
        "probes need no login"
    );
    for path in [
        "/v1/topics",
        "/metrics",
        "/registry/subjects",
        "/v1/no-such-route",
    ] {
        let answer = get(&server.url(path));
        assert_eq!(
            (answer.status, answer.code()),
            (401, "unauthenticated"),
            "{path}"
        );
    }
    let refused = curl(&server, &[], "/v1/topics");
    assert!(
        refused
            .to_lowercase()
            .contains("www-authenticate: basic realm=\"tidings\""),
        "{refused}"
    );
    let wrong = curl(&server, &["-u", "alice:wrong"], "/v1/topics");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(wrong.contains("wrong user name or password"), "{wrong}");

    // curl creates a topic and publishes as alice; bob (SCRAM-SHA-512
    // only) reads.
    let created = curl(
        &server,
        &[
            "-u",
            "alice:alice-pw",
            "-H",
            "content-type: application/json",
            "--data",
            "{\"name\":\"orders\",\"partitions\":1}",
        ],
        "/v1/topics",
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let published = curl(
        &server,
        &[
            "-u",
            "alice:alice-pw",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "ce-specversion: 1.0",
            "-H",
            "ce-type: order.placed",
            "-H",
            "ce-source: /shop",
            "-H",
            "ce-id: o-1",
            "--data",
            "{\"order\":1}",
        ],
        "/v1/topics/orders/events",
    );
    assert!(published.starts_with("HTTP/1.1 20"), "{published}");
    let read = curl(
        &server,
        &["-u", "bob:bob-pw"],
        "/v1/topics/orders/events?partition=0&from=0",
    );
    assert!(read.contains("\"order\":1"), "{read}");
    eventually("the principal on the request's log line", || {
        server.logs().contains("principal=User:bob")
    });

    // The CLI: refused without a user, logged in with TIDINGS_USER and
    // TIDINGS_PASSWORD.
    let cli = |env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
        command
            .args(["topics", "list"])
            .env("TIDINGS_URL", server.url(""))
            .env_remove("TIDINGS_USER")
            .env_remove("TIDINGS_PASSWORD");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let said = failure(&cli(&[]));
    assert!(said.contains("401") && said.contains("log in"), "{said}");
    let listed = ok(&cli(&[
        ("TIDINGS_USER", "alice"),
        ("TIDINGS_PASSWORD", "alice-pw"),
    ]));
    assert!(listed.contains("orders"), "{listed}");
    let said = failure(&cli(&[
        ("TIDINGS_USER", "alice"),
        ("TIDINGS_PASSWORD", "nope"),
    ]));
    assert!(said.contains("wrong user name or password"), "{said}");
    assert!(logins(&server, "http", "basic", "failed") >= 2.0);
}
