//! The toolkit's spans in an application that exports them (the OTLP
//! pipeline `tidings serve` uses, as an application would install its own),
//! received by a real OpenTelemetry Collector and checked span by span: a
//! publish, the router's receive linked to it, the handler's process span
//! continuing the event's trace, what
//! the handler publishes, and the ack; an event staged in the outbox during
//! the same work and forwarded later; the correlation id on the handler's
//! log lines.

use std::time::Duration;

use tidings::outbox::store::{ForwarderOptions, StoreOutbox};
use tidings::router::{Context, Router};
use tidings::{CloudEvent, Publisher, SubscribeOptions, Subscriber};
use tidings_store::{EmbeddedOptions, EmbeddedStore};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::{embedded_engine, fresh, spawn_router};

// Shared with the server's trace tests, which use all of it.
#[allow(dead_code)]
#[path = "../../../tidings-cli/tests/serve/collector.rs"]
mod collector;

use collector::{Collector, Span};

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {spans:#?}");
    found[0]
}

/// The variable that makes this test binary the application: the OTLP
/// endpoint to export to, and the topics, separated by spaces.
const CHILD: &str = "TIDINGS_TEST_TRACES_CHILD";

/// The application, in a process of its own: its subscriber is the
/// process's global one, as an application installs it (a subscriber
/// scoped to one test among others would share callsite state with them).
fn application(args: &str) -> ! {
    let mut words = args.split(' ');
    let (endpoint, orders, payments, shipments) = (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pipeline = {
        let _on = runtime.enter();
        tidings_trace::otlp::Pipeline::start(&tidings_trace::otlp::OtlpOptions {
            endpoint,
            headers: Vec::new(),
            sample_ratio: 1.0,
            service_name: "shop".to_owned(),
        })
        .unwrap()
    };
    // Log lines to stderr, as an application writes them, beside the export.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(pipeline.layer())
            .with(lines),
    )
    .unwrap();
    let report = runtime.block_on(async {
        let (backend, _dir) = embedded_engine().await;
        let mut router = Router::new(backend.clone());
        let out = payments.clone();
        router
            .route(&orders, "billing")
            .on_event("order.placed", move |ctx: Context| {
                let out = out.clone();
                async move {
                    tracing::info!("charging the order");
                    ctx.emit(&out, CloudEvent::new("/billing", "payment.requested"));
                    Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                }
            });
        let (stop, run) = spawn_router(router);
        let checkout = tracing::info_span!("checkout", otel.kind = "server");
        Publisher::new(backend.clone())
            .publish(
                &orders,
                CloudEvent::new("/checkout", "order.placed").with_correlationid("cart-7"),
            )
            .instrument(checkout.clone())
            .await
            .unwrap();
        // The same work stages a shipment in the outbox on the event store;
        // the forwarder publishes it later, outside that work's span.
        let store_dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            EmbeddedStore::open(store_dir.path(), EmbeddedOptions::default()).unwrap(),
        );
        let outbox = StoreOutbox::start(
            store,
            Publisher::new(backend.clone()),
            ForwarderOptions::default(),
        )
        .unwrap();
        let mut tx = outbox.transaction();
        checkout.in_scope(|| {
            tx.stage(
                &shipments,
                [CloudEvent::new("/checkout", "shipment.requested")],
            )
            .unwrap();
        });
        tx.commit().await.unwrap();
        drop(checkout);
        // Until the handler's event is stored (its topic made by that
        // publish); stopping then lets the handler's ack finish.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let options = SubscribeOptions::queue(&payments, "audit");
            if let Ok(mut sub) = Subscriber::new(backend.clone()).subscribe(options).await {
                if !sub
                    .next_batch(1, Duration::from_secs(1))
                    .await
                    .unwrap()
                    .is_empty()
                {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no payment event");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while outbox.stats().forwarded < 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no shipment forwarded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        run.await.unwrap()
    });
    assert_eq!(report.handled, 1, "{report:?}");
    // The last spans leave before the process does.
    pipeline.shutdown().unwrap();
    println!("application done");
    std::process::exit(0)
}

#[test]
fn a_handled_event_and_what_it_publishes_are_one_trace() {
    if let Ok(args) = std::env::var(CHILD) {
        application(&args);
    }
    let collector = Collector::start();
    let (orders, payments, shipments) = (fresh("orders"), fresh("payments"), fresh("shipments"));
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "traces::a_handled_event_and_what_it_publishes_are_one_trace",
            "--exact",
            "--nocapture",
        ])
        .env(
            CHILD,
            format!("{} {orders} {payments} {shipments}", collector.endpoint()),
        )
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let logged = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("application done"),
        "{said}{logged}"
    );
    // The handler's line names the correlation id through its process span.
    let line = logged
        .lines()
        .find(|l| l.contains("charging the order"))
        .unwrap_or_else(|| panic!("no handler line: {logged}"));
    assert!(line.contains("correlationid=\"cart-7\""), "{line}");
    let spans = collector.spans();
    let checkout = one(&spans, "checkout");
    let publish = one(&spans, &format!("publish {orders}"));
    let process = one(&spans, &format!("process {orders}"));
    let emitted = one(&spans, &format!("publish {payments}"));
    // The router's ack (a client span) and, the engine being in-process,
    // the broker carrying it out under it.
    let acks: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == format!("ack {orders}"))
        .collect();
    let [ack, carried] = acks[..] else {
        panic!("two ack spans: {acks:#?}");
    };
    let (ack, carried) = if ack.kind == 3 {
        (ack, carried)
    } else {
        (carried, ack)
    };
    assert_eq!((ack.kind, carried.kind), (3, 1), "client, internal");
    assert_eq!(carried.parent_span_id, ack.span_id);
    let trace = &checkout.trace_id;
    for span in [publish, process, emitted, ack] {
        assert_eq!(&span.trace_id, trace, "one trace: {span:#?}");
        assert_eq!(span.service, "shop");
    }
    assert_eq!(publish.parent_span_id, checkout.span_id);
    assert_eq!(
        process.parent_span_id, publish.span_id,
        "the handler continues from the event's traceparent: {process:#?}"
    );
    assert_eq!((process.kind, publish.kind), (5, 4), "consumer, producer");
    assert_eq!(emitted.parent_span_id, process.span_id);
    assert_eq!(ack.parent_span_id, process.span_id);
    // The router's receive hands the event out linked to its trace.
    let receive = one(&spans, &format!("receive {orders}"));
    assert_eq!(receive.kind, 5, "a consumer span: {receive:#?}");
    assert_eq!(
        receive.links,
        vec![(trace.clone(), publish.span_id.clone())],
        "{receive:#?}"
    );
    assert_eq!(
        receive.attribute("messaging.consumer.group.name"),
        Some(&serde_json::json!("billing"))
    );
    let forwarded = one(&spans, &format!("publish {shipments}"));
    assert_eq!(
        (&forwarded.trace_id, &forwarded.parent_span_id),
        (trace, &checkout.span_id),
        "the outbox's event continues the work that staged it: {forwarded:#?}"
    );
    for (key, value) in [
        ("messaging.system", "embedded"),
        ("messaging.operation.type", "process"),
        ("messaging.consumer.group.name", "billing"),
        ("messaging.message.conversation_id", "cart-7"),
    ] {
        assert_eq!(
            process.attribute(key),
            Some(&serde_json::json!(value)),
            "{key}: {process:#?}"
        );
    }
}
