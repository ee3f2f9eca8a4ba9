//! The transactional outbox: events staged in a PostgreSQL transaction of
//! the test's own (a business table beside them), relayed to the embedded
//! engine, the PostgreSQL backend and the Apache Kafka broker.

use std::sync::Arc;
use std::time::Duration;

use tidings::backend::BoxFuture;
use tidings::outbox::{self, Relay, RelayOptions};
use tidings::{Backend, CloudEvent, Error, PublishHook, Publisher, SubscribeOptions, Subscription};
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls};

use crate::support::{
    embedded_engine, event, fresh, n_of, take_acked, take_acked_then_quiet, until, Children,
    PATIENCE,
};

/// A fresh database with the outbox installed and an `orders` table; `None`
/// only when PostgreSQL tests are skipped.
async fn database() -> Option<(Client, String)> {
    let (mut client, url) = crate::postgres::fresh_database("tidings_outbox").await?;
    outbox::install(&mut client).await.unwrap();
    client
        .batch_execute("CREATE TABLE orders (id text PRIMARY KEY, cents bigint NOT NULL)")
        .await
        .unwrap();
    Some((client, url))
}

/// An order written and its events staged in one transaction, committed or
/// rolled back.
async fn place(client: &mut Client, topic: &str, order: &str, events: &[CloudEvent], commit: bool) {
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES ($1, 100)", &[&order])
        .await
        .unwrap();
    outbox::stage(&tx, topic, events).await.unwrap();
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
}

/// A relay of the outbox at `url` to `publisher`'s backend.
async fn connect_relay(url: &str, publisher: Publisher, options: RelayOptions) -> Arc<Relay> {
    Arc::new(Relay::connect(url, publisher, options).await.unwrap())
}

/// Runs a relay in the background; the sender stops it.
fn spawn_relay(relay: Arc<Relay>) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, run)
}

/// A stream-mode group of one member: each partition's events in their
/// stored order.
async fn subscribe(backend: &Arc<dyn Backend>, topic: &str) -> Subscription {
    tidings::Subscriber::new(Arc::clone(backend))
        .subscribe(SubscribeOptions::stream(topic, fresh("g")))
        .await
        .unwrap()
}

fn keyed(n: u64, key: &str) -> CloudEvent {
    event(n, Some(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_when_their_transaction_commits_and_never_when_it_rolls_back() {
    let Some((mut client, url)) = database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let topic = fresh("orders");
    place(
        &mut client,
        &topic,
        "o-1",
        &[keyed(1, "o-1"), keyed(2, "o-1")],
        true,
    )
    .await;
    place(&mut client, &topic, "o-2", &[keyed(3, "o-2")], false).await;
    place(&mut client, &topic, "o-3", &[keyed(4, "o-3")], true).await;

    let relay = connect_relay(
        &url,
        Publisher::new(Arc::clone(&backend)),
        RelayOptions::default(),
    )
    .await;
    let (stop, run) = spawn_relay(Arc::clone(&relay));
    until("the relay published the committed events", || {
        relay.stats().published == 3
    })
    .await;
    let mut sub = subscribe(&backend, &topic).await;
    let got = take_acked_then_quiet(&mut sub, 3).await;
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2, 4]);
    let left: i64 = client
        .query_one("SELECT count(*) FROM tidings_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "published rows are deleted");
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 2, "the rolled-back order is not there either");
    stop.send(()).unwrap();
    run.await.unwrap();
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_is_not_passed_over_and_keeps_its_place() {
    let Some((mut client, url)) = database().await else {
        return;
    };
    let (mut late, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let (backend, _dir) = embedded_engine().await;
    let topic = fresh("late");

    // The long transaction stages first and stays open.
    let long = late.transaction().await.unwrap();
    long.execute("INSERT INTO orders VALUES ('o-1', 1)", &[])
        .await
        .unwrap();
    outbox::stage(&long, &topic, &[keyed(1, "k")])
        .await
        .unwrap();
    place(&mut client, &topic, "o-2", &[keyed(2, "k")], true).await;

    let relay = connect_relay(
        &url,
        Publisher::new(Arc::clone(&backend)),
        RelayOptions::default(),
    )
    .await;
    let (stop, run) = spawn_relay(Arc::clone(&relay));
    until("the relay saw the committed row", || {
        relay.stats().pending == 1
    })
    .await;
    assert_eq!(
        relay.stats().published,
        0,
        "a row staged after an open transaction began waits for it"
    );
    long.commit().await.unwrap();
    until("the relay published both", || relay.stats().published == 2).await;
    let mut sub = subscribe(&backend, &topic).await;
    let mut order = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while order.len() < 2 && tokio::time::Instant::now() < deadline {
        for d in sub.next_batch(8, Duration::from_millis(200)).await.unwrap() {
            order.push(n_of(d.event().unwrap()));
            d.ack().await.unwrap();
        }
    }
    assert_eq!(order, [1, 2], "in the order of the transactions");
    stop.send(()).unwrap();
    run.await.unwrap();
    sub.close().await.unwrap();
}

/// Refuses events of one type for good, as a backend refuses one too large
/// for it.
struct Refuse;

impl PublishHook for Refuse {
    fn before_publish<'a>(
        &'a self,
        _topic: &'a str,
        events: &'a mut [CloudEvent],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if events.iter().any(|e| n_of(e) == 13) {
                return Err(Error::InvalidEvent("13 is refused".into()));
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_for_good_moves_aside_and_the_rest_goes_out_in_bounded_batches() {
    let Some((mut client, url)) = database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let topic = fresh("batches");
    // 5 keys, 40 events each, staged 10 to a transaction; event 13 refused.
    for batch in 0..20u64 {
        let key = format!("k{}", batch % 5);
        let events: Vec<CloudEvent> = (batch * 10..batch * 10 + 10)
            .map(|n| keyed(n, &key))
            .collect();
        place(&mut client, &topic, &format!("o-{batch}"), &events, true).await;
    }
    let options = RelayOptions {
        batch_max: 16,
        ..RelayOptions::default()
    };
    let publisher = Publisher::new(Arc::clone(&backend)).with_hook(Arc::new(Refuse));
    let relay = connect_relay(&url, publisher, options).await;
    // A second relay stands by while the first holds the lock.
    let standby = connect_relay(&url, Publisher::new(Arc::clone(&backend)), options).await;
    let (stop, run) = spawn_relay(Arc::clone(&relay));
    until("the first relay is active", || relay.stats().active).await;
    let (stop_standby, run_standby) = spawn_relay(Arc::clone(&standby));
    until("everything went out", || {
        relay.stats().published + relay.stats().dead == 200
    })
    .await;
    assert_eq!(relay.stats().dead, 1);
    assert_eq!(standby.stats().published, 0, "one relay at a time");
    let dead: Vec<(String, String)> = client
        .query("SELECT event, reason FROM tidings_outbox_dead", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].1.contains("13 is refused"), "{dead:?}");

    let mut sub = subscribe(&backend, &topic).await;
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while n < 199 && tokio::time::Instant::now() < deadline {
        for d in sub
            .next_batch(64, Duration::from_millis(200))
            .await
            .unwrap()
        {
            let e = d.event().unwrap();
            per_key
                .entry(e.partitionkey().unwrap().to_owned())
                .or_default()
                .push(n_of(e));
            n += 1;
            d.ack().await.unwrap();
        }
    }
    assert_eq!(n, 199);
    for (key, got) in &per_key {
        let k: u64 = key[1..].parse().unwrap();
        let expected: Vec<u64> = (0..20u64)
            .filter(|b| b % 5 == k)
            .flat_map(|b| b * 10..b * 10 + 10)
            .filter(|n| *n != 13)
            .collect();
        assert_eq!(got, &expected, "key {key}: in the order staged");
    }
    for (stop, run) in [(stop, run), (stop_standby, run_standby)] {
        stop.send(()).unwrap();
        run.await.unwrap();
    }
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_feeds_other_backends() {
    let Some((mut client, url)) = database().await else {
        return;
    };
    #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
    let mut backends: Vec<(&str, Arc<dyn Backend>)> =
        vec![("PostgreSQL", tidings::connect(&url).await.unwrap())];
    #[cfg(feature = "kafka")]
    {
        let address = std::env::var("TIDINGS_TEST_KAFKA").expect(
            "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
        );
        backends.push((
            "Apache Kafka",
            tidings::connect(&format!("kafka://{address}"))
                .await
                .unwrap(),
        ));
    }
    for (name, backend) in backends {
        let topic = fresh("feed");
        place(
            &mut client,
            &topic,
            &fresh("o"),
            &[keyed(1, "k"), keyed(2, "k")],
            true,
        )
        .await;
        let relay = connect_relay(
            &url,
            Publisher::new(Arc::clone(&backend)),
            RelayOptions::default(),
        )
        .await;
        let (stop, run) = spawn_relay(Arc::clone(&relay));
        until(name, || relay.stats().published == 2).await;
        let mut sub = subscribe(&backend, &topic).await;
        let got = take_acked(&mut sub, 2).await;
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2], "{name}");
        stop.send(()).unwrap();
        run.await.unwrap();
        sub.close().await.unwrap();
    }
}

/// Set in the child of the kill test: `<database url> <data dir> <first n>`.
const CHILD_ENV: &str = "TIDINGS_OUTBOX_KILL_CHILD";
const KILL_ROUNDS: u64 = 12;
const KILL_TOPIC: &str = "orders";

/// The kill test's child: writes orders, each with two events staged in its
/// transaction (one in seven rolled back), and relays them to an embedded
/// engine, both until it is killed. Prints `COMMITTED n` after each commit.
fn kill_child(args: &str) -> ! {
    let mut args = args.split(' ');
    let (url, dir, first) = (
        args.next().unwrap().to_owned(),
        args.next().unwrap().to_owned(),
        args.next().unwrap().parse::<u64>().unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let backend = tidings::connect(&format!("embedded:{dir}")).await.unwrap();
        let options = RelayOptions {
            batch_max: 8,
            poll_interval: Duration::from_millis(5),
            ..RelayOptions::default()
        };
        let relay = Relay::connect(&url, Publisher::new(backend), options)
            .await
            .unwrap();
        tokio::spawn(async move { relay.run(std::future::pending()).await.unwrap() });
        let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        for n in first.. {
            let key = format!("o-{n}");
            let tx = client.transaction().await.unwrap();
            tx.execute(
                "INSERT INTO orders VALUES ($1, $2)",
                &[&key, &i64::try_from(n).unwrap()],
            )
            .await
            .unwrap();
            let events = [keyed(2 * n, &key), keyed(2 * n + 1, &key)];
            outbox::stage(&tx, KILL_TOPIC, &events).await.unwrap();
            if n % 7 == 3 {
                tx.rollback().await.unwrap();
            } else {
                tx.commit().await.unwrap();
                println!("COMMITTED {n}");
            }
        }
    });
    unreachable!("the child writes until it is killed")
}

/// Writers and the relay SIGKILLed at random moments, twelve times over:
/// afterwards every order in the table has exactly its two events in the
/// topic, once each and in order, and no other order has any — whatever step
/// the kill interrupted (the business write, the staging, the commit, the
/// publish, the delete). The broker's publish dedup turns a batch published
/// again after a kill into nothing.
#[test]
fn killed_writers_and_relays_lose_and_double_nothing() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        kill_child(&args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some((client, url)) = runtime.block_on(database()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut children = Children::new(
        "outbox::killed_writers_and_relays_lose_and_double_nothing",
        CHILD_ENV,
        0x2545_f491_4f6c_dd1d,
    );
    let mut printed = std::collections::BTreeSet::new();
    for round in 0..KILL_ROUNDS {
        let value = format!("{url} {} {}", dir.path().display(), round * 1_000_000);
        let lines = children.run(&value, 150, 400);
        printed.extend(lines.iter().filter_map(|l| {
            l.strip_prefix("COMMITTED ")
                .map(|n| n.parse::<u64>().unwrap())
        }));
    }

    runtime.block_on(async move {
        // What committed is what the table holds: a kill during a commit may
        // have committed without the line being printed.
        let orders: std::collections::BTreeSet<u64> = client
            .query("SELECT cents FROM orders", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap())
            .collect();
        assert!(
            printed.is_subset(&orders),
            "a printed commit is in the table"
        );
        assert!(
            orders.len() > 20,
            "only {} orders committed in {KILL_ROUNDS} rounds",
            orders.len()
        );
        assert!(
            orders.iter().all(|n| n % 7 != 3),
            "rolled back orders stay out"
        );

        // A last relay, not killed, publishes what the killed ones left.
        let backend = tidings::connect(&format!("embedded:{}", dir.path().display()))
            .await
            .unwrap();
        let relay = connect_relay(&url, Publisher::new(Arc::clone(&backend)), RelayOptions::default()).await;
        let (stop, run) = spawn_relay(Arc::clone(&relay));
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left: i64 = client
                .query_one("SELECT count(*) FROM tidings_outbox", &[])
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{left} rows left in the outbox"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(()).unwrap();
        run.await.unwrap();

        // Every event in the topic, with where it is stored.
        let mut sub = tidings::Subscriber::new(Arc::clone(&backend))
            .subscribe(SubscribeOptions::queue(KILL_TOPIC, fresh("audit")))
            .await
            .unwrap();
        let expected = orders.len() * 2;
        let mut seen: std::collections::BTreeMap<u64, Vec<(u32, u64)>> = Default::default();
        let mut total = 0;
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
                seen.entry(n_of(d.event().unwrap()))
                    .or_default()
                    .push((d.partition(), d.offset()));
                d.ack().await.unwrap();
            }
        }
        sub.close().await.unwrap();
        let published: std::collections::BTreeSet<u64> = seen.keys().map(|e| e / 2).collect();
        let lost: Vec<u64> = orders.difference(&published).copied().collect();
        let extra: Vec<u64> = published.difference(&orders).copied().collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "{} committed orders without their events (first {:?}); {} orders with events that did not commit (first {:?})",
            lost.len(),
            &lost[..lost.len().min(10)],
            extra.len(),
            &extra[..extra.len().min(10)]
        );
        for (event, places) in &seen {
            assert_eq!(
                places.len(),
                1,
                "event {event} stored {} times",
                places.len()
            );
        }
        for n in &orders {
            let (first, second) = (seen[&(2 * n)][0], seen[&(2 * n + 1)][0]);
            assert_eq!(first.0, second.0, "order {n}: one key, one partition");
            assert!(
                first.1 < second.1,
                "order {n}: its events in the order staged"
            );
        }
        println!(
            "{} orders, {} events, each once, after {KILL_ROUNDS} kills",
            orders.len(),
            total
        );
    });
}

/// Slows every publish down, so a relay can be stopped in the middle of
/// draining.
struct Slow;

impl PublishHook for Slow {
    fn before_publish<'a>(
        &'a self,
        _topic: &'a str,
        _events: &'a mut [CloudEvent],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_drain_hands_over_to_a_standby() {
    let Some((mut client, url)) = database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let topic = fresh("handover");
    let events: Vec<CloudEvent> = (0..40).map(|n| keyed(n, "k")).collect();
    place(&mut client, &topic, "o-1", &events, true).await;
    let options = RelayOptions {
        batch_max: 4,
        ..RelayOptions::default()
    };
    let slow = Publisher::new(Arc::clone(&backend)).with_hook(Arc::new(Slow));
    let first = connect_relay(&url, slow, options).await;
    let (stop, run) = spawn_relay(Arc::clone(&first));
    until("the first relay is draining", || {
        first.stats().published >= 4
    })
    .await;
    stop.send(()).unwrap();
    run.await.unwrap();
    assert!(!first.stats().active);

    // The stopped relay is kept, not dropped: its connection stays open.
    let second = connect_relay(&url, Publisher::new(Arc::clone(&backend)), options).await;
    let (stop, run) = spawn_relay(Arc::clone(&second));
    until("the standby published the rest", || {
        first.stats().published + second.stats().published >= 40
    })
    .await;
    stop.send(()).unwrap();
    run.await.unwrap();
    let mut sub = subscribe(&backend, &topic).await;
    let got = take_acked(&mut sub, 40).await;
    assert_eq!(got.len(), 40, "every event once: {got:?}");
    assert!(got.values().all(|&times| times == 1), "{got:?}");
    sub.close().await.unwrap();
    drop(first);
}
