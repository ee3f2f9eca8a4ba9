//! The conformance suite on the Kafka backend (librdkafka), against two
//! brokers nobody here wrote the client of:
//! - `tidings serve`'s Kafka listener, a child process per check; its
//!   failure is a SIGKILL and a start on the same data;
//! - a real Apache Kafka broker: the one the test command starts
//!   (`TIDINGS_TEST_KAFKA`, scripts/kafka) for every check, and one of its
//!   own for the restart check (SIGKILL, then started again on its data).
//!
//! Both modes are the same code on Kafka (the stream emulation on a consumer
//! group), so the suite runs in queue mode.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::kafka::Kafka;
use tidings::{Backend, Mode};

use crate::conformance::conformance;
use crate::support::{event, fresh, n_of, Harness, ServerProcess, PATIENCE};

/// A `tidings serve` reached through its Kafka listener.
pub(crate) struct ListenerHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    process: Mutex<ServerProcess>,
    dir: tempfile::TempDir,
}

impl Harness for ListenerHarness {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    async fn restart(&self) -> bool {
        tokio::task::block_in_place(|| self.process.lock().unwrap().restart(self.dir.path()));
        true
    }
}

pub(crate) async fn listener(mode: Mode) -> Option<ListenerHarness> {
    let dir = tempfile::tempdir().unwrap();
    let process = ServerProcess::start(dir.path(), None);
    let backend = Kafka::connect(&format!("kafka://{}", process.kafka))
        .await
        .unwrap();
    Some(ListenerHarness {
        backend: Arc::new(backend),
        mode,
        process: Mutex::new(process),
        dir,
    })
}

/// An Apache Kafka broker: the shared one, or one of the harness's own that
/// it can restart.
pub(crate) struct ApacheHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    own: Option<Mutex<ApacheKafka>>,
}

impl Harness for ApacheHarness {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    async fn restart(&self) -> bool {
        match &self.own {
            Some(broker) => {
                tokio::task::block_in_place(|| broker.lock().unwrap().restart());
                true
            }
            // The shared broker serves other checks at the same time.
            None => false,
        }
    }
}

/// The broker the test command started.
pub(crate) async fn apache(mode: Mode) -> Option<ApacheHarness> {
    let address = std::env::var("TIDINGS_TEST_KAFKA").expect(
        "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
    );
    let backend = Kafka::connect(&format!("kafka://{address}")).await.unwrap();
    Some(ApacheHarness {
        backend: Arc::new(backend),
        mode,
        own: None,
    })
}

mod listener_queue {
    use super::*;
    conformance!(listener(Mode::Queue));
}

mod apache_queue {
    use super::*;
    conformance!(apache(Mode::Queue));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apache_kafka_restart_loses_nothing_acknowledged() {
    let broker = tokio::task::block_in_place(ApacheKafka::start);
    let backend = Kafka::connect(&format!("kafka://{}", broker.address))
        .await
        .unwrap();
    let harness = ApacheHarness {
        backend: Arc::new(backend),
        mode: Mode::Queue,
        own: Some(Mutex::new(broker)),
    };
    crate::conformance::a_backend_restart_loses_nothing_acknowledged(&harness).await;
}

/// A member that stops polling for longer than its `max.poll.interval.ms`
/// is forgotten and its partition goes to the other member. Its late ack is
/// refused by the broker's coordinator: the ack answers that the lease ran
/// out (the event goes to another attempt, here the other member), not a
/// backend failure, and the late member still closes cleanly. Apache
/// Kafka's smallest session (6 s, `group.min.session.timeout.ms`) bounds
/// how fast this can go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_group_moved_on_is_a_lost_lease() {
    use tidings::{Error, Publisher, SubscribeOptions, Subscriber};

    let address = std::env::var("TIDINGS_TEST_KAFKA").expect(
        "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
    );
    let impatient: Arc<dyn Backend> = Arc::new(
        Kafka::connect(&format!(
            "kafka://{address}?max.poll.interval.ms=6000&session.timeout.ms=6000"
        ))
        .await
        .unwrap(),
    );
    let patient: Arc<dyn Backend> =
        Arc::new(Kafka::connect(&format!("kafka://{address}")).await.unwrap());
    let (topic, group) = (fresh("moved-on"), fresh("moved-on"));
    Publisher::new(Arc::clone(&patient))
        .publish_all(&topic, vec![event(7, None)])
        .await
        .unwrap();
    let mut late = Subscriber::new(impatient)
        .subscribe(SubscribeOptions::queue(&topic, &group))
        .await
        .unwrap();
    let held = first_delivery(&mut late, "no delivery").await;
    assert_eq!(n_of(held.event().unwrap()), 7);
    // The other member joins; the late one stops polling until the group
    // has forgotten it and given the partition away.
    let mut other = Subscriber::new(patient)
        .subscribe(SubscribeOptions::queue(&topic, &group))
        .await
        .unwrap();
    let again = first_delivery(&mut other, "the partition never went to the other member").await;
    assert_eq!(n_of(again.event().unwrap()), 7, "delivered again");
    match held.ack().await {
        Err(Error::LeaseExpired(message)) => {
            assert!(message.contains(&topic), "{message}");
        }
        answer => panic!("a late ack answered {answer:?}, not a lost lease"),
    }
    late.close().await.unwrap();
    again.ack().await.unwrap();
    other.close().await.unwrap();
}

/// The first delivery `sub` gets within [`PATIENCE`]; fails with `never`.
async fn first_delivery(sub: &mut tidings::Subscription, never: &str) -> tidings::Delivery {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut batch = sub.next_batch(1, Duration::from_millis(200)).await.unwrap();
        if let Some(d) = batch.pop() {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{never}");
    }
}

/// The jars `kafka_install` (scripts/kafka) put in place.
fn kafka_lib() -> PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-broker/lib");
    assert!(
        lib.join("kafka_2.13-4.3.1.jar").exists(),
        "{} has no Apache Kafka jars: run `source scripts/kafka && kafka_install` (scripts/test does)",
        lib.display()
    );
    lib
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-node KRaft Apache Kafka of this test's own, with scripts/kafka's
/// settings.
struct ApacheKafka {
    dir: tempfile::TempDir,
    address: SocketAddr,
    child: Child,
}

impl ApacheKafka {
    fn java(dir: &Path) -> Command {
        let mut java = Command::new("java");
        java.args(["-Xms128m", "-Xmx512m"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", kafka_lib().display()))
            .stdin(Stdio::null());
        java
    }

    fn start() -> ApacheKafka {
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("server.properties"),
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 log.dirs={}\n\
                 offsets.topic.replication.factor=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("log4j2.properties"),
            format!(
                "rootLogger.level=WARN\n\
                 rootLogger.appenderRef.file.ref=file\n\
                 appender.file.type=File\n\
                 appender.file.name=file\n\
                 appender.file.fileName={}\n\
                 appender.file.layout.type=PatternLayout\n\
                 appender.file.layout.pattern=%d %p %c: %m%n\n",
                dir.path().join("broker.log").display()
            ),
        )
        .unwrap();
        let format = ApacheKafka::java(dir.path())
            .args(["kafka.tools.StorageTool", "format", "--standalone"])
            .args(["-t", "MkU3OEVBNTcwNTJENDM2Qg"])
            .arg("-c")
            .arg(dir.path().join("server.properties"))
            .output()
            .expect("java runs (the machine has a JDK 17)");
        assert!(
            format.status.success(),
            "formatting Kafka's storage: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let child = ApacheKafka::launch(dir.path(), port);
        ApacheKafka {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child,
        }
    }

    /// Runs the broker on `dir` and waits until it listens.
    fn launch(dir: &Path, port: u16) -> Child {
        let mut child = ApacheKafka::java(dir)
            .arg("kafka.Kafka")
            .arg(dir.join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java runs");
        let deadline = std::time::Instant::now() + PATIENCE * 3;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
                panic!("Apache Kafka exited ({status}); its log:\n{log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Apache Kafka did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// SIGKILL, then a start on the same data and ports.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = ApacheKafka::launch(self.dir.path(), self.address.port());
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
