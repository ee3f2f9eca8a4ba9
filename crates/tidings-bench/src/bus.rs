//! `tidings-bench bus`: the in-process bus against Node's EventEmitter, on the
//! workloads `../shared/PEERS.md` fixes, in one run.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tidings_bus::{Bus, BusConfig, Envelope, Event};

/// The benchmark payload: `{ orderId: 'o1', userId: 'u1', total: 1 }`, made once.
#[derive(Clone, Copy)]
struct OrderPlaced {
    order_id: &'static str,
    user_id: &'static str,
    total: u64,
}

impl Event for OrderPlaced {
    fn event_type(&self) -> &str {
        "order.placed"
    }
}

const PAYLOAD: OrderPlaced = OrderPlaced {
    order_id: "o1",
    user_id: "u1",
    total: 1,
};

struct Sizes {
    warmup: u64,
    emits: u64,
    events: u64,
}

/// A counter only its own handler writes: a plain add, like Node's `counter +=`.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// How the Tidings side emits in the sync workload.
#[derive(Clone, Copy)]
enum Via {
    /// A typed [`tidings_bus::Emitter`] handle, made once like Node's emitter.
    Emitter,
    /// `Bus::emit`, looking the subscriptions up on every emit.
    Bus,
}

fn sync_emit(listeners: usize, via: Via, sizes: &Sizes) -> Result<f64> {
    let bus = Bus::with_config(BusConfig {
        max_listeners: 100,
        ..BusConfig::default()
    });
    let counter = Arc::new(AtomicU64::new(0));
    let _subs: Vec<_> = (0..listeners)
        .map(|_| {
            let c = Arc::clone(&counter);
            bus.on(move |e: &OrderPlaced| add(&c, e.total))
        })
        .collect();
    let emitter = bus.emitter::<OrderPlaced>();
    let emit = |e: OrderPlaced| match via {
        Via::Emitter => emitter.emit(e),
        Via::Bus => bus.emit(e),
    };
    for _ in 0..sizes.warmup {
        emit(PAYLOAD)?;
    }
    counter.store(0, Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..sizes.emits {
        emit(std::hint::black_box(PAYLOAD))?;
    }
    let secs = start.elapsed().as_secs_f64();
    if counter.load(Ordering::Relaxed) != sizes.emits * listeners as u64 {
        bail!("lost deliveries");
    }
    debug_assert!(!PAYLOAD.order_id.is_empty() && !PAYLOAD.user_id.is_empty());
    Ok(sizes.emits as f64 / secs)
}

async fn event_bus(sizes: &Sizes) -> Result<f64> {
    let bus = Bus::new();
    let counters: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut subs = Vec::new();
    for counter in &counters {
        let c = Arc::clone(counter);
        subs.push(bus.on_async(move |e: Arc<Envelope<OrderPlaced>>| {
            let c = Arc::clone(&c);
            async move { add(&c, e.payload().total) }
        })?);
    }
    let start = Instant::now();
    for _ in 0..sizes.events {
        bus.publish(Envelope::new(PAYLOAD)).await?;
    }
    while counters
        .iter()
        .any(|c| c.load(Ordering::Relaxed) < sizes.events)
    {
        tokio::task::yield_now().await;
    }
    let secs = start.elapsed().as_secs_f64();
    if bus.stats().handler_failures + bus.stats().handler_panics != 0 {
        bail!("handlers failed");
    }
    Ok(sizes.events as f64 / secs)
}

fn node(quick: bool) -> Result<Vec<(String, f64)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/bus.js");
    let mut cmd = Command::new("node");
    cmd.arg(script);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd
        .output()
        .context("running node (Node.js must be installed)")?;
    if !out.status.success() {
        bail!("node failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut results = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let workload = v["workload"].as_str().context("workload")?.to_owned();
        results.push((workload, v["per_second"].as_f64().context("per_second")?));
    }
    Ok(results)
}

pub(crate) fn run(quick: bool) -> Result<()> {
    let sizes = if quick {
        Sizes {
            warmup: 100_000,
            emits: 500_000,
            events: 100_000,
        }
    } else {
        Sizes {
            warmup: 1_000_000,
            emits: 5_000_000,
            events: 1_000_000,
        }
    };
    let node = node(quick)?;
    let node_figure = |workload: &str| {
        node.iter()
            .find(|(w, _)| w == workload)
            .map(|(_, v)| *v)
            .with_context(|| format!("node did not report {workload}"))
    };
    println!("| workload | Node.js (events/s) | Tidings (events/s) | Tidings ÷ Node |");
    println!("|---|---:|---:|---:|");
    let row = |workload: &str, how: &str, theirs: f64, ours: f64| {
        println!(
            "| {workload}{how} | {:.2} M | {:.2} M | {:.2}× |",
            theirs / 1e6,
            ours / 1e6,
            ours / theirs
        );
    };
    for n in [1, 3, 10] {
        let workload = format!("sync emit, {n} listener(s)");
        let theirs = node_figure(&workload)?;
        row(
            &workload,
            " — `Emitter`",
            theirs,
            sync_emit(n, Via::Emitter, &sizes)?,
        );
        row(
            &workload,
            " — `Bus::emit`",
            theirs,
            sync_emit(n, Via::Bus, &sizes)?,
        );
    }
    // One thread, as Node has: the publisher and the three handler tasks share it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let workload = "EventBus pattern, 3 async subscribers";
    let ours =
        rt.block_on(async { tokio::spawn(async move { event_bus(&sizes).await }).await? })?;
    row(workload, "", node_figure(workload)?, ours);
    Ok(())
}
