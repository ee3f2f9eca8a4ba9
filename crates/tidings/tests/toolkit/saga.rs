//! Sagas: a checkout that asks for a payment, waits for its answer or its
//! deadline, and on a failure undoes its two steps last first, run on the
//! embedded engine with its state in PostgreSQL — completed, compensated,
//! timed out, started twice at once, dead-lettered, and killed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::outbox::{Relay, RelayOptions};
use tidings::router::{Context, HandlerError, Retry, Router};
use tidings::saga::{self, Compensation, Correlation, Saga, SagaOptions, SagaRunner, Status, Step};
use tidings::{Backend, CloudEvent, Mode, Publisher, SubscribeOptions};
use tokio::sync::oneshot;

use crate::support::{
    embedded_engine, fresh, publish_before_children, spawn_router, Children, PATIENCE,
};

/// The checkout's topics.
#[derive(Clone, Debug)]
pub(crate) struct Topics {
    pub(crate) orders: String,
    pub(crate) requests: String,
    pub(crate) results: String,
    pub(crate) undo: String,
}

impl Topics {
    pub(crate) fn fresh() -> Topics {
        Topics {
            orders: fresh("orders"),
            requests: fresh("payment-requests"),
            results: fresh("payment-results"),
            undo: fresh("undo"),
        }
    }
}

/// What an order asks of the test: how the payment service answers, how
/// long the checkout waits, whether its stock release fails for good.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) n: u64,
    /// "succeed", "fail" or "ignore".
    pub(crate) payment: String,
    pub(crate) deadline_ms: u64,
    #[serde(default)]
    pub(crate) release_fails: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Checkout {
    placed: u32,
    paid: bool,
}

pub(crate) struct CheckoutSaga {
    pub(crate) name: String,
    pub(crate) topics: Topics,
}

impl Saga for CheckoutSaga {
    type State = Checkout;

    fn name(&self) -> &str {
        &self.name
    }

    fn correlate(&self, event: &CloudEvent) -> Option<Correlation> {
        let key = event.partitionkey()?.to_owned();
        match event.ty() {
            "order.placed" => Some(Correlation::start(key)),
            "payment.succeeded" | "payment.failed" => Some(Correlation::join(key)),
            _ => None,
        }
    }

    async fn on_event(
        &self,
        state: &mut Checkout,
        event: &CloudEvent,
        step: &mut Step,
    ) -> Result<(), HandlerError> {
        let key = event.partitionkey().unwrap_or_default().to_owned();
        match event.ty() {
            "order.placed" => {
                state.placed += 1;
                if state.placed > 1 {
                    // The same order placed again: already under way.
                    return Ok(());
                }
                let order: Order = event.json().map_err(HandlerError::dead_letter)?;
                step.compensate_with(
                    "release-stock",
                    serde_json::json!({ "key": key, "fails": order.release_fails }),
                );
                step.compensate_with("cancel-booking", serde_json::json!({ "key": key }));
                let request = CloudEvent::new("/checkout", "payment.requested")
                    .with_partitionkey(&key)
                    .with_json(&order)
                    .map_err(HandlerError::dead_letter)?;
                step.send(&self.topics.requests, request);
                step.schedule("payment-deadline", Duration::from_millis(order.deadline_ms));
            }
            "payment.succeeded" => {
                state.paid = true;
                step.complete();
            }
            _ => step.fail("the payment failed"),
        }
        Ok(())
    }

    async fn on_timeout(
        &self,
        _state: &mut Checkout,
        timeout: &str,
        step: &mut Step,
    ) -> Result<(), HandlerError> {
        step.fail(format!("{timeout}: no answer in time"));
        Ok(())
    }

    async fn compensate(
        &self,
        compensation: &Compensation,
        step: &mut Step,
    ) -> Result<(), HandlerError> {
        if compensation.data["fails"].as_bool() == Some(true) {
            return Err(HandlerError::retry("the stock service refuses"));
        }
        let key = compensation.data["key"].as_str().unwrap_or_default();
        let undo = CloudEvent::new("/checkout", compensation.name.clone()).with_partitionkey(key);
        step.send(&self.topics.undo, undo);
        Ok(())
    }
}

/// A payment service: answers each request as its order says.
pub(crate) fn payment_service(router: &mut Router, topics: &Topics, mode: Mode) {
    let results = topics.results.clone();
    router
        .route(&topics.requests, "payment-service")
        .mode(mode)
        .on("payment.requested", move |ctx: Context, order: Order| {
            let results = results.clone();
            async move {
                let key = ctx.event().partitionkey().unwrap_or_default().to_owned();
                let ty = match order.payment.as_str() {
                    "succeed" => "payment.succeeded",
                    "fail" => "payment.failed",
                    _ => return Ok::<(), HandlerError>(()),
                };
                ctx.emit(
                    &results,
                    CloudEvent::new("/payments", ty).with_partitionkey(key),
                );
                Ok(())
            }
        });
}

/// The checkout's routes: orders and payment results, one group each.
pub(crate) fn checkout_routes(
    router: &mut Router,
    runner: &SagaRunner<CheckoutSaga>,
    topics: &Topics,
    mode: Mode,
) {
    runner.attach(
        router
            .route(&topics.orders, "checkout-orders")
            .mode(mode)
            .key_ordering(),
    );
    runner.attach(
        router
            .route(&topics.results, "checkout-payments")
            .mode(mode),
    );
}

pub(crate) fn order_event(key: &str, order: &Order) -> CloudEvent {
    CloudEvent::new("/shop", "order.placed")
        .with_partitionkey(key)
        .with_json(order)
        .unwrap()
}

pub(crate) fn options() -> SagaOptions {
    SagaOptions {
        poll_interval: Duration::from_millis(50),
        compensation_retry: Retry {
            tries: 3,
            backoff: tidings::backend::Backoff {
                initial: Duration::from_millis(10),
                factor: 2,
                max: Duration::from_millis(50),
            },
        },
        ..SagaOptions::default()
    }
}

/// Every event of `topic` until `expected` came and then nothing for a
/// while: (partitionkey, type) in the order of each key's partition.
async fn read_all(
    backend: &Arc<dyn Backend>,
    topic: &str,
    expected: usize,
) -> Vec<(String, String)> {
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
            let e = d.event().unwrap();
            got.push((
                e.partitionkey().unwrap_or_default().to_owned(),
                e.ty().to_owned(),
            ));
            d.ack().await.unwrap();
        }
    }
    sub.close().await.unwrap();
    got
}

/// Waits until every key's instance has ended.
pub(crate) async fn until_final(runner: &SagaRunner<CheckoutSaga>, keys: &[String]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for key in keys {
        loop {
            if let Some(i) = runner.instance(key).await.unwrap() {
                if i.status.is_final() {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {key} has not ended: {:?}",
                runner.instance(key).await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A checkout running over a backend: the saga (state in the database at
/// `url`), the relay of its outbox, its routes and the payment service.
pub(crate) struct Running {
    pub(crate) runner: SagaRunner<CheckoutSaga>,
    pub(crate) topics: Topics,
    stop_relay: oneshot::Sender<()>,
    relay_run: tokio::task::JoinHandle<Relay>,
    stop: oneshot::Sender<()>,
    run: tokio::task::JoinHandle<tidings::router::Report>,
}

impl Running {
    /// Starts saga `name` on fresh topics, its routes in `mode`.
    pub(crate) async fn start(
        url: &str,
        backend: &Arc<dyn Backend>,
        name: &str,
        mode: Mode,
    ) -> Running {
        let topics = Topics::fresh();
        let runner = SagaRunner::connect(
            url,
            CheckoutSaga {
                name: name.to_owned(),
                topics: topics.clone(),
            },
            options(),
        )
        .await
        .unwrap();
        let relay = Relay::connect(
            url,
            Publisher::new(Arc::clone(backend)),
            RelayOptions::default(),
        )
        .await
        .unwrap();
        let (stop_relay, relay_run) = crate::inbox::spawn_relay(relay);
        let mut router = Router::new(Arc::clone(backend));
        checkout_routes(&mut router, &runner, &topics, mode);
        payment_service(&mut router, &topics, mode);
        let (stop, run) = spawn_router(router);
        Running {
            runner,
            topics,
            stop_relay,
            relay_run,
            stop,
            run,
        }
    }

    /// Stops the routes, then the relay; answers the runner, for what is
    /// read afterwards.
    pub(crate) async fn stop(self) -> SagaRunner<CheckoutSaga> {
        self.stop.send(()).unwrap();
        self.run.await.unwrap();
        self.stop_relay.send(()).unwrap();
        self.relay_run.await.unwrap();
        self.runner
    }
}

/// A paid order completes; a refused payment and a missed deadline each
/// undo the two steps last first; an instance under way shows its pending
/// deadline; and every instance's history says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_completes_or_compensates_in_reverse_and_times_out() {
    let Some((_client, url)) = crate::inbox::database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let checkout = Running::start(&url, &backend, "checkout", Mode::Queue).await;
    let (runner, topics) = (&checkout.runner, checkout.topics.clone());

    let orders = [
        ("paid", "succeed", 60_000),
        ("refused", "fail", 60_000),
        ("late", "ignore", 300),
        ("waiting", "ignore", 3_600_000),
    ];
    let publisher = Publisher::new(Arc::clone(&backend));
    for (n, (key, payment, deadline_ms)) in orders.iter().enumerate() {
        let order = Order {
            n: n as u64,
            payment: (*payment).into(),
            deadline_ms: *deadline_ms,
            release_fails: false,
        };
        publisher
            .publish(&topics.orders, order_event(key, &order))
            .await
            .unwrap();
    }
    let ended: Vec<String> = ["paid", "refused", "late"].map(String::from).to_vec();
    until_final(runner, &ended).await;

    let status = |key: &'static str| {
        let runner = &runner;
        async move { runner.instance(key).await.unwrap().unwrap() }
    };
    let paid = status("paid").await;
    assert_eq!(paid.status, Status::Completed);
    assert_eq!(paid.state["paid"], true);
    assert!(paid.timeouts.is_empty(), "completing cancels the deadline");
    let refused = status("refused").await;
    assert_eq!(refused.status, Status::Compensated);
    let inputs: Vec<&str> = refused
        .history
        .iter()
        .map(|h| h.input.split(' ').take(2).last().unwrap())
        .collect();
    assert_eq!(
        inputs,
        [
            "order.placed",
            "payment.failed",
            "cancel-booking",
            "release-stock"
        ]
    );
    assert_eq!(
        refused.history[1].note.as_deref(),
        Some("the payment failed")
    );
    let late = status("late").await;
    assert_eq!(late.status, Status::Compensated);
    assert_eq!(late.history[1].input, "timeout payment-deadline");
    let waiting = status("waiting").await;
    assert_eq!(waiting.status, Status::Running);
    assert_eq!(waiting.timeouts.len(), 1);
    assert_eq!(waiting.timeouts[0].name, "payment-deadline");
    let in_an_hour = waiting.timeouts[0].due_at_ms - waiting.updated_at_ms;
    assert!(
        (3_590_000..=3_600_000).contains(&in_an_hour),
        "due {in_an_hour} ms after the order"
    );
    assert_eq!(waiting.compensations.len(), 2);
    let (state_status, state) = runner.state("waiting").await.unwrap().unwrap();
    assert_eq!(
        (state_status, state.placed, state.paid),
        (Status::Running, 1, false)
    );

    // The undo events, in the order they ran, per order.
    let undone = read_all(&backend, &topics.undo, 4).await;
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, ty) in undone {
        per_key.entry(key).or_default().push(ty);
    }
    let reverse = vec!["cancel-booking".to_owned(), "release-stock".to_owned()];
    assert_eq!(
        per_key,
        BTreeMap::from([
            ("late".to_owned(), reverse.clone()),
            ("refused".to_owned(), reverse)
        ])
    );
    let requests = read_all(&backend, &topics.requests, 4).await;
    assert_eq!(requests.len(), 4, "one payment request per order");
    for r in &requests {
        assert_eq!(r.1, "payment.requested");
    }

    checkout.stop().await;
}

/// Two start events of one instance at once make one instance: the second
/// waits for the first's, then joins it (and is ignored by the saga).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_start_events_at_once_make_one_instance() {
    let Some((client, url)) = crate::inbox::database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let topics = Topics::fresh();
    let runner = SagaRunner::connect(
        &url,
        CheckoutSaga {
            name: "checkout".into(),
            topics: topics.clone(),
        },
        options(),
    )
    .await
    .unwrap();
    let mut router = Router::new(Arc::clone(&backend));
    // No key ordering: both start events of a key are handled at once.
    runner.attach(router.route(&topics.orders, "checkout-orders"));
    let publisher = Publisher::new(Arc::clone(&backend));
    let keys: Vec<String> = (0..10).map(|n| format!("o-{n}")).collect();
    for key in &keys {
        let order = Order {
            n: 0,
            payment: "ignore".into(),
            deadline_ms: 3_600_000,
            release_fails: false,
        };
        // Two events (two ids) that both start the instance.
        publisher
            .publish_all(
                &topics.orders,
                vec![order_event(key, &order), order_event(key, &order)],
            )
            .await
            .unwrap();
    }
    let (stop, run) = spawn_router(router);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = runner.inbox().stats();
        if s.handled == 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    run.await.unwrap();
    let instances: i64 = client
        .query_one("SELECT count(*) FROM tidings_sagas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(instances, 10);
    for key in &keys {
        let i = runner.instance(key).await.unwrap().unwrap();
        assert_eq!(i.version, 2, "{key}: both events applied, one at a time");
        assert_eq!(i.state["placed"], 2);
        assert_eq!(
            i.compensations.len(),
            2,
            "{key}: the first start's steps only"
        );
    }
    let staged: i64 = client
        .query_one("SELECT count(*) FROM tidings_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(staged, 10, "one payment request per order");
}

/// A compensation that keeps failing ends the instance `failed`, after the
/// compensations before it in the undo order ran, with a dead letter that
/// names the saga's id and what was left to undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_fails_for_good_is_dead_lettered_with_the_saga_id() {
    let Some((_client, url)) = crate::inbox::database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let name = fresh("checkout");
    let checkout = Running::start(&url, &backend, &name, Mode::Queue).await;
    let (runner, topics) = (&checkout.runner, checkout.topics.clone());
    let order = Order {
        n: 9,
        payment: "fail".into(),
        deadline_ms: 60_000,
        release_fails: true,
    };
    Publisher::new(Arc::clone(&backend))
        .publish(&topics.orders, order_event("o-9", &order))
        .await
        .unwrap();
    until_final(runner, &["o-9".to_owned()]).await;
    let i = runner.instance("o-9").await.unwrap().unwrap();
    assert_eq!(i.status, Status::Failed);
    let last = i.history.last().unwrap();
    assert_eq!(last.input, "compensation release-stock");
    assert_eq!(last.note.as_deref(), Some("the stock service refuses"));
    assert_eq!(i.compensations.len(), 1, "release-stock is left to undo");

    let mut sub = tidings::Subscriber::new(Arc::clone(&backend))
        .subscribe(SubscribeOptions::queue(
            saga::dead_letter_topic(&name),
            "ops",
        ))
        .await
        .unwrap();
    let letter = loop {
        let mut got = sub.next_batch(1, Duration::from_millis(300)).await.unwrap();
        if let Some(d) = got.pop() {
            let e = d.event().unwrap().clone();
            d.ack().await.unwrap();
            break e;
        }
    };
    sub.close().await.unwrap();
    assert_eq!(letter.ty(), "tidings.saga.failed");
    assert_eq!(
        letter.extension("sagaid").unwrap().to_canonical_string(),
        format!("{name}/o-9")
    );
    let data: serde_json::Value = letter.json().unwrap();
    assert_eq!(data["reason"], "the stock service refuses");
    assert_eq!(data["compensations_left"][0]["name"], "release-stock");
    let undone = read_all(&backend, &topics.undo, 1).await;
    assert_eq!(undone, [("o-9".to_owned(), "cancel-booking".to_owned())]);

    checkout.stop().await;
}

/// Set in a child of the kill tests: `<database url> <topic prefix>
/// <backend url>`.
const CHILD_ENV: &str = "TIDINGS_SAGA_KILL_CHILD";
const KILL_ROUNDS: u64 = 8;

fn kill_topics(prefix: &str) -> Topics {
    Topics {
        orders: format!("{prefix}-orders"),
        requests: format!("{prefix}-payment-requests"),
        results: format!("{prefix}-payment-results"),
        undo: format!("{prefix}-undo"),
    }
}

/// The kill test's orders: a third paid, a third refused, a third left to
/// their deadline. Answered orders wait a minute for their answer: a kill
/// holds an answer back by a lease, and a deadline that passes first is the
/// saga working as it should, not the test's case.
fn kill_order(n: u64) -> Order {
    let payment = ["succeed", "fail", "ignore"][(n % 3) as usize];
    Order {
        n,
        payment: payment.into(),
        deadline_ms: if payment == "ignore" {
            200 + n % 5 * 100
        } else {
            60_000
        },
        release_fails: false,
    }
}

/// Runs the checkout, the payment service and the relay on the backend at
/// `backend_url` until `stop`.
async fn run_checkout(
    url: &str,
    prefix: &str,
    backend_url: &str,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let backend = tidings::connect(backend_url).await.unwrap();
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
    let (stop_relay, relay_run) = crate::inbox::spawn_relay(relay);
    let topics = kill_topics(prefix);
    let runner = SagaRunner::connect(
        url,
        CheckoutSaga {
            name: "checkout".into(),
            topics: topics.clone(),
        },
        options(),
    )
    .await
    .unwrap();
    let mut router = Router::new(backend);
    checkout_routes(&mut router, &runner, &topics, Mode::Queue);
    payment_service(&mut router, &topics, Mode::Queue);
    for (group, topic) in [
        ("checkout-orders", &topics.orders),
        ("checkout-payments", &topics.results),
    ] {
        router
            .route(topic, group)
            .ack_timeout(Duration::from_secs(2))
            .redelivery_delay(Duration::from_millis(50));
    }
    router
        .route(&topics.requests, "payment-service")
        .ack_timeout(Duration::from_secs(2));
    router.run(stop).await.unwrap();
    stop_relay.send(()).unwrap();
    relay_run.await.unwrap();
}

/// Publishes the orders to the backend at `backend_url`, on a runtime of
/// its own dropped afterwards (with it the embedded engine's lock).
fn publish_orders(backend_url: &str, topic: &str, orders: u64) {
    let events: Vec<CloudEvent> = (0..orders)
        .map(|n| order_event(&format!("o-{n}"), &kill_order(n)))
        .collect();
    if let Some(dir) = backend_url.strip_prefix("embedded:") {
        publish_before_children(std::path::Path::new(dir), topic, events);
        return;
    }
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    setup.block_on(async {
        let backend = tidings::connect(backend_url).await.unwrap();
        for chunk in events.chunks(100) {
            Publisher::new(Arc::clone(&backend))
                .publish_all(topic, chunk.to_vec())
                .await
                .unwrap();
        }
    });
}

/// Events of `topic` per partitionkey: each distinct id once, in the order
/// first seen, and how many ids are stored more than once (read again at
/// another place; the group handing the same record out again does not
/// count).
async fn distinct_per_key(
    backend: &Arc<dyn Backend>,
    topic: &str,
    expected: usize,
) -> (BTreeMap<String, Vec<String>>, usize) {
    let mut sub = tidings::Subscriber::new(Arc::clone(backend))
        .subscribe(SubscribeOptions::stream(topic, fresh("audit")))
        .await
        .unwrap();
    // Where each id was first read: the same id read again at the same place
    // is the group delivering it again (after a rebalance), not a second copy.
    let mut ids: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut repeated, mut distinct) = (0, 0);
    let deadline = tokio::time::Instant::now() + 2 * PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let batch = sub
            .next_batch(256, Duration::from_millis(500))
            .await
            .unwrap();
        if batch.is_empty() && distinct >= expected {
            break;
        }
        for d in batch {
            let e = d.event().unwrap();
            let at = (d.partition(), d.offset());
            match ids.get(e.id()) {
                None => {
                    ids.insert(e.id().to_owned(), at);
                    distinct += 1;
                    per_key
                        .entry(e.partitionkey().unwrap_or_default().to_owned())
                        .or_default()
                        .push(e.ty().to_owned());
                }
                Some(first) if *first == at => {}
                Some(_) => repeated += 1,
            }
            d.ack().await.unwrap();
        }
    }
    sub.close().await.unwrap();
    (per_key, repeated)
}

/// The saga's crash matrix on the backend at `backend_url`: checkouts (the
/// saga, the payment service, the relay) SIGKILLed at random moments —
/// between an event's receipt, its transition, the state's save, the
/// requests and undo events staged and relayed, a timeout's firing and each
/// compensation — `KILL_ROUNDS` times, then one run to the end: every
/// instance ended as its order says (completed, or compensated with both
/// steps undone last first), with one payment request each and each undo
/// once. On a backend without publish dedup (Kafka) a relay that died after
/// its publish sends an event again under its id, which consumers drop:
/// there the check counts ids; elsewhere no event may come twice.
fn killed_sagas_on(test: &str, backend_url: &str, orders: u64, run_ms: u64, dedup: bool) {
    killed_sagas_with(test, backend_url, orders, run_ms, dedup, 3, KILL_ROUNDS);
}

/// [`killed_sagas_on`] with `rounds` kills, at least `interrupted` of which
/// must come while instances are still running.
fn killed_sagas_with(
    test: &str,
    backend_url: &str,
    orders: u64,
    run_ms: u64,
    dedup: bool,
    interrupted: usize,
    rounds: u64,
) {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let mut parts = args.splitn(3, ' ');
        let (url, prefix, backend_url) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_checkout(
            &url,
            &prefix,
            &backend_url,
            std::future::pending(),
        ));
        unreachable!("the child runs until it is killed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some((client, url)) = runtime.block_on(crate::inbox::database()) else {
        return;
    };
    let prefix = fresh("checkout");
    let topics = kill_topics(&prefix);
    publish_orders(backend_url, &topics.orders, orders);
    let mut children = Children::new(test, CHILD_ENV, 0x5851_f42d_4c95_7f2d);
    let mut ended_before = Vec::new();
    let count_ended = || -> i64 {
        runtime.block_on(async {
            client
                .query_one(
                    "SELECT count(*) FROM tidings_sagas WHERE status IN ('completed', 'compensated')",
                    &[],
                )
                .await
                .unwrap()
                .get(0)
        })
    };
    for _ in 0..rounds {
        children.run(&format!("{url} {prefix} {backend_url}"), run_ms, run_ms);
        ended_before.push(count_ended());
    }
    let with_work_left = ended_before.iter().filter(|&&n| n < orders as i64).count();
    assert!(
        with_work_left >= interrupted,
        "kills came with work under way only {with_work_left} times: {ended_before:?}"
    );

    runtime.block_on(async {
        let (stop, stopped) = oneshot::channel::<()>();
        let last = tokio::spawn({
            let (url, prefix, backend_url) = (url.clone(), prefix.clone(), backend_url.to_owned());
            async move {
                run_checkout(&url, &prefix, &backend_url, async {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        let deadline = tokio::time::Instant::now() + 4 * PATIENCE;
        loop {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM tidings_sagas WHERE status IN ('completed', 'compensated')),
                            (SELECT count(*) FROM tidings_outbox)",
                    &[],
                )
                .await
                .unwrap();
            let (ended, left): (i64, i64) = (row.get(0), row.get(1));
            if ended == orders as i64 && left == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ended} of {orders} instances ended; {left} events not relayed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.send(()).unwrap();
        last.await.unwrap();

        let statuses: BTreeMap<String, String> = client
            .query("SELECT key, status FROM tidings_sagas", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(statuses.len() as u64, orders);
        for n in 0..orders {
            let expected = if n % 3 == 0 { "completed" } else { "compensated" };
            assert_eq!(statuses[&format!("o-{n}")], expected, "order {n}");
        }

        let backend = tidings::connect(backend_url).await.unwrap();
        let (requested, repeated_requests) =
            distinct_per_key(&backend, &topics.requests, orders as usize).await;
        let twice: Vec<_> = requested.iter().filter(|(_, r)| r.len() != 1).collect();
        assert!(twice.is_empty(), "payment requested more than once: {twice:?}");
        assert_eq!(requested.len() as u64, orders);

        let compensated: BTreeSet<String> = (0..orders)
            .filter(|n| n % 3 != 0)
            .map(|n| format!("o-{n}"))
            .collect();
        let (undone, repeated_undo) =
            distinct_per_key(&backend, &topics.undo, 2 * compensated.len()).await;
        assert_eq!(
            undone.keys().cloned().collect::<BTreeSet<_>>(),
            compensated,
            "undo events for exactly the compensated orders"
        );
        for (key, undone) in &undone {
            assert_eq!(
                undone,
                &["cancel-booking", "release-stock"],
                "{key}: both steps undone once, last first"
            );
        }
        if dedup {
            assert_eq!(
                (repeated_requests, repeated_undo),
                (0, 0),
                "the backend's publish dedup stores a relayed event once"
            );
        }
        println!(
            "{test}: {orders} checkouts ended as their orders say after {rounds} kills (ended before each kill: {ended_before:?}; events delivered again under their id: {})",
            repeated_requests + repeated_undo
        );
    });
}

fn saga_test(name: &str) -> String {
    format!("saga::{name}")
}

#[test]
fn killed_sagas_end_completed_or_compensated_on_the_embedded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let url = match std::env::var(CHILD_ENV) {
        // The child's backend comes with its arguments.
        Ok(_) => String::new(),
        Err(_) => format!("embedded:{}", dir.path().display()),
    };
    killed_sagas_on(
        &saga_test("killed_sagas_end_completed_or_compensated_on_the_embedded_engine"),
        &url,
        600,
        300,
        true,
    );
}

#[test]
fn killed_sagas_end_completed_or_compensated_on_nats() {
    if std::env::var(CHILD_ENV).is_ok() {
        killed_sagas_on("", "", 0, 0, true);
    }
    let nats = crate::readme::NatsServer::start();
    nats.wait_ready();
    killed_sagas_on(
        &saga_test("killed_sagas_end_completed_or_compensated_on_nats"),
        &format!("nats://127.0.0.1:{}", nats.port),
        300,
        400,
        true,
    );
}

#[cfg(feature = "kafka")]
#[test]
fn killed_sagas_end_completed_or_compensated_on_apache_kafka() {
    if std::env::var(CHILD_ENV).is_ok() {
        killed_sagas_on("", "", 0, 0, false);
    }
    let address = std::env::var("TIDINGS_TEST_KAFKA").expect(
        "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
    );
    // A consumer group's join takes seconds, and a killed member keeps its
    // partitions until its session times out (6 s here): fewer, longer
    // rounds, and how much each gets done varies with the joins, so one
    // kill with work under way is what is asked.
    killed_sagas_with(
        &saga_test("killed_sagas_end_completed_or_compensated_on_apache_kafka"),
        &format!("kafka://{address}?{}", crate::chain::KAFKA_SESSION),
        1500,
        4000,
        false,
        1,
        4,
    );
}

/// `tidings serve --sagas-database` answers `GET /v1/sagas/...` with what
/// the runner says of the same instances, and `tidings sagas` prints them;
/// a server without the database, an unknown instance and a bad status
/// get their specific errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_shows_instances_as_the_library_does() {
    let Some((_client, url)) = crate::inbox::database().await else {
        return;
    };
    let (backend, _dir) = embedded_engine().await;
    let checkout = Running::start(&url, &backend, "checkout", Mode::Queue).await;
    let (runner, topics) = (&checkout.runner, checkout.topics.clone());
    let publisher = Publisher::new(Arc::clone(&backend));
    for (key, payment) in [("o-1", "fail"), ("o-2", "ignore")] {
        let order = Order {
            n: 1,
            payment: payment.into(),
            deadline_ms: 3_600_000,
            release_fails: false,
        };
        publisher
            .publish(&topics.orders, order_event(key, &order))
            .await
            .unwrap();
    }
    until_final(runner, &["o-1".to_owned()]).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while runner.instance("o-2").await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "o-2 started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runner = checkout.stop().await;

    let data = tempfile::tempdir().unwrap();
    let server =
        crate::support::ServerProcess::start_with(data.path(), None, &["--sagas-database", &url]);
    let http = tidings_client::Client::new(&format!("http://{}", server.http)).unwrap();
    for key in ["o-1", "o-2"] {
        let ours = runner.instance(key).await.unwrap().unwrap();
        let served = http.saga_instance("checkout", key).await.unwrap();
        assert_eq!(served.status, ours.status.to_string(), "{key}");
        assert_eq!(served.state, ours.state);
        assert_eq!(served.version, ours.version);
        let inputs = |h: &[String]| h.to_vec();
        assert_eq!(
            inputs(
                &served
                    .history
                    .iter()
                    .map(|h| h.input.clone())
                    .collect::<Vec<_>>()
            ),
            ours.history
                .iter()
                .map(|h| h.input.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            served
                .timeouts
                .iter()
                .map(|t| (t.name.clone(), t.due_ms))
                .collect::<Vec<_>>(),
            ours.timeouts
                .iter()
                .map(|t| (t.name.clone(), t.due_at_ms))
                .collect::<Vec<_>>()
        );
        assert_eq!(served.compensations.len(), ours.compensations.len());
    }
    let running = http
        .saga_instances(
            "checkout",
            &tidings_api::SagaListQuery {
                status: Some("running".into()),
                limit: None,
            },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = running.instances.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["o-2"]);
    let all = http
        .saga_instances("checkout", &tidings_api::SagaListQuery::default())
        .await
        .unwrap();
    assert_eq!(all.instances.len(), 2);

    let code = |e: tidings_client::ClientError| e.to_string();
    let unknown = code(http.saga_instance("checkout", "o-404").await.unwrap_err());
    assert!(unknown.contains("unknown_saga_instance"), "{unknown}");
    assert!(
        unknown.contains("saga checkout has no instance o-404"),
        "{unknown}"
    );
    let bad = code(
        http.saga_instances(
            "checkout",
            &tidings_api::SagaListQuery {
                status: Some("paused".into()),
                limit: None,
            },
        )
        .await
        .unwrap_err(),
    );
    assert!(
        bad.contains("invalid_request") && bad.contains("\"paused\""),
        "{bad}"
    );

    // The command line prints the same instance.
    let out = std::process::Command::new(crate::support::tidings_bin())
        .args(["--server", &format!("http://{}", server.http)])
        .args(["sagas", "show", "checkout", "o-1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "saga checkout instance o-1: compensated at version 4",
        "event payment.failed",
        "-> compensating (the payment failed)",
        "compensation cancel-booking -> compensating",
        "compensation release-stock -> compensated",
        "no pending timeouts",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    drop(server);

    // A server without the database says how to give it one.
    let bare = crate::support::ServerProcess::start(data.path(), None);
    let http = tidings_client::Client::new(&format!("http://{}", bare.http)).unwrap();
    let err = code(http.saga_instance("checkout", "o-1").await.unwrap_err());
    assert!(
        err.contains("sagas_not_configured") && err.contains("--sagas-database"),
        "{err}"
    );
}

#[test]
fn killed_sagas_end_completed_or_compensated_on_a_server() {
    if std::env::var(CHILD_ENV).is_ok() {
        killed_sagas_on("", "", 0, 0, true);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::ServerProcess::start(dir.path(), None);
    killed_sagas_on(
        &saga_test("killed_sagas_end_completed_or_compensated_on_a_server"),
        &format!("http://{}", server.http),
        300,
        400,
        true,
    );
}

#[test]
fn killed_sagas_end_completed_or_compensated_on_the_postgres_backend() {
    if std::env::var(CHILD_ENV).is_ok() {
        killed_sagas_on("", "", 0, 0, true);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some((_client, url)) =
        runtime.block_on(crate::postgres::fresh_database("tidings_saga_backend"))
    else {
        return;
    };
    drop(runtime);
    killed_sagas_on(
        &saga_test("killed_sagas_end_completed_or_compensated_on_the_postgres_backend"),
        &url,
        300,
        400,
        true,
    );
}
