//! TLS on both listeners, with certificates made by OpenSSL's command
//! line: curl over HTTPS, kcat, kafka-python and kafkajs over SASL_SSL with
//! each mechanism; a certificate from an unknown CA, for another name, or
//! expired, and plaintext to a TLS port, refused at the handshake; the
//! certificate reloaded at SIGHUP, and kept when the new files are bad;
//! client certificates (mutual TLS) logging in as their common name with
//! curl, kcat, kafka-python and kafkajs; API tokens with curl and the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{
    client_script, eventually, failure, logins_in as logins, offline, ok, python, third_party,
    Server,
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
    signed(
        dir,
        name,
        ca,
        &format!("/O={org}/CN={host}"),
        days,
        &format!("subjectAltName=DNS:{host},IP:127.0.0.1\n"),
    );
}

/// A client certificate `<name>.pem` (key `<name>.key`) for the user `cn`,
/// signed by `ca`.
fn client_certificate(dir: &Path, name: &str, ca: &str, cn: &str) {
    signed(
        dir,
        name,
        ca,
        &format!("/O=Shop/CN={cn}"),
        "2",
        "extendedKeyUsage=clientAuth\n",
    );
}

/// A certificate `<name>.pem` with key `<name>.key` for `subject`, signed by
/// `ca`, valid for `days`, with the extensions `ext`.
fn signed(dir: &Path, name: &str, ca: &str, subject: &str, days: &str, ext: &str) {
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
            subject,
        ],
    );
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
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
            &ext_file,
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

/// The answer's status line and headers and body (`curl -i`), or curl's
/// exit code when no answer came.
fn answer(out: &Output) -> Result<String, i32> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

/// With --tls-client-ca, a client certificate is a login: curl, kcat,
/// kafka-python and kafkajs log in as its subject's common name, whose
/// permissions then decide (bob's certificate is good, but bob may do
/// nothing); a certificate from another CA claiming alice, and no
/// certificate at all, are refused at the handshake (`required`).
#[test]
fn client_certificates_log_in_as_their_common_name_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    certificate(d, "server", "ca", "localhost", "2", "First");
    ca(d, "clients");
    client_certificate(d, "alice", "clients", "alice");
    client_certificate(d, "bob", "clients", "bob");
    ca(d, "other-ca");
    client_certificate(d, "mallory", "other-ca", "alice");
    let data = d.join("data");
    // A user with a password: the server requires logins, and a
    // certificate is one.
    users_add(&data, "admin");
    for (operation, resource) in [
        ("All", ["--topic", "orders"]),
        ("All", ["--group", "login-certificate"]),
        ("Describe", ["--cluster", ""]),
    ] {
        let mut args = vec![
            "acls",
            "add",
            "--principal",
            "alice",
            "--operation",
            operation,
            resource[0],
        ];
        if !resource[1].is_empty() {
            args.push(resource[1]);
        }
        ok(&offline(&data, &args, ""));
    }
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let server = Server::start(
        &data,
        &[
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
            "--tls-client-ca",
            &path("clients.pem"),
        ],
    );
    let ca_file = d.join("ca.pem");
    let as_user = |who: &str, args: &[&str], at: &str| {
        let mut all = vec![
            "-i".to_owned(),
            "--cert".to_owned(),
            path(&format!("{who}.pem")),
            "--key".to_owned(),
            path(&format!("{who}.key")),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        answer(&curl(&server, "localhost", &ca_file, &all, at))
    };
    let json = ["-H", "content-type: application/json", "--data"];
    let created = as_user(
        "alice",
        &[&json[..], &["{\"name\":\"orders\",\"partitions\":1}"]].concat(),
        "/v1/topics",
    )
    .unwrap();
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let refused = as_user(
        "bob",
        &[&json[..], &["{\"name\":\"orders-2\",\"partitions\":1}"]].concat(),
        "/v1/topics",
    )
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("User:bob may not"), "{refused}");
    // Another CA's certificate, and none: no handshake, so no answer.
    assert!(as_user("mallory", &[], "/v1/topics").is_err());
    let bare = curl(&server, "localhost", &ca_file, &[], "/healthz");
    assert!(!bare.status.success(), "{bare:?}");
    eventually("alice on the request log line", || {
        server.logs().contains("principal=User:alice")
    });

    // kcat over SSL with alice's certificate, then with bob's.
    let kcat_as = |who: &str, args: &[&str], input: &str| {
        use std::io::Write as _;
        let mut child = third_party("kcat")
            .arg("-b")
            .arg(server.kafka_addr.to_string())
            .args(["-X", "security.protocol=ssl"])
            .arg("-X")
            .arg(format!("ssl.ca.location={}", ca_file.display()))
            .arg("-X")
            .arg(format!(
                "ssl.certificate.location={}",
                path(&format!("{who}.pem"))
            ))
            .arg("-X")
            .arg(format!("ssl.key.location={}", path(&format!("{who}.key"))))
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
        child.wait_with_output().unwrap()
    };
    ok(&kcat_as(
        "alice",
        &["-P", "-t", "orders"],
        "by certificate\n",
    ));
    let read = ok(&kcat_as("alice", &["-C", "-t", "orders", "-e", "-q"], ""));
    assert_eq!(read.trim(), "by certificate");
    let bob = kcat_as("bob", &["-C", "-t", "orders", "-e", "-q"], "");
    let said = String::from_utf8_lossy(&bob.stderr);
    assert!(
        !bob.status.success() && said.contains("authorization failed"),
        "{bob:?}"
    );

    let broker = server.kafka_addr.to_string();
    let (cert, key, ca_text) = (path("alice.pem"), path("alice.key"), path("ca.pem"));
    let out = python(
        "kafka_python_login.py",
        &[
            &broker,
            "certificate",
            &cert,
            &key,
            "orders",
            "py",
            &ca_text,
        ],
        &server,
    );
    assert_eq!(
        out["values"],
        serde_json::json!(["by certificate", "py"]),
        "{out}"
    );
    let out = client_script(
        "node",
        "kafkajs_login.js",
        &[
            &broker,
            "certificate",
            &cert,
            &key,
            "orders",
            "js",
            &ca_text,
        ],
        &server,
    );
    assert_eq!(
        out["values"],
        serde_json::json!(["by certificate", "py", "js"]),
        "{out}"
    );
    let scraped = as_user("alice", &[], "/metrics").unwrap();
    assert!(logins(&scraped, "http", "certificate", "ok") >= 2.0);
    assert!(logins(&scraped, "kafka", "certificate", "ok") >= 4.0);
}

/// API tokens: made while the server is stopped, taken as
/// `Authorization: Bearer` over HTTPS from curl and from the CLI (flag,
/// environment, or its configuration file, refused when others may read
/// it); an unknown, malformed or expired token gets 401 with the reason;
/// a revoked one is gone after the restart. With `--tls-client-auth
/// requested`, a client certificate is one login among the others.
#[test]
fn tokens_log_in_over_https_and_the_cli_takes_them_from_flags_environment_or_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    certificate(d, "server", "ca", "localhost", "2", "First");
    ca(d, "clients");
    client_certificate(d, "alice", "clients", "alice");
    let data = d.join("data");
    users_add(&data, "alice");
    let token = |args: &[&str]| {
        let mut all = vec!["users", "token", "add"];
        all.extend_from_slice(args);
        ok(&offline(&data, &all, "")).trim().to_owned()
    };
    let ci = token(&["ci", "--name", "deploys"]);
    let short = token(&["dash", "--expires-in", "2s"]);
    let made = std::time::Instant::now();
    assert!(
        ci.starts_with("tdg_") && short.starts_with("tdg_"),
        "{ci} {short}"
    );
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let start = || {
        Server::start(
            &data,
            &[
                "--tls-cert",
                &path("server.pem"),
                "--tls-key",
                &path("server.key"),
                "--tls-client-ca",
                &path("clients.pem"),
                "--tls-client-auth",
                "requested",
            ],
        )
    };
    let server = start();
    let ca_file = d.join("ca.pem");
    let https = |server: &Server, args: &[&str]| {
        let mut all = vec!["-i"];
        all.extend_from_slice(args);
        answer(&curl(server, "localhost", &ca_file, &all, "/v1/topics")).unwrap()
    };
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let listed = https(&server, &["-H", &bearer(&ci)]);
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    let bare = https(&server, &[]);
    assert!(bare.starts_with("HTTP/1.1 401"), "{bare}");
    let lower = bare.to_lowercase();
    assert!(
        lower.contains("www-authenticate: bearer realm=\"tidings\"")
            && lower.contains("www-authenticate: basic realm=\"tidings\""),
        "{bare}"
    );
    let unknown = https(
        &server,
        &["-H", &bearer(&format!("{}x", &ci[..ci.len() - 1]))],
    );
    assert!(
        unknown.starts_with("HTTP/1.1 401") && unknown.contains("unknown or revoked token"),
        "{unknown}"
    );
    let malformed = https(&server, &["-H", &bearer("abc")]);
    assert!(malformed.contains("not a Tidings token"), "{malformed}");
    // Requested, not required: a certificate logs in; so does a password.
    let by_certificate = https(
        &server,
        &["--cert", &path("alice.pem"), "--key", &path("alice.key")],
    );
    assert!(
        by_certificate.starts_with("HTTP/1.1 200"),
        "{by_certificate}"
    );
    let by_password = https(&server, &["-u", "alice:alice-pw"]);
    assert!(by_password.starts_with("HTTP/1.1 200"), "{by_password}");
    // The same on the Kafka listener: a certificate, or SASL without one;
    // neither is not logged in.
    let kcat = |settings: &[String]| {
        let mut command = third_party("kcat");
        command
            .args(["-L", "-m", "5", "-b"])
            .arg(server.kafka_addr.to_string())
            .arg("-X")
            .arg(format!("ssl.ca.location={}", ca_file.display()));
        for s in settings {
            command.args(["-X", s]);
        }
        command.output().unwrap()
    };
    let certificate = [
        "security.protocol=ssl".to_owned(),
        format!("ssl.certificate.location={}", path("alice.pem")),
        format!("ssl.key.location={}", path("alice.key")),
    ];
    ok(&kcat(&certificate));
    let sasl = [
        "security.protocol=sasl_ssl",
        "sasl.mechanisms=SCRAM-SHA-256",
        "sasl.username=alice",
        "sasl.password=alice-pw",
    ]
    .map(String::from);
    ok(&kcat(&sasl));
    failure(&kcat(&["security.protocol=ssl".to_owned()]));
    std::thread::sleep(std::time::Duration::from_secs(3).saturating_sub(made.elapsed()));
    let expired = https(&server, &["-H", &bearer(&short)]);
    assert!(
        expired.starts_with("HTTP/1.1 401") && expired.contains("expired"),
        "{expired}"
    );

    // The CLI: a token from the flag, the environment, or its file.
    let url = format!("https://localhost:{}", server.addr.port());
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
        command
            .args(["topics", "list"])
            .args(args)
            .env("SSL_CERT_FILE", &ca_file)
            .env("XDG_CONFIG_HOME", d.join("no-config"))
            .env_remove("TIDINGS_URL")
            .env_remove("TIDINGS_TOKEN")
            .env_remove("TIDINGS_USER")
            .env_remove("TIDINGS_CLIENT_CONFIG");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let said = failure(&cli(&[], &[("TIDINGS_URL", &url)]));
    assert!(said.contains("401"), "{said}");
    ok(&cli(&["--server", &url, "--token", &ci], &[]));
    ok(&cli(&[], &[("TIDINGS_URL", &url), ("TIDINGS_TOKEN", &ci)]));
    let said = failure(&cli(&["--server", &url, "--token", &short], &[]));
    assert!(said.contains("expired"), "{said}");
    let file = d.join("client.toml");
    std::fs::write(&file, format!("server = \"{url}\"\ntoken = \"{ci}\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file_text = file.to_str().unwrap();
    let said = failure(&cli(&["--client-config", file_text], &[]));
    assert!(said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&cli(&["--client-config", file_text], &[]));
    // The default place, under XDG_CONFIG_HOME.
    std::fs::create_dir_all(d.join("config/tidings")).unwrap();
    std::fs::copy(&file, d.join("config/tidings/client.toml")).unwrap();
    let config_home = d.join("config");
    let config_home = [("XDG_CONFIG_HOME", config_home.to_str().unwrap())];
    ok(&cli(&[], &config_home));
    // A default file that others may read is refused when it is read, and
    // not read when the flags say everything.
    std::fs::set_permissions(
        d.join("config/tidings/client.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let said = failure(&cli(&[], &config_home));
    assert!(said.contains("chmod 600"), "{said}");
    ok(&cli(&["--server", &url, "--token", &ci], &config_home));
    // A flag beats the environment's other login.
    ok(&cli(
        &["--server", &url, "--token", &ci],
        &[("TIDINGS_USER", "alice"), ("TIDINGS_PASSWORD", "wrong")],
    ));
    let scraped = answer(&curl(
        &server,
        "localhost",
        &ca_file,
        &["-H", &bearer(&ci)],
        "/metrics",
    ))
    .unwrap();
    assert!(logins(&scraped, "http", "token", "ok") >= 4.0);
    assert!(logins(&scraped, "http", "token", "failed") >= 3.0);

    // Revoked while the server is stopped: gone once it is back.
    drop(server);
    let listed = ok(&offline(&data, &["users", "token", "list"], ""));
    assert!(
        listed.contains("deploys") && listed.contains("expired"),
        "{listed}"
    );
    let id = &ci["tdg_".len().."tdg_".len() + 16];
    ok(&offline(&data, &["users", "token", "remove", id], ""));
    let server = start();
    let revoked = https(&server, &["-H", &bearer(&ci)]);
    assert!(revoked.contains("unknown or revoked token"), "{revoked}");
}
