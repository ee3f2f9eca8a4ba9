//! The outbox on the event store: an order's event-sourced write and its
//! announcements in one append, on the embedded store and on PostgreSQL,
//! forwarded to the embedded engine — committed, refused, and killed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tidings::outbox::store::{ForwarderOptions, StoreOutbox};
use tidings::{Backend, CloudEvent, Publisher, SubscribeOptions};
use tidings_store::{
    AppendError, EmbeddedOptions, EmbeddedStore, EventStore, ExpectedVersion, PgOptions, PgStore,
    Position, Selector, StreamName,
};

use crate::support::{embedded_engine, event, fresh, n_of, Children, PATIENCE};

fn options() -> ForwarderOptions {
    ForwarderOptions {
        poll_interval: Duration::from_millis(50),
        retry_delay: Duration::from_millis(100),
        ..ForwarderOptions::default()
    }
}

/// Every event of `topic`, in stream order per partition: (n, partition,
/// offset), until `expected` came and then nothing for a while.
async fn read_topic(
    backend: &Arc<dyn Backend>,
    topic: &str,
    expected: usize,
) -> Vec<(u64, u32, u64)> {
    let mut sub = tidings::Subscriber::new(Arc::clone(backend))
        .subscribe(SubscribeOptions::stream(topic, fresh("audit")))
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let batch = sub
            .next_batch(256, Duration::from_millis(300))
            .await
            .unwrap();
        if batch.is_empty() && got.len() >= expected {
            break;
        }
        for d in batch {
            got.push((n_of(d.event().unwrap()), d.partition(), d.offset()));
            d.ack().await.unwrap();
        }
    }
    sub.close().await.unwrap();
    got
}

/// A committed unit writes the order and stages its events, which are
/// forwarded once, in order; a unit whose expected version fails, or whose
/// staged event is invalid, writes neither.
async fn commits_or_writes_nothing<S: EventStore>(store: Arc<S>) {
    let (backend, _dir) = embedded_engine().await;
    let topic = fresh("orders");
    let outbox = StoreOutbox::start(
        Arc::clone(&store),
        Publisher::new(Arc::clone(&backend)),
        options(),
    )
    .unwrap();
    let order = StreamName::new(&fresh("order")).unwrap();
    let placed = CloudEvent::new("/shop", "order.placed");
    let mut tx = outbox.transaction();
    tx.append(order.clone(), ExpectedVersion::NoStream, vec![placed]);
    tx.stage(&topic, vec![event(1, Some("o-1")), event(2, Some("o-1"))])
        .unwrap();
    let done = tx.commit().await.unwrap();
    assert_eq!(
        done.len(),
        2,
        "the order's stream and the topic's outbox stream"
    );

    // The same order placed again: its expected version fails, and the
    // announcement goes nowhere.
    let mut tx = outbox.transaction();
    let again = CloudEvent::new("/shop", "order.placed");
    tx.append(order.clone(), ExpectedVersion::NoStream, vec![again]);
    tx.stage(&topic, vec![event(3, Some("o-1"))]).unwrap();
    let refused = tx.commit().await.unwrap_err();
    assert!(
        matches!(refused, AppendError::WrongExpectedVersion { .. }),
        "{refused}"
    );
    // An invalid announcement: the order's second event is not written.
    let mut tx = outbox.transaction();
    tx.append(
        order.clone(),
        ExpectedVersion::Exact(tidings_store::StreamVersion(0)),
        vec![CloudEvent::new("/shop", "order.paid")],
    );
    tx.stage(&topic, vec![CloudEvent::new("/shop", "")])
        .unwrap();
    assert!(tx.commit().await.is_err());
    let info = store.stream_info(&order).await.unwrap();
    assert_eq!(info.version, Some(tidings_store::StreamVersion(0)));
    // A topic name that is no topic name is refused at once.
    assert!(outbox.transaction().stage("no topic", vec![]).is_err());

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while outbox.stats().forwarded < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            outbox.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = read_topic(&backend, &topic, 2).await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2]);
    assert!(got[0].2 < got[1].2, "in the order staged");
    assert_eq!(outbox.stats().forwarded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_on_the_embedded_store_commits_or_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    commits_or_writes_nothing(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_on_the_postgres_store_commits_or_writes_nothing() {
    let Some((_client, url)) = crate::postgres::fresh_database("tidings_store_outbox").await else {
        return;
    };
    let store = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    commits_or_writes_nothing(Arc::new(store)).await;
}

/// Set in the child of the kill test: `<store dir> <engine dir> <first n>`.
const CHILD_ENV: &str = "TIDINGS_STORE_OUTBOX_KILL_CHILD";
const KILL_ROUNDS: u64 = 10;
const KILL_TOPIC: &str = "orders";

/// The kill test's child: places orders, each its stream's first event and
/// two announcements in one unit, forwarding them to an embedded engine,
/// until it is killed.
fn kill_child(args: &str) -> ! {
    let mut args = args.split(' ');
    let (store_dir, engine_dir, first) = (
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
        let backend = tidings::connect(&format!("embedded:{engine_dir}"))
            .await
            .unwrap();
        let store = EmbeddedStore::open(&store_dir, EmbeddedOptions::default()).unwrap();
        let outbox = StoreOutbox::start(
            Arc::new(store),
            Publisher::new(backend),
            ForwarderOptions {
                batch_max: 8,
                poll_interval: Duration::from_millis(5),
                ..options()
            },
        )
        .unwrap();
        for n in first.. {
            let key = format!("o-{n}");
            let mut tx = outbox.transaction();
            tx.append(
                StreamName::new(&format!("order-{n}")).unwrap(),
                ExpectedVersion::NoStream,
                vec![CloudEvent::new("/shop", "order.placed")],
            );
            tx.stage(
                KILL_TOPIC,
                vec![event(2 * n, Some(&key)), event(2 * n + 1, Some(&key))],
            )
            .unwrap();
            tx.commit().await.unwrap();
        }
    });
    unreachable!("the child places orders until it is killed")
}

/// Writers and forwarders SIGKILLed at random moments, ten times over:
/// afterwards every order in the store has exactly its two events in the
/// topic, once each and in order, and no other order has any.
#[test]
fn killed_writers_and_forwarders_lose_and_double_nothing() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        kill_child(&args);
    }
    let store_dir = tempfile::tempdir().unwrap();
    let engine_dir = tempfile::tempdir().unwrap();
    let mut children = Children::new(
        "store_outbox::killed_writers_and_forwarders_lose_and_double_nothing",
        CHILD_ENV,
        0x2545_f491_4f6c_dd1d,
    );
    for round in 0..KILL_ROUNDS {
        let value = format!(
            "{} {} {}",
            store_dir.path().display(),
            engine_dir.path().display(),
            round * 1_000_000
        );
        children.run(&value, 150, 400);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(
            EmbeddedStore::open(store_dir.path(), EmbeddedOptions::default()).unwrap(),
        );
        // The orders the store holds: what committed.
        let mut orders = BTreeSet::new();
        let mut from = Position(0);
        loop {
            let slice = store
                .read_all(&Selector::Category("order".into()), from, 1000)
                .await
                .unwrap();
            if slice.events.is_empty() {
                break;
            }
            for e in &slice.events {
                let n: u64 = e.stream.as_str()["order-".len()..].parse().unwrap();
                orders.insert(n);
            }
            from = slice.next;
        }
        assert!(
            orders.len() > 100,
            "only {} orders committed in {KILL_ROUNDS} rounds",
            orders.len()
        );
        // A last forwarder, not killed, forwards what the killed ones left.
        let backend = tidings::connect(&format!("embedded:{}", engine_dir.path().display()))
            .await
            .unwrap();
        let outbox = StoreOutbox::start(
            Arc::clone(&store),
            Publisher::new(Arc::clone(&backend)),
            options(),
        )
        .unwrap();
        let head = store.head().await.unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while outbox.stats().checkpoint < head.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the forwarder is at {:?}, the head at {head:?}",
                outbox.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(outbox);

        let got = read_topic(&backend, KILL_TOPIC, 2 * orders.len()).await;
        let mut seen: BTreeMap<u64, Vec<(u32, u64)>> = BTreeMap::new();
        for (n, partition, offset) in &got {
            seen.entry(*n).or_default().push((*partition, *offset));
        }
        let published: BTreeSet<u64> = seen.keys().map(|e| e / 2).collect();
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
        for (e, places) in &seen {
            assert_eq!(places.len(), 1, "event {e} stored {} times", places.len());
        }
        for n in &orders {
            let (first, second) = (seen[&(2 * n)][0], seen[&(2 * n + 1)][0]);
            assert_eq!(first.0, second.0, "order {n}: one key, one partition");
            assert!(first.1 < second.1, "order {n}: its events in the order staged");
        }
        println!(
            "{} orders, {} events, each once, after {KILL_ROUNDS} kills",
            orders.len(),
            got.len()
        );
    });
}
