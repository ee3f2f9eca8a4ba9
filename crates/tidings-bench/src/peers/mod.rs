//! `tidings-bench peers`: the same workloads against Tidings and the systems users
//! would pick instead — Redis Streams, NATS JetStream, PostgreSQL as a queue — on
//! this machine, in one run, with Tidings' ratio to each.
//!
//! Tidings runs three ways: embedded in the benchmark's process, and as
//! `tidings serve` in a process of its own, driven over HTTP and over its Kafka
//! listener. Every system is driven through [`System`], [`Producer`] and
//! [`Consumer`] by the same load generator: the same event sizes, the same number
//! of events in flight, each side batching the way its own client does (a Redis
//! pipeline, NATS async publishes with their acks awaited together, one
//! multi-row `INSERT`, a Tidings batch publish, a Kafka record batch). The
//! servers run as child processes on loopback ports with throwaway data
//! directories ([`servers`]); PostgreSQL is the server that `TIDINGS_TEST_PG_URL`
//! names (`scripts/bench peers` starts one).

pub(crate) mod http;
mod kafka;
mod nats;
mod postgres;
mod redis;
pub(crate) mod servers;
mod tidings;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::Serialize;

use crate::percentile;

/// A boxed future, so that systems can sit side by side in one list.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// One system under test, in one durability setting.
pub(crate) trait System: Send + Sync {
    /// Its name in the tables, such as `Redis Streams`.
    fn name(&self) -> String;
    /// What it was configured with, printed with the results.
    fn setting(&self) -> String;
    /// Whether it has work queues: events handed to a group's members one by
    /// one and acknowledged one by one. Without, the work-queue workload does
    /// not apply.
    fn queues(&self) -> bool {
        true
    }
    /// Creates an empty stream called `stream`, with one consumer group.
    fn create<'a>(&'a self, stream: &'a str) -> BoxFut<'a, ()>;
    /// A producer with its own connection.
    fn producer<'a>(&'a self, stream: &'a str) -> BoxFut<'a, Box<dyn Producer>>;
    /// A member of the stream's consumer group, with its own connection.
    fn consumer<'a>(&'a self, stream: &'a str, name: &'a str) -> BoxFut<'a, Box<dyn Consumer>>;
}

/// Publishes events.
pub(crate) trait Producer: Send {
    /// Publishes `events` and returns once the system has acknowledged each one.
    fn publish<'a>(&'a mut self, events: &'a [Bytes]) -> BoxFut<'a, ()>;
}

/// Takes events from a consumer group and acknowledges them.
pub(crate) trait Consumer: Send {
    /// Up to `max` events, waiting a short while (100 ms) for the first; the
    /// events stay leased to this consumer until [`ack`](Self::ack).
    fn receive(&mut self, max: usize) -> BoxFut<'_, Vec<Bytes>>;
    /// Acknowledges every event received since the last call, one ack per event.
    fn ack(&mut self) -> BoxFut<'_, ()>;
}

/// One figure of one system in one workload, as `--json` writes it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figure {
    workload: String,
    system: String,
    setting: String,
    metric: String,
    unit: &'static str,
    value: f64,
}

/// Whether a larger value of a metric is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct Metric {
    name: &'static str,
    unit: &'static str,
    better: Better,
}

const THROUGHPUT: Metric = Metric {
    name: "events/s",
    unit: "events/s",
    better: Better::Higher,
};

const fn latency(name: &'static str) -> Metric {
    Metric {
        name,
        unit: "ms",
        better: Better::Lower,
    }
}

/// Sizes of one run.
struct Scale {
    /// Events per producer in the throughput workloads.
    per_producer: u64,
    /// Events in the single-producer latency workload.
    latency_events: u64,
    /// Seconds of the fixed-rate end-to-end workload.
    e2e_seconds: u64,
    /// Events prefilled for the work-queue workload.
    queue_events: u64,
}

pub(crate) struct Options {
    pub(crate) quick: bool,
    /// Run only these systems (see [`SYSTEMS`]; `tidings` is all three of
    /// Tidings' ways); all when empty.
    pub(crate) only: Vec<String>,
    /// Run only these workloads (see [`WORKLOADS`]); all when empty.
    pub(crate) workloads: Vec<String>,
    pub(crate) durability: Durability,
    pub(crate) dir: PathBuf,
    pub(crate) pg_url: Option<String>,
    pub(crate) json: Option<PathBuf>,
}

/// Which durability settings a run covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Durability {
    Durable,
    NotDurable,
    Both,
}

/// The workloads `--workloads` selects, by the names it takes.
const WORKLOADS: [&str; 4] = ["publish", "latency", "end-to-end", "queue"];

const PRODUCERS: usize = 8;
const IN_FLIGHT: usize = 32;
const QUEUE_CONSUMERS: usize = 4;
const E2E_RATE: u64 = 10_000;

pub(crate) fn run(options: Options) -> Result<()> {
    let scale = if options.quick {
        Scale {
            per_producer: 320,
            latency_events: 100,
            e2e_seconds: 1,
            queue_events: 1_000,
        }
    } else {
        Scale {
            per_producer: 20_000,
            latency_events: 3_000,
            e2e_seconds: 30,
            queue_events: 100_000,
        }
    };
    for name in &options.only {
        if name != "tidings" && !SYSTEMS.contains(&name.as_str()) {
            bail!("unknown system {name:?}; the systems are tidings (all three of its ways) and {SYSTEMS:?}");
        }
    }
    for name in &options.workloads {
        if !WORKLOADS.contains(&name.as_str()) {
            bail!("unknown workload {name:?}; the workloads are {WORKLOADS:?}");
        }
    }
    let runs = |name: &str| {
        options.only.is_empty()
            || options
                .only
                .iter()
                .any(|o| o == name || (o == "tidings" && TIDINGS_WAYS.contains(&name)))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pg_url = if runs("postgres") {
        let admin = options.pg_url.clone().context(
            "PostgreSQL is one of the peers: set TIDINGS_TEST_PG_URL (scripts/bench peers starts a server)",
        )?;
        Some(rt.block_on(crate::store::fresh_database(&admin))?)
    } else {
        None
    };
    let mut figures = Vec::new();
    let mut not_applicable = Vec::new();
    let settings = match options.durability {
        Durability::Durable => &[true][..],
        Durability::NotDurable => &[false][..],
        Durability::Both => &[true, false][..],
    };
    for &durable in settings {
        let systems = rt.block_on(start_systems(
            &options.dir,
            pg_url.as_deref(),
            &runs,
            durable,
        ))?;
        let workloads = if durable {
            vec![
                Workload::Publish { bytes: 100 },
                Workload::Publish { bytes: 1024 },
                Workload::OneInFlight,
                Workload::EndToEnd,
                Workload::Queue,
            ]
        } else {
            vec![
                Workload::Publish { bytes: 100 },
                Workload::Publish { bytes: 1024 },
            ]
        };
        let workloads = workloads.into_iter().filter(|w| {
            options.workloads.is_empty() || options.workloads.iter().any(|n| n == w.name())
        });
        for workload in workloads {
            let title = workload.title(durable);
            println!("## {title}\n");
            let mut rows = Vec::new();
            for system in &systems.list {
                if matches!(workload, Workload::Queue) && !system.queues() {
                    not_applicable.push((title.clone(), system.name()));
                    rows.push(Row {
                        name: system.name(),
                        values: None,
                    });
                    continue;
                }
                settle_disk();
                let results = rt
                    .block_on(workload.run(system.as_ref(), &scale))
                    .with_context(|| format!("{title}: {}", system.name()))?;
                for (metric, value) in &results {
                    figures.push(Figure {
                        workload: title.clone(),
                        system: system.name(),
                        setting: system.setting(),
                        metric: metric.name.to_owned(),
                        unit: metric.unit,
                        value: *value,
                    });
                }
                rows.push(Row {
                    name: system.name(),
                    values: Some(results),
                });
            }
            print_table(&rows);
        }
        println!(
            "Settings ({}):\n",
            if durable { "durable" } else { "not durable" }
        );
        for system in &systems.list {
            println!("- {}: {}", system.name(), system.setting());
        }
        println!();
        drop(systems);
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    check_every_system_ran(&figures, &not_applicable)
}

/// Writes out what earlier runs left in the page cache, so that a run's own
/// syncs do not also pay for the system before it (a latency run right after
/// a throughput run measured the writeback of gigabytes otherwise).
fn settle_disk() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("warning: could not run sync before a measurement: {e}");
    }
}

/// The systems of one durability setting, and the servers behind them (stopped
/// when this is dropped).
struct Systems {
    list: Vec<Box<dyn System>>,
    _servers: Vec<servers::Server>,
}

/// The systems `--only` selects, by the names it takes.
const SYSTEMS: [&str; 6] = ["embedded", "http", "kafka", "redis", "nats", "postgres"];
/// The names of Tidings' three ways, which `--only tidings` selects together.
const TIDINGS_WAYS: [&str; 3] = ["embedded", "http", "kafka"];

async fn start_systems(
    dir: &Path,
    pg_url: Option<&str>,
    runs: &dyn Fn(&str) -> bool,
    durable: bool,
) -> Result<Systems> {
    let mut list: Vec<Box<dyn System>> = Vec::new();
    let mut servers = Vec::new();
    if runs("embedded") {
        list.push(Box::new(tidings::Embedded::open(dir, durable)?));
    }
    if runs("http") || runs("kafka") {
        let (server, kafka_addr) = servers::tidings(dir)?;
        if runs("http") {
            list.push(Box::new(http::Http {
                addr: server.addr,
                durable,
            }));
        }
        if runs("kafka") {
            list.push(Box::new(kafka::Kafka {
                http: server.addr,
                addr: kafka_addr,
                durable,
            }));
        }
        servers.push(server);
    }
    if runs("redis") {
        let server = servers::redis(dir, durable)?;
        list.push(Box::new(redis::Redis::connect(&server, durable).await?));
        servers.push(server);
    }
    if runs("nats") {
        let (server, sync) = servers::nats(dir, durable)?;
        list.push(Box::new(
            nats::Nats::connect(&server, &sync, durable).await?,
        ));
        servers.push(server);
    }
    if let Some(url) = pg_url {
        list.push(Box::new(postgres::Postgres::connect(url, durable).await?));
    }
    Ok(Systems {
        list,
        _servers: servers,
    })
}

/// Every system must have reported every workload that applies to it
/// (`not_applicable` lists the workload and system pairs that do not): `--quick`
/// in CI checks the harness, never a speed.
fn check_every_system_ran(figures: &[Figure], not_applicable: &[(String, String)]) -> Result<()> {
    let mut workloads: Vec<&str> = figures.iter().map(|f| f.workload.as_str()).collect();
    workloads.dedup();
    let mut systems: Vec<&str> = figures.iter().map(|f| f.system.as_str()).collect();
    systems.sort_unstable();
    systems.dedup();
    for w in &workloads {
        for s in &systems {
            let ok = figures.iter().any(|f| {
                f.workload == *w && f.system == *s && f.value.is_finite() && f.value > 0.0
            }) || not_applicable.iter().any(|(nw, ns)| nw == w && ns == s);
            if !ok {
                bail!("{s} reported nothing for {w}");
            }
        }
    }
    Ok(())
}

enum Workload {
    Publish { bytes: usize },
    OneInFlight,
    EndToEnd,
    Queue,
}

impl Workload {
    /// The name `--workloads` takes.
    fn name(&self) -> &'static str {
        match self {
            Workload::Publish { .. } => "publish",
            Workload::OneInFlight => "latency",
            Workload::EndToEnd => "end-to-end",
            Workload::Queue => "queue",
        }
    }

    fn title(&self, durable: bool) -> String {
        let durability = if durable { "durable" } else { "not durable" };
        match self {
            Workload::Publish { bytes } => format!(
                "Publish throughput, {durability}, {} B events, {PRODUCERS} producers × {IN_FLIGHT} in flight",
                bytes
            ),
            Workload::OneInFlight => {
                "Publish latency, durable, 100 B events, one producer, one event in flight".to_owned()
            }
            Workload::EndToEnd => format!(
                "Publish → consume latency, durable, 100 B events at {E2E_RATE} events/s"
            ),
            Workload::Queue => format!(
                "Work queue, durable, 100 B events: {QUEUE_CONSUMERS} consumers receive and ack every event"
            ),
        }
    }

    async fn run(&self, system: &dyn System, scale: &Scale) -> Result<Vec<(Metric, f64)>> {
        match self {
            Workload::Publish { bytes } => {
                let rate = publish_throughput(system, *bytes, scale.per_producer).await?;
                Ok(vec![(THROUGHPUT, rate)])
            }
            Workload::OneInFlight => {
                let mut lat = one_in_flight(system, scale.latency_events).await?;
                lat.sort_unstable();
                Ok(percentiles(&lat))
            }
            Workload::EndToEnd => {
                let mut lat = end_to_end(system, scale.e2e_seconds).await?;
                lat.sort_unstable();
                Ok(percentiles(&lat))
            }
            Workload::Queue => {
                let rate = work_queue(system, scale.queue_events).await?;
                Ok(vec![(THROUGHPUT, rate)])
            }
        }
    }
}

fn percentiles(sorted_us: &[u32]) -> Vec<(Metric, f64)> {
    vec![
        (latency("p50"), percentile(sorted_us, 0.50)),
        (latency("p99"), percentile(sorted_us, 0.99)),
        (latency("p999"), percentile(sorted_us, 0.999)),
    ]
}

/// One system's figures in one workload; `None` where the workload does not
/// apply to it.
struct Row {
    name: String,
    values: Option<Vec<(Metric, f64)>>,
}

/// Prints one workload's table of every system's figures, then each Tidings
/// system's ratio to each peer per metric (higher is better for Tidings:
/// throughput ÷ throughput, latency is the peer's ÷ Tidings').
fn print_table(rows: &[Row]) {
    let Some(metrics) = rows.iter().find_map(|r| r.values.as_ref()) else {
        return;
    };
    let mut header = "| system |".to_owned();
    let mut rule = "|---|".to_owned();
    for (m, _) in metrics {
        if m.name == m.unit {
            header.push_str(&format!(" {} |", m.name));
        } else {
            header.push_str(&format!(" {} ({}) |", m.name, m.unit));
        }
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for row in rows {
        let mut line = format!("| {} |", row.name);
        match &row.values {
            Some(values) => {
                for (m, v) in values {
                    if m.unit == "ms" {
                        line.push_str(&format!(" {v:.3} |"));
                    } else {
                        line.push_str(&format!(" {v:.0} |"));
                    }
                }
            }
            None => line.push_str(&" n/a |".repeat(metrics.len())),
        }
        println!("{line}");
    }
    println!();
    let measured = |tidings: bool| {
        rows.iter()
            .filter(move |r| r.name.starts_with("Tidings") == tidings)
            .filter_map(|r| Some((r.name.as_str(), r.values.as_ref()?)))
            .collect::<Vec<_>>()
    };
    let (ours, peers) = (measured(true), measured(false));
    if ours.is_empty() || peers.is_empty() {
        return;
    }
    let mut header = "| Tidings × | metric |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for (peer, _) in &peers {
        header.push_str(&format!(" {peer} |"));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for (name, values) in &ours {
        for (i, (m, v)) in values.iter().enumerate() {
            let mut line = format!("| {name} | {} |", m.name);
            for (_, theirs) in &peers {
                let ratio = match m.better {
                    Better::Higher => v / theirs[i].1,
                    Better::Lower => theirs[i].1 / v,
                };
                line.push_str(&format!(" {ratio:.2}× |"));
            }
            println!("{line}");
        }
    }
    println!();
}

/// `len` bytes, the first eight carrying `stamp` (nanoseconds since `EPOCH`).
fn payload(len: usize, stamp: u64) -> Bytes {
    let mut data = vec![b'x'; len.max(8)];
    data[..8].copy_from_slice(&stamp.to_le_bytes());
    Bytes::from(data)
}

fn stamp_of(payload: &[u8]) -> Result<u64> {
    let head: [u8; 8] = payload
        .get(..8)
        .context("an event shorter than its time stamp")?
        .try_into()?;
    Ok(u64::from_le_bytes(head))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `PRODUCERS` producers, each publishing `per_producer` events `IN_FLIGHT` at a
/// time. Returns events per second.
async fn publish_throughput(system: &dyn System, bytes: usize, per_producer: u64) -> Result<f64> {
    let stream = format!("publish{bytes}");
    system.create(&stream).await?;
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        producers.push(system.producer(&stream).await?);
    }
    let start = Instant::now();
    publish_from_all(producers, bytes, per_producer).await?;
    Ok((per_producer * PRODUCERS as u64) as f64 / start.elapsed().as_secs_f64())
}

/// Each producer on its own task publishes `per_producer` events of `bytes`
/// bytes, `IN_FLIGHT` at a time.
async fn publish_from_all(
    producers: Vec<Box<dyn Producer>>,
    bytes: usize,
    per_producer: u64,
) -> Result<()> {
    let batch: Vec<Bytes> = (0..IN_FLIGHT).map(|_| payload(bytes, 0)).collect();
    let tasks: Vec<_> = producers
        .into_iter()
        .map(|mut p| {
            let batch = batch.clone();
            tokio::spawn(async move {
                let mut left = per_producer;
                while left > 0 {
                    let n = usize::try_from(left).unwrap_or(IN_FLIGHT).min(IN_FLIGHT);
                    p.publish(&batch[..n]).await?;
                    left -= n as u64;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// One producer, one event at a time; the latency of each acknowledged publish.
async fn one_in_flight(system: &dyn System, events: u64) -> Result<Vec<u32>> {
    system.create("single").await?;
    let mut producer = system.producer("single").await?;
    let one = [payload(100, 0)];
    let mut latencies = Vec::with_capacity(events as usize);
    for _ in 0..events {
        let t = Instant::now();
        producer.publish(&one).await?;
        latencies.push(micros(t.elapsed()));
    }
    Ok(latencies)
}

/// Events published one by one on a fixed schedule (open loop: `PRODUCERS`
/// producers take the due events, so a slow publish does not hold back the
/// next), one group consumer receiving. Latency runs from the moment an event is
/// handed to its producer to the moment the consumer holds it.
async fn end_to_end(system: &dyn System, seconds: u64) -> Result<Vec<u32>> {
    system.create("e2e").await?;
    let total = E2E_RATE * seconds;
    let epoch = Instant::now();
    let mut consumer = system.consumer("e2e", "c1").await?;
    let received = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        let mut idle = 0;
        while (latencies.len() as u64) < total {
            let batch = consumer.receive(IN_FLIGHT).await?;
            let now = epoch.elapsed().as_nanos() as u64;
            if batch.is_empty() {
                idle += 1;
                if idle > 50 {
                    bail!(
                        "received {} of {total} events, then nothing for 5 s",
                        latencies.len()
                    );
                }
                continue;
            }
            idle = 0;
            for event in &batch {
                let sent = stamp_of(event)?;
                latencies.push(micros(Duration::from_nanos(now.saturating_sub(sent))));
            }
            consumer.ack().await?;
        }
        anyhow::Ok(latencies)
    });
    // The schedule's hand-off: a channel the schedule thread sends one tick per due
    // event on and any idle producer takes from. Its bound is the run's event
    // count, so the schedule never waits on producers that fall behind (which
    // would hide their delay from the latencies).
    let (due_tx, due_rx) = tokio::sync::mpsc::channel::<()>(usize::try_from(total)?);
    let due_rx = Arc::new(tokio::sync::Mutex::new(due_rx));
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let mut producer = system.producer("e2e").await?;
        let due_rx = Arc::clone(&due_rx);
        producers.push(tokio::spawn(async move {
            loop {
                let next = due_rx.lock().await.recv().await;
                let Some(()) = next else { break };
                let event = [payload(100, epoch.elapsed().as_nanos() as u64)];
                producer.publish(&event).await?;
            }
            anyhow::Ok(())
        }));
    }
    // The schedule runs on its own thread, so its pacing does not compete with
    // the runtime's workers for timers.
    let schedule = std::thread::spawn(move || {
        let gap = Duration::from_nanos(1_000_000_000 / E2E_RATE);
        let start = Instant::now();
        for i in 0..total {
            let due = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if due_tx.blocking_send(()).is_err() {
                break;
            }
        }
    });
    schedule
        .join()
        .map_err(|_| anyhow::anyhow!("the schedule thread panicked"))?;
    for p in producers {
        p.await??;
    }
    received.await?
}

/// `events` published up front; then `QUEUE_CONSUMERS` consumers receive up to
/// `IN_FLIGHT` at a time and ack each one, until all are acked. Returns acked
/// events per second.
async fn work_queue(system: &dyn System, events: u64) -> Result<f64> {
    system.create("jobs").await?;
    let per_producer = events.div_ceil(PRODUCERS as u64);
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        producers.push(system.producer("jobs").await?);
    }
    publish_from_all(producers, 100, per_producer).await?;
    let total = per_producer * PRODUCERS as u64;
    let acked = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for i in 0..QUEUE_CONSUMERS {
        consumers.push(system.consumer("jobs", &format!("c{i}")).await?);
    }
    let start = Instant::now();
    // The clock stops at the last ack, not when every consumer has noticed:
    // the others may be in a receive that waits up to its long-poll for events
    // that will not come.
    let finished: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            let acked = Arc::clone(&acked);
            let finished = Arc::clone(&finished);
            tokio::spawn(async move {
                while acked.load(Ordering::Acquire) < total {
                    let batch = c.receive(IN_FLIGHT).await?;
                    if batch.is_empty() {
                        continue;
                    }
                    c.ack().await?;
                    let n = batch.len() as u64;
                    if acked.fetch_add(n, Ordering::AcqRel) + n >= total {
                        finished
                            .lock()
                            .expect("finish lock")
                            .get_or_insert_with(Instant::now);
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let deadline = Duration::from_secs(600);
    for t in tasks {
        tokio::time::timeout(deadline, t)
            .await
            .context("the work queue did not drain")???;
    }
    let end = finished
        .lock()
        .expect("finish lock")
        .unwrap_or_else(Instant::now);
    let secs = end.duration_since(start).as_secs_f64();
    let done = acked.load(Ordering::Acquire);
    if done != total {
        bail!("acked {done} of {total} events");
    }
    Ok(total as f64 / secs)
}
