//! Where later features plug in: the router's middleware (the inbox, the
//! schema check, tracing on the consumer side) and the publisher's hooks
//! (the schema check and trace context on the producer side). The router
//! code is the same on every backend; these run on the embedded one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::backend::{Backoff, BoxFuture};
use tidings::router::{Context, HandlerError, Next, Retry, Router};
use tidings::{CloudEvent, Error, Mode, PublishHook, Publisher};
use tokio::time::Instant;

use crate::embedded::embedded;
use crate::support::{dead_letters, event, fresh, n_of, options, subscribe, Harness, PATIENCE};

/// Runs `router` until `done` holds, then stops it.
async fn run_until(router: Router, done: impl Fn() -> bool) -> tidings::router::Report {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    run.await.unwrap().unwrap()
}

/// Middleware that logs `name` and the try before going on.
fn logging(
    name: &'static str,
    log: &Arc<Mutex<Vec<String>>>,
) -> impl Fn(Context, Next) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync {
    let log = Arc::clone(log);
    move |ctx: Context, next: Next| {
        log.lock()
            .unwrap()
            .push(format!("{name}:{}", ctx.try_number()));
        next.run(ctx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_runs_around_every_try_router_outside_route() {
    let h = embedded(Mode::Queue).await.unwrap();
    let topic = fresh("wrapped");
    Publisher::new(h.backend())
        .publish(&topic, event(1, None))
        .await
        .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler_log = Arc::clone(&log);
    // Registered before the router's: the order of configuration does not
    // decide the nesting.
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &fresh("g"))
        .wrap(logging("route-1", &log))
        .wrap(logging("route-2", &log))
        .retry(Retry {
            tries: 2,
            backoff: Backoff {
                initial: Duration::from_millis(10),
                factor: 1,
                max: Duration::from_millis(10),
            },
        })
        .on_event("test.n", move |ctx| {
            let log = Arc::clone(&handler_log);
            async move {
                let try_number = ctx.try_number();
                log.lock().unwrap().push(format!("handler:{try_number}"));
                if try_number == 1 {
                    return Err(HandlerError::retry("the first try fails"));
                }
                Ok::<(), HandlerError>(())
            }
        });
    let router = router.wrap(logging("router", &log));
    let report = run_until(router, || log.lock().unwrap().len() >= 8).await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "router:1",
            "route-1:1",
            "route-2:1",
            "handler:1",
            "router:2",
            "route-1:2",
            "route-2:2",
            "handler:2"
        ]
    );
    assert_eq!((report.handled, report.retried), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_skips_the_handler_or_dead_letters_like_a_handler() {
    let h = embedded(Mode::Queue).await.unwrap();
    let (topic, group) = (fresh("inbox"), fresh("g"));
    let events: Vec<CloudEvent> = (0..6).map(|n| event(n, None)).collect();
    Publisher::new(h.backend())
        .publish_all(&topic, events)
        .await
        .unwrap();
    let handled: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let seen = Arc::clone(&handled);
    let tries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&tries);
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &group)
        // An inbox that has seen the even events: acked, never handled.
        .wrap(|ctx: Context, next: Next| async move {
            if n_of(ctx.event()).is_multiple_of(2) {
                return Ok(());
            }
            next.run(ctx).await
        })
        // A schema check that refuses event 5: dead-lettered at once, no
        // retry, the handler never sees it.
        .wrap(move |ctx: Context, next: Next| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if n_of(ctx.event()) == 5 {
                    return Err(HandlerError::dead_letter("n must be below 5"));
                }
                next.run(ctx).await
            }
        })
        .on_event("test.n", move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().insert(n_of(ctx.event()));
                Ok::<(), HandlerError>(())
            }
        });
    let report = run_until(router, || {
        handled.lock().unwrap().len() >= 2 && tries.load(std::sync::atomic::Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(*handled.lock().unwrap(), BTreeSet::from([1, 3]));
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.retried, 0, "a dead-letter verdict is not retried");
    assert_eq!(report.handled, 5, "skipped events are acked");
    let dead = dead_letters(&h, &topic, &group, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, 5);
    assert!(dead[0].2.contains("n must be below 5"), "{:?}", dead[0]);
}

/// Stamps a `traceparent` on every event and refuses those of type
/// `test.bad`.
struct Stamp;

impl PublishHook for Stamp {
    fn before_publish<'a>(
        &'a self,
        topic: &'a str,
        events: &'a mut [CloudEvent],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            for e in events.iter_mut() {
                if e.ty() == "test.bad" {
                    return Err(Error::InvalidEvent(format!(
                        "{} may not go to {topic}",
                        e.id()
                    )));
                }
                *e = e
                    .clone()
                    .with_extension(
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    )
                    .unwrap();
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_hooks_change_or_refuse_a_batch_before_it_is_stored() {
    let h = embedded(Mode::Queue).await.unwrap();
    let topic = fresh("hooked");
    let publisher = Publisher::new(h.backend()).with_hook(Arc::new(Stamp));
    let bad = CloudEvent::new("/conformance", "test.bad");
    match publisher
        .publish_all(&topic, vec![event(0, None), bad])
        .await
    {
        Err(Error::InvalidEvent(why)) => assert!(why.contains(&topic), "{why}"),
        other => panic!("a refused batch answered {other:?}"),
    }
    publisher.publish(&topic, event(1, None)).await.unwrap();

    // Events a handler emits go through the router's hooks too.
    let out = fresh("emitted");
    let mut router = Router::new(h.backend()).publish_hook(Arc::new(Stamp));
    let emitted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::clone(&emitted);
    let target = out.clone();
    router
        .route(&topic, &fresh("g"))
        .on_event("test.n", move |ctx| {
            ctx.emit(&target, event(n_of(ctx.event()) + 100, None));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            async { Ok::<(), HandlerError>(()) }
        });
    run_until(router, || {
        emitted.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;

    for (topic, expected) in [(&topic, 1), (&out, 101)] {
        let mut sub = subscribe(&h, options(&h, topic, &fresh("reader"))).await;
        let mut got = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while got.is_empty() && Instant::now() < deadline {
            for d in sub
                .next_batch(10, Duration::from_millis(200))
                .await
                .unwrap()
            {
                got.push(d.event().unwrap().clone());
                d.ack().await.unwrap();
            }
        }
        // Only the accepted event: nothing of the refused batch was stored.
        assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), [expected]);
        assert_eq!(
            got[0]
                .extension("traceparent")
                .map(|v| v.to_canonical_string()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())
        );
        assert!(sub
            .next_batch(10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty());
        sub.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_hands_values_on_to_the_handler() {
    #[derive(Debug, PartialEq)]
    struct Tenant(&'static str);
    #[derive(Debug, PartialEq)]
    struct Try(u32);

    let h = embedded(Mode::Queue).await.unwrap();
    let topic = fresh("values");
    Publisher::new(h.backend())
        .publish(&topic, event(1, None))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler_seen = Arc::clone(&seen);
    let mut router = Router::new(h.backend());
    router
        .route(&topic, &fresh("g"))
        // Inside the router's: sees its value, and replaces its own per try.
        .wrap(|ctx: Context, next: Next| async move {
            assert_eq!(ctx.get::<Tenant>().as_deref(), Some(&Tenant("acme")));
            ctx.insert(Try(ctx.try_number()));
            next.run(ctx).await
        })
        .retry(Retry {
            tries: 2,
            backoff: Backoff {
                initial: Duration::from_millis(10),
                factor: 1,
                max: Duration::from_millis(10),
            },
        })
        .on_event("test.n", move |ctx| {
            let seen = Arc::clone(&handler_seen);
            async move {
                let tenant = ctx.get::<Tenant>().map(|t| t.0);
                let try_number = ctx.get::<Try>().map(|t| t.0);
                seen.lock()
                    .unwrap()
                    .push(format!("{tenant:?} {try_number:?}"));
                if ctx.try_number() == 1 {
                    return Err(HandlerError::retry("once more"));
                }
                // Taken out, it is gone.
                assert_eq!(ctx.remove::<Try>().as_deref(), Some(&Try(2)));
                assert!(ctx.get::<Try>().is_none());
                Ok::<(), HandlerError>(())
            }
        });
    let router = router.wrap(|ctx: Context, next: Next| async move {
        ctx.insert(Tenant("acme"));
        next.run(ctx).await
    });
    let report = run_until(router, || seen.lock().unwrap().len() >= 2).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [r#"Some("acme") Some(1)"#, r#"Some("acme") Some(2)"#]
    );
    assert_eq!((report.handled, report.retried), (1, 1));
}
