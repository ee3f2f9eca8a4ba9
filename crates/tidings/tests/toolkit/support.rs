//! What the checks share: a backend to run against, fresh names, and
//! collecting deliveries until a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings::{Backend, CloudEvent, Mode, SubscribeOptions, Subscriber, Subscription};

/// How long a check waits for what it expects before it fails: a bound on
/// a wait, never a measure of speed. Generous, because two checks run at
/// once on a two-core machine, each perhaps with a three-node NATS cluster
/// of its own, and a saga's flow there has taken more than 20 s.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A backend under test, in one mode.
pub(crate) trait Harness: Send + Sync {
    /// The backend.
    fn backend(&self) -> Arc<dyn Backend>;
    /// The mode the checks subscribe in.
    fn mode(&self) -> Mode;
    /// Fails the backing server: kills it (SIGKILL) and starts it again on
    /// the same data and address, or cuts every connection to it; `false`
    /// when there is no server to fail.
    fn restart(&self) -> impl std::future::Future<Output = bool> + Send;
    /// Whether a delivery's attempts outlive the subscriber that counted
    /// them: everywhere but the stream emulation on the broker's stream
    /// groups, whose commits carry no note (its capabilities say so).
    fn attempts_are_durable(&self) -> bool {
        true
    }
}

/// A name no other check uses.
pub(crate) fn fresh(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Event `n` of a run: type `test.n`, data `{"n": n}`, keyed when `key` is.
pub(crate) fn event(n: u64, key: Option<&str>) -> CloudEvent {
    let e = CloudEvent::new("/conformance", "test.n")
        .with_json(&serde_json::json!({ "n": n }))
        .unwrap();
    match key {
        Some(k) => e.with_partitionkey(k),
        None => e,
    }
}

/// The `n` of an event made by [`event`].
pub(crate) fn n_of(e: &CloudEvent) -> u64 {
    e.json::<serde_json::Value>().unwrap()["n"]
        .as_u64()
        .unwrap()
}

/// Subscription options of the harness's mode.
pub(crate) fn options(h: &impl Harness, topic: &str, group: &str) -> SubscribeOptions {
    match h.mode() {
        Mode::Queue => SubscribeOptions::queue(topic, group),
        Mode::Stream => SubscribeOptions::stream(topic, group),
    }
}

/// Subscribes with `options`.
pub(crate) async fn subscribe(h: &impl Harness, options: SubscribeOptions) -> Subscription {
    Subscriber::new(h.backend())
        .subscribe(options)
        .await
        .unwrap()
}

/// Receives and acks until `n` events were received or [`PATIENCE`] ran
/// out; answers how many times each `n` came.
pub(crate) async fn take_acked(sub: &mut Subscription, n: usize) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut total = 0;
    while total < n && tokio::time::Instant::now() < deadline {
        for d in sub
            .next_batch(64, Duration::from_millis(200))
            .await
            .unwrap()
        {
            *seen.entry(n_of(d.event().unwrap())).or_insert(0) += 1;
            total += 1;
            d.ack().await.unwrap();
        }
    }
    seen
}

/// How long a check that expects nothing more goes on reading after what
/// it expects came: what is stored by then reaches a subscription that is
/// already reading well within it.
pub(crate) const QUIET: Duration = Duration::from_secs(1);

/// Receives and acks until `n` events were received, then for [`QUIET`]
/// more: how many times each `n` came. For a check that must see nothing
/// beyond `n` without waiting out [`PATIENCE`] for it.
pub(crate) async fn take_acked_then_quiet(sub: &mut Subscription, n: usize) -> BTreeMap<u64, u32> {
    let mut seen = take_acked(sub, n).await;
    let quiet = tokio::time::Instant::now() + QUIET;
    while tokio::time::Instant::now() < quiet {
        for d in sub
            .next_batch(64, Duration::from_millis(100))
            .await
            .unwrap()
        {
            *seen.entry(n_of(d.event().unwrap())).or_insert(0) += 1;
            d.ack().await.unwrap();
        }
    }
    seen
}

/// The `n` of the event [`no_dead_letters`] publishes to mark where its
/// reading may stop.
const SENTINEL: u64 = u64::MAX;

/// The events of a group's dead-letter topic, read by a queue group of
/// their own: (n, dlqattempts, dlqerror) in order of arrival, once
/// `expected` came (or [`PATIENCE`] ran out).
pub(crate) async fn dead_letters(
    h: &impl Harness,
    topic: &str,
    group: &str,
    expected: usize,
) -> Vec<(u64, u32, String)> {
    read_dead_letters(h, topic, group, |got, _| got.len() >= expected).await
}

/// The dead letters of a group that should have none: a sentinel event is
/// published to the dead-letter topic, and reading stops [`QUIET`] after it
/// came (what is stored before it has come by then, from any partition)
/// instead of after [`PATIENCE`].
pub(crate) async fn no_dead_letters(
    h: &impl Harness,
    topic: &str,
    group: &str,
) -> Vec<(u64, u32, String)> {
    let dlq = h.backend().dead_letter_topic(topic, group);
    tidings::Publisher::new(h.backend())
        .publish(&dlq, event(SENTINEL, None))
        .await
        .unwrap();
    let mut quiet_from = None;
    read_dead_letters(h, topic, group, |_, sentinel| {
        if sentinel {
            let since = *quiet_from.get_or_insert_with(tokio::time::Instant::now);
            since.elapsed() >= QUIET
        } else {
            false
        }
    })
    .await
}

/// Reads a group's dead letters until `done(read so far, sentinel seen)`
/// or [`PATIENCE`] ran out.
async fn read_dead_letters(
    h: &impl Harness,
    topic: &str,
    group: &str,
    mut done: impl FnMut(&[(u64, u32, String)], bool) -> bool,
) -> Vec<(u64, u32, String)> {
    let backend = h.backend();
    let dlq = backend.dead_letter_topic(topic, group);
    let mut sub = Subscriber::new(backend)
        .subscribe(SubscribeOptions::queue(&dlq, fresh("dlq-reader")))
        .await
        .unwrap();
    let (mut out, mut sentinel) = (Vec::new(), false);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(&out, sentinel) && tokio::time::Instant::now() < deadline {
        for d in sub
            .next_batch(64, Duration::from_millis(200))
            .await
            .unwrap()
        {
            let e = d.event().unwrap();
            let text = |name: &str| {
                e.extension(name)
                    .map(|v| v.to_canonical_string())
                    .unwrap_or_default()
            };
            match n_of(e) {
                SENTINEL => sentinel = true,
                n => out.push((
                    n,
                    text("dlqattempts").parse().unwrap_or(0),
                    text("dlqerror"),
                )),
            }
            d.ack().await.unwrap();
        }
    }
    sub.close().await.unwrap();
    out
}

/// The `tidings` binary of this build: `TIDINGS_BIN`, or beside the test
/// executable's directory (`cargo test --workspace` builds it).
pub(crate) fn tidings_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TIDINGS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("tidings"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p tidings-cli), as `cargo test --workspace` does, or set TIDINGS_BIN",
        bin.display()
    );
    bin
}

/// A `tidings serve` child process on loopback.
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) http: SocketAddr,
    pub(crate) kafka: SocketAddr,
}

impl ServerProcess {
    /// Starts a server on `data_dir`, on free ports when `at` is `None`.
    pub(crate) fn start(data_dir: &Path, at: Option<(SocketAddr, SocketAddr)>) -> ServerProcess {
        ServerProcess::start_with(data_dir, at, &[])
    }

    /// [`start`](Self::start), with more flags.
    pub(crate) fn start_with(
        data_dir: &Path,
        at: Option<(SocketAddr, SocketAddr)>,
        flags: &[&str],
    ) -> ServerProcess {
        let (http, kafka) = at.map_or(
            ("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()),
            |(h, k)| (h.to_string(), k.to_string()),
        );
        let mut child = Command::new(tidings_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", &http, "--kafka-addr", &kafka])
            .args(["--shutdown-timeout-ms", "2000"])
            .args(flags)
            .env("RUST_LOG", "warn,tidings_server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tidings serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                };
                if let (Some(h), Some(k)) = (field("http_addr="), field("kafka_addr=")) {
                    let _ = tx.send((h, k));
                }
            }
        });
        let (http, kafka) = rx
            .recv_timeout(PATIENCE)
            .expect("the server reports its addresses");
        ServerProcess { child, http, kafka }
    }

    /// Kills it (SIGKILL) and starts it again where it was.
    pub(crate) fn restart(&mut self, data_dir: &Path) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut again = None;
        // The ports were just freed; another process may not have them yet.
        for _ in 0..50 {
            let started = std::panic::catch_unwind(|| {
                ServerProcess::start(data_dir, Some((self.http, self.kafka)))
            });
            if let Ok(s) = started {
                again = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        *self = again.expect("the server starts again on its address");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `router` in the background; the sender stops it, the handle
/// answers its report.
pub(crate) fn spawn_router(
    router: tidings::router::Router,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<tidings::router::Report>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        router
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (stop, run)
}

/// Waits until `done` holds, or fails the check after [`PATIENCE`].
pub(crate) async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh embedded engine, and the directory it lives in.
pub(crate) async fn embedded_engine() -> (Arc<dyn Backend>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded:{}", dir.path().display());
    (tidings::connect(&url).await.unwrap(), dir)
}

/// Publishes `events` to `topic` of the embedded engine in `dir` before
/// the kill tests' children open it: on a runtime of its own, dropped
/// afterwards, and with it the engine's tasks and its lock.
pub(crate) fn publish_before_children(dir: &Path, topic: &str, events: Vec<CloudEvent>) {
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    setup.block_on(async {
        let engine = tidings::embedded::Embedded::open(dir).await.unwrap();
        let broker = Arc::clone(engine.broker());
        let publisher = tidings::Publisher::new(Arc::new(engine));
        for chunk in events.chunks(500) {
            publisher.publish_all(topic, chunk.to_vec()).await.unwrap();
        }
        broker.close().unwrap();
    });
}

/// The kill tests' children: this test binary run again as one test, told
/// by an environment variable that it is the child, SIGKILLed after a
/// jittered while.
pub(crate) struct Children {
    exe: PathBuf,
    test: String,
    env: &'static str,
    rng: u64,
}

impl Children {
    /// Children running `test` with `env` set; `seed` varies the moments
    /// they are killed at (with the process id, so runs differ).
    pub(crate) fn new(test: &str, env: &'static str, seed: u64) -> Children {
        Children {
            exe: std::env::current_exe().unwrap(),
            test: test.to_owned(),
            env,
            rng: seed ^ u64::from(std::process::id()),
        }
    }

    /// A while of `base` ms plus up to `span` ms more.
    fn jitter(&mut self, base: u64, span: u64) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Duration::from_millis(base + self.rng % span.max(1))
    }

    /// Runs one child with `value` in its variable, kills it after `base`
    /// ms plus up to `span` ms, and answers the lines it printed.
    pub(crate) fn run(&mut self, value: &str, base: u64, span: u64) -> Vec<String> {
        let mut child = Command::new(&self.exe)
            .args([self.test.as_str(), "--exact", "--nocapture"])
            .env(self.env, value)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(self.jitter(base, span));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap()
    }
}

/// Reads every event of `topic` with a queue group of its own, until at
/// least `expected` came and then nothing for a while, and checks that each
/// `n` of `0..expected` came exactly once (the kill tests' emitted events).
pub(crate) async fn assert_each_once(backend: &Arc<dyn Backend>, topic: &str, expected: u64) {
    let mut sub = Subscriber::new(Arc::clone(backend))
        .subscribe(SubscribeOptions::queue(topic, fresh("audit")))
        .await
        .unwrap();
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut total = 0u64;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let batch = sub
            .next_batch(256, Duration::from_millis(300))
            .await
            .unwrap();
        if batch.is_empty() && total >= expected {
            break;
        }
        for d in batch {
            total += 1;
            *seen.entry(n_of(d.event().unwrap())).or_insert(0) += 1;
            d.ack().await.unwrap();
        }
    }
    sub.close().await.unwrap();
    let missing: Vec<u64> = (0..expected).filter(|n| !seen.contains_key(n)).collect();
    let twice: Vec<u64> = seen
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&n, _)| n)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} emitted events missing (first {:?}), {} twice (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        twice.len(),
        &twice[..twice.len().min(10)]
    );
}
