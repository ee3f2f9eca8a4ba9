//! The inbox: handlers whose effects (rows of an `effects` table with no
//! key, so a second effect shows) and emitted events commit with the
//! inbox's record, in PostgreSQL, under deliveries repeated, concurrent,
//! timed out, failed, and killed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::inbox::{Inbox, InboxOptions, InboxTx};
use tidings::outbox::{Relay, RelayOptions};
use tidings::router::{Context, HandlerError, Next, Retry, Router};
use tidings::{Backend, Error, Publisher};
use tokio::sync::oneshot;
use tokio_postgres::Client;

use crate::support::{
    assert_each_once, embedded_engine, event, fresh, n_of, publish_before_children, spawn_router,
    until, Children, PATIENCE,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fresh database with an `effects` table; `None` only when PostgreSQL
/// tests are skipped.
pub(crate) async fn database() -> Option<(Client, String)> {
    let (client, url) = crate::postgres::fresh_database("tidings_inbox").await?;
    client
        .batch_execute("CREATE TABLE effects (n bigint NOT NULL, at timestamptz DEFAULT now())")
        .await
        .unwrap();
    Some((client, url))
}

/// How many effects each `n` has.
pub(crate) async fn effects(client: &Client) -> BTreeMap<u64, i64> {
    client
        .query("SELECT n, count(*) FROM effects GROUP BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap(), r.get(1)))
        .collect()
}

/// The handler of the inbox tests: one effect per event, through the
/// inbox's transaction, and one event emitted to `out`, after `pause`.
pub(crate) fn effect_handler(
    out: String,
    pause: Duration,
) -> impl Fn(Context) -> futures_util::future::BoxFuture<'static, Result<(), BoxError>>
       + Send
       + Sync
       + 'static {
    move |ctx: Context| {
        let out = out.clone();
        Box::pin(async move {
            let tx = InboxTx::of(&ctx)?;
            let n = i64::try_from(n_of(ctx.event())).unwrap();
            tx.execute("INSERT INTO effects (n) VALUES ($1)", &[&n])
                .await?;
            tokio::time::sleep(pause).await;
            ctx.emit(&out, event(n_of(ctx.event()), None));
            Ok(())
        })
    }
}

pub(crate) fn spawn_relay(relay: Relay) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Relay>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        relay
    });
    (stop, run)
}

/// Connections in the database left inside a transaction.
async fn open_transactions(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A try that fails after its effect, and one cut off by its timeout in
/// the middle of its transaction, leave no effect, no record and no emitted
/// event behind; the try after each makes the effect once, and no
/// connection is left inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_timed_out_tries_leave_nothing_behind() {
    let Some((client, url)) = database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let (topic, out) = (fresh("payments"), fresh("receipts"));
    Publisher::new(Arc::clone(&backend))
        .publish_all(&topic, (0..6).map(|n| event(n, None)).collect())
        .await
        .unwrap();
    let inbox = Inbox::connect(&url, InboxOptions::default()).await.unwrap();
    let tries: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let mut router = Router::new(Arc::clone(&backend));
    let seen = Arc::clone(&tries);
    let effect = effect_handler(out.clone(), Duration::ZERO);
    router
        .route(&topic, "billing")
        .timeout(Duration::from_millis(300))
        .retry(Retry {
            tries: 3,
            ..Retry::default()
        })
        .wrap(inbox.clone())
        .on_event("test.n", move |ctx: Context| {
            let seen = Arc::clone(&seen);
            let effect = effect(ctx.clone());
            async move {
                let n = n_of(ctx.event());
                let try_number = {
                    let mut seen = seen.lock().unwrap();
                    let t = seen.entry(n).or_insert(0);
                    *t += 1;
                    *t
                };
                effect.await?;
                if try_number == 1 && n.is_multiple_of(2) {
                    return Err::<(), BoxError>("failed after the effect".into());
                }
                if try_number == 1 {
                    // Cut off by the try's timeout inside the transaction.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok(())
            }
        });
    let (stop, run) = spawn_router(router);
    until("six events handled", || inbox.stats().handled == 6).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.handled, 6);
    assert_eq!(report.retried, 6, "each event failed its first try");
    assert_eq!(tries.lock().unwrap().values().sum::<u32>(), 12);
    let made = effects(&client).await;
    assert_eq!(made, (0..6).map(|n| (n, 1)).collect(), "one effect each");
    let records: i64 = client
        .query_one("SELECT count(*) FROM tidings_inbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(records, 6);
    let staged: i64 = client
        .query_one("SELECT count(*) FROM tidings_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        staged, 6,
        "one emitted event per event, none of a failed try"
    );
    assert_eq!(open_transactions(&client).await, 0);
}

/// Two deliveries of one event at once (a lease that ran out while the
/// first still ran, a redelivery to another instance) make one effect: the
/// second waits on the first's record, then finds it. A middleware outside
/// the inbox runs every event's try twice side by side; the emitted events,
/// relayed from the outbox, come once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_event_make_one_effect() {
    let Some((client, url)) = database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let (topic, out) = (fresh("orders"), fresh("receipts"));
    Publisher::new(Arc::clone(&backend))
        .publish_all(&topic, (0..20).map(|n| event(n, None)).collect())
        .await
        .unwrap();
    let inbox = Inbox::connect(&url, InboxOptions::default()).await.unwrap();
    let relay = Relay::connect(
        &url,
        Publisher::new(Arc::clone(&backend)),
        RelayOptions::default(),
    )
    .await
    .unwrap();
    let (stop_relay, relay_run) = spawn_relay(relay);
    let twice = |ctx: Context, next: Next| async move {
        let (a, b) = tokio::join!(next.clone().run(ctx.clone()), next.run(ctx));
        a.and(b)
    };
    let mut router = Router::new(Arc::clone(&backend)).wrap(twice);
    router
        .route(&topic, "billing")
        .wrap(inbox.clone())
        .on_event(
            "test.n",
            effect_handler(out.clone(), Duration::from_millis(300)),
        );
    let (stop, run) = spawn_router(router);
    until("every delivery answered", || {
        let s = inbox.stats();
        s.handled + s.duplicates == 40
    })
    .await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.handled, 20);
    let stats = inbox.stats();
    assert_eq!((stats.handled, stats.duplicates), (20, 20));
    let made = effects(&client).await;
    assert_eq!(made, (0..20).map(|n| (n, 1)).collect(), "one effect each");
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
        assert!(tokio::time::Instant::now() < deadline, "{left} not relayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_relay.send(()).unwrap();
    relay_run.await.unwrap();
    // Counted where they went, not by the relay's stats: a relay stopped
    // right after its delete committed has not counted that batch yet.
    assert_each_once(&backend, &out, 20).await;
    assert_eq!(open_transactions(&client).await, 0);
}

/// A route that can deliver an event again after the inbox forgot it is
/// refused before anything is subscribed, naming both figures; the
/// defaults pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_outlives_the_retention_is_refused() {
    let Some((_client, url)) = database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let short = Inbox::connect(
        &url,
        InboxOptions {
            retention: Duration::from_secs(60),
            ..InboxOptions::default()
        },
    )
    .await
    .unwrap();
    let mut router = Router::new(Arc::clone(&backend));
    router
        .route("payments", "billing")
        .wrap(short)
        .on_event("*", |_ctx: Context| async { Ok::<(), HandlerError>(()) });
    // Refused before anything runs: a route let through would run forever.
    let err = tokio::time::timeout(PATIENCE, router.run(std::future::pending()))
        .await
        .expect("the route is refused at once, not run")
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err}");
    for part in [
        "topic payments and group billing",
        "remembers a handled event for 60 s",
        // 4 redeliveries × (30 s lease + 30 s of an unbounded try + 60 s
        // backoff bound).
        "up to 480 s after it was handled",
        "InboxOptions::retention",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }

    // With the defaults (7 days), the same route runs.
    let inbox = Inbox::connect(&url, InboxOptions::default()).await.unwrap();
    let mut router = Router::new(Arc::clone(&backend));
    router
        .route("payments", "billing")
        .wrap(inbox)
        .on_event("*", |_ctx: Context| async { Ok::<(), HandlerError>(()) });
    let report = router
        .run(tokio::time::sleep(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(report.handled, 0);
}

/// Records past their retention go in bounded batches, the younger ones
/// stay, and a handler that needs the inbox's transaction without an inbox
/// is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_their_retention_are_cleaned_in_batches() {
    let Some((client, url)) = database().await else {
        return;
    };
    let inbox = Inbox::connect(
        &url,
        InboxOptions {
            retention: Duration::from_secs(3600),
            cleanup_batch_max: 100,
            ..InboxOptions::default()
        },
    )
    .await
    .unwrap();
    client
        .batch_execute(
            "INSERT INTO tidings_inbox (consumer_group, source, id, handled_at)
             SELECT 'billing', '/shop', 'old-' || i, now() - interval '2 hours'
             FROM generate_series(1, 2550) AS i;
             INSERT INTO tidings_inbox (consumer_group, source, id)
             SELECT 'billing', '/shop', 'young-' || i
             FROM generate_series(1, 10) AS i;",
        )
        .await
        .unwrap();
    assert_eq!(inbox.clean().await.unwrap(), 2550);
    assert_eq!(inbox.stats().cleaned, 2550);
    let left: Vec<String> = client
        .query("SELECT id FROM tidings_inbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left.len(), 10);
    assert!(left.iter().all(|id| id.starts_with("young-")));
    assert_eq!(inbox.clean().await.unwrap(), 0);

    // A route without an inbox: the handler's call says what is missing.
    let (backend, _dir) = embedded_engine().await;
    let topic = fresh("payments");
    Publisher::new(Arc::clone(&backend))
        .publish(&topic, event(1, None))
        .await
        .unwrap();
    let said: Arc<Mutex<Option<String>>> = Arc::default();
    let keep = Arc::clone(&said);
    let mut router = Router::new(Arc::clone(&backend));
    router
        .route(&topic, "billing")
        .retry(Retry {
            tries: 1,
            ..Retry::default()
        })
        .on_event("test.n", move |ctx: Context| {
            let keep = Arc::clone(&keep);
            async move {
                let e = InboxTx::of(&ctx).unwrap_err();
                *keep.lock().unwrap() = Some(e.to_string());
                Err::<(), HandlerError>(HandlerError::drop_event(e))
            }
        });
    let (stop, run) = spawn_router(router);
    until("the handler ran", || said.lock().unwrap().is_some()).await;
    stop.send(()).unwrap();
    run.await.unwrap();
    let said = said.lock().unwrap().clone().unwrap();
    assert!(said.contains("no inbox runs around the handler"), "{said}");
}

/// Set in the child of the kill test: `<database url> <data dir>`.
const CHILD_ENV: &str = "TIDINGS_INBOX_KILL_CHILD";
const KILL_ROUNDS: u64 = 10;
const KILL_EVENTS: u64 = 4000;
const KILL_TOPIC: &str = "payments";
const KILL_OUT: &str = "receipts";

/// The options of the kill test's routes: short leases, so what a killed
/// child had leased comes back soon.
fn kill_router(backend: Arc<dyn Backend>, inbox: &Inbox) -> Router {
    let mut router = Router::new(backend);
    router
        .route(KILL_TOPIC, "billing")
        .ack_timeout(Duration::from_secs(1))
        .redelivery_delay(Duration::from_millis(50))
        .wrap(inbox.clone())
        .on_event(
            "test.n",
            effect_handler(KILL_OUT.to_owned(), Duration::from_millis(2)),
        );
    router
}

/// The kill test's child: handles the topic with an inbox and relays what
/// the handlers emitted back to the engine, until it is killed.
fn kill_child(args: &str) -> ! {
    let (url, dir) = args.split_once(' ').unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let backend = tidings::connect(&format!("embedded:{dir}")).await.unwrap();
        let relay = Relay::connect(
            url,
            Publisher::new(Arc::clone(&backend)),
            RelayOptions {
                batch_max: 16,
                poll_interval: Duration::from_millis(5),
                ..RelayOptions::default()
            },
        )
        .await
        .unwrap();
        tokio::spawn(async move { relay.run(std::future::pending()).await.unwrap() });
        let inbox = Inbox::connect(url, InboxOptions::default()).await.unwrap();
        kill_router(backend, &inbox)
            .run(std::future::pending())
            .await
            .unwrap();
    });
    unreachable!("the child handles events until it is killed")
}

/// Consumers SIGKILLed at random moments, ten times over — between the
/// receive, the handler's effect, the inbox's record, the commit, the
/// acknowledgement and the relay's publish — then one run to the end:
/// every event has exactly one effect, and exactly one emitted event in the
/// output topic.
#[test]
fn killed_consumers_make_every_effect_once() {
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
    let engine = format!("embedded:{}", dir.path().display());
    publish_before_children(
        dir.path(),
        KILL_TOPIC,
        (0..KILL_EVENTS).map(|n| event(n, None)).collect(),
    );
    let mut children = Children::new(
        "inbox::killed_consumers_make_every_effect_once",
        CHILD_ENV,
        0x9e37_79b9_7f4a_7c15,
    );
    let mut made_before = Vec::new();
    for _ in 0..KILL_ROUNDS {
        children.run(&format!("{url} {}", dir.path().display()), 300, 500);
        made_before.push(runtime.block_on(effects(&client)).len());
    }

    runtime.block_on(async move {
        let killed_with_work_left = made_before
            .iter()
            .filter(|&&n| (n as u64) < KILL_EVENTS)
            .count();
        assert!(
            killed_with_work_left >= 3,
            "kills came with work under way only {killed_with_work_left} times: {made_before:?}"
        );
        // A last run, not killed, handles what is left.
        let backend = tidings::connect(&engine).await.unwrap();
        let relay = Relay::connect(&url, Publisher::new(Arc::clone(&backend)), RelayOptions::default())
            .await
            .unwrap();
        let (stop_relay, relay_run) = spawn_relay(relay);
        let inbox = Inbox::connect(&url, InboxOptions::default()).await.unwrap();
        let (stop, run) = spawn_router(kill_router(Arc::clone(&backend), &inbox));
        let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
        loop {
            let made = effects(&client).await.len() as u64;
            let left: i64 = client
                .query_one("SELECT count(*) FROM tidings_outbox", &[])
                .await
                .unwrap()
                .get(0);
            if made == KILL_EVENTS && left == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{made} of {KILL_EVENTS} events made their effect; {left} emitted events not relayed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Leases the killed children held run out and come again: wait
        // until the group has nothing left before judging.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.send(()).unwrap();
        let report = run.await.unwrap();
        stop_relay.send(()).unwrap();
        relay_run.await.unwrap();

        let made = effects(&client).await;
        let doubled: Vec<(u64, i64)> = made
            .iter()
            .filter(|(_, &c)| c != 1)
            .map(|(&n, &c)| (n, c))
            .collect();
        assert!(
            doubled.is_empty(),
            "{} events made their effect more than once (first {:?})",
            doubled.len(),
            &doubled[..doubled.len().min(10)]
        );
        assert_eq!(made.len() as u64, KILL_EVENTS);

        // Every emitted event, once, in the output topic.
        assert_each_once(&backend, KILL_OUT, KILL_EVENTS).await;
        println!(
            "{KILL_EVENTS} events, each one effect and one emitted event, after {KILL_ROUNDS} kills (effects made before each kill: {made_before:?}); the last run found {} handled before",
            inbox.stats().duplicates
        );
        println!("{report:?}");
    });
}
