//! The crash matrix on every backend: a service that writes orders with
//! their events staged in the outbox, relays them to the backend, and
//! handles them with an inbox, SIGKILLed at random moments — between the
//! business write, the staging, the commit, the relay's publish and its
//! delete, the receive, the handler's effect, the inbox's record and the
//! acknowledgement — on the embedded engine, a `tidings serve` child, NATS
//! JetStream, the PostgreSQL backend and Apache Kafka. Afterwards every
//! committed order has exactly one effect, and no other order any: what
//! the backend delivered twice (Kafka keeps a republished event twice) the
//! inbox removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tidings::inbox::{Inbox, InboxOptions, InboxTx};
use tidings::outbox::{self, Relay, RelayOptions};
use tidings::router::{Context, Router};
use tidings::{Backend, Publisher};
use tokio_postgres::NoTls;

use crate::support::{event, fresh, n_of, Children, PATIENCE};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Set in a child: `<database url> <topic> <first n> <orders> <backend
/// url>`.
const CHILD_ENV: &str = "TIDINGS_CHAIN_KILL_CHILD";
const ROUNDS: u64 = 6;
/// The consumer settings of the Kafka runs: a killed member's partitions
/// go to the living after 6 s instead of librdkafka's 45.
#[cfg(feature = "kafka")]
pub(crate) const KAFKA_SESSION: &str = "session.timeout.ms=6000&heartbeat.interval.ms=1000";

/// The service's consumer: one effect per order, through the inbox. Each
/// acknowledgement waits `ack_delay` after the commit (a slow network's),
/// which widens the window a kill must hit to leave a committed event
/// unacknowledged.
///
/// Every delivery is counted first (a row in `deliveries`, committed on its
/// own), so the check can tell that events did come more than once.
fn consumer(
    backend: Arc<dyn Backend>,
    inbox: &Inbox,
    topic: &str,
    ack_delay: Duration,
    db: Arc<tokio_postgres::Client>,
) -> Router {
    let count = move |ctx: Context, next: tidings::router::Next| {
        let db = Arc::clone(&db);
        async move {
            let n = i64::try_from(n_of(ctx.event())).unwrap();
            db.execute("INSERT INTO deliveries (n) VALUES ($1)", &[&n])
                .await
                .map_err(tidings::router::HandlerError::retry)?;
            next.run(ctx.clone()).await?;
            tokio::time::sleep(ack_delay).await;
            Ok(())
        }
    };
    let mut router = Router::new(backend).wrap(count);
    router
        .route(topic, "billing")
        .ack_timeout(Duration::from_secs(2))
        .redelivery_delay(Duration::from_millis(100))
        .wrap(inbox.clone())
        .on_event("test.n", |ctx: Context| async move {
            let tx = InboxTx::of(&ctx)?;
            let n = i64::try_from(n_of(ctx.event())).unwrap();
            tx.execute("INSERT INTO effects (n) VALUES ($1)", &[&n])
                .await?;
            Ok::<(), BoxError>(())
        });
    router
}

fn relay_options() -> RelayOptions {
    RelayOptions {
        batch_max: 16,
        poll_interval: Duration::from_millis(10),
        retry_delay: Duration::from_millis(200),
    }
}

/// A child: writes orders, relays and consumes them, until killed.
fn child(args: &str) -> ! {
    let mut parts = args.splitn(5, ' ');
    let (db, topic, first, orders, backend_url) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap().to_owned(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let backend = tidings::connect(&backend_url).await.unwrap();
        let relay = Relay::connect(&db, Publisher::new(Arc::clone(&backend)), relay_options())
            .await
            .unwrap();
        tokio::spawn(async move { relay.run(std::future::pending()).await.unwrap() });
        let inbox = Inbox::connect(&db, InboxOptions::default()).await.unwrap();
        let (counter, connection) = tokio_postgres::connect(&db, NoTls).await.unwrap();
        tokio::spawn(connection);
        let router = consumer(
            backend,
            &inbox,
            &topic,
            Duration::from_millis(20),
            Arc::new(counter),
        );
        tokio::spawn(async move { router.run(std::future::pending()).await.unwrap() });
        let (mut client, connection) = tokio_postgres::connect(&db, NoTls).await.unwrap();
        tokio::spawn(connection);
        for n in first..first + orders {
            let tx = client.transaction().await.unwrap();
            tx.execute(
                "INSERT INTO orders (n) VALUES ($1)",
                &[&i64::try_from(n).unwrap()],
            )
            .await
            .unwrap();
            outbox::stage(&tx, &topic, &[event(n, Some(&format!("o-{n}")))])
                .await
                .unwrap();
            tx.commit().await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        std::future::pending::<()>().await;
    });
    unreachable!("the child works until it is killed")
}

/// Runs the matrix against the backend at `backend_url`: `ROUNDS` children,
/// each writing at most `orders`, killed after `run_ms` (plus up to as much
/// again), then one run to the end, and the check.
fn run_chain(test: &str, backend_url: &str, run_ms: u64, orders: u64) {
    run_chain_rounds(test, backend_url, run_ms, orders, ROUNDS);
}

/// [`run_chain`] with `rounds` children.
fn run_chain_rounds(test: &str, backend_url: &str, run_ms: u64, orders: u64, rounds: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some((client, db)) = runtime.block_on(async {
        let (client, db) = crate::postgres::fresh_database("tidings_chain").await?;
        client
            .batch_execute(
                "CREATE TABLE orders (n bigint PRIMARY KEY);
                 CREATE TABLE effects (n bigint NOT NULL);
                 CREATE TABLE deliveries (n bigint NOT NULL);",
            )
            .await
            .unwrap();
        Some((client, db))
    }) else {
        return;
    };
    let topic = fresh("orders");
    let mut children = Children::new(test, CHILD_ENV, 0x6a09_e667_f3bc_c908);
    for round in 0..rounds {
        let value = format!("{db} {topic} {} {orders} {backend_url}", round * 1_000_000);
        children.run(&value, run_ms, run_ms);
    }

    runtime.block_on(async move {
        let mut committed: BTreeSet<u64> = client
            .query("SELECT n FROM orders", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap())
            .collect();
        assert!(
            committed.len() > 50,
            "only {} orders committed in {rounds} rounds",
            committed.len()
        );
        // The last run, not killed: relays what is left and consumes it.
        let backend = tidings::connect(backend_url).await.unwrap();
        let relay = Relay::connect(&db, Publisher::new(Arc::clone(&backend)), relay_options())
            .await
            .unwrap();
        let (stop_relay, relay_run) = crate::inbox::spawn_relay(relay);
        let inbox = Inbox::connect(&db, InboxOptions::default()).await.unwrap();
        let (counter, connection) = tokio_postgres::connect(&db, NoTls).await.unwrap();
        tokio::spawn(connection);
        let router = consumer(
            Arc::clone(&backend),
            &inbox,
            &topic,
            Duration::ZERO,
            Arc::new(counter),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            router
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap()
        });
        let effects = || async {
            client
                .query("SELECT n, count(*) FROM effects GROUP BY n", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap(), r.get::<_, i64>(1)))
                .collect::<BTreeMap<u64, i64>>()
        };
        let deadline = tokio::time::Instant::now() + 4 * PATIENCE;
        loop {
            let made = effects().await;
            let left: i64 = client
                .query_one("SELECT count(*) FROM tidings_outbox", &[])
                .await
                .unwrap()
                .get(0);
            // A commit a child sent just before its kill may land after
            // the first read: what committed is what the table holds now.
            committed = client
                .query("SELECT n FROM orders", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap())
                .collect();
            if left == 0 && made.keys().copied().collect::<BTreeSet<_>>() == committed {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} committed orders made their effect; {left} not relayed",
                made.len(),
                committed.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What the killed children had leased comes again after its lease.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.send(()).unwrap();
        run.await.unwrap();
        stop_relay.send(()).unwrap();
        relay_run.await.unwrap();

        let made = effects().await;
        let extra: Vec<u64> = made
            .keys()
            .filter(|n| !committed.contains(n))
            .copied()
            .collect();
        let doubled: Vec<(u64, i64)> = made
            .iter()
            .filter(|(_, &c)| c != 1)
            .map(|(&n, &c)| (n, c))
            .collect();
        assert!(
            extra.is_empty() && doubled.is_empty(),
            "{} effects of orders that never committed (first {:?}); {} orders with more than one effect (first {:?})",
            extra.len(),
            &extra[..extra.len().min(10)],
            doubled.len(),
            &doubled[..doubled.len().min(10)]
        );
        let redelivered: i64 = client
            .query_one(
                "SELECT count(*) FROM (SELECT n FROM deliveries GROUP BY n HAVING count(*) > 1) AS r",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            redelivered > 0,
            "no event was delivered twice: the test proved no inbox"
        );
        println!(
            "{test}: {} orders, each one effect, after {rounds} kills; {redelivered} delivered more than once; the last run's inbox dropped {} handled before",
            committed.len(),
            inbox.stats().duplicates
        );
    });
}

/// The test's own name, for its children.
fn name(test: &str) -> String {
    format!("chain::{test}")
}

#[test]
fn killed_services_make_each_effect_once_on_the_embedded_engine() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args);
    }
    let dir = tempfile::tempdir().unwrap();
    run_chain(
        &name("killed_services_make_each_effect_once_on_the_embedded_engine"),
        &format!("embedded:{}", dir.path().display()),
        300,
        1_000_000,
    );
}

#[test]
fn killed_services_make_each_effect_once_on_a_server() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::ServerProcess::start(dir.path(), None);
    run_chain(
        &name("killed_services_make_each_effect_once_on_a_server"),
        &format!("http://{}", server.http),
        400,
        1_000_000,
    );
}

#[test]
fn killed_services_make_each_effect_once_on_nats() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args);
    }
    let nats = crate::readme::NatsServer::start();
    nats.wait_ready();
    run_chain(
        &name("killed_services_make_each_effect_once_on_nats"),
        &format!("nats://127.0.0.1:{}", nats.port),
        400,
        1_000_000,
    );
}

#[test]
fn killed_services_make_each_effect_once_on_the_postgres_backend() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some((_client, url)) =
        runtime.block_on(crate::postgres::fresh_database("tidings_chain_backend"))
    else {
        return;
    };
    drop(runtime);
    run_chain(
        &name("killed_services_make_each_effect_once_on_the_postgres_backend"),
        &url,
        400,
        1_000_000,
    );
}

#[cfg(feature = "kafka")]
#[test]
fn killed_services_make_each_effect_once_on_apache_kafka() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args);
    }
    let address = std::env::var("TIDINGS_TEST_KAFKA").expect(
        "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
    );
    // A consumer group's join takes seconds, and a killed member keeps its
    // partitions until its session times out (6 s here, Kafka's least by
    // default): fewer, longer rounds, so each child consumes before it dies.
    run_chain_rounds(
        &name("killed_services_make_each_effect_once_on_apache_kafka"),
        &format!("kafka://{address}?{KAFKA_SESSION}"),
        8000,
        2000,
        3,
    );
}
