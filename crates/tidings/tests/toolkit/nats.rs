//! The conformance suite on the NATS JetStream backend (queue mode, and a
//! few checks in stream mode, which the same queue groups serve): a
//! three-node JetStream cluster of Debian's `nats-server` on loopback per
//! check, streams replicated on all three; the failure a check causes is a
//! node killed with SIGKILL and started again.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::nats::Nats;
use tidings::{Backend, Mode};

use crate::conformance::conformance;
use crate::support::{Harness, PATIENCE};

const NODES: usize = 3;

/// Three nodes and the backend that reaches them all.
pub(crate) struct NatsHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    cluster: Mutex<Cluster>,
    /// This check's turn: one cluster at a time (see [`ONE_CLUSTER`]).
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// The NATS checks take turns. Two three-node clusters at once on a
/// two-core machine, beside the rest of the suite, starve each other's
/// Raft heartbeats: CI saw JetStream requests go unanswered for 30 s and
/// streams refused for want of peers while leaders were re-elected.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    dir: tempfile::TempDir,
    /// (client port, cluster port) per node.
    ports: Vec<(u16, u16)>,
    nodes: Vec<Child>,
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        // All held open at once while their numbers are read: a port let go
        // can be handed out again at once, and CI saw a node's client and
        // route ports come out the same (the node died on its second bind).
        let held: Vec<TcpListener> = (0..NODES * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<(u16, u16)> = held
            .chunks(2)
            .map(|pair| (port_of(&pair[0]), port_of(&pair[1])))
            .collect();
        drop(held);
        let mut cluster = Cluster {
            dir,
            ports,
            nodes: Vec::new(),
        };
        for n in 0..NODES {
            let node = cluster.node(n);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn node(&self, n: usize) -> Child {
        let (client, route) = self.ports[n];
        let routes: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != n)
            .map(|(_, (_, r))| format!("nats://127.0.0.1:{r}"))
            .collect();
        let store = self.dir.path().join(format!("n{n}"));
        Command::new("nats-server")
            .arg("-l")
            .arg(self.log(n))
            .args(["-a", "127.0.0.1", "-p", &client.to_string()])
            .args(["--server_name", &format!("n{n}")])
            .args(["--cluster_name", "tidings"])
            .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
            .args(["--routes", &routes.join(",")])
            .arg("-js")
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (the test command installs it)")
    }

    fn url(&self) -> String {
        let servers: Vec<String> = self
            .ports
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{c}"))
            .collect();
        // A generous request timeout: on a loaded two-core machine a
        // JetStream request can take seconds. One that goes unanswered (lost
        // while a Raft group elects its leader) is sent again by the backend.
        format!("nats://{}?replicas={NODES}&timeout=10", servers.join(","))
    }

    /// Where node `n` writes its log (kept across its restarts).
    fn log(&self, n: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("n{n}.log"))
    }

    /// Kills node 0 hard and starts it again on its ports and store.
    fn restart_one(&mut self) {
        let _ = self.nodes[0].kill();
        let _ = self.nodes[0].wait();
        self.nodes[0] = self.node(0);
    }
}

/// Lines of each node's log a failed check shows.
const LOG_TAIL_LINES: usize = 60;

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        // A check that failed shows what the servers said: a request that
        // went unanswered is explained there (a leader election, a slow
        // consumer cut off), not in the client's timeout.
        if std::thread::panicking() {
            for n in 0..NODES {
                let log = std::fs::read_to_string(self.log(n)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                eprintln!(
                    "--- nats-server n{n}, last {} lines:\n{}",
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
    }
}

impl Harness for NatsHarness {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    async fn restart(&self) -> bool {
        self.cluster.lock().unwrap().restart_one();
        true
    }
}

/// A cluster whose JetStream is ready (a stream of three replicas can be
/// made), and the backend on it.
pub(crate) async fn nats(mode: Mode) -> Option<NatsHarness> {
    let turn = ONE_CLUSTER.lock().await;
    let cluster = Cluster::start();
    let url = cluster.url();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let backend = loop {
        let attempt = async {
            let backend = Nats::connect(&url).await?;
            backend
                .ensure_topic(&crate::support::fresh("ready"), 1)
                .await?;
            Ok::<Nats, tidings::Error>(backend)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(backend)) => break backend,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the NATS cluster did not become ready: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    Some(NatsHarness {
        backend: Arc::new(backend),
        mode,
        cluster: Mutex::new(cluster),
        _turn: turn,
    })
}

mod queue {
    use super::*;
    conformance!(nats(Mode::Queue));
}

/// Stream mode is the same queue group: enough checks to show it is served.
mod stream {
    use super::*;
    conformance!(@each nats(Mode::Stream);
        events_round_trip_with_their_attributes,
        groups_share_the_load_and_fan_out,
        a_subscriber_that_restarts_resumes_where_it_left
    );
}
