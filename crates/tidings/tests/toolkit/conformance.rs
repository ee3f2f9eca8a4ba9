//! The conformance suite: what every backend must do, in each mode, as far as
//! its declared capabilities reach. Each check takes a [`Harness`] and makes
//! its own topics and groups; `conformance!` turns the list into tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::backend::Backoff;
use tidings::router::{Breaker, HandlerError, Retry, Router};
use tidings::{CloudEvent, Error, Publisher, Support};
use tokio::time::Instant;

use crate::support::{
    dead_letters, event, fresh, n_of, no_dead_letters, options, spawn_router, subscribe,
    take_acked, take_acked_then_quiet, until, Harness, PATIENCE,
};

/// Runs every check of the suite against the harness `$make` yields (`None`
/// skips).
macro_rules! conformance {
    ($make:expr) => {
        conformance!(@each $make;
            events_round_trip_with_their_attributes,
            groups_share_the_load_and_fan_out,
            a_subscriber_that_restarts_resumes_where_it_left,
            a_nack_is_delivered_again_after_its_delay,
            after_max_deliveries_an_event_is_dead_lettered_with_reason_and_attempts,
            attempts_outlive_the_subscriber_that_counted_them,
            a_reject_dead_letters_at_once,
            an_expired_lease_is_delivered_again,
            a_dropped_delivery_is_given_back_uncounted,
            publish_dedup_stores_an_event_once,
            emitted_events_carry_correlation_and_causation,
            the_router_retries_in_process_and_keeps_the_lease,
            errors_are_classified,
            key_order_holds_and_a_failing_key_blocks_no_other,
            an_open_breaker_pauses_without_spending_deliveries,
            a_slow_try_times_out,
            shutdown_lets_handlers_finish_and_loses_nothing,
            a_backend_restart_loses_nothing_acknowledged,
            a_group_never_consumes_another_topic_than_asked,
            a_new_group_starts_where_it_is_asked,
            the_inbox_makes_each_effect_once,
            a_saga_completes_compensates_and_times_out
        );
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(harness) = $make.await else { return };
                crate::conformance::$check(&harness).await;
            }
        )*
    };
}
pub(crate) use conformance;

/// Publishes events `from..to` to `topic`, keyed by `key`.
async fn publish_range(h: &impl Harness, topic: &str, from: u64, to: u64, key: Option<&str>) {
    let publisher = Publisher::new(h.backend());
    let events = (from..to).map(|n| event(n, key)).collect();
    publisher.publish_all(topic, events).await.unwrap();
}

pub(crate) async fn events_round_trip_with_their_attributes(h: &impl Harness) {
    let topic = fresh("round-trip");
    let publisher = Publisher::new(h.backend());
    let sent: Vec<CloudEvent> = (0..50)
        .map(|n| {
            event(n, Some(&format!("key-{}", n % 7)))
                .with_subject(format!("order-{n}"))
                .with_correlationid(format!("flow-{}", n % 3))
                .with_extension("tenant", "acme")
                .unwrap()
        })
        .collect();
    let receipts = publisher.publish_all(&topic, sent.clone()).await.unwrap();
    assert_eq!(receipts.len(), 50);
    let places: BTreeSet<(u32, u64)> = receipts.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(places.len(), 50, "every event has a place of its own");
    assert!(receipts.iter().all(|r| !r.duplicate));

    let mut sub = subscribe(h, options(h, &topic, &fresh("g"))).await;
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < 50 && Instant::now() < deadline {
        for d in sub
            .next_batch(64, Duration::from_millis(200))
            .await
            .unwrap()
        {
            let e = d.event().unwrap().clone();
            let receipt = &receipts[usize::try_from(n_of(&e)).unwrap()];
            assert_eq!(
                (d.partition(), d.offset()),
                (receipt.partition, receipt.offset)
            );
            assert_eq!(d.attempt(), 1);
            got.insert(n_of(&e), e);
            d.ack().await.unwrap();
        }
    }
    assert_eq!(got.len(), 50);
    for s in &sent {
        let r = &got[&n_of(s)];
        assert_eq!(
            (r.id(), r.source(), r.ty(), r.subject(), r.data()),
            (s.id(), s.source(), s.ty(), s.subject(), s.data())
        );
        assert_eq!(r.partitionkey(), s.partitionkey());
        assert_eq!(r.correlationid(), s.correlationid());
        assert_eq!(r.extension("tenant"), s.extension("tenant"));
    }
    sub.close().await.unwrap();
}

pub(crate) async fn groups_share_the_load_and_fan_out(h: &impl Harness) {
    let topic = fresh("load");
    let (shared, other) = (fresh("shared"), fresh("other"));
    Publisher::new(h.backend())
        .publish_all(&topic, vec![event(u64::MAX, None)])
        .await
        .unwrap();
    // Members first, so that they all take part from the start.
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(
            subscribe(h, options(h, &topic, &shared))
                .await
                .with_prefetch(8),
        );
    }
    let mut fan_out = subscribe(h, options(h, &topic, &other)).await;
    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut readers = Vec::new();
    for (i, mut sub) in members.into_iter().enumerate() {
        let seen = Arc::clone(&seen);
        readers.push(tokio::spawn(async move {
            let deadline = Instant::now() + PATIENCE;
            while seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.1 != u64::MAX)
                .count()
                < 300
                && Instant::now() < deadline
            {
                for d in sub.next_batch(8, Duration::from_millis(100)).await.unwrap() {
                    // Slow enough that no member can take everything.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    seen.lock().unwrap().push((i, n_of(d.event().unwrap())));
                    // A member whose session ran out (a slow machine) loses
                    // its partitions: the ack answers that the event goes
                    // to another attempt, which the counts below allow.
                    match d.ack().await {
                        Ok(()) | Err(Error::LeaseExpired(_)) => {}
                        Err(e) => panic!("ack: {e}"),
                    }
                }
            }
            sub.close().await.unwrap();
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..3u64 {
        let backend = h.backend();
        let topic = topic.clone();
        publishers.push(tokio::spawn(async move {
            let publisher = Publisher::new(backend);
            for batch in 0..10u64 {
                let from = p * 100 + batch * 10;
                let events = (from..from + 10).map(|n| event(n, None)).collect();
                publisher.publish_all(&topic, events).await.unwrap();
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let distinct: BTreeSet<u64> = seen
        .iter()
        .map(|s| s.1)
        .filter(|n| *n != u64::MAX)
        .collect();
    assert_eq!(distinct, (0..300).collect(), "the group got every event");
    if h.backend().capabilities(h.mode()).per_message_ack == Support::Native {
        assert_eq!(seen.len(), 301, "and each once");
    }
    let members: BTreeSet<usize> = seen.iter().map(|s| s.0).collect();
    assert!(
        members.len() >= 2,
        "the load was shared: only {members:?} got events"
    );

    let all = take_acked(&mut fan_out, 301).await;
    assert_eq!(all.len(), 301, "another group gets every event too");
    fan_out.close().await.unwrap();
}

pub(crate) async fn a_subscriber_that_restarts_resumes_where_it_left(h: &impl Harness) {
    let (topic, group) = (fresh("resume"), fresh("g"));
    publish_range(h, &topic, 0, 40, None).await;
    let mut first = subscribe(h, options(h, &topic, &group))
        .await
        .with_prefetch(1);
    let mut acked = BTreeSet::new();
    while acked.len() < 20 {
        let d = first.next().await.unwrap().unwrap();
        acked.insert(n_of(d.event().unwrap()));
        d.ack().await.unwrap();
    }
    first.close().await.unwrap();

    let mut second = subscribe(h, options(h, &topic, &group)).await;
    let rest = take_acked(&mut second, 20).await;
    let rest: BTreeSet<u64> = rest.keys().copied().collect();
    assert!(
        acked.is_disjoint(&rest),
        "acked events came again: {:?}",
        acked.intersection(&rest)
    );
    let all: BTreeSet<u64> = acked.union(&rest).copied().collect();
    assert_eq!(all, (0..40).collect(), "nothing was lost");
    assert!(second
        .next_batch(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    second.close().await.unwrap();
}

pub(crate) async fn a_nack_is_delivered_again_after_its_delay(h: &impl Harness) {
    let (topic, group) = (fresh("nack"), fresh("g"));
    publish_range(h, &topic, 0, 1, None).await;
    let mut sub = subscribe(h, options(h, &topic, &group)).await;
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(d.attempt(), 1);
    let nacked = Instant::now();
    d.nack(Some(Duration::from_millis(400)), "try later")
        .await
        .unwrap();
    let again = sub.next().await.unwrap().unwrap();
    let waited = nacked.elapsed();
    assert!(
        waited >= Duration::from_millis(390),
        "redelivered after {waited:?}"
    );
    assert_eq!((n_of(again.event().unwrap()), again.attempt()), (0, 2));
    again.ack().await.unwrap();
    sub.close().await.unwrap();
}

pub(crate) async fn after_max_deliveries_an_event_is_dead_lettered_with_reason_and_attempts(
    h: &impl Harness,
) {
    let (topic, group) = (fresh("max"), fresh("g"));
    publish_range(h, &topic, 7, 8, None).await;
    let mut o = options(h, &topic, &group);
    o.max_deliveries = 2;
    o.backoff = Backoff {
        initial: Duration::from_millis(10),
        factor: 1,
        max: Duration::from_millis(10),
    };
    let mut sub = subscribe(h, o).await;
    for attempt in 1..=2 {
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.attempt(), attempt);
        d.nack(None, &format!("boom {attempt}")).await.unwrap();
    }
    assert!(
        sub.next_batch(10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty(),
        "a dead letter is not delivered to its group again"
    );
    let dead = dead_letters(h, &topic, &group, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (7, 2));
    assert!(dead[0].2.contains("boom 2"), "{dead:?}");
    sub.close().await.unwrap();
}

pub(crate) async fn attempts_outlive_the_subscriber_that_counted_them(h: &impl Harness) {
    if !h.attempts_are_durable() {
        return;
    }
    let (topic, group) = (fresh("attempts"), fresh("g"));
    publish_range(h, &topic, 4, 5, None).await;
    let mut o = options(h, &topic, &group);
    o.max_deliveries = 3;
    let mut sub = subscribe(h, o.clone()).await;
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(d.attempt(), 1);
    d.nack(Some(Duration::ZERO), "first").await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(d.attempt(), 2);
    d.nack(Some(Duration::from_millis(200)), "second")
        .await
        .unwrap();
    sub.close().await.unwrap();

    // Another subscriber of the group goes on counting: its first delivery
    // is the third attempt, and the last.
    let mut sub = subscribe(h, o).await;
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!((n_of(d.event().unwrap()), d.attempt()), (4, 3));
    d.nack(None, "third").await.unwrap();
    let dead = dead_letters(h, &topic, &group, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (4, 3));
    assert!(dead[0].2.contains("third"), "{dead:?}");
    sub.close().await.unwrap();
}

pub(crate) async fn a_reject_dead_letters_at_once(h: &impl Harness) {
    let (topic, group) = (fresh("reject"), fresh("g"));
    publish_range(h, &topic, 3, 4, None).await;
    let mut sub = subscribe(h, options(h, &topic, &group)).await;
    let d = sub.next().await.unwrap().unwrap();
    d.reject("poison: no such product").await.unwrap();
    let dead = dead_letters(h, &topic, &group, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0, dead[0].1), (3, 1));
    assert!(dead[0].2.contains("no such product"));
    assert!(sub
        .next_batch(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    sub.close().await.unwrap();
}

pub(crate) async fn an_expired_lease_is_delivered_again(h: &impl Harness) {
    if h.backend().capabilities(h.mode()).lease_extension != Support::Native {
        // Stream mode's leases are partitions held while the member lives.
        return;
    }
    let (topic, group) = (fresh("lease"), fresh("g"));
    publish_range(h, &topic, 0, 1, None).await;
    let mut o = options(h, &topic, &group);
    o.ack_timeout = Duration::from_millis(300);
    let mut sub = subscribe(h, o).await.with_prefetch(1);
    let held = sub.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!((n_of(again.event().unwrap()), again.attempt()), (0, 2));
    assert!(matches!(held.ack().await, Err(Error::LeaseExpired(_))));
    again.ack().await.unwrap();
    sub.close().await.unwrap();
}

pub(crate) async fn a_dropped_delivery_is_given_back_uncounted(h: &impl Harness) {
    let (topic, group) = (fresh("dropped"), fresh("g"));
    publish_range(h, &topic, 0, 1, None).await;
    let mut sub = subscribe(h, options(h, &topic, &group))
        .await
        .with_prefetch(1);
    let d = sub.next().await.unwrap().unwrap();
    drop(d);
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!((n_of(again.event().unwrap()), again.attempt()), (0, 1));
    again.ack().await.unwrap();
    sub.close().await.unwrap();
}

pub(crate) async fn publish_dedup_stores_an_event_once(h: &impl Harness) {
    if !h.backend().capabilities(h.mode()).publish_dedup.available() {
        return;
    }
    let (topic, group) = (fresh("dedup"), fresh("g"));
    let publisher = Publisher::new(h.backend());
    let e = event(5, Some("k"));
    let first = publisher.publish(&topic, e.clone()).await.unwrap();
    let again = publisher.publish(&topic, e).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
    // Event 6 in the same partition, behind where a stored duplicate would be.
    publisher
        .publish(&topic, event(6, Some("k")))
        .await
        .unwrap();
    let mut sub = subscribe(h, options(h, &topic, &group)).await;
    let got = take_acked_then_quiet(&mut sub, 2).await;
    assert_eq!(got, BTreeMap::from([(5, 1), (6, 1)]));
    sub.close().await.unwrap();
}

pub(crate) async fn emitted_events_carry_correlation_and_causation(h: &impl Harness) {
    let (input, output, group) = (fresh("in"), fresh("out"), fresh("g"));
    let sent: Vec<CloudEvent> = (0..5)
        .map(|n| event(n, None).with_correlationid("checkout-42"))
        .collect();
    let causes: BTreeMap<u64, String> = sent.iter().map(|e| (n_of(e), e.id().to_owned())).collect();
    Publisher::new(h.backend())
        .publish_all(&input, sent)
        .await
        .unwrap();
    let mut router = Router::new(h.backend());
    let out = output.clone();
    router.route(&input, &group).mode(h.mode()).on(
        "test.n",
        move |ctx, data: serde_json::Value| {
            let out = out.clone();
            async move {
                let reply = CloudEvent::new("/handler", "test.out")
                    .with_json(&data)
                    .map_err(HandlerError::dead_letter)?;
                ctx.emit(&out, reply);
                Ok::<(), HandlerError>(())
            }
        },
    );
    let (stop, run) = spawn_router(router);
    let mut sub = subscribe(h, options(h, &output, &fresh("reader"))).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < 5 && Instant::now() < deadline {
        for d in sub
            .next_batch(10, Duration::from_millis(200))
            .await
            .unwrap()
        {
            got.push(d.event().unwrap().clone());
            d.ack().await.unwrap();
        }
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(got.len(), 5);
    for e in &got {
        assert_eq!(e.ty(), "test.out");
        assert_eq!(e.correlationid(), Some("checkout-42"));
        assert_eq!(e.causationid(), Some(causes[&n_of(e)].as_str()));
        assert_ne!(e.id(), causes[&n_of(e)]);
    }
    assert_eq!(report.handled, 5);
    sub.close().await.unwrap();
}

pub(crate) async fn the_router_retries_in_process_and_keeps_the_lease(h: &impl Harness) {
    let (topic, group) = (fresh("retry"), fresh("g"));
    publish_range(h, &topic, 0, 1, None).await;
    let tries: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    let mut router = Router::new(h.backend());
    let seen = Arc::clone(&tries);
    let fixed = Duration::from_millis(1000);
    router
        .route(&topic, &group)
        .mode(h.mode())
        // Three waits of 0.5 to 1 s: longer than the lease, together.
        .ack_timeout(Duration::from_millis(1000))
        .retry(Retry {
            tries: 4,
            backoff: Backoff {
                initial: fixed,
                factor: 1,
                max: fixed,
            },
        })
        .on_event("test.n", move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap()
                    .push((ctx.delivery_attempt(), ctx.try_number()));
                if ctx.try_number() < 4 {
                    return Err(HandlerError::retry("not yet"));
                }
                Ok(())
            }
        });
    let (stop, run) = spawn_router(router);
    until("the fourth try", || tries.lock().unwrap().len() >= 4).await;
    // Long enough for a lost lease to show as a second delivery.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(
        *tries.lock().unwrap(),
        vec![(1, 1), (1, 2), (1, 3), (1, 4)],
        "one delivery, four tries"
    );
    assert_eq!((report.handled, report.retried, report.nacked), (1, 3, 0));
    assert_eq!(report.answer_failures, 0);
}

pub(crate) async fn errors_are_classified(h: &impl Harness) {
    let (topic, group) = (fresh("classes"), fresh("g"));
    let publisher = Publisher::new(h.backend());
    let kinds = ["t.drop", "t.poison", "t.flaky"];
    let events = kinds
        .iter()
        .map(|ty| {
            CloudEvent::new("/conformance", *ty)
                .with_json(&serde_json::json!({ "n": 1 }))
                .unwrap()
        })
        .collect();
    publisher.publish_all(&topic, events).await.unwrap();
    let flaky_calls = Arc::new(AtomicU64::new(0));
    let calls = Arc::clone(&flaky_calls);
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &group)
        .mode(h.mode())
        .max_deliveries(2)
        .redelivery_delay(Duration::from_millis(50))
        .retry(Retry {
            tries: 2,
            backoff: Backoff {
                initial: Duration::from_millis(10),
                factor: 1,
                max: Duration::from_millis(10),
            },
        })
        .on_event("t.drop", |_ctx| async {
            Err(HandlerError::drop_event("nothing to do"))
        })
        .on_event("t.poison", |_ctx| async {
            Err(HandlerError::dead_letter("bad total"))
        })
        .on_event("t.flaky", move |_ctx| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("database unreachable") }
        });
    let (stop, run) = spawn_router(router);
    let dead = dead_letters(h, &topic, &group, 2).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let by_error: BTreeMap<bool, (u32, String)> = dead
        .into_iter()
        .map(|(_, attempts, error)| (error.contains("bad total"), (attempts, error)))
        .collect();
    assert_eq!(by_error[&true].0, 1, "dead-lettered at the first attempt");
    let (attempts, error) = &by_error[&false];
    assert_eq!(*attempts, 2, "after max_deliveries: {error}");
    assert!(error.contains("database unreachable"), "{error}");
    assert_eq!(
        flaky_calls.load(Ordering::SeqCst),
        4,
        "two tries in each of two deliveries"
    );
    assert_eq!(
        (report.dropped, report.dead_lettered, report.handled),
        (1, 1, 0)
    );
    assert_eq!(report.nacked, 2);
}

pub(crate) async fn key_order_holds_and_a_failing_key_blocks_no_other(h: &impl Harness) {
    let (topic, group) = (fresh("keys"), fresh("g"));
    let publisher = Publisher::new(h.backend());
    // Interleaved: k0 n=0, k1 n=1, ..., k4 n=4, k0 n=5, ...
    let events = (0..50u64)
        .map(|n| event(n, Some(&format!("k{}", n % 5))))
        .collect();
    publisher.publish_all(&topic, events).await.unwrap();
    let log: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let seen = Arc::clone(&log);
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &group)
        .mode(h.mode())
        .key_ordering()
        .concurrency(8)
        .redelivery_delay(Duration::from_millis(300))
        .retry(Retry {
            tries: 1,
            ..Retry::default()
        })
        .on_event("test.n", move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                let n = n_of(ctx.event());
                // Key k0's first event fails its first delivery.
                let fail = n == 0 && ctx.delivery_attempt() == 1;
                seen.lock().unwrap().push((n, !fail));
                if fail {
                    return Err("k0 is stuck for a while");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(())
            }
        });
    let (stop, run) = spawn_router(router);
    until("every event handled", || {
        log.lock().unwrap().iter().filter(|e| e.1).count() >= 50
    })
    .await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    let log = log.lock().unwrap().clone();
    for k in 0..5 {
        let handled: Vec<u64> = log
            .iter()
            .filter(|e| e.1 && e.0 % 5 == k)
            .map(|e| e.0)
            .collect();
        let expected: Vec<u64> = (0..50).filter(|n| n % 5 == k).collect();
        assert_eq!(handled, expected, "key k{k} in publish order, each once");
    }
    let failed_at = log.iter().position(|e| !e.1).unwrap();
    let k0_done_at = log.iter().position(|e| e.1 && e.0 == 0).unwrap();
    let others_meanwhile = log[failed_at..k0_done_at]
        .iter()
        .filter(|e| e.0 % 5 != 0)
        .count();
    assert!(
        others_meanwhile > 0,
        "other keys went on while k0 waited: {log:?}"
    );
    assert_eq!((report.handled, report.nacked), (50, 1));
}

pub(crate) async fn an_open_breaker_pauses_without_spending_deliveries(h: &impl Harness) {
    let (topic, group) = (fresh("breaker"), fresh("g"));
    publish_range(h, &topic, 0, 6, None).await;
    let down = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicU64::new(0));
    let handled: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let (d, f, seen) = (
        Arc::clone(&down),
        Arc::clone(&failures),
        Arc::clone(&handled),
    );
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &group)
        .mode(h.mode())
        .concurrency(1)
        .max_deliveries(3)
        .redelivery_delay(Duration::from_millis(10))
        .retry(Retry {
            tries: 1,
            ..Retry::default()
        })
        .breaker(Breaker {
            failures: 3,
            open_for: Duration::from_millis(500),
        })
        .on_event("test.n", move |ctx| {
            let (down, failures, seen) = (Arc::clone(&d), Arc::clone(&f), Arc::clone(&seen));
            async move {
                if down.load(Ordering::SeqCst) {
                    failures.fetch_add(1, Ordering::SeqCst);
                    return Err("payment gateway down");
                }
                seen.lock().unwrap().insert(n_of(ctx.event()));
                Ok(())
            }
        });
    let (stop, run) = spawn_router(router);
    // The breaker opens at the third failure; without it, 400 ms more of
    // failures 10 ms apart would spend every delivery of the first events.
    until("three failures", || failures.load(Ordering::SeqCst) >= 3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    down.store(false, Ordering::SeqCst);
    until("every event handled", || handled.lock().unwrap().len() == 6).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.dead_lettered, 0);
    assert!(report.released >= 1, "{report:?}");
    assert!(
        report.nacked <= 2,
        "failures before the breaker opened: {report:?}"
    );
    let dead = no_dead_letters(h, &topic, &group).await;
    assert!(dead.is_empty(), "{dead:?}");
}

pub(crate) async fn a_slow_try_times_out(h: &impl Harness) {
    let (topic, group) = (fresh("timeout"), fresh("g"));
    publish_range(h, &topic, 0, 1, None).await;
    let tries: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = Arc::clone(&tries);
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &group)
        .mode(h.mode())
        .timeout(Duration::from_millis(100))
        .on_event("test.n", move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                if ctx.try_number() == 1 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                seen.lock().unwrap().push(ctx.try_number());
                Ok::<(), HandlerError>(())
            }
        });
    let (stop, run) = spawn_router(router);
    until("the second try", || !tries.lock().unwrap().is_empty()).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(*tries.lock().unwrap(), vec![2]);
    assert_eq!((report.handled, report.retried), (1, 1));
}

pub(crate) async fn shutdown_lets_handlers_finish_and_loses_nothing(h: &impl Harness) {
    let (topic, group) = (fresh("shutdown"), fresh("g"));
    publish_range(h, &topic, 0, 20, None).await;
    let started = Arc::new(AtomicU64::new(0));
    let first: Arc<Mutex<Vec<u64>>> = Arc::default();
    let make = |handled: Arc<Mutex<Vec<u64>>>, started: Arc<AtomicU64>| {
        let mut router = Router::new(h.backend()).shutdown_timeout(Duration::from_secs(10));
        router
            .route(&topic, &group)
            .mode(h.mode())
            .concurrency(4)
            .on_event("test.n", move |ctx| {
                let (handled, started) = (Arc::clone(&handled), Arc::clone(&started));
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    handled.lock().unwrap().push(n_of(ctx.event()));
                    Ok::<(), HandlerError>(())
                }
            });
        router
    };
    let (stop, run) = spawn_router(make(Arc::clone(&first), Arc::clone(&started)));
    until("handlers under way", || started.load(Ordering::SeqCst) >= 2).await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    let first = first.lock().unwrap().clone();
    assert!(!first.is_empty());
    assert_eq!(
        report.handled,
        started.load(Ordering::SeqCst),
        "every handler that started finished: {report:?}"
    );
    assert!(first.len() < 20, "the run stopped early");

    let second: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (stop, run) = spawn_router(make(Arc::clone(&second), Arc::new(AtomicU64::new(0))));
    until("the rest handled", || {
        let all: BTreeSet<u64> = first
            .iter()
            .chain(second.lock().unwrap().iter())
            .copied()
            .collect();
        all.len() == 20
    })
    .await;
    stop.send(()).unwrap();
    run.await.unwrap();
    if h.backend().capabilities(h.mode()).per_message_ack == Support::Native {
        let again: Vec<u64> = second
            .lock()
            .unwrap()
            .iter()
            .filter(|n| first.contains(n))
            .copied()
            .collect();
        assert!(
            again.is_empty(),
            "acked before the shutdown and handled again: {again:?}"
        );
    }
}

pub(crate) async fn a_backend_restart_loses_nothing_acknowledged(h: &impl Harness) {
    let (topic, group) = (fresh("restart"), fresh("g"));
    publish_range(h, &topic, 0, 100, None).await;
    let handled: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let seen = Arc::clone(&handled);
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &group)
        .mode(h.mode())
        .concurrency(4)
        // A delivery or an answer lost in the failure comes back when its
        // lease runs out: short leases keep that within the check's patience.
        .ack_timeout(Duration::from_secs(2))
        .on_event("test.n", move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                seen.lock().unwrap().insert(n_of(ctx.event()));
                Ok::<(), HandlerError>(())
            }
        });
    let (stop, run) = spawn_router(router);
    until("a third handled", || handled.lock().unwrap().len() >= 30).await;
    if !h.restart().await {
        stop.send(()).unwrap();
        run.await.unwrap();
        return;
    }
    // Published after the restart: the same backend handle reconnects.
    let publisher = Publisher::new(h.backend());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events = (100..200).map(|n| event(n, None)).collect();
        match publisher.publish_all(&topic, events).await {
            Ok(_) => break,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publishing after the restart: {e}"),
        }
    }
    // A cluster electing new leaders and deliveries lost with a connection
    // coming back after their lease take a while; nothing may be missing.
    let deadline = Instant::now() + PATIENCE * 2;
    while handled.lock().unwrap().len() < 200 {
        if Instant::now() > deadline {
            let seen = handled.lock().unwrap().clone();
            let missing: Vec<u64> = (0..200).filter(|n| !seen.contains(n)).collect();
            panic!("never handled after the failure: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    run.await.unwrap();
}

pub(crate) async fn a_group_never_consumes_another_topic_than_asked(h: &impl Harness) {
    let (first, second, group) = (fresh("first"), fresh("second"), fresh("g"));
    publish_range(h, &first, 0, 3, None).await;
    publish_range(h, &second, 100, 103, None).await;
    let mut on_first = subscribe(h, options(h, &first, &group)).await;
    assert_eq!(take_acked(&mut on_first, 3).await.len(), 3);
    on_first.close().await.unwrap();
    // The same group name on another topic: refused where group names are
    // the backend's alone, another group where they are the topic's; never
    // the first topic's events.
    match tidings::Subscriber::new(h.backend())
        .subscribe(options(h, &second, &group))
        .await
    {
        Err(Error::Config(message)) => assert!(message.contains(&first), "{message}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(mut on_second) => {
            let got = take_acked(&mut on_second, 3).await;
            assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![100, 101, 102]);
            on_second.close().await.unwrap();
        }
    }
}

pub(crate) async fn a_new_group_starts_where_it_is_asked(h: &impl Harness) {
    if !h.backend().capabilities(h.mode()).replay.available() {
        return;
    }
    let topic = fresh("replay");
    publish_range(h, &topic, 0, 5, None).await;
    // Clocks count milliseconds: a gap on both sides of the time asked.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish_range(h, &topic, 5, 10, None).await;
    let mut from_time = options(h, &topic, &fresh("g"));
    from_time.start = tidings::Start::Time(i64::try_from(at).unwrap());
    let mut latest = options(h, &topic, &fresh("g"));
    latest.start = tidings::Start::Latest;
    let mut from_time = subscribe(h, from_time).await;
    let mut latest = subscribe(h, latest).await;
    let mut earliest = subscribe(h, options(h, &topic, &fresh("g"))).await;

    let got = take_acked(&mut from_time, 5).await;
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (5..10).collect::<Vec<_>>()
    );
    let got = take_acked(&mut earliest, 10).await;
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // A group from the latest event sees only what comes after it joined;
    // joining may take a while, so publish until something arrives.
    let deadline = Instant::now() + PATIENCE;
    let mut n = 100;
    let first = loop {
        assert!(
            Instant::now() < deadline,
            "a group from the latest event got nothing"
        );
        publish_range(h, &topic, n, n + 1, None).await;
        n += 1;
        if let Some(d) = latest
            .next_batch(1, Duration::from_millis(300))
            .await
            .unwrap()
            .pop()
        {
            let first = n_of(d.event().unwrap());
            d.ack().await.unwrap();
            break first;
        }
    };
    assert!(
        first >= 100,
        "a group from the latest event got event {first}"
    );
    for sub in [from_time, latest, earliest] {
        sub.close().await.unwrap();
    }

    // From an offset: one key keeps its events in one partition, and a group
    // from the offset a receipt named starts with that event.
    let keyed = fresh("replay-offset");
    let receipts = Publisher::new(h.backend())
        .publish_all(&keyed, (0..10).map(|n| event(n, Some("k"))).collect())
        .await
        .unwrap();
    let mut from_offset = options(h, &keyed, &fresh("g"));
    from_offset.start = tidings::Start::Offset(receipts[6].offset);
    let mut from_offset = subscribe(h, from_offset).await;
    let got = take_acked(&mut from_offset, 4).await;
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (6..10).collect::<Vec<_>>(),
        "from offset {}",
        receipts[6].offset
    );
    from_offset.close().await.unwrap();
}

/// The inbox (PostgreSQL, beside the backend) makes each event's effect
/// once however often the backend delivers it: every event is published
/// twice (the backend keeps both where it has no publish dedup) and its
/// first acknowledgement is lost (a middleware outside the inbox fails the
/// try after the inbox committed), so it comes again. The effects hold
/// each event once, and the events the handler emitted, relayed from the
/// outbox back to the backend, are published once each.
pub(crate) async fn the_inbox_makes_each_effect_once(h: &impl Harness) {
    use tidings::inbox::{Inbox, InboxOptions};
    use tidings::outbox::{Relay, RelayOptions};

    let Some((client, url)) = crate::inbox::database().await else {
        return;
    };
    const N: u64 = 10;
    let (topic, group, out) = (fresh("inbox"), fresh("g"), fresh("receipts"));
    let events: Vec<CloudEvent> = (0..N).map(|n| event(n, None)).collect();
    let publisher = Publisher::new(h.backend());
    for _ in 0..2 {
        publisher.publish_all(&topic, events.clone()).await.unwrap();
    }
    let inbox = Inbox::connect(&url, InboxOptions::default()).await.unwrap();
    let relay = Relay::connect(&url, Publisher::new(h.backend()), RelayOptions::default())
        .await
        .unwrap();
    let (stop_relay, relay_run) = crate::inbox::spawn_relay(relay);
    let lost: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let lose_first_ack = move |ctx: tidings::router::Context, next: tidings::router::Next| {
        let lost = Arc::clone(&lost);
        async move {
            next.run(ctx.clone()).await?;
            if lost.lock().unwrap().insert(ctx.event().id().to_owned()) {
                return Err(HandlerError::retry("the acknowledgement was lost"));
            }
            Ok(())
        }
    };
    let mut router = Router::new(h.backend()).wrap(lose_first_ack);
    router
        .route(&topic, &group)
        .mode(h.mode())
        .retry(Retry {
            tries: 1,
            ..Retry::default()
        })
        .redelivery_delay(Duration::from_millis(100))
        .wrap(inbox.clone())
        .on_event(
            "test.n",
            crate::inbox::effect_handler(out.clone(), Duration::from_millis(20)),
        );
    let (stop, run) = spawn_router(router);
    until("every event handled and delivered again", || {
        let s = inbox.stats();
        s.handled == N && s.duplicates >= N
    })
    .await;
    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert!(report.nacked >= N, "{report:?}");
    let made = crate::inbox::effects(&client).await;
    assert_eq!(made, (0..N).map(|n| (n, 1)).collect(), "one effect each");

    let deadline = Instant::now() + PATIENCE;
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
            Instant::now() < deadline,
            "{left} emitted events not relayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_relay.send(()).unwrap();
    let relay = relay_run.await.unwrap();
    assert_eq!(relay.stats().published, N, "one emitted event each");
    let mut sub = subscribe(h, options(h, &out, &fresh("reader"))).await;
    let got = take_acked(&mut sub, N as usize).await;
    assert_eq!(got, (0..N).map(|n| (n, 1)).collect());
    sub.close().await.unwrap();
}

/// A saga (its state in PostgreSQL beside the backend) over the backend:
/// a paid checkout completes, a refused one and one past its deadline undo
/// their two steps last first, each undo event published once; the
/// deadline fires whatever the backend's delayed delivery.
pub(crate) async fn a_saga_completes_compensates_and_times_out(h: &impl Harness) {
    use crate::saga::{order_event, until_final, Order, Running};
    use tidings::saga::Status;

    let Some((_client, url)) = crate::inbox::database().await else {
        return;
    };
    let checkout = Running::start(&url, &h.backend(), "checkout", h.mode()).await;
    let (runner, topics) = (&checkout.runner, checkout.topics.clone());
    let orders = [
        ("paid", "succeed", 60_000),
        ("refused", "fail", 60_000),
        ("late", "ignore", 300),
    ];
    let publisher = Publisher::new(h.backend());
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
    let keys: Vec<String> = orders.iter().map(|o| o.0.to_owned()).collect();
    until_final(runner, &keys).await;
    for (key, status, undo) in [
        ("paid", Status::Completed, vec![]),
        (
            "refused",
            Status::Compensated,
            vec!["cancel-booking", "release-stock"],
        ),
        (
            "late",
            Status::Compensated,
            vec!["cancel-booking", "release-stock"],
        ),
    ] {
        let i = runner.instance(key).await.unwrap().unwrap();
        assert_eq!(i.status, status, "{key}");
        let undone: Vec<&str> = i
            .history
            .iter()
            .filter_map(|h| h.input.strip_prefix("compensation "))
            .collect();
        assert_eq!(undone, undo, "{key}: undone last first");
    }
    let mut sub = subscribe(h, options_for(h, &topics.undo)).await;
    let mut seen: BTreeMap<(String, String), u32> = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.values().sum::<u32>() < 4 && Instant::now() < deadline {
        for d in sub
            .next_batch(16, Duration::from_millis(200))
            .await
            .unwrap()
        {
            let e = d.event().unwrap();
            let key = (e.partitionkey().unwrap().to_owned(), e.ty().to_owned());
            *seen.entry(key).or_insert(0) += 1;
            d.ack().await.unwrap();
        }
    }
    sub.close().await.unwrap();
    let expected: BTreeMap<(String, String), u32> = ["refused", "late"]
        .iter()
        .flat_map(|k| {
            ["cancel-booking", "release-stock"].map(|ty| ((k.to_string(), ty.to_owned()), 1))
        })
        .collect();
    assert_eq!(seen, expected);
    checkout.stop().await;
}

/// Subscription options of the harness's mode for a reader of `topic`.
fn options_for(h: &impl Harness, topic: &str) -> tidings::SubscribeOptions {
    options(h, topic, &fresh("reader"))
}
