//! One behavioural test per promise of the bus.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use tidings_bus::{
    AsyncStart, AwaitMode, Bus, BusConfig, EmitError, Event, HandlerErrorKind, Overflow,
    StreamConfig, SubscribeError,
};
use tidings_types::CloudEvent;

#[derive(Debug, Clone, PartialEq)]
struct OrderPlaced {
    id: u32,
}

impl Event for OrderPlaced {
    fn event_type(&self) -> &str {
        "order.placed"
    }
}

#[derive(Debug)]
struct PaymentFailed;

impl Event for PaymentFailed {
    fn event_type(&self) -> &str {
        "payment.failed"
    }
}

/// A shared log of what handlers saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

#[test]
fn sync_handlers_run_in_registration_order_across_typed_and_pattern_subscriptions() {
    let bus = Bus::new();
    let seen = Seen::default();
    let (a, b, c) = (seen.clone(), seen.clone(), seen.clone());
    let _typed_1 = bus.on(move |e: &OrderPlaced| a.push(format!("typed-1 {}", e.id)));
    let _pattern = bus
        .on_pattern("order.*", move |e: &dyn Event| {
            b.push(format!("pattern {}", e.event_type()))
        })
        .unwrap();
    let _typed_2 = bus.on(move |e: &OrderPlaced| c.push(format!("typed-2 {}", e.id)));
    bus.emit(OrderPlaced { id: 1 }).unwrap();
    assert_eq!(
        seen.take(),
        ["typed-1 1", "pattern order.placed", "typed-2 1"]
    );
    bus.emit(PaymentFailed).unwrap();
    assert!(
        seen.take().is_empty(),
        "neither the type nor the pattern matches"
    );
}

#[test]
fn cloud_events_reach_pattern_subscribers_by_their_type() {
    let bus = Bus::new();
    let seen = Seen::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let _all = bus
        .on_pattern("*", move |e: &dyn Event| {
            s1.push(format!("* {}", e.event_type()))
        })
        .unwrap();
    let _orders = bus
        .on_pattern("order.*", move |e: &dyn Event| {
            let any: &dyn std::any::Any = e;
            let ce = any.downcast_ref::<CloudEvent>().unwrap();
            s2.push(format!("order.* {}", ce.source()));
        })
        .unwrap();
    bus.emit(CloudEvent::new("/shop", "order.placed")).unwrap();
    bus.emit(CloudEvent::new("/pay", "payment.failed")).unwrap();
    assert_eq!(
        seen.take(),
        ["* order.placed", "order.* /shop", "* payment.failed"]
    );
    assert!(matches!(
        bus.on_pattern("", |_: &dyn Event| ()),
        Err(SubscribeError::Pattern(_))
    ));
}

#[test]
fn the_handler_list_is_fixed_when_an_emit_starts() {
    let bus = Bus::new();
    let seen = Seen::default();
    let late: Arc<Mutex<Option<tidings_bus::Subscription>>> = Arc::default();
    let victim: Arc<Mutex<Option<tidings_bus::Subscription>>> = Arc::default();
    let (bus2, s1, late2, victim2) = (bus.clone(), seen.clone(), late.clone(), victim.clone());
    let _first = bus.on(move |_: &OrderPlaced| {
        s1.push("first");
        // Subscribing during an emit: the new handler misses this emit.
        let s = s1.clone();
        *late2.lock().unwrap() = Some(bus2.on(move |_: &OrderPlaced| s.push("late")));
        // Unsubscribing during an emit: the removed handler still gets this emit.
        drop(victim2.lock().unwrap().take());
    });
    let s2 = seen.clone();
    *victim.lock().unwrap() = Some(bus.on(move |_: &OrderPlaced| s2.push("victim")));
    bus.emit(OrderPlaced { id: 1 }).unwrap();
    assert_eq!(seen.take(), ["first", "victim"]);
    bus.emit(OrderPlaced { id: 2 }).unwrap();
    assert_eq!(seen.take(), ["first", "late"]);
}

#[test]
fn a_failing_or_panicking_handler_reaches_the_error_handler_and_harms_no_one() {
    let bus = Bus::new();
    let errors = Seen::default();
    let e2 = errors.clone();
    bus.on_error(move |err| {
        let what = match &err.kind {
            HandlerErrorKind::Failed(e) => format!("failed: {e}"),
            HandlerErrorKind::Panicked(m) => format!("panicked: {m}"),
        };
        e2.push(format!("{} {what}", err.event_type));
    });
    let seen = Seen::default();
    let s = seen.clone();
    let _bad = bus.on(|_: &OrderPlaced| -> Result<(), std::io::Error> {
        Err(std::io::Error::other("card declined"))
    });
    let _panics = bus.on(|e: &OrderPlaced| {
        if e.id == 1 {
            panic!("handler bug");
        }
    });
    let _good = bus.on(move |e: &OrderPlaced| s.push(format!("good {}", e.id)));
    bus.emit(OrderPlaced { id: 1 }).unwrap();
    bus.emit(OrderPlaced { id: 2 }).unwrap();
    assert_eq!(seen.take(), ["good 1", "good 2"]);
    assert_eq!(
        errors.take(),
        [
            "order.placed failed: card declined",
            "order.placed panicked: handler bug",
            "order.placed failed: card declined"
        ]
    );
    let stats = bus.stats();
    assert_eq!(
        (
            stats.handler_failures,
            stats.handler_panics,
            stats.errors_logged
        ),
        (2, 1, 0)
    );
}

/// Collects what `tracing` writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn with_no_error_handler_errors_are_logged_at_error_level_and_counted() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::ERROR)
        .finish();
    let bus = Bus::new();
    let _bad = bus.on(|_: &CloudEvent| -> Result<(), std::io::Error> {
        Err(std::io::Error::other("inventory down"))
    });
    let event = CloudEvent::new("/shop", "order.placed");
    tracing::subscriber::with_default(subscriber, || bus.emit(event.clone()).unwrap());
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("ERROR"), "{text}");
    assert!(text.contains("inventory down"), "{text}");
    assert!(text.contains(event.id()), "the log names the event: {text}");
    assert_eq!(bus.stats().errors_logged, 1);
    // A panicking error handler does not lose the error either.
    bus.on_error(|_| panic!("error handler bug"));
    bus.emit(event).unwrap();
    assert_eq!(bus.stats().errors_logged, 2);
}

#[test]
fn dropping_a_subscription_unsubscribes_and_once_runs_once() {
    let bus = Bus::new();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let sub = bus.on(move |_: &OrderPlaced| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    bus.emit(OrderPlaced { id: 1 }).unwrap();
    drop(sub);
    bus.emit(OrderPlaced { id: 2 }).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let c = count.clone();
    let sub = bus.on(move |_: &OrderPlaced| {
        c.fetch_add(10, Ordering::SeqCst);
    });
    sub.unsubscribe();
    bus.emit(OrderPlaced { id: 3 }).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let c = count.clone();
    let _once = bus.once(move |_: &OrderPlaced| {
        c.fetch_add(100, Ordering::SeqCst);
    });
    for id in 0..3 {
        bus.emit(OrderPlaced { id }).unwrap();
    }
    assert_eq!(count.load(Ordering::SeqCst), 101);
    assert_eq!(bus.listener_count::<OrderPlaced>("order.placed"), 0);

    let c = count.clone();
    bus.on(move |_: &OrderPlaced| {
        c.fetch_add(1000, Ordering::SeqCst);
    })
    .detach();
    bus.emit(OrderPlaced { id: 9 }).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1101);
}

#[test]
fn the_listener_warning_fires_once_per_type() {
    let bus = Bus::with_config(BusConfig {
        max_listeners: 3,
        ..BusConfig::default()
    });
    let mut subs: Vec<_> = (0..3).map(|_| bus.on(|_: &OrderPlaced| ())).collect();
    assert_eq!(bus.stats().listener_warnings, 0);
    subs.push(bus.on(|_: &OrderPlaced| ()));
    assert_eq!(bus.stats().listener_warnings, 1);
    subs.push(bus.on(|_: &OrderPlaced| ()));
    subs.truncate(2);
    subs.extend((0..4).map(|_| bus.on(|_: &OrderPlaced| ())));
    assert_eq!(bus.stats().listener_warnings, 1, "once per type");
    let _p: Vec<_> = (0..4).map(|_| bus.on(|_: &PaymentFailed| ())).collect();
    assert_eq!(
        bus.stats().listener_warnings,
        2,
        "another type warns on its own"
    );
    let quiet = Bus::with_config(BusConfig {
        max_listeners: 0,
        ..BusConfig::default()
    });
    let _many: Vec<_> = (0..50).map(|_| quiet.on(|_: &OrderPlaced| ())).collect();
    assert_eq!(quiet.stats().listener_warnings, 0);
}

#[test]
fn plain_emit_hands_over_to_async_handlers_without_waiting_for_them() {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let seen = Seen::default();
        let (g, s) = (gate.clone(), seen.clone());
        let _h = bus
            .on_async(move |e: Arc<OrderPlaced>| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    let _permit = g.acquire().await.unwrap();
                    s.push(format!("handled {}", e.id));
                }
            })
            .unwrap();
        bus.emit(OrderPlaced { id: 1 }).unwrap();
        bus.publish(OrderPlaced { id: 2 }).await.unwrap();
        assert!(
            seen.take().is_empty(),
            "both emits returned while the handler was blocked"
        );
        gate.add_permits(1);
        // One handler takes its events in order, so once 3 is handled, all are.
        let handled = bus.publish_and_wait(OrderPlaced { id: 3 }).await.unwrap();
        assert_eq!((handled.handlers, handled.failed), (1, 0));
        assert_eq!(
            seen.take(),
            ["handled 1", "handled 2", "handled 3"],
            "one handler sees events in order"
        );
    });
}

/// Runs `f` on a task of a one-thread runtime, where nothing else runs until `f`
/// awaits something that is not ready.
fn on_a_task<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async { tokio::spawn(f).await.unwrap() })
}

/// A handler that records its start, waits for a permit, and records its end.
fn gated_handler(
    bus: &Bus,
    gate: &Arc<tokio::sync::Semaphore>,
    seen: &Seen,
) -> tidings_bus::Subscription {
    let (g, s) = (gate.clone(), seen.clone());
    bus.on_async(move |e: Arc<OrderPlaced>| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.push(format!("start {}", e.id));
            g.acquire().await.unwrap().forget();
            s.push(format!("end {}", e.id));
        }
    })
    .unwrap()
}

#[test]
fn async_handlers_start_inside_an_emit_from_a_task_and_keep_emit_order_when_busy() {
    on_a_task(async {
        let bus = Bus::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let seen = Seen::default();
        let _h = gated_handler(&bus, &gate, &seen);
        bus.emit(OrderPlaced { id: 1 }).unwrap();
        assert_eq!(
            seen.take(),
            ["start 1"],
            "the handler ran inside emit up to its first pending await"
        );
        bus.emit(OrderPlaced { id: 2 }).unwrap();
        bus.publish(OrderPlaced { id: 3 }).await.unwrap();
        assert!(
            seen.take().is_empty(),
            "a busy handler's events wait their turn"
        );
        gate.add_permits(4);
        let handled = bus.publish_and_wait(OrderPlaced { id: 4 }).await.unwrap();
        assert_eq!((handled.handlers, handled.failed), (1, 0));
        assert_eq!(
            seen.take(),
            ["end 1", "start 2", "end 2", "start 3", "end 3", "start 4", "end 4"]
        );
        // Idle again, the handler starts inside the next emit and finishes there
        // when nothing it awaits is pending.
        gate.add_permits(1);
        bus.emit(OrderPlaced { id: 5 }).unwrap();
        assert_eq!(seen.take(), ["start 5", "end 5"]);
    });
}

#[test]
fn with_on_task_start_an_emit_never_runs_handler_code() {
    on_a_task(async {
        let bus = Bus::with_config(BusConfig {
            async_start: AsyncStart::OnTask,
            ..BusConfig::default()
        });
        let gate = Arc::new(tokio::sync::Semaphore::new(10));
        let seen = Seen::default();
        let _h = gated_handler(&bus, &gate, &seen);
        bus.emit(OrderPlaced { id: 1 }).unwrap();
        bus.publish(OrderPlaced { id: 2 }).await.unwrap();
        assert!(seen.take().is_empty(), "emits only queued the events");
        bus.publish_and_wait(OrderPlaced { id: 3 }).await.unwrap();
        assert_eq!(
            seen.take(),
            ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]
        );
    });
}

#[test]
fn emits_from_outside_the_runtime_leave_async_handlers_to_their_task() {
    let rt = runtime();
    let bus = Bus::new();
    let threads = Seen::default();
    let t = threads.clone();
    let _h = rt.block_on(async {
        bus.on_async(move |_: Arc<OrderPlaced>| {
            t.push(format!("{:?}", std::thread::current().id()));
            async {}
        })
        .unwrap()
    });
    let emitter = std::thread::spawn({
        let bus = bus.clone();
        move || {
            bus.emit(OrderPlaced { id: 1 }).unwrap();
            format!("{:?}", std::thread::current().id())
        }
    })
    .join()
    .unwrap();
    rt.block_on(async {
        while threads.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let ran_on = threads.take();
    assert_eq!(ran_on.len(), 1);
    assert_ne!(
        ran_on[0], emitter,
        "the handler ran on its task, not the emitting thread"
    );
}

#[test]
fn handlers_started_inside_emit_report_panics_and_errors_and_keep_going() {
    let errors = on_a_task(async {
        let bus = Bus::new();
        let errors = Seen::default();
        let e = errors.clone();
        bus.on_error(move |err| e.push(err.to_string()));
        let _h = bus
            .on_async(|e: Arc<OrderPlaced>| async move {
                match e.id {
                    1 => panic!("before any await"),
                    2 => {
                        tokio::task::yield_now().await;
                        panic!("after an await")
                    }
                    3 => Err(std::io::Error::other("refused at once")),
                    _ => Ok(()),
                }
            })
            .unwrap();
        let mut failed = Vec::new();
        for id in 1..=4 {
            failed.push(
                bus.publish_and_wait(OrderPlaced { id })
                    .await
                    .unwrap()
                    .failed,
            );
        }
        assert_eq!(failed, [1, 1, 1, 0]);
        assert_eq!(bus.stats().handler_panics, 2);
        assert_eq!(bus.stats().handler_failures, 1);
        errors.take()
    });
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("panicked on order.placed: before any await"));
    assert!(errors[1].contains("panicked on order.placed: after an await"));
    assert!(errors[2].contains("failed on order.placed: refused at once"));
}

#[test]
fn one_async_handler_never_runs_two_events_at_once_under_concurrent_emitters() {
    const EMITTERS: u32 = 4;
    const EACH: u32 = 2000;
    let rt = runtime();
    let (seen, overlaps) = rt.block_on(async {
        // Room for every event, so that plain emits are never refused.
        let bus = Bus::with_config(BusConfig {
            handler_queue_capacity: (EMITTERS * EACH) as usize,
            ..BusConfig::default()
        });
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (b, o, s) = (busy.clone(), overlaps.clone(), seen.clone());
        let _h = bus
            .on_async(move |e: Arc<OrderPlaced>| {
                let (b, o, s) = (b.clone(), o.clone(), s.clone());
                async move {
                    if b.swap(true, Ordering::AcqRel) {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    if e.id.is_multiple_of(7) {
                        // Some events wait, so later ones queue behind them.
                        tokio::task::yield_now().await;
                    } else if e.id.is_multiple_of(5) {
                        // Some take a while without waiting, so that other
                        // emitters find the handler running and queue.
                        for _ in 0..2000 {
                            std::hint::spin_loop();
                        }
                    }
                    s.lock().unwrap().push(e.id);
                    b.store(false, Ordering::Release);
                }
            })
            .unwrap();
        let tasks: Vec<_> = (0..EMITTERS)
            .map(|emitter| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    for n in 0..EACH {
                        let event = OrderPlaced {
                            id: emitter * EACH + n,
                        };
                        if n.is_multiple_of(2) {
                            bus.publish(event).await.unwrap();
                        } else {
                            bus.emit(event).unwrap_or_else(|_| panic!("queue overflow"));
                        }
                        if n.is_multiple_of(8) {
                            // Let the handler's task run in between.
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        bus.publish_and_wait(OrderPlaced { id: u32::MAX })
            .await
            .unwrap();
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        (seen, overlaps.load(Ordering::Relaxed))
    });
    assert_eq!(overlaps, 0, "the handler ran two events at once");
    assert_eq!(seen.len() as u32, EMITTERS * EACH + 1);
    for emitter in 0..EMITTERS {
        let mine: Vec<u32> = seen
            .iter()
            .copied()
            .filter(|id| id / EACH == emitter && *id != u32::MAX)
            .collect();
        let expected: Vec<u32> = (emitter * EACH..(emitter + 1) * EACH).collect();
        assert_eq!(mine, expected, "emitter {emitter}'s events in emit order");
    }
}

/// Two async handlers that record when they start and finish, and wait on a
/// shared barrier only in the concurrent case.
fn check_await_mode(mode: AwaitMode) -> Vec<String> {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::with_config(BusConfig {
            await_mode: mode,
            ..BusConfig::default()
        });
        let seen = Seen::default();
        let mut subs = Vec::new();
        for name in ["a", "b"] {
            let s = seen.clone();
            subs.push(
                bus.on_async(move |_: Arc<OrderPlaced>| {
                    let s = s.clone();
                    async move {
                        s.push(format!("{name} start"));
                        tokio::task::yield_now().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        s.push(format!("{name} end"));
                        if name == "b" {
                            return Err(std::io::Error::other("b fails"));
                        }
                        Ok(())
                    }
                })
                .unwrap(),
            );
        }
        let handled = bus.publish_and_wait(OrderPlaced { id: 1 }).await.unwrap();
        assert_eq!((handled.handlers, handled.failed), (2, 1));
        seen.take()
    })
}

#[test]
fn publish_and_wait_runs_async_handlers_one_after_another_when_configured() {
    assert_eq!(
        check_await_mode(AwaitMode::Sequential),
        ["a start", "a end", "b start", "b end"]
    );
}

#[test]
fn publish_and_wait_runs_async_handlers_concurrently_by_default() {
    let seen = check_await_mode(AwaitMode::Concurrent);
    assert_eq!(seen.len(), 4);
    let ends_before_both_started = seen.iter().position(|s| s.ends_with("end")).unwrap() < 2;
    assert!(
        !ends_before_both_started,
        "both started before either ended: {seen:?}"
    );
}

#[test]
fn async_handler_panics_and_errors_reach_the_error_handler() {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::new();
        let errors = Seen::default();
        let e2 = errors.clone();
        bus.on_error(move |err| e2.push(err.to_string()));
        let _p = bus
            .on_async(|e: Arc<OrderPlaced>| async move {
                if e.id == 1 {
                    panic!("async bug");
                }
            })
            .unwrap();
        let handled = bus.publish_and_wait(OrderPlaced { id: 1 }).await.unwrap();
        assert_eq!(handled.failed, 1);
        let handled = bus.publish_and_wait(OrderPlaced { id: 2 }).await.unwrap();
        assert_eq!(handled.failed, 0, "the handler task survived its panic");
        let errors = errors.take();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("panicked on order.placed: async bug"),
            "{errors:?}"
        );
    });
    assert_eq!(
        Bus::new()
            .on_async(|_: Arc<OrderPlaced>| async {})
            .unwrap_err(),
        SubscribeError::NoRuntime
    );
}

#[test]
fn a_full_stream_makes_async_emitters_wait() {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::new();
        let mut stream = bus.stream::<OrderPlaced>(StreamConfig { capacity: 2, overflow: Overflow::Wait });
        bus.publish(OrderPlaced { id: 1 }).await.unwrap();
        bus.publish(OrderPlaced { id: 2 }).await.unwrap();
        let bus2 = bus.clone();
        let third = tokio::spawn(async move { bus2.publish(OrderPlaced { id: 3 }).await });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "the publisher waits for room");
        // A sync emitter cannot wait: it gets the overflow as an error.
        let refused = bus.emit(OrderPlaced { id: 4 }).unwrap_err();
        assert!(matches!(refused, EmitError::Overflow { ref subscriptions, .. } if subscriptions.len() == 1));
        assert_eq!(next(&mut stream).await.unwrap().id, 1);
        third.await.unwrap().unwrap();
        assert_eq!(next(&mut stream).await.unwrap().id, 2);
        assert_eq!(next(&mut stream).await.unwrap().id, 3);
        assert_eq!(bus.stats().overflow_refused, 1);
    });
}

#[test]
fn a_drop_oldest_stream_keeps_the_newest_and_counts_the_rest() {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::new();
        let mut stream = bus.stream::<OrderPlaced>(StreamConfig {
            capacity: 3,
            overflow: Overflow::DropOldest,
        });
        for id in 0..10 {
            bus.emit(OrderPlaced { id }).unwrap();
        }
        assert_eq!(stream.dropped(), 7);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(next(&mut stream).await.unwrap().id);
        }
        assert_eq!(got, [7, 8, 9]);
    });
}

#[test]
fn an_error_stream_refuses_when_full_and_the_emit_says_so() {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::new();
        let seen = Seen::default();
        let s = seen.clone();
        let _sync = bus.on(move |e: &OrderPlaced| s.push(e.id.to_string()));
        let mut stream = bus.stream::<OrderPlaced>(StreamConfig {
            capacity: 1,
            overflow: Overflow::Error,
        });
        bus.emit(OrderPlaced { id: 1 }).unwrap();
        let err = bus.emit(OrderPlaced { id: 2 }).unwrap_err();
        let EmitError::Overflow {
            event_type,
            subscriptions,
        } = err;
        assert_eq!(
            (event_type.as_str(), subscriptions.len()),
            ("order.placed", 1)
        );
        assert_eq!(
            seen.take(),
            ["1", "2"],
            "other subscribers still got the event"
        );
        assert_eq!(next(&mut stream).await.unwrap().id, 1);
        drop(stream);
        bus.emit(OrderPlaced { id: 3 }).unwrap();
    });
}

#[test]
fn pattern_streams_carry_any_event_type() {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::new();
        let mut stream = bus
            .stream_pattern("payment.*", StreamConfig::default())
            .unwrap();
        bus.emit(OrderPlaced { id: 1 }).unwrap();
        bus.emit(PaymentFailed).unwrap();
        bus.emit(CloudEvent::new("/pay", "payment.completed"))
            .unwrap();
        assert_eq!(
            next(&mut stream).await.unwrap().event_type(),
            "payment.failed"
        );
        assert_eq!(
            next(&mut stream).await.unwrap().event_type(),
            "payment.completed"
        );
    });
}

#[test]
fn the_recorder_captures_what_was_emitted_by_type() {
    let bus = Bus::new();
    let recorder = bus.recorder();
    bus.emit(OrderPlaced { id: 1 }).unwrap();
    bus.emit(PaymentFailed).unwrap();
    bus.emit(OrderPlaced { id: 2 }).unwrap();
    assert_eq!(
        recorder.types(),
        ["order.placed", "payment.failed", "order.placed"]
    );
    assert_eq!(recorder.count("order.placed"), 2);
    let orders: Vec<u32> = recorder.of::<OrderPlaced>().iter().map(|o| o.id).collect();
    assert_eq!(orders, [1, 2]);
    recorder.clear();
    assert!(recorder.all().is_empty());
    drop(recorder);
    bus.emit(PaymentFailed).unwrap();
}

#[test]
fn the_bus_is_shared_by_many_tasks_at_once() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Bus>();
    let rt = runtime();
    let total = rt.block_on(async {
        let bus = Bus::new();
        let sum = Arc::new(AtomicUsize::new(0));
        let s = sum.clone();
        let _h = bus.on(move |e: &OrderPlaced| {
            s.fetch_add(e.id as usize, Ordering::Relaxed);
        });
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    for id in 0..1000 {
                        bus.publish(OrderPlaced { id }).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        sum.load(Ordering::Relaxed)
    });
    assert_eq!(total, 8 * (0..1000).sum::<usize>());
}

#[derive(Debug, serde::Serialize)]
struct Shipped {
    order: u32,
}

impl Event for Shipped {
    fn event_type(&self) -> &str {
        "order.shipped"
    }
}

#[test]
fn envelopes_carry_an_id_and_time_and_become_cloud_events() {
    let bus = Bus::new();
    let recorder = bus.recorder();
    let envelope = tidings_bus::Envelope::new(Shipped { order: 4 });
    let id = envelope.id().to_owned();
    bus.emit(envelope).unwrap();
    let recorded = recorder.of::<tidings_bus::Envelope<Shipped>>();
    assert_eq!(recorded[0].event_type(), "order.shipped");
    let ce = recorded[0].to_cloud_event("/shipping").unwrap();
    assert_eq!(
        (ce.id(), ce.ty(), ce.source()),
        (id.as_str(), "order.shipped", "/shipping")
    );
    assert_eq!(ce.json::<serde_json::Value>().unwrap()["order"], 4);
    let second = tidings_bus::Envelope::new(Shipped { order: 5 });
    assert!(second.id() > id.as_str(), "UUIDv7 ids sort by creation");
}

#[test]
fn handlers_may_emit_and_subscribe_on_the_bus_that_called_them() {
    let bus = Bus::new();
    let seen = Seen::default();
    let keep: Arc<Mutex<Vec<tidings_bus::Subscription>>> = Arc::default();
    let (b, s, k) = (bus.clone(), seen.clone(), keep.clone());
    let _outer = bus.on(move |e: &OrderPlaced| {
        s.push(format!("outer {}", e.id));
        if e.id == 1 {
            // The registry changes in the middle of an emit; the nested emit sees it.
            let s2 = s.clone();
            k.lock()
                .unwrap()
                .push(b.on(move |_: &PaymentFailed| s2.push("nested")));
            b.emit(PaymentFailed).unwrap();
            b.emit(OrderPlaced { id: 2 }).unwrap();
        }
    });
    bus.emit(OrderPlaced { id: 1 }).unwrap();
    assert_eq!(seen.take(), ["outer 1", "nested", "outer 2"]);
}

#[test]
fn buses_on_one_thread_keep_to_their_own_subscribers() {
    let (one, two) = (Bus::new(), Bus::new());
    let seen = Seen::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let _a = one.on(move |e: &OrderPlaced| s1.push(format!("one {}", e.id)));
    let _b = two.on(move |e: &OrderPlaced| s2.push(format!("two {}", e.id)));
    for id in 0..3 {
        one.emit(OrderPlaced { id }).unwrap();
        two.emit(OrderPlaced { id }).unwrap();
    }
    assert_eq!(
        seen.take(),
        ["one 0", "two 0", "one 1", "two 1", "one 2", "two 2"]
    );
    drop(_a);
    one.emit(OrderPlaced { id: 9 }).unwrap();
    assert!(seen.take().is_empty());
}

#[test]
fn an_emitter_handle_behaves_exactly_like_emit() {
    let bus = Bus::new();
    let orders = bus.emitter::<OrderPlaced>();
    let seen = Seen::default();
    orders.emit(OrderPlaced { id: 0 }).unwrap();
    let s = seen.clone();
    let first = bus.on(move |e: &OrderPlaced| s.push(format!("first {}", e.id)));
    orders.emit(OrderPlaced { id: 1 }).unwrap();
    assert_eq!(
        seen.take(),
        ["first 1"],
        "a new subscription is seen at once"
    );
    let s = seen.clone();
    let _once = bus.once(move |e: &OrderPlaced| s.push(format!("once {}", e.id)));
    orders.emit(OrderPlaced { id: 2 }).unwrap();
    orders.emit(OrderPlaced { id: 3 }).unwrap();
    assert_eq!(seen.take(), ["first 2", "once 2", "first 3"]);
    drop(first);
    orders.emit(OrderPlaced { id: 4 }).unwrap();
    assert!(
        seen.take().is_empty(),
        "an unsubscribed handler is not called"
    );
    // Pattern subscribers and errors work through the handle too.
    let s = seen.clone();
    let _p = bus
        .on_pattern("order.*", move |e: &dyn Event| {
            s.push(e.event_type().to_owned())
        })
        .unwrap();
    let _bad =
        bus.on(|_: &OrderPlaced| -> Result<(), std::io::Error> { Err(std::io::Error::other("x")) });
    orders.emit(OrderPlaced { id: 5 }).unwrap();
    assert_eq!(seen.take(), ["order.placed"]);
    assert_eq!(bus.stats().handler_failures, 1);
}

#[test]
fn a_handler_may_emit_through_the_emitter_that_called_it() {
    // An emitter is not Sync, so a handler reaches its own through a thread-local.
    thread_local!(static ORDERS: std::cell::RefCell<Option<tidings_bus::Emitter<OrderPlaced>>> =
        const { std::cell::RefCell::new(None) });
    let bus = Bus::new();
    let seen = Seen::default();
    let s = seen.clone();
    let _h = bus.on(move |e: &OrderPlaced| {
        s.push(e.id.to_string());
        if e.id < 3 {
            ORDERS
                .with(|o| {
                    o.borrow()
                        .as_ref()
                        .unwrap()
                        .emit(OrderPlaced { id: e.id + 1 })
                })
                .unwrap();
        }
    });
    ORDERS.with(|o| *o.borrow_mut() = Some(bus.emitter()));
    ORDERS
        .with(|o| o.borrow().as_ref().unwrap().emit(OrderPlaced { id: 1 }))
        .unwrap();
    assert_eq!(seen.take(), ["1", "2", "3"]);
}
