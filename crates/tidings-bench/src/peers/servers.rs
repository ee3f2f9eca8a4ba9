//! The peers' servers: child processes on free loopback ports, each with a
//! throwaway data directory, stopped and removed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running server.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The server's version, as it reports it.
    pub(crate) version: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

impl Server {
    /// The server process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn version(program: impl AsRef<Path>, arg: &str) -> Result<String> {
    let program = program.as_ref();
    let out = Command::new(program).arg(arg).output().with_context(|| {
        format!(
            "running {} (scripts/bench peers installs it)",
            program.display()
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until the server accepts connections and answers `probe` with a reply
/// starting with `expect`.
fn wait_ready(server: &mut Server, probe: &[u8], expect: &[u8]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "the server exited at start ({status}); see {}",
                server.dir.path().display()
            );
        }
        if let Ok(mut conn) = TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)) {
            conn.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut reply = vec![0; 256];
            if probe.is_empty() || conn.write_all(probe).is_ok() {
                if let Ok(n) = conn.read(&mut reply) {
                    if reply[..n].starts_with(expect) {
                        return Ok(());
                    }
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the server at {} did not become ready in 20 s", server.addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// redis-server, durable (`appendonly yes`, `appendfsync always`) or not
/// persisting at all (`save ""`, `appendonly no`).
pub(crate) fn redis(dir: &Path, durable: bool) -> Result<Server> {
    let data = tempfile::tempdir_in(dir)?;
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", if durable { "yes" } else { "no" }])
        .args(["--appendfsync", "always", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(data.path())
        .arg("--logfile")
        .arg(data.path().join("redis.log"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (scripts/bench peers installs it)")?;
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        version: version("redis-server", "--version")?,
        dir: data,
    };
    wait_ready(&mut server, b"PING\r\n", b"+PONG")?;
    Ok(server)
}

/// The environment variable naming the nats-server binary to run;
/// `scripts/peers` builds one that can sync every write and sets it.
const NATS_SERVER_VAR: &str = "TIDINGS_NATS_SERVER";

/// How a NATS server was set to sync its file storage.
pub(crate) struct NatsSync {
    /// The setting in a few words, for row names.
    pub(crate) short: &'static str,
    /// The setting and what it guarantees, for the benchmark's reports.
    pub(crate) setting: &'static str,
}

/// nats-server with JetStream, its store in a throwaway directory. The binary
/// is the one `TIDINGS_NATS_SERVER` names (`scripts/bench peers` builds
/// 2.15.3), else `nats-server` from PATH, which the reported version then says.
/// With `durable`, its config has `sync_interval: always` (each message
/// fsynced before its publish is acknowledged) where the server has it (2.10
/// on); an older one syncs file storage on its 2-minute timer only, as does
/// every server in the not-durable runs.
pub(crate) fn nats(dir: &Path, durable: bool) -> Result<(Server, NatsSync)> {
    let (program, from_path) = match std::env::var_os(NATS_SERVER_VAR) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), false),
        _ => (PathBuf::from("nats-server"), true),
    };
    let reported = version(&program, "--version")?;
    let (major, minor) = nats_version(&reported).with_context(|| {
        format!(
            "reading the version of {} from {reported:?}",
            program.display()
        )
    })?;
    let per_write = durable && (major, minor) >= (2, 10);
    // With `sync_interval: always` a single server fsyncs each message before
    // it acknowledges the publish; a consumer's state (what it has delivered
    // and what is acked) is written with O_SYNC too, but by a background
    // flush (at most 10 a second) after the ack has been answered.
    let sync = if per_write {
        NatsSync {
            short: "sync_interval: always",
            setting: "sync_interval: always (every write fsynced: each message before \
                      its publish ack; consumer ack state by a background flush, \
                      at most 10 a second, after the ack's reply)",
        }
    } else if durable {
        NatsSync {
            short: "synced on a 2-min timer",
            setting: "synced on the server's timer (2 min); this version has no \
                      per-write sync (`sync_interval: always` came with 2.10)",
        }
    } else {
        NatsSync {
            short: "default sync (2-min timer)",
            setting: "default sync (file storage synced on the server's 2-min timer)",
        }
    };
    let data = tempfile::tempdir_in(dir)?;
    let port = free_port()?;
    let config = data.path().join("nats.conf");
    let sync_line = if per_write {
        "  sync_interval: always\n"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n{sync_line}}}\n",
            data.path().join("js").display()
        ),
    )?;
    let child = Command::new(&program)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (scripts/bench peers installs it)",
                program.display()
            )
        })?;
    let version = if from_path {
        format!("{reported} (`nats-server` from PATH: {NATS_SERVER_VAR} is unset)")
    } else {
        reported
    };
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        version,
        dir: data,
    };
    // A NATS server greets every connection with INFO.
    wait_ready(&mut server, b"", b"INFO")?;
    Ok((server, sync))
}

/// The major and minor version in `nats-server --version`'s answer, such as
/// `nats-server: v2.15.3`.
fn nats_version(reported: &str) -> Option<(u32, u32)> {
    let (_, number) = reported.rsplit_once('v')?;
    let mut parts = number.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `tidings serve` in a child process: this benchmark's own executable run with
/// the hidden `serve` command, which calls the server library exactly as the
/// `tidings` binary does. Returns the server (its address is the HTTP API's) and
/// the Kafka listener's address.
pub(crate) fn tidings(dir: &Path) -> Result<(Server, SocketAddr)> {
    let data = tempfile::tempdir_in(dir)?;
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let kafka = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = std::fs::File::create(data.path().join("tidings.log"))?;
    let child = Command::new(std::env::current_exe().context("finding this executable")?)
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--http-addr", &http.to_string()])
        .args(["--kafka-addr", &kafka.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the Tidings server")?;
    let mut server = Server {
        child,
        addr: http,
        version: format!("tidings {}", env!("CARGO_PKG_VERSION")),
        dir: data,
    };
    wait_ready(
        &mut server,
        b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200",
    )?;
    Ok((server, kafka))
}
