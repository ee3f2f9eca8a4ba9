//! `tidings-bench toolkit`: the application toolkit's publish → handle → ack
//! path on every backend, through the same router code, side by side in one
//! run, with the embedded broker used directly as the baseline.
//!
//! - **Throughput**: events published beforehand (100 B of data each, in
//!   batches of 500); a router with 32 deliveries in flight and a handler
//!   that only counts them, each delivery acked on its own. Timed from the
//!   router's start to the last ack. The baseline does the same work on the
//!   broker directly: 4 consumers each receiving up to 8 and acking each
//!   event on its own, concurrently.
//! - **End to end**: events published one at a time at a fixed rate (open
//!   loop) while the router runs; latency from the publish call to the
//!   handler holding the event.
//!
//! Every queue group acks with the topic's durability (fsync always on the
//! embedded engine and the server; PostgreSQL with synchronous commit; NATS
//! with `sync_interval: always` where its server has it, see the peers'
//! notes).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use tidings::router::{HandlerError, Router};
use tidings::{Backend, CloudEvent, Publisher};
use tidings_broker::{Broker, BrokerOptions, Payload, QueueConfig, StartPosition, TopicSpec};

use crate::peers::servers;
use crate::percentile;

const EVENT_BYTES: usize = 100;
const IN_FLIGHT: usize = 32;
const BASELINE_CONSUMERS: usize = 4;
const PARTITIONS: u32 = 3;

fn event(stamp_ns: u64) -> CloudEvent {
    let mut data = vec![b'x'; EVENT_BYTES];
    data[..8].copy_from_slice(&stamp_ns.to_le_bytes());
    CloudEvent::new("/bench", "bench.event").with_data("application/octet-stream", data)
}

fn stamp_of(e: &CloudEvent) -> u64 {
    e.data().and_then(|d| d.get(..8)).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().expect("eight bytes"))
    })
}

/// One backend under test.
struct System {
    name: String,
    backend: Arc<dyn Backend>,
}

pub(crate) fn run(
    dir: &Path,
    quick: bool,
    pg_url: Option<String>,
    apache_kafka: Option<String>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let events: u64 = if quick { 500 } else { 20_000 };
    let (rate, seconds): (u64, u64) = if quick { (200, 1) } else { (1_000, 5) };

    // The servers live until the end of the run.
    let data = tempfile::tempdir_in(dir).context("creating a throwaway data directory")?;
    let (server, listener) = servers::tidings(dir)?;
    // Durable, as the other backends' queue groups are: file storage synced
    // on every write where the server can (see the peers' notes).
    let (nats, nats_sync) = servers::nats(dir, true)?;
    let systems = rt.block_on(async {
        let embedded = tidings::embedded::Embedded::open(data.path().join("embedded")).await?;
        let mut systems = vec![
            System {
                name: "toolkit, embedded".into(),
                backend: Arc::new(embedded) as Arc<dyn Backend>,
            },
            System {
                name: "toolkit, server (HTTP)".into(),
                backend: tidings::connect(&format!("http://{}", server.addr)).await?,
            },
            System {
                name: format!(
                    "toolkit, NATS JetStream ({}, {})",
                    nats.version, nats_sync.short
                ),
                backend: tidings::connect(&format!("nats://{}", nats.addr)).await?,
            },
        ];
        match pg_url {
            Some(url) => {
                let database = crate::store::fresh_database(&url).await?;
                systems.push(System {
                    name: "toolkit, PostgreSQL".into(),
                    backend: Arc::new(tidings::postgres::Postgres::connect(&database).await?),
                });
            }
            None => println!("(PostgreSQL skipped: no --pg-url or TIDINGS_TEST_PG_URL)\n"),
        }
        // The Kafka backend, where this build has it: on the server's Kafka
        // listener, and on Apache Kafka.
        let mut kafkas = vec![(
            "toolkit, Kafka (the server's listener)".to_owned(),
            listener.to_string(),
        )];
        match apache_kafka {
            Some(address) => {
                kafkas.push(("toolkit, Kafka (Apache Kafka 4.3.1)".to_owned(), address))
            }
            None => println!("(Apache Kafka skipped: no --kafka or TIDINGS_TEST_KAFKA)\n"),
        }
        for (name, address) in kafkas {
            match tidings::connect(&format!("kafka://{address}")).await {
                Ok(backend) => systems.push(System { name, backend }),
                Err(tidings::Error::Config(why)) => {
                    println!("(Kafka skipped: {why})\n");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::Ok(systems)
    })?;

    println!("## Publish → handle → ack: throughput, {IN_FLIGHT} deliveries in flight, every event acked\n");
    println!("| system | events | events/s | vs. the broker used directly |");
    println!("|---|---:|---:|---:|");
    let baseline = rt.block_on(direct_throughput(&data.path().join("direct"), events))?;
    println!("| broker used directly (baseline) | {events} | {baseline:.0} | 1.00 |");
    for s in &systems {
        let per_s = rt.block_on(router_throughput(s, events))?;
        println!(
            "| {} | {events} | {per_s:.0} | {:.2} |",
            s.name,
            per_s / baseline
        );
    }

    println!("\n## Publish → handle, end to end, {rate} events/s for {seconds} s\n");
    println!("| system | events | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for s in &systems {
        let mut latencies = rt.block_on(router_end_to_end(s, rate, seconds))?;
        latencies.sort_unstable();
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            s.name,
            latencies.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
    }
    drop(systems);
    drop(server);
    drop(nats);
    Ok(())
}

/// Publishes `events` events to a new topic in batches of 500.
async fn fill(publisher: &Publisher, topic: &str, events: u64) -> Result<()> {
    let mut left = events;
    while left > 0 {
        let n = left.min(500);
        publisher
            .publish_all(topic, (0..n).map(|_| event(0)).collect())
            .await?;
        left -= n;
    }
    Ok(())
}

async fn direct_throughput(dir: &Path, events: u64) -> Result<f64> {
    let broker = Arc::new(Broker::open(dir, BrokerOptions::default())?);
    broker.create_topic("direct", TopicSpec::with_partitions(PARTITIONS))?;
    let mut left = events;
    while left > 0 {
        let n = left.min(500);
        broker
            .publish_batch("direct", (0..n).map(|_| event(0)).collect())
            .await?;
        left -= n;
    }
    broker.create_queue_group(
        "direct",
        "direct",
        QueueConfig::default(),
        StartPosition::Earliest,
    )?;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let consumers = (0..BASELINE_CONSUMERS).map(|_| {
        let (broker, done) = (Arc::clone(&broker), Arc::clone(&done));
        async move {
            while done.load(Ordering::Relaxed) < events {
                let got = broker
                    .receive_wait(
                        "direct",
                        IN_FLIGHT / BASELINE_CONSUMERS,
                        Duration::from_millis(100),
                    )
                    .await?;
                let acks = got.iter().map(|d| {
                    let Payload::Event(_) = &d.entry.payload else {
                        panic!("a raw record in the benchmark topic")
                    };
                    broker.ack("direct", &d.lease)
                });
                for r in join_all(acks).await {
                    r?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }
    });
    for r in join_all(consumers).await {
        r?;
    }
    let per_s = events as f64 / start.elapsed().as_secs_f64();
    broker.close()?;
    Ok(per_s)
}

async fn router_throughput(s: &System, events: u64) -> Result<f64> {
    let topic = format!("throughput-{}", tidings_types::uuid_v7().simple());
    let group = format!("{topic}-handlers");
    let publisher = Publisher::with_partitions(Arc::clone(&s.backend), PARTITIONS);
    fill(&publisher, &topic, events).await?;
    let handled = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&handled);
    let mut router = Router::new(Arc::clone(&s.backend));
    router
        .route(&topic, &group)
        .concurrency(IN_FLIGHT)
        .on_event("bench.event", move |_ctx| {
            counted.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), HandlerError>(()) }
        });
    let start = Instant::now();
    let (elapsed, report) =
        run_until(router, || handled.load(Ordering::Relaxed) >= events, start).await?;
    if report.handled < events {
        bail!("{}: {} of {events} events acked", s.name, report.handled);
    }
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// Runs `router` until `done`, then stops it; answers the time to `done`
/// from `start` and the run's report.
async fn run_until(
    router: Router,
    done: impl Fn() -> bool,
    start: Instant,
) -> Result<(Duration, tidings::router::Report)> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));
    let deadline = start + Duration::from_secs(300);
    while !done() {
        if Instant::now() > deadline {
            bail!("the router did not finish within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    let report = run.await??;
    Ok((elapsed, report))
}

async fn router_end_to_end(s: &System, rate: u64, seconds: u64) -> Result<Vec<u32>> {
    let topic = format!("e2e-{}", tidings_types::uuid_v7().simple());
    let group = format!("{topic}-handlers");
    let publisher = Publisher::with_partitions(Arc::clone(&s.backend), PARTITIONS);
    s.backend.ensure_topic(&topic, PARTITIONS).await?;
    let total = rate * seconds;
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let seen = Arc::clone(&latencies);
    let ready = Arc::new(tokio::sync::Notify::new());
    let warmed = Arc::clone(&ready);
    let mut router = Router::new(Arc::clone(&s.backend));
    router
        .route(&topic, &group)
        .start(tidings::Start::Earliest)
        .concurrency(IN_FLIGHT)
        .on_event("bench.event", move |ctx| {
            let now = epoch.elapsed().as_nanos() as u64;
            let micros = (now.saturating_sub(stamp_of(ctx.event()))) / 1000;
            seen.lock()
                .expect("latencies lock")
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
            async { Ok::<(), HandlerError>(()) }
        })
        .on_event("bench.warmup", move |_ctx| {
            warmed.notify_one();
            async { Ok::<(), HandlerError>(()) }
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));
    // The clock starts once the subscription is ready (a Kafka group takes
    // seconds to form): one event through first.
    publisher
        .publish(&topic, CloudEvent::new("/bench", "bench.warmup"))
        .await?;
    tokio::time::timeout(Duration::from_secs(60), ready.notified())
        .await
        .with_context(|| format!("{}: the warm-up event never reached the handler", s.name))?;
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut publishes = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + gap * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        let publisher = publisher.clone();
        let topic = topic.clone();
        publishes.push(tokio::spawn(async move {
            publisher
                .publish(&topic, event(epoch.elapsed().as_nanos() as u64))
                .await
        }));
    }
    for p in publishes {
        p.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (latencies.lock().expect("latencies lock").len() as u64) < total {
        if Instant::now() > deadline {
            let got = latencies.lock().expect("latencies lock").len();
            bail!(
                "{}: {got} of {total} events reached the handler within 60 s",
                s.name
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    run.await??;
    let out = latencies.lock().expect("latencies lock").clone();
    Ok(out)
}
