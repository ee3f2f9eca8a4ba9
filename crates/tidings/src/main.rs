//! The `tidings` command.
//!
//! Until the server lands this binary works on a local data directory through the
//! storage engine: `append` writes events, `read` prints them, `topics` lists what
//! is stored. When `tidings serve` arrives, these commands become clients of its
//! HTTP API and stop touching storage directly.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use tidings_log::{
    FsyncPolicy, Header, Log, LogOptions, Partition, Record, TopicConfig, TopicError,
};
use tidings_types::{Offset, PartitionId, TimestampMs};

/// Tidings: an event platform. This build stores events in a local data directory.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The data directory the local commands work on.
#[derive(Debug, clap::Args)]
struct Local {
    /// Where topics are stored.
    #[arg(long, env = "TIDINGS_DATA_DIR", default_value = "./tidings-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the broker on the data directory, with its HTTP API.
    Serve(tidings_server::ServeArgs),
    /// Append events to a topic, one per argument, or one per line of standard input
    /// when no value is given. Creates the topic if it does not exist.
    Append {
        #[command(flatten)]
        local: Local,
        /// Topic to append to.
        topic: String,
        /// Event values. Without any, standard input is read line by line.
        values: Vec<String>,
        /// Key for every event.
        #[arg(long)]
        key: Option<String>,
        /// Header `name=value` for every event; repeatable.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// Partition to append to.
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// Partitions of the topic when it is created.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Fsync policy of the topic when it is created: always, interval:<ms> or never.
        #[arg(long, default_value = "always")]
        fsync: FsyncPolicy,
    },
    /// Print events of one partition of a topic.
    Read {
        #[command(flatten)]
        local: Local,
        /// Topic to read.
        topic: String,
        /// Partition to read.
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// Where to start: earliest, latest, or an offset.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Most events to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print one JSON object per event.
        #[arg(long)]
        json: bool,
    },
    /// List topics with their partitions' offsets and sizes.
    Topics {
        #[command(flatten)]
        local: Local,
    },
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("header {s:?} is not name=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = cli.command {
        return match tidings_server::Config::load(&args).and_then(tidings_server::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn open(local: &Local) -> Result<Log> {
    Log::open(&local.data_dir, LogOptions::default())
        .with_context(|| format!("opening data directory {}", local.data_dir.display()))
}

fn run(cli: Cli) -> Result<()> {
    let local = match &cli.command {
        Command::Serve(_) => unreachable!("served in main"),
        Command::Append { local, .. } | Command::Read { local, .. } | Command::Topics { local } => {
            local
        }
    };
    let log = open(local)?;
    match cli.command {
        Command::Serve(_) => unreachable!("served in main"),
        Command::Append {
            local: _,
            topic,
            values,
            key,
            headers,
            partition,
            partitions,
            fsync,
        } => {
            let p = match log.topic(&topic) {
                Ok(t) => t.partition(PartitionId(partition))?,
                Err(TopicError::NotFound(_)) => {
                    let config = TopicConfig {
                        partitions,
                        fsync,
                        ..TopicConfig::default()
                    };
                    let t = log
                        .create_topic(&topic, config)
                        .with_context(|| format!("creating topic {topic}"))?;
                    t.partition(PartitionId(partition))?
                }
                Err(e) => return Err(e.into()),
            };
            let values = if values.is_empty() {
                io::stdin()
                    .lock()
                    .lines()
                    .collect::<io::Result<Vec<_>>>()
                    .context("reading standard input")?
            } else {
                values
            };
            if values.is_empty() {
                bail!("nothing to append: give values as arguments or lines on standard input");
            }
            append(&p, &values, key.as_deref(), &headers)?;
        }
        Command::Read {
            local: _,
            topic,
            partition,
            from,
            limit,
            json,
        } => {
            let p = log.topic(&topic)?.partition(PartitionId(partition))?;
            let from = match from.as_str() {
                "earliest" => p.log_start_offset(),
                "latest" => p.high_watermark(),
                n => Offset(n.parse().with_context(|| {
                    format!("--from {n:?} is not earliest, latest or an offset")
                })?),
            };
            read(&p, from, limit, json)?;
        }
        Command::Topics { local: _ } => {
            let mut out = io::stdout().lock();
            for t in log.topics() {
                writeln!(
                    out,
                    "{} (fsync {}, {} partitions)",
                    t.name(),
                    t.config().fsync,
                    t.partition_count()
                )?;
                for id in 0..t.partition_count() {
                    match t.partition(PartitionId(id)) {
                        Ok(p) => writeln!(
                            out,
                            "  partition {id}: offsets {}..{}, {} bytes in {} segments",
                            p.log_start_offset(),
                            p.high_watermark(),
                            p.size_bytes(),
                            p.segment_count()
                        )?,
                        Err(e) => writeln!(out, "  partition {id}: {e}")?,
                    }
                }
            }
        }
    }
    log.close().context("closing the data directory")?;
    Ok(())
}

fn append(
    p: &Partition,
    values: &[String],
    key: Option<&str>,
    headers: &[(String, String)],
) -> Result<()> {
    let now = TimestampMs::now();
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.clone(),
                    value: Some(Bytes::copy_from_slice(v.as_bytes())),
                })
                .collect(),
            timestamp: now,
        })
        .collect();
    let mut out = io::stdout().lock();
    for chunk in records.chunks(10_000) {
        let appended = p
            .append_blocking(chunk)
            .with_context(|| format!("appending to {}/{}", p.topic(), p.id()))?;
        writeln!(
            out,
            "appended {} events to {}/{} at offsets {}..={}",
            chunk.len(),
            p.topic(),
            p.id(),
            appended.base_offset,
            appended.last_offset
        )?;
    }
    Ok(())
}

fn text(bytes: Option<&Bytes>) -> String {
    bytes.map_or_else(
        || "null".to_owned(),
        |b| String::from_utf8_lossy(b).into_owned(),
    )
}

fn read(p: &Partition, from: Offset, limit: usize, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    let mut at = from;
    let mut printed = 0;
    while printed < limit && at < p.high_watermark() {
        let records = p
            .read_records(at, 1024 * 1024)
            .with_context(|| format!("reading {}/{} at offset {at}", p.topic(), p.id()))?;
        for r in records.into_iter().take(limit - printed) {
            if json {
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .record
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.clone(),
                            serde_json::Value::String(text(h.value.as_ref())),
                        )
                    })
                    .collect();
                let line = serde_json::json!({
                    "topic": p.topic().as_str(),
                    "partition": p.id().0,
                    "offset": r.offset.0,
                    "timestamp": r.record.timestamp.0,
                    "key": r.record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                    "value": r.record.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                    "headers": headers,
                });
                writeln!(out, "{line}")?;
            } else {
                let key = r
                    .record
                    .key
                    .as_ref()
                    .map(|k| format!(" key={}", String::from_utf8_lossy(k)));
                writeln!(
                    out,
                    "{}\t{}{}",
                    r.offset,
                    text(r.record.value.as_ref()),
                    key.unwrap_or_default()
                )?;
            }
            at = r.offset.next();
            printed += 1;
        }
    }
    Ok(())
}
