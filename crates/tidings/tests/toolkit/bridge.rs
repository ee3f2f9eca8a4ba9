//! The bus bridged to durable topics: handlers written for the in-process
//! bus run unchanged on events that went through a topic.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::bridge::forward;
use tidings::router::Router;
use tidings::{CloudEvent, Mode, Publisher};
use tidings_bus::Bus;

use crate::embedded::embedded;
use crate::support::{event, fresh, n_of, Harness, PATIENCE};

/// The guides' first stage: a bus and an async handler on it, written once.
fn inventory(
    bus: &Bus,
    seen: Arc<Mutex<Vec<u64>>>,
    fail_first: Arc<AtomicI32>,
) -> tidings_bus::Subscription {
    bus.on_async::<CloudEvent, _, _>(move |e: Arc<CloudEvent>| {
        let (seen, fail_first) = (Arc::clone(&seen), Arc::clone(&fail_first));
        async move {
            if e.ty() != "test.n" {
                return Ok(());
            }
            // The first call fails, as a flaky dependency does.
            if fail_first.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err("stock service timed out");
            }
            seen.lock().unwrap().push(n_of(&e));
            Ok(())
        }
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_handlers_run_unchanged_on_a_durable_topic() {
    let h = embedded(Mode::Queue).await.unwrap();
    let topic = fresh("bridged");
    // The emitting side keeps emitting on its bus; the bridge makes it durable.
    let producer_bus = Bus::new();
    let _bridge = forward(&producer_bus, "test.*", Publisher::new(h.backend()), &topic).unwrap();
    // The handling side keeps its handler on its bus; the router feeds it.
    let consumer_bus = Bus::new();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let _handler = inventory(
        &consumer_bus,
        Arc::clone(&seen),
        Arc::new(AtomicI32::new(1)),
    );
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &fresh("inventory"))
        .key_ordering()
        .to_bus(consumer_bus);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));

    for n in 0..20 {
        producer_bus.emit(event(n, Some("sku-1"))).unwrap();
    }
    // Not matching the pattern: not forwarded.
    producer_bus
        .emit(CloudEvent::new("/shop", "other.thing"))
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen.lock().unwrap().len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        (0..20).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(report.handled, 20, "{report:?}");
    assert_eq!(
        report.retried, 1,
        "the failed handler was retried: {report:?}"
    );
}
