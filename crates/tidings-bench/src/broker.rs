//! `tidings-bench broker`: the embedded broker end to end — publish→consume
//! latency at a fixed rate, queue-mode throughput with consumers acking every
//! event, and stream-mode consume throughput.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tidings_broker::{
    Broker, BrokerOptions, JoinOptions, Payload, QueueConfig, StartPosition, TopicSpec,
};
use tidings_log::FsyncPolicy;
use tidings_types::CloudEvent;

use crate::percentile;

/// Size of each event's data.
const EVENT_BYTES: usize = 100;

fn event(stamp_ns: u64) -> CloudEvent {
    let mut data = vec![b'x'; EVENT_BYTES];
    data[..8].copy_from_slice(&stamp_ns.to_le_bytes());
    CloudEvent::new("/bench", "bench.event").with_data("application/octet-stream", data)
}

fn stamp(entry: &tidings_broker::Entry) -> Result<u64> {
    let Payload::Event(e) = &entry.payload else {
        bail!("a raw record in the benchmark topic")
    };
    let data = e.data().context("an event without data")?;
    Ok(u64::from_le_bytes(data[..8].try_into()?))
}

fn spec(partitions: u32, fsync: FsyncPolicy) -> TopicSpec {
    // Dedup is a per-publish cost some users turn off; the latency case keeps
    // the default (on), the throughput cases measure delivery alone.
    let mut spec = TopicSpec::with_partitions(partitions);
    spec.log.fsync = fsync;
    spec
}

pub(crate) fn run(dir: &Path, quick: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scale = if quick { 10 } else { 1 };
    println!("## Publish → consume, end to end, at a fixed rate (fsync = always)\n");
    println!("| rate (events/s) | events | publish p50 ms | p99 ms | end-to-end p50 ms | p99 ms | p999 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let seconds = if quick { 1 } else { 10 };
    end_to_end(&rt, dir, 10_000, seconds)?;

    println!("\n## Queue mode: consumers receive and ack every event (fsync = always)\n");
    println!("| consumers | events | events/s | ack p50 ms | ack p99 ms |");
    println!("|---:|---:|---:|---:|---:|");
    for consumers in [1, 8] {
        rt.block_on(queue(dir, consumers, 20_000 / scale))?;
    }

    println!("\n## Stream mode: members poll and commit after every poll\n");
    println!("| partitions = members | events | events/s | MB/s |");
    println!("|---:|---:|---:|---:|");
    for partitions in [1, 4] {
        rt.block_on(stream(dir, partitions, 1_000_000 / scale))?;
    }
    Ok(())
}

fn open(dir: &Path) -> Result<(tempfile::TempDir, Arc<Broker>)> {
    let data = tempfile::tempdir_in(dir).context("creating a throwaway data directory")?;
    let broker = Broker::open(data.path(), BrokerOptions::default())?;
    Ok((data, Arc::new(broker)))
}

/// One producer publishes single events on a fixed schedule (open loop: a slow
/// publish does not delay the next one); one stream-group member long-polls.
/// Latency is from the moment an event is handed to `publish` to the moment the
/// consumer holds it.
fn end_to_end(rt: &tokio::runtime::Runtime, dir: &Path, rate: u64, seconds: u64) -> Result<()> {
    let (_data, broker) = open(dir)?;
    broker.create_topic("e2e", spec(1, FsyncPolicy::Always))?;
    let member = broker.join_group(
        "e2e",
        "e2e",
        JoinOptions {
            start: StartPosition::Earliest,
            ..JoinOptions::default()
        },
    )?;
    let total = rate * seconds;
    let epoch = Instant::now();
    let consumer = {
        let broker = Arc::clone(&broker);
        rt.spawn(async move {
            let mut latencies = Vec::with_capacity(total as usize);
            while (latencies.len() as u64) < total {
                let polled = broker
                    .poll("e2e", &member, 1 << 20, Duration::from_secs(1))
                    .await?;
                let now = epoch.elapsed().as_nanos() as u64;
                for entry in &polled.entries {
                    let sent = stamp(entry)?;
                    latencies.push(u32::try_from((now - sent) / 1000).unwrap_or(u32::MAX));
                }
            }
            anyhow::Ok(latencies)
        })
    };
    let publish_latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(AtomicU64::new(0));
    let handle = rt.handle().clone();
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    // The schedule runs on its own thread, so its pacing does not compete with
    // the runtime's workers for timers.
    let mut tasks = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for i in 0..total {
        let due = start + gap * u32::try_from(i)?;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let broker = Arc::clone(&broker);
        let latencies = Arc::clone(&publish_latencies);
        let failures = Arc::clone(&failures);
        tasks.push(handle.spawn(async move {
            let sent = epoch.elapsed();
            let result = broker.publish("e2e", event(sent.as_nanos() as u64)).await;
            let took = epoch.elapsed() - sent;
            match result {
                Ok(_) => latencies
                    .lock()
                    .expect("latencies lock")
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX)),
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    rt.block_on(async {
        for t in tasks {
            t.await?;
        }
        anyhow::Ok(())
    })?;
    if failures.load(Ordering::Relaxed) > 0 {
        bail!("{} publishes failed", failures.load(Ordering::Relaxed));
    }
    let mut e2e = rt.block_on(consumer)??;
    e2e.sort_unstable();
    let mut publish = std::mem::take(&mut *publish_latencies.lock().expect("latencies lock"));
    publish.sort_unstable();
    println!(
        "| {rate} (achieved {achieved:.0}) | {total} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        percentile(&publish, 0.50),
        percentile(&publish, 0.99),
        percentile(&e2e, 0.50),
        percentile(&e2e, 0.99),
        percentile(&e2e, 0.999),
        percentile(&e2e, 1.0),
    );
    broker.close()?;
    Ok(())
}

/// Publishes `events` up front, then `consumers` tasks receive up to 32 at a time
/// and ack each one, until every event is acked.
async fn queue(dir: &Path, consumers: usize, events: u64) -> Result<()> {
    let (_data, broker) = open(dir)?;
    let mut topic = spec(1, FsyncPolicy::Always);
    topic.dedup_window = None;
    broker.create_topic("jobs", topic)?;
    broker.create_queue_group(
        "workers",
        "jobs",
        QueueConfig::default(),
        StartPosition::Earliest,
    )?;
    prefill(&broker, "jobs", events).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let broker = Arc::clone(&broker);
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while acked.load(Ordering::Relaxed) < events {
                let batch = broker.receive("workers", 32).await?;
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                for d in batch {
                    let t = Instant::now();
                    broker.ack("workers", &d.lease).await?;
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let stats = broker.queue_stats("workers").await?;
    if stats.counters.acked != events {
        bail!("acked {} of {events}", stats.counters.acked);
    }
    println!(
        "| {consumers} | {events} | {:.0} | {:.3} | {:.3} |",
        events as f64 / secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    broker.close()?;
    Ok(())
}

/// Publishes `events` up front over `partitions`, then one member per partition
/// polls (1 MiB per poll) and commits after every poll, until all are read.
async fn stream(dir: &Path, partitions: u32, events: u64) -> Result<()> {
    let (_data, broker) = open(dir)?;
    let mut topic = spec(partitions, FsyncPolicy::Never);
    topic.dedup_window = None;
    broker.create_topic("feed", topic)?;
    prefill(&broker, "feed", events).await?;
    let members: Vec<String> = (0..partitions)
        .map(|_| broker.join_group("readers", "feed", JoinOptions::default()))
        .collect::<Result<_, _>>()?;
    let read = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for member in members {
        let broker = Arc::clone(&broker);
        let read = Arc::clone(&read);
        tasks.push(tokio::spawn(async move {
            while read.load(Ordering::Relaxed) < events {
                let polled = broker
                    .poll("readers", &member, 1 << 20, Duration::from_millis(10))
                    .await?;
                if polled.entries.is_empty() {
                    continue;
                }
                let mut next = std::collections::BTreeMap::new();
                for e in &polled.entries {
                    next.insert(e.partition, e.offset.next());
                }
                let offsets: Vec<_> = next.into_iter().collect();
                broker.commit("readers", &member, &offsets)?;
                read.fetch_add(polled.entries.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = read.load(Ordering::Relaxed);
    if total != events {
        bail!("read {total} of {events}");
    }
    println!(
        "| {partitions} | {events} | {:.0} | {:.1} |",
        events as f64 / secs,
        events as f64 * EVENT_BYTES as f64 / secs / 1e6,
    );
    broker.close()?;
    Ok(())
}

/// Publishes `events` in batches of 1000.
async fn prefill(broker: &Broker, topic: &str, events: u64) -> Result<()> {
    let mut left = events;
    while left > 0 {
        let n = left.min(1000);
        let batch: Vec<CloudEvent> = (0..n).map(|_| event(0)).collect();
        broker.publish_batch(topic, batch).await?;
        left -= n;
    }
    Ok(())
}
