//! `tidings-bench soak`: does `tidings serve` hold its memory under a
//! sustained load? The server runs in a process of its own (as the peer
//! benchmark starts it) with one durable topic (`fsync = always`, 64 MiB
//! segments, 512 MiB kept) and a queue group on it. A probe first finds the
//! peak: 8 producers publish batches of 32 as fast as they can while 4
//! consumers receive and ack, for 10 s; the peak is the acked rate. Then the
//! producers publish at half of it, on a fixed schedule, for the run's
//! length, while the consumers keep up; the server's resident set (`VmRSS`
//! from `/proc`) is sampled every 10 s with what was published and acked.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use tidings_api::{CreateQueue, CreateTopic, TopicSettings};

use crate::peers::http::Http;
use crate::peers::{servers, Consumer, Producer, System};

const PRODUCERS: usize = 8;
const CONSUMERS: usize = 4;
const BATCH: usize = 32;
const EVENT_BYTES: usize = 100;

/// What the run measures over.
struct Plan {
    probe: Duration,
    run: Duration,
    sample: Duration,
    /// Samples before this are the warm-up.
    warm_up: Duration,
}

/// One sample of the run.
struct Sample {
    at: Duration,
    rss_kib: u64,
    published: u64,
    acked: u64,
}

pub(crate) fn run(dir: &Path, quick: bool, seconds: Option<u64>) -> Result<()> {
    let plan = if quick {
        Plan {
            probe: Duration::from_secs(2),
            run: Duration::from_secs(seconds.unwrap_or(10)),
            sample: Duration::from_secs(1),
            warm_up: Duration::from_secs(3),
        }
    } else {
        let run = Duration::from_secs(seconds.unwrap_or(600));
        Plan {
            probe: Duration::from_secs(10),
            run,
            sample: Duration::from_secs(10),
            warm_up: (run / 5).min(Duration::from_secs(120)),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (server, _kafka) = servers::tidings(dir)?;
    let pid = server.pid();
    let http = Http {
        addr: server.addr,
        durable: true,
    };
    rt.block_on(async {
        create(&http).await?;
        let published = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let consumers = start_consumers(&http, &acked, &stop).await?;

        // The probe: as fast as it goes.
        let start = Instant::now();
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            producers.push(http.producer("soak").await?);
        }
        let probe_end = start + plan.probe;
        let tasks: Vec<_> = producers
            .into_iter()
            .map(|p| tokio::spawn(produce(p, None, probe_end, Arc::clone(&published))))
            .collect();
        for t in tasks {
            t.await??;
        }
        let probed = acked.load(Ordering::Acquire);
        let peak = probed as f64 / start.elapsed().as_secs_f64();
        println!("## Soak: `tidings serve` under half its peak\n");
        println!(
            "Probe: {probed} events acked in {:.1} s with the producers unthrottled: peak {peak:.0} events/s.",
            start.elapsed().as_secs_f64()
        );
        // The backlog of the probe is drained before the run.
        wait_until(|| acked.load(Ordering::Acquire) >= published.load(Ordering::Acquire)).await?;

        let rate = peak / 2.0;
        println!(
            "Run: {rate:.0} events/s ({PRODUCERS} producers, batches of {BATCH}, {EVENT_BYTES} B) for {} s; RSS every {} s.\n",
            plan.run.as_secs(),
            plan.sample.as_secs()
        );
        let start = Instant::now();
        let end = start + plan.run;
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            producers.push(http.producer("soak").await?);
        }
        let per_producer = rate / PRODUCERS as f64;
        let every = Duration::from_secs_f64(BATCH as f64 / per_producer);
        let tasks: Vec<_> = producers
            .into_iter()
            .map(|p| tokio::spawn(produce(p, Some(every), end, Arc::clone(&published))))
            .collect();
        let base = (published.load(Ordering::Acquire), acked.load(Ordering::Acquire));
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(plan.sample);
        loop {
            tick.tick().await;
            samples.push(Sample {
                at: start.elapsed(),
                rss_kib: rss_kib(pid)?,
                published: published.load(Ordering::Acquire) - base.0,
                acked: acked.load(Ordering::Acquire) - base.1,
            });
            if Instant::now() >= end {
                break;
            }
        }
        for t in tasks {
            t.await??;
        }
        stop.store(true, Ordering::Release);
        for c in consumers {
            c.await??;
        }
        report(&samples, &plan, rate);
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(())
}

async fn create(http: &Http) -> Result<()> {
    let client = crate::peers::http::client(http.addr)?;
    client
        .create_topic(&CreateTopic {
            name: "http-soak".to_owned(),
            settings: TopicSettings {
                partitions: Some(1),
                fsync: Some("always".to_owned()),
                segment_bytes: Some(64 * 1024 * 1024),
                retention_bytes: Some(Some(512 * 1024 * 1024)),
                ..TopicSettings::default()
            },
        })
        .await?;
    client
        .create_queue(&CreateQueue::new("http-soak-workers", "http-soak"))
        .await?;
    Ok(())
}

async fn start_consumers(
    http: &Http,
    acked: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<tokio::task::JoinHandle<Result<()>>>> {
    let mut tasks = Vec::new();
    for i in 0..CONSUMERS {
        let mut c: Box<dyn Consumer> = http.consumer("soak", &format!("c{i}")).await?;
        let (acked, stop) = (Arc::clone(acked), Arc::clone(stop));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let got = c.receive(BATCH).await?;
                if got.is_empty() {
                    continue;
                }
                c.ack().await?;
                acked.fetch_add(got.len() as u64, Ordering::AcqRel);
            }
            Ok(())
        }));
    }
    Ok(tasks)
}

/// Publishes batches until `end`: back to back without `every`, else one
/// batch each `every` (a batch that runs late is followed at once by the
/// next, so the rate holds).
async fn produce(
    mut p: Box<dyn Producer>,
    every: Option<Duration>,
    end: Instant,
    published: Arc<AtomicU64>,
) -> Result<()> {
    let batch: Vec<Bytes> = (0..BATCH)
        .map(|_| Bytes::from(vec![b'x'; EVENT_BYTES]))
        .collect();
    let mut tick = every.map(|d| {
        let mut t = tokio::time::interval(d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    while Instant::now() < end {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        p.publish(&batch).await?;
        published.fetch_add(BATCH as u64, Ordering::AcqRel);
    }
    Ok(())
}

async fn wait_until(done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        if Instant::now() > deadline {
            bail!("the consumers did not drain the probe's backlog in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (has the server exited?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line in /proc/<pid>/status")
}

fn report(samples: &[Sample], plan: &Plan, rate: f64) {
    println!("| s | RSS MiB | published | acked | lag |");
    println!("|---:|---:|---:|---:|---:|");
    for s in samples {
        println!(
            "| {} | {:.1} | {} | {} | {} |",
            s.at.as_secs(),
            s.rss_kib as f64 / 1024.0,
            s.published,
            s.acked,
            s.published.saturating_sub(s.acked)
        );
    }
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= plan.warm_up).collect();
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        println!("\nNo sample after the warm-up.");
        return;
    };
    let min = after.iter().map(|s| s.rss_kib).min().unwrap_or(0);
    let max = after.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let secs = last.at.as_secs_f64().max(1.0);
    println!(
        "\nAfter the warm-up ({} s): RSS {:.1} MiB at first, {:.1} MiB at the end, {:.1}–{:.1} MiB in between ({:+.1} % first to last); {:.0} events/s published against {rate:.0} planned, {:.0} acked.",
        plan.warm_up.as_secs(),
        first.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        min as f64 / 1024.0,
        max as f64 / 1024.0,
        (last.rss_kib as f64 / first.rss_kib.max(1) as f64 - 1.0) * 100.0,
        last.published as f64 / secs,
        last.acked as f64 / secs,
    );
}
