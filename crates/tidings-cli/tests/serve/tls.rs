//! TLS on both listeners, with certificates made by OpenSSL's command
//! line: curl over HTTPS, kcat, kafka-python and kafkajs over SASL_SSL with
//! each mechanism; a certificate from an unknown CA, for another name, or
//! expired, and plaintext to a TLS port, refused at the handshake; the
//! certificate reloaded at SIGHUP, and kept when the new files are bad.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{
    client_script, eventually, failure, offline, ok, python, third_party, Server,
};

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<ca>.pem`, `<ca>.key`) in `dir`.
fn ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
}

/// A server certificate `<name>.pem` with key `<name>.key`, signed by
/// `ca`, for `host` (and 127.0.0.1), valid for `days`, organization `org`.
fn certificate(dir: &Path, name: &str, ca: &str, host: &str, days: &str, org: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/O={org}/CN={host}"),
        ],
    );
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName=DNS:{host},IP:127.0.0.1\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            days,
            "-extfile",
            &ext,
        ],
    );
}

fn users_add(data: &Path, user: &str) {
    ok(&offline(
        data,
        &["users", "add", user],
        &format!("{user}-pw\n"),
    ));
}

/// curl against `https://<host>:<port><path>` (resolved to 127.0.0.1).
fn curl(server: &Server, host: &str, cafile: &Path, args: &[&str], path: &str) -> Output {
    let port = server.addr.port();
    third_party("curl")
        .args(["-s", "--max-time", "20", "--cacert"])
        .arg(cafile)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(args)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl is installed")
}

fn kcat_ssl(server: &Server, cafile: &Path, mechanism: &str, args: &[&str], input: &str) -> String {
    use std::io::Write as _;
    let mut child = third_party("kcat")
        .arg("-b")
        .arg(server.kafka_addr.to_string())
        .args(["-X", "security.protocol=SASL_SSL"])
        .arg("-X")
        .arg(format!("ssl.ca.location={}", cafile.display()))
        .args(["-X", &format!("sasl.mechanisms={mechanism}")])
        .args(["-X", "sasl.username=alice", "-X", "sasl.password=alice-pw"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    ok(&child.wait_with_output().unwrap())
}

/// The subject (its organization) a TLS client is shown now.
fn served_organization(server: &Server) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject",
            server.addr.port()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Setup {
    dir: tempfile::TempDir,
    server: Server,
}

impl Setup {
    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

fn tls_server() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    certificate(dir.path(), "server", "ca", "localhost", "2", "First");
    let data = dir.path().join("data");
    users_add(&data, "alice");
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let server = Server::start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    Setup { dir, server }
}

#[test]
fn real_clients_speak_tls_to_both_listeners_and_bad_certificates_are_refused() {
    let setup = tls_server();
    let server = &setup.server;
    let ca_file = setup.path("ca.pem");
    let listed = ok(&curl(
        server,
        "localhost",
        &ca_file,
        &["-u", "alice:alice-pw"],
        "/v1/topics",
    ));
    assert_eq!(listed, "{\"topics\":[]}");
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        kcat_ssl(
            server,
            &ca_file,
            mechanism,
            &["-P", "-t", "secure"],
            &format!("kcat {mechanism}\n"),
        );
    }
    let read = kcat_ssl(
        server,
        &ca_file,
        "SCRAM-SHA-256",
        &["-C", "-t", "secure", "-e", "-q"],
        "",
    );
    assert_eq!(read.lines().count(), 3, "{read}");
    let broker = server.kafka_addr.to_string();
    let ca_text = ca_file.to_str().unwrap();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let out = python(
            "kafka_python_login.py",
            &[
                &broker,
                mechanism,
                "alice",
                "alice-pw",
                &format!("py-{mechanism}"),
                "v",
                ca_text,
            ],
            server,
        );
        assert_eq!(out["values"], serde_json::json!(["v"]), "{out}");
        let js = mechanism.to_lowercase();
        let out = client_script(
            "node",
            "kafkajs_login.js",
            &[
                &broker,
                &js,
                "alice",
                "alice-pw",
                &format!("js-{js}"),
                "v",
                ca_text,
            ],
            server,
        );
        assert_eq!(out["values"], serde_json::json!(["v"]), "{out}");
    }

    // Refused at the handshake: an unknown CA (curl exits 60), another
    // name, plaintext to the TLS port.
    ca(setup.dir.path(), "other-ca");
    let unknown = curl(
        server,
        "localhost",
        &setup.path("other-ca.pem"),
        &[],
        "/healthz",
    );
    assert_eq!(unknown.status.code(), Some(60), "{unknown:?}");
    let wrong_name = curl(server, "tidings.example", &ca_file, &[], "/healthz");
    assert_eq!(wrong_name.status.code(), Some(60), "{wrong_name:?}");
    let plaintext = third_party("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{}/healthz", server.addr.port()))
        .output()
        .unwrap();
    failure(&plaintext);
    let plain_kafka = third_party("kcat")
        .args(["-L", "-m", "5", "-b", &broker])
        .args([
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=PLAIN",
        ])
        .args(["-X", "sasl.username=alice", "-X", "sasl.password=alice-pw"])
        .output()
        .unwrap();
    failure(&plain_kafka);
}

#[test]
fn the_certificate_is_reloaded_at_sighup_and_kept_when_the_new_files_are_bad() {
    let setup = tls_server();
    let server = &setup.server;
    assert!(served_organization(server).contains("O = First"));
    // New files in place, then SIGHUP: new connections get the new one.
    certificate(setup.dir.path(), "next", "ca", "localhost", "2", "Second");
    std::fs::copy(setup.path("next.pem"), setup.path("server.pem")).unwrap();
    std::fs::copy(setup.path("next.key"), setup.path("server.key")).unwrap();
    server.signal("HUP");
    eventually("the new certificate served", || {
        served_organization(server).contains("O = Second")
    });
    // A bad file: the certificate in use stays, and the log says why.
    std::fs::write(setup.path("server.pem"), "not a certificate").unwrap();
    server.signal("HUP");
    eventually("the failed reload logged", || {
        server
            .logs()
            .contains("the TLS certificate could not be reloaded")
    });
    assert!(served_organization(server).contains("O = Second"));
    // An expired certificate, once loaded, is refused by clients.
    certificate(
        setup.dir.path(),
        "expired",
        "ca",
        "localhost",
        "0",
        "Expired",
    );
    std::fs::copy(setup.path("expired.pem"), setup.path("server.pem")).unwrap();
    std::fs::copy(setup.path("expired.key"), setup.path("server.key")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.signal("HUP");
    eventually("the expired certificate served", || {
        served_organization(server).contains("O = Expired")
    });
    let refused = curl(server, "localhost", &setup.path("ca.pem"), &[], "/healthz");
    assert_eq!(refused.status.code(), Some(60), "{refused:?}");
}
