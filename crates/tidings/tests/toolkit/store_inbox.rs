//! The inbox on the event store: handlers whose effects are appends to an
//! `effects` stream (with no expected version, so a second effect shows)
//! and whose emitted events go through the store outbox, on the embedded
//! store and on PostgreSQL — delivered twice at once, delivered again, and
//! killed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::inbox::store::{StoreInbox, StoreUnit};
use tidings::outbox::store::{ForwarderOptions, StoreOutbox};
use tidings::router::{Context, HandlerError, Next, Retry, Router};
use tidings::{Backend, Publisher};
use tidings_store::{
    EmbeddedOptions, EmbeddedStore, EventStore, ExpectedVersion, PgOptions, PgStore, ReadStream,
    StreamName, StreamVersion,
};

use crate::support::{
    assert_each_once, event, fresh, n_of, publish_before_children, spawn_router, Children, PATIENCE,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const EFFECTS: &str = "effects-all";

/// How many effects each `n` has in the store.
async fn effects<S: EventStore>(store: &S) -> BTreeMap<u64, u32> {
    let stream = StreamName::new(EFFECTS).unwrap();
    let mut seen = BTreeMap::new();
    let mut from = 0u64;
    loop {
        let page = store
            .read_stream(&stream, ReadStream::forward(StreamVersion(from)))
            .await
            .unwrap();
        for e in &page.events {
            *seen.entry(n_of(&e.event)).or_insert(0) += 1;
        }
        if page.events.len() < tidings_store::READ_LIMIT_MAX {
            return seen;
        }
        from += page.events.len() as u64;
    }
}

/// The handler: one effect appended through the inbox's unit, and one
/// event emitted to `out`.
fn effect_handler<S: EventStore>(
    out: String,
) -> impl Fn(Context) -> futures_util::future::BoxFuture<'static, Result<(), BoxError>>
       + Send
       + Sync
       + 'static {
    move |ctx: Context| {
        let out = out.clone();
        Box::pin(async move {
            let unit = StoreUnit::<S>::of(&ctx)?;
            let n = n_of(ctx.event());
            unit.append(
                StreamName::new(EFFECTS).unwrap(),
                ExpectedVersion::Any,
                vec![event(n, None)],
            );
            ctx.emit(&out, event(n, None));
            Ok(())
        })
    }
}

fn forwarding() -> ForwarderOptions {
    ForwarderOptions {
        poll_interval: Duration::from_millis(50),
        retry_delay: Duration::from_millis(100),
        ..ForwarderOptions::default()
    }
}

/// Every event is tried twice side by side, and its first acknowledgement
/// is lost: each makes one effect and one emitted event, forwarded once.
async fn each_effect_once<S: EventStore>(store: Arc<S>) {
    const N: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let backend = tidings::connect(&format!("embedded:{}", dir.path().display()))
        .await
        .unwrap();
    let (topic, out) = (fresh("payments"), fresh("receipts"));
    Publisher::new(Arc::clone(&backend))
        .publish_all(&topic, (0..N).map(|n| event(n, None)).collect())
        .await
        .unwrap();
    let outbox = StoreOutbox::start(
        Arc::clone(&store),
        Publisher::new(Arc::clone(&backend)),
        forwarding(),
    )
    .unwrap();
    let inbox = StoreInbox::new(Arc::clone(&store));
    let lost: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let lose_first_ack = move |ctx: Context, next: Next| {
        let lost = Arc::clone(&lost);
        async move {
            next.run(ctx.clone()).await?;
            if lost.lock().unwrap().insert(ctx.event().id().to_owned()) {
                return Err(HandlerError::retry("the acknowledgement was lost"));
            }
            Ok(())
        }
    };
    let twice = |ctx: Context, next: Next| async move {
        let (a, b) = tokio::join!(next.clone().run(ctx.clone()), next.run(ctx));
        a.and(b)
    };
    let mut router = Router::new(Arc::clone(&backend))
        .wrap(lose_first_ack)
        .wrap(twice);
    router
        .route(&topic, "billing")
        .retry(Retry {
            tries: 1,
            ..Retry::default()
        })
        .redelivery_delay(Duration::from_millis(50))
        .wrap(inbox.clone())
        .on_event("test.n", effect_handler::<S>(out.clone()));
    let (stop, run) = spawn_router(router);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = inbox.stats();
        if s.handled == N && s.duplicates >= 2 * N {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert!(report.nacked >= N, "{report:?}");
    assert_eq!(effects(&*store).await, (0..N).map(|n| (n, 1)).collect());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while outbox.stats().forwarded < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            outbox.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outbox.stats().forwarded, N, "one emitted event each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_effect_once_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    each_effect_once(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_effect_once_on_the_postgres_store() {
    let Some((_client, url)) = crate::postgres::fresh_database("tidings_store_inbox").await else {
        return;
    };
    let store = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    each_effect_once(Arc::new(store)).await;
}

/// Set in the child of the kill test: `<store dir> <engine dir>`.
const CHILD_ENV: &str = "TIDINGS_STORE_INBOX_KILL_CHILD";
const KILL_ROUNDS: u64 = 10;
const KILL_EVENTS: u64 = 8_000;
const KILL_TOPIC: &str = "payments";
const KILL_OUT: &str = "receipts";

/// The kill test's router; `ack_delay` holds each acknowledgement back
/// after the commit (a slow network's), which widens the window a kill
/// must hit to leave a committed event unacknowledged.
fn kill_router(
    backend: Arc<dyn Backend>,
    inbox: &StoreInbox<EmbeddedStore>,
    ack_delay: Duration,
) -> Router {
    let slow_ack = move |ctx: Context, next: Next| async move {
        next.run(ctx).await?;
        tokio::time::sleep(ack_delay).await;
        Ok(())
    };
    let mut router = Router::new(backend).wrap(slow_ack);
    router
        .route(KILL_TOPIC, "billing")
        .ack_timeout(Duration::from_secs(1))
        .redelivery_delay(Duration::from_millis(50))
        .wrap(inbox.clone())
        .on_event(
            "test.n",
            effect_handler::<EmbeddedStore>(KILL_OUT.to_owned()),
        );
    router
}

/// Opens the store and the engine, and forwards the store's outbox to it.
async fn open(
    store_dir: &str,
    engine_dir: &str,
) -> (
    Arc<EmbeddedStore>,
    Arc<dyn Backend>,
    StoreOutbox<EmbeddedStore>,
) {
    let backend = tidings::connect(&format!("embedded:{engine_dir}"))
        .await
        .unwrap();
    let store = Arc::new(EmbeddedStore::open(store_dir, EmbeddedOptions::default()).unwrap());
    let outbox = StoreOutbox::start(
        Arc::clone(&store),
        Publisher::new(Arc::clone(&backend)),
        forwarding(),
    )
    .unwrap();
    (store, backend, outbox)
}

/// Consumers SIGKILLed at random moments, ten times over, then one run to
/// the end: every event has exactly one effect in the store and exactly
/// one emitted event in the output topic.
#[test]
fn killed_consumers_append_every_effect_once() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let (store_dir, engine_dir) = args.split_once(' ').unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (store, backend, _outbox) = open(store_dir, engine_dir).await;
            kill_router(backend, &StoreInbox::new(store), Duration::from_millis(20))
                .run(std::future::pending())
                .await
                .unwrap();
        });
        unreachable!("the child handles events until it is killed");
    }
    let store_dir = tempfile::tempdir().unwrap();
    let engine_dir = tempfile::tempdir().unwrap();
    let (store_text, engine_text) = (
        store_dir.path().display().to_string(),
        engine_dir.path().display().to_string(),
    );
    publish_before_children(
        engine_dir.path(),
        KILL_TOPIC,
        (0..KILL_EVENTS).map(|n| event(n, None)).collect(),
    );
    let mut children = Children::new(
        "store_inbox::killed_consumers_append_every_effect_once",
        CHILD_ENV,
        0xd1b5_4a32_d192_ed03,
    );
    for _ in 0..KILL_ROUNDS {
        children.run(&format!("{store_text} {engine_text}"), 200, 500);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (store, backend, outbox) = open(&store_text, &engine_text).await;
        let before = effects(&*store).await.len();
        assert!(
            (before as u64) < KILL_EVENTS,
            "the kills came after all {KILL_EVENTS} events were handled"
        );
        // Events the children committed and were killed before
        // acknowledging: the last run must find them recorded.
        let found_recorded = |inbox: &StoreInbox<EmbeddedStore>| inbox.stats().duplicates;
        let inbox = StoreInbox::new(Arc::clone(&store));
        let (stop, run) = spawn_router(kill_router(Arc::clone(&backend), &inbox, Duration::ZERO));
        let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
        loop {
            let made = effects(&*store).await.len() as u64;
            let head = store.head().await.unwrap().0;
            if made == KILL_EVENTS && outbox.stats().checkpoint >= head {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{made} of {KILL_EVENTS} events made their effect; forwarder {:?}, head {head}",
                outbox.stats()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Leases the killed children held run out and come again.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.send(()).unwrap();
        run.await.unwrap();

        let made = effects(&*store).await;
        let doubled: Vec<_> = made.iter().filter(|(_, &c)| c != 1).collect();
        assert!(
            doubled.is_empty(),
            "{} events made their effect more than once (first {:?})",
            doubled.len(),
            &doubled[..doubled.len().min(10)]
        );
        assert_eq!(made.len() as u64, KILL_EVENTS);
        assert_each_once(&backend, KILL_OUT, KILL_EVENTS).await;
        let recorded_before = found_recorded(&inbox);
        assert!(
            recorded_before > 0,
            "no kill left a committed event unacknowledged: the test proved no inbox"
        );
        println!(
            "{KILL_EVENTS} events, each one effect and one emitted event, after {KILL_ROUNDS} kills ({before} handled before the last run; it found {recorded_before} recorded before)"
        );
    });
}
