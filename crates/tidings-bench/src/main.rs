//! `tidings-bench`: the project's benchmark harness.
//!
//! `tidings-bench bus` runs the in-process bus and Node's EventEmitter on the same
//! workloads in one invocation and prints each pair with its ratio.
//!
//! `tidings-bench log` measures the storage engine on its own: appends of 100 B and
//! 1 KB records from 1, 4 and 16 concurrent producers, in single-record and
//! 100-record batches, under `fsync = always` and `never`; then the time to reopen a
//! log after a clean and after an unclean shutdown, for a small and a large log.
//! It prints Markdown tables. Timing lives here, never in `cargo test`.
//!
//! `tidings-bench broker` measures the embedded broker: publish→consume latency
//! at a fixed rate, queue-mode throughput with acks, stream-mode consume
//! throughput.
//!
//! `tidings-bench kafka` drives the Kafka listener with a librdkafka client:
//! produce throughput and publish→consume latency at a fixed rate.
//!
//! `tidings-bench store` runs the event store's embedded and PostgreSQL backends
//! side by side: expected-version appends, aggregate loads, `$all` catch-up.
//!
//! `tidings-bench peers` runs the same workloads against Tidings, Redis Streams,
//! NATS JetStream and PostgreSQL used as a queue, and prints Tidings' ratios.
//!
//! `tidings-bench dashboard` times the web dashboard's pages on a server with
//! 2 000 topics, 500 stream groups and 50 queues.

mod broker;
mod bus;
mod dashboard;
mod kafka;
mod outbox;
mod peers;
mod schemas;
mod soak;
mod store;
mod toolkit;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tidings_log::{FsyncPolicy, Log, LogOptions, Record, TopicConfig};
use tidings_types::{PartitionId, TimestampMs};

#[derive(Debug, Parser)]
#[command(name = "tidings-bench", about = "Tidings' benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The in-process bus against Node's EventEmitter (needs `node` on PATH).
    Bus {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
    },
    /// The embedded broker: end-to-end latency, queue and stream throughput.
    Broker {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directories (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The Kafka listener with a librdkafka client (needs python3 and
    /// confluent-kafka; `scripts/bench kafka` installs it).
    Kafka {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directory (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The event store, embedded against PostgreSQL (needs TIDINGS_TEST_PG_URL;
    /// `scripts/bench store` starts a server).
    Store {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the embedded store (default: the system's temp dir).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// A PostgreSQL server the benchmark may create a database on.
        #[arg(long, env = "TIDINGS_TEST_PG_URL")]
        pg_url: Option<String>,
    },
    /// Publishing with the schema check off and on, side by side, and the
    /// check alone per event.
    Schemas {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directories (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The transactional outbox on PostgreSQL: relay throughput, and the
    /// latency it adds between a commit and a subscriber, relaying to the
    /// embedded engine and to the PostgreSQL backend (needs PostgreSQL:
    /// TIDINGS_TEST_PG_URL; `scripts/bench outbox` starts one).
    Outbox {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directories (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The PostgreSQL server to create the benchmark's database on.
        #[arg(long, env = "TIDINGS_TEST_PG_URL")]
        pg_url: Option<String>,
    },
    /// The application toolkit's publish → handle → ack on every backend
    /// through the same router, against the broker used directly (needs
    /// nats-server; PostgreSQL with TIDINGS_TEST_PG_URL; an Apache Kafka
    /// broker with TIDINGS_TEST_KAFKA; the Kafka backend when built with
    /// `--features tidings/kafka`; `scripts/bench toolkit` provides them all).
    Toolkit {
        /// Short runs that check every backend runs; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directories (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// A PostgreSQL server the benchmark may create a database on.
        #[arg(long, env = "TIDINGS_TEST_PG_URL")]
        pg_url: Option<String>,
        /// An Apache Kafka broker (host:port) the benchmark may create topics on.
        #[arg(long, env = "TIDINGS_TEST_KAFKA")]
        kafka: Option<String>,
    },
    /// The web dashboard's pages on a server with 2 000 topics, 500 stream
    /// groups and 50 queues: time to the last byte of each.
    Dashboard {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directory (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// `tidings serve`'s resident memory over a sustained run at half its
    /// peak (HTTP publishers and queue consumers, fsync always), sampled
    /// every 10 s.
    Soak {
        /// A short run that checks the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Length of the run in seconds (default 600; 10 with --quick).
        #[arg(long)]
        seconds: Option<u64>,
        /// Directory for the throwaway data directory (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Tidings against Redis Streams, NATS JetStream and PostgreSQL as a queue
    /// (needs redis-server, nats-server and TIDINGS_TEST_PG_URL;
    /// `scripts/bench peers` provides them).
    Peers {
        /// Short runs that check every system runs; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directories (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// A PostgreSQL server the benchmark may create a database on.
        #[arg(long, env = "TIDINGS_TEST_PG_URL")]
        pg_url: Option<String>,
        /// Also write every figure to this file as JSON.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Run only these systems: tidings, redis, nats, postgres (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run only these workloads: publish, latency, end-to-end, queue
        /// (comma-separated; all when not given).
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// Run only the durable or only the not-durable settings.
        #[arg(long, value_enum, default_value_t = peers::Durability::Both)]
        durability: peers::Durability,
    },
    /// Append throughput and latency of the storage engine, and reopen time.
    /// Runs `tidings serve` (the peer benchmark starts the server this way, in
    /// a process of its own).
    #[command(hide = true)]
    Serve(Box<tidings_server::ServeArgs>),
    Log {
        /// Short runs that check the harness works; the figures mean little.
        #[arg(long)]
        quick: bool,
        /// Directory for the throwaway data directories (default: the system's).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Size of the large log for the reopen measurement, in MiB.
        #[arg(long, default_value_t = 1024)]
        reopen_mib: u64,
    },
}

fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Bus { quick } => bus::run(quick),
        Command::Broker { quick, dir } => {
            broker::run(&dir.unwrap_or_else(std::env::temp_dir), quick)
        }
        Command::Kafka { quick, dir } => kafka::run(&dir.unwrap_or_else(std::env::temp_dir), quick),
        Command::Toolkit {
            quick,
            dir,
            pg_url,
            kafka,
        } => toolkit::run(
            &dir.unwrap_or_else(std::env::temp_dir),
            quick,
            pg_url,
            kafka,
        ),
        Command::Schemas { quick, dir } => {
            schemas::run(&dir.unwrap_or_else(std::env::temp_dir), quick)
        }
        Command::Outbox { quick, dir, pg_url } => {
            outbox::run(&dir.unwrap_or_else(std::env::temp_dir), quick, pg_url)
        }
        Command::Store { quick, dir, pg_url } => {
            store::run(&dir.unwrap_or_else(std::env::temp_dir), quick, pg_url)
        }
        Command::Dashboard { quick, dir } => {
            dashboard::run(&dir.unwrap_or_else(std::env::temp_dir), quick)
        }
        Command::Soak {
            quick,
            seconds,
            dir,
        } => soak::run(&dir.unwrap_or_else(std::env::temp_dir), quick, seconds),
        Command::Peers {
            quick,
            dir,
            pg_url,
            json,
            only,
            workloads,
            durability,
        } => peers::run(peers::Options {
            quick,
            only,
            workloads,
            durability,
            dir: dir.unwrap_or_else(std::env::temp_dir),
            pg_url,
            json,
        }),
        Command::Serve(args) => {
            let serve = matches
                .subcommand_matches("serve")
                .expect("the serve command");
            tidings_server::Config::load(&args, serve).and_then(tidings_server::run)
        }
        Command::Log {
            quick,
            dir,
            reopen_mib,
        } => {
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(log_bench(&dir, quick, if quick { 32 } else { reopen_mib }))
        }
    }
}

struct AppendCase {
    record_bytes: usize,
    producers: usize,
    batch: usize,
    fsync: FsyncPolicy,
}

struct AppendResult {
    events: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn log_bench(dir: &Path, quick: bool, reopen_mib: u64) -> Result<()> {
    let duration = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    };
    println!(
        "## Appends (tidings-log, one partition, {} s per case)\n",
        duration.as_secs_f64()
    );
    println!("| record | producers | batch | fsync | events/s | MB/s | p50 ms | p99 ms |");
    println!("|---:|---:|---:|---|---:|---:|---:|---:|");
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        for record_bytes in [100, 1024] {
            for batch in [1, 100] {
                for producers in [1, 4, 16] {
                    let case = AppendCase {
                        record_bytes,
                        producers,
                        batch,
                        fsync,
                    };
                    let mut r = run_append(dir, &case, duration).await?;
                    r.latencies_us.sort_unstable();
                    let secs = r.elapsed.as_secs_f64();
                    println!(
                        "| {record_bytes} B | {producers} | {batch} | {fsync} | {:.0} | {:.1} | {:.3} | {:.3} |",
                        r.events as f64 / secs,
                        (r.events as f64 * record_bytes as f64) / secs / 1e6,
                        percentile(&r.latencies_us, 0.50),
                        percentile(&r.latencies_us, 0.99),
                    );
                }
            }
        }
    }
    println!("\n## Reopen time\n");
    println!("| log size | shutdown | segments | reopen ms |");
    println!("|---:|---|---:|---:|");
    for mib in [reopen_mib / 16, reopen_mib] {
        reopen(dir, mib).await?;
    }
    Ok(())
}

async fn run_append(dir: &Path, case: &AppendCase, duration: Duration) -> Result<AppendResult> {
    let data = tempfile::tempdir_in(dir).context("creating a throwaway data directory")?;
    let log = Log::open(data.path(), LogOptions::default())?;
    let config = TopicConfig {
        fsync: case.fsync,
        ..TopicConfig::default()
    };
    let p = log
        .create_topic("bench", config)?
        .partition(PartitionId(0))?;
    let value = Bytes::from(vec![b'x'; case.record_bytes]);
    let records: Arc<Vec<Record>> = Arc::new(
        (0..case.batch)
            .map(|_| Record::from_value(value.clone(), TimestampMs::now()))
            .collect(),
    );
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..case.producers {
        let p = Arc::clone(&p);
        let records = Arc::clone(&records);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut events = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                p.append(&records).await?;
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                events += records.len() as u64;
            }
            anyhow::Ok((events, latencies))
        }));
    }
    let mut result = AppendResult {
        events: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (events, latencies) = t.await??;
        result.events += events;
        result.latencies_us.extend(latencies);
    }
    result.elapsed = start.elapsed();
    drop(p);
    log.close()?;
    Ok(result)
}

/// Writes a log of `mib` MiB, then times reopening it after a clean shutdown and
/// after a simulated crash (clean-shutdown marker removed).
async fn reopen(dir: &Path, mib: u64) -> Result<()> {
    let data = tempfile::tempdir_in(dir).context("creating a throwaway data directory")?;
    let config = TopicConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 128 * 1024 * 1024,
        ..TopicConfig::default()
    };
    {
        let log = Log::open(data.path(), LogOptions::default())?;
        let p = log
            .create_topic("bench", config)?
            .partition(PartitionId(0))?;
        let value = Bytes::from(vec![b'y'; 1024]);
        let batch: Vec<Record> = (0..100)
            .map(|_| Record::from_value(value.clone(), TimestampMs::now()))
            .collect();
        while p.size_bytes() < mib * 1024 * 1024 {
            p.append(&batch).await?;
        }
        drop(p);
        log.close()?;
    }
    let segments = {
        let log = Log::open(data.path(), LogOptions::default())?;
        let n = log
            .topic("bench")?
            .partition(PartitionId(0))?
            .segment_count();
        log.close()?;
        n
    };
    for clean in [true, false] {
        if !clean {
            std::fs::remove_file(data.path().join("topics/bench/0/clean-shutdown"))?;
        }
        let t = Instant::now();
        let log = Log::open(data.path(), LogOptions::default())?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        log.close()?;
        let shutdown = if clean { "clean" } else { "crash" };
        println!("| {mib} MiB | {shutdown} | {segments} | {ms:.1} |");
    }
    Ok(())
}
