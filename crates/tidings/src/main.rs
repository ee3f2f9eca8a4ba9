//! The `tidings` command: `serve` runs the server; every other command is a
//! client of its HTTP API (`--server`, or `TIDINGS_URL`) and never touches
//! storage itself.
//!
//! Errors are printed in plain words with a non-zero exit status; a closed
//! pipe (`tidings tail ... | head`) ends the command quietly.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

mod client;
mod output;

use client::Client;
use output::Progress;

/// Tidings: an event platform. `tidings serve` runs the server; the other
/// commands talk to it over HTTP.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    /// The server to talk to.
    #[arg(
        long,
        env = "TIDINGS_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Print the server's JSON (one object per line for events), for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the broker on the data directory, with its HTTP API.
    Serve(tidings_server::ServeArgs),
    /// Publish events: one per DATA argument, or one per line of --file or
    /// standard input. A line that is a JSON object with "specversion" is sent
    /// as a whole CloudEvent; anything else becomes the data of a new event.
    Publish(Publish),
    /// Print a topic's events without a group; --follow keeps printing new ones.
    Tail(Tail),
    /// Consume as a member of a stream group (--group, committing as it goes) or
    /// from a queue group (--queue, acking each event once printed).
    Consume(Consume),
    /// Copy a topic's events, from a position up to its end now, into another topic.
    Replay(Replay),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(Topics),
    /// List stream groups, describe one with its lag, reset its offsets.
    #[command(subcommand)]
    Groups(Groups),
    /// Create, list and describe queue groups.
    #[command(subcommand)]
    Queues(Queues),
    /// Dead letters of a queue group: list, show, redrive, purge.
    #[command(subcommand)]
    Dlq(Dlq),
    /// The event store: append to a stream with an expected version, read a
    /// stream, read or follow `$all` or a category.
    #[command(subcommand)]
    Streams(Streams),
}

#[derive(Debug, Subcommand)]
enum Streams {
    /// Append events to a stream: one per DATA argument, or one per line of
    /// standard input, built as `publish` builds them.
    Append {
        /// The stream, such as order-17.
        stream: String,
        /// Event data, one event each; without any, lines are read.
        data: Vec<String>,
        /// `any`, `no_stream`, `stream_exists`, or the version the stream must be at.
        #[arg(long, default_value = "any")]
        expected_version: String,
        /// The `type` of events built here.
        #[arg(long = "type", default_value = "tidings.cli.appended")]
        ty: String,
        /// The `source` of events built here.
        #[arg(long, default_value = "/tidings-cli")]
        source: String,
    },
    /// Print a stream's events.
    Read {
        /// The stream.
        stream: String,
        /// First version to print (newest first with --backward).
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// Most events to print.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print `$all`, or one category, from a global position; --follow keeps
    /// printing new events.
    All {
        /// Only streams of this category (the name before the first '-').
        #[arg(long)]
        category: Option<String>,
        /// Global position to start at.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most events to print without --follow.
        #[arg(long)]
        limit: Option<usize>,
        /// Keep printing events as they are appended.
        #[arg(long)]
        follow: bool,
    },
    /// Show a stream's version, metadata and deletion.
    Info {
        /// The stream.
        stream: String,
    },
}

#[derive(Debug, Args)]
struct Publish {
    /// The topic.
    topic: String,
    /// Event data, one event each; without any, lines are read.
    data: Vec<String>,
    /// Read lines from this file instead of standard input.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The `type` of events built here.
    #[arg(long = "type", default_value = "tidings.cli.published")]
    ty: String,
    /// The `source` of events built here.
    #[arg(long, default_value = "/tidings-cli")]
    source: String,
    /// The `partitionkey` of events built here.
    #[arg(long)]
    key: Option<String>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(Debug, Args)]
struct Position {
    /// Where to start: earliest, latest, an offset (with --partition on a topic
    /// of several) or an RFC 3339 time.
    #[arg(long, default_value = "earliest")]
    from: String,
}

#[derive(Debug, Args)]
struct Tail {
    /// The topic.
    topic: String,
    #[command(flatten)]
    position: Position,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Most events to print (without --follow).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Keep printing events as they are published.
    #[arg(long)]
    follow: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["group", "queue"])))]
struct Consume {
    /// The topic (stream groups only).
    #[arg(required_unless_present = "queue")]
    topic: Option<String>,
    /// Join this stream group.
    #[arg(long)]
    group: Option<String>,
    /// Receive from this queue group.
    #[arg(long)]
    queue: Option<String>,
    #[command(flatten)]
    position: Position,
    /// Keep consuming when caught up.
    #[arg(long)]
    follow: bool,
}

#[derive(Debug, Args)]
struct Replay {
    /// The topic to read.
    topic: String,
    /// The topic to publish into.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    position: Position,
}

#[derive(Debug, Args, Default)]
struct TopicSettings {
    /// Partitions (alter: only more).
    #[arg(long)]
    partitions: Option<u32>,
    /// always, never or interval:<ms>.
    #[arg(long)]
    fsync: Option<String>,
    /// Segment size in bytes.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Retention by age in milliseconds; 0 keeps segments regardless of age.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Retention by size in bytes; 0 removes the limit.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Dedup window in milliseconds; 0 turns dedup off.
    #[arg(long)]
    dedup_window_ms: Option<u64>,
}

impl TopicSettings {
    fn json(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let zero_is_off = |v: u64| if v == 0 { Value::Null } else { v.into() };
        if let Some(v) = self.partitions {
            m.insert("partitions".into(), v.into());
        }
        if let Some(v) = &self.fsync {
            m.insert("fsync".into(), v.clone().into());
        }
        if let Some(v) = self.segment_bytes {
            m.insert("segment_bytes".into(), v.into());
        }
        if let Some(v) = self.retention_ms {
            m.insert("retention_ms".into(), zero_is_off(v));
        }
        if let Some(v) = self.retention_bytes {
            m.insert("retention_bytes".into(), zero_is_off(v));
        }
        if let Some(v) = self.dedup_window_ms {
            m.insert("dedup_window_ms".into(), zero_is_off(v));
        }
        m
    }
}

#[derive(Debug, Subcommand)]
enum Topics {
    /// List topics.
    List,
    /// Create a topic.
    Create {
        name: String,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Change a topic's settings.
    Alter {
        name: String,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// Delete a topic and its events.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum Groups {
    /// List stream groups with their lag.
    List,
    /// Show a group's members, committed offsets and lag.
    Describe { group: String },
    /// Move a group's committed offsets (it must have no members): replay.
    Reset {
        group: String,
        /// earliest, latest, an offset or an RFC 3339 time.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum Queues {
    /// List queue groups.
    List,
    /// Create a queue group on a topic.
    Create {
        name: String,
        /// The topic it consumes.
        #[arg(long)]
        topic: String,
        /// Lease length in milliseconds.
        #[arg(long)]
        ack_timeout_ms: Option<u64>,
        /// Attempts before an event is dead-lettered.
        #[arg(long)]
        max_deliveries: Option<u32>,
        /// At most one event per key in flight.
        #[arg(long)]
        key_ordering: bool,
    },
    /// Show a queue group's progress and counters.
    Describe { name: String },
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// List a queue group's dead letters.
    List { queue: String },
    /// Show one dead letter.
    Show { queue: String, offset: u64 },
    /// Publish dead letters again, to their topic or --to another.
    Redrive {
        queue: String,
        #[arg(long)]
        to: Option<String>,
        /// At most this many.
        #[arg(long)]
        max: Option<usize>,
    },
    /// Drop every dead letter.
    Purge { queue: String },
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

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.server);
    let json = cli.json;
    let mut out = io::stdout().lock();
    match cli.command {
        Command::Serve(_) => unreachable!("served in main"),
        Command::Publish(p) => publish(&client, &mut out, p, json),
        Command::Tail(t) => tail(&client, &mut out, t, json),
        Command::Consume(c) => consume(&client, &mut out, c, json),
        Command::Replay(r) => replay(&client, &mut out, r, json),
        Command::Topics(t) => topics(&client, &mut out, t, json),
        Command::Groups(g) => groups(&client, &mut out, g, json),
        Command::Queues(q) => queues(&client, &mut out, q, json),
        Command::Dlq(d) => dlq(&client, &mut out, d, json),
        Command::Streams(s) => streams(&client, &mut out, s, json),
    }
}

/// The lines of `reader` that hold more than whitespace: one event each.
fn non_empty_lines(reader: impl BufRead) -> Result<Vec<String>> {
    Ok(reader
        .lines()
        .collect::<io::Result<Vec<_>>>()
        .context("reading events")?
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect())
}

fn streams(client: &Client, out: &mut impl Write, s: Streams, json: bool) -> Result<()> {
    match s {
        Streams::Append {
            stream,
            data,
            expected_version,
            ty,
            source,
        } => {
            let lines = if data.is_empty() {
                non_empty_lines(io::stdin().lock())?
            } else {
                data
            };
            if lines.is_empty() {
                bail!("nothing to append: give data as arguments or lines on standard input");
            }
            let template = Publish {
                topic: String::new(),
                data: Vec::new(),
                file: None,
                ty,
                source,
                key: None,
                batch: lines.len(),
            };
            let events: Vec<Value> = lines.iter().map(|l| build_event(&template, l)).collect();
            let answer = client.call(
                "POST",
                &format!(
                    "/v1/streams/{}/events?expected_version={}",
                    enc(&stream),
                    enc(&expected_version)
                ),
                Some("application/cloudevents-batch+json"),
                Value::from(events).to_string().into_bytes(),
            )?;
            show(out, &answer, json, |a| {
                format!(
                    "appended to {} versions {}..={} (positions {}..={})",
                    a["stream"].as_str().unwrap_or_default(),
                    a["first_version"],
                    a["last_version"],
                    a["first_position"],
                    a["last_position"]
                )
            })
        }
        Streams::Read {
            stream,
            from,
            backward,
            limit,
        } => {
            let mut query = vec![format!(
                "direction={}",
                if backward { "backward" } else { "forward" }
            )];
            query.extend(from.map(|f| format!("from={f}")));
            query.extend(limit.map(|l| format!("limit={l}")));
            let answer = client.get(&format!(
                "/v1/streams/{}/events?{}",
                enc(&stream),
                query.join("&")
            ))?;
            for e in answer["events"].as_array().into_iter().flatten() {
                output::event(out, e, json)?;
            }
            Ok(())
        }
        Streams::All {
            category,
            from,
            limit,
            follow,
        } => {
            let mut query = vec![format!("from={from}")];
            query.extend(category.map(|c| format!("category={}", enc(&c))));
            if follow {
                return client.stream(
                    "GET",
                    &format!("/v1/store/events?{}", query.join("&")),
                    |e| {
                        output::event(out, &e, json)?;
                        out.flush()?;
                        Ok(true)
                    },
                );
            }
            query.extend(limit.map(|l| format!("limit={l}")));
            let answer = client.get(&format!("/v1/store/events?{}", query.join("&")))?;
            for e in answer["events"].as_array().into_iter().flatten() {
                output::event(out, e, json)?;
            }
            Ok(())
        }
        Streams::Info { stream } => {
            let answer = client.get(&format!("/v1/streams/{}", enc(&stream)))?;
            show(out, &answer, json, |a| {
                format!(
                    "{}\tcategory={}\tversion={}\tdeleted={}\tmetadata={}",
                    a["stream"].as_str().unwrap_or_default(),
                    a["category"].as_str().unwrap_or_default(),
                    a["version"],
                    a["deleted"],
                    a["metadata"]
                )
            })
        }
    }
}

/// A JSON answer printed as is, or `human` of it.
fn show(
    out: &mut impl Write,
    answer: &Value,
    json: bool,
    human: impl Fn(&Value) -> String,
) -> Result<()> {
    if json {
        writeln!(out, "{answer}")?;
    } else {
        writeln!(out, "{}", human(answer))?;
    }
    Ok(())
}

fn publish(client: &Client, out: &mut impl Write, p: Publish, json: bool) -> Result<()> {
    if p.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let lines: Vec<String> = if !p.data.is_empty() {
        p.data.clone()
    } else {
        let reader: Box<dyn BufRead> = match &p.file {
            Some(path) => Box::new(io::BufReader::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )),
            None => Box::new(io::stdin().lock()),
        };
        non_empty_lines(reader)?
    };
    if lines.is_empty() {
        bail!("nothing to publish: give data as arguments, --file, or lines on standard input");
    }
    let events: Vec<Value> = lines.iter().map(|l| build_event(&p, l)).collect();
    let mut progress = Progress::new("events published", Some(events.len() as u64));
    let path = format!("/v1/topics/{}/events", enc(&p.topic));
    let (mut published, mut duplicates) = (0, 0);
    for chunk in events.chunks(p.batch) {
        let answer = client.call(
            "POST",
            &path,
            Some("application/cloudevents-batch+json"),
            Value::from(chunk.to_vec()).to_string().into_bytes(),
        )?;
        for e in answer["events"].as_array().into_iter().flatten() {
            if json {
                writeln!(out, "{e}")?;
            }
            if e["duplicate"] == true {
                duplicates += 1;
            } else {
                published += 1;
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    if !json {
        writeln!(
            out,
            "published {published} events to {}{}",
            p.topic,
            if duplicates > 0 {
                format!(" ({duplicates} duplicates answered their original offsets)")
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// A whole CloudEvent from a JSON line, or a new event carrying the line as data.
fn build_event(p: &Publish, line: &str) -> Value {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
        if m.contains_key("specversion") {
            return Value::Object(m);
        }
    }
    let mut event = json!({
        "specversion": "1.0",
        "id": uuid_v7(),
        "source": p.source,
        "type": p.ty,
    });
    match serde_json::from_str::<Value>(line) {
        Ok(data) => {
            event["datacontenttype"] = "application/json".into();
            event["data"] = data;
        }
        Err(_) => {
            event["datacontenttype"] = "text/plain".into();
            event["data"] = line.into();
        }
    }
    if let Some(key) = &p.key {
        event["partitionkey"] = key.clone().into();
    }
    event
}

fn uuid_v7() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn tail(client: &Client, out: &mut impl Write, t: Tail, json: bool) -> Result<()> {
    let mut query = format!("from={}", enc(&t.position.from));
    if let Some(p) = t.partition {
        query.push_str(&format!("&partition={p}"));
    }
    let path = format!("/v1/topics/{}/events", enc(&t.topic));
    if t.follow {
        return client.stream("GET", &format!("{path}?{query}"), |item| {
            output::event(out, &item, json)?;
            out.flush()?;
            Ok(true)
        });
    }
    // Page through, partition by partition, until the limit or the end.
    let mut printed = 0;
    let mut next: Option<Value> = None;
    while printed < t.limit {
        let page = (t.limit - printed).min(1000);
        let answer = match &next {
            None => client.get(&format!("{path}?{query}&limit={page}"))?,
            Some(next) => {
                // Resume each partition where the last page ended.
                let mut events = Vec::new();
                for (p, offset) in next.as_object().into_iter().flatten() {
                    let a =
                        client.get(&format!("{path}?from={offset}&partition={p}&limit={page}"))?;
                    events.extend(a["events"].as_array().cloned().unwrap_or_default());
                }
                events.sort_by_key(|e| e["timestamp_ms"].as_i64());
                events.truncate(page);
                let mut n = next.clone();
                for e in &events {
                    n[e["partition"].to_string()] = (e["offset"].as_u64().unwrap_or(0) + 1).into();
                }
                json!({"events": events, "next": n})
            }
        };
        let events = answer["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            break;
        }
        for e in &events {
            output::event(out, e, json)?;
        }
        printed += events.len();
        next = Some(answer["next"].clone());
    }
    Ok(())
}

/// How long one consume poll waits for events when following; without
/// --follow a poll does not wait, and an empty one means caught up.
const CONSUME_WAIT_MS: u64 = 5_000;

fn consume(client: &Client, out: &mut impl Write, c: Consume, json: bool) -> Result<()> {
    let wait_ms = if c.follow { CONSUME_WAIT_MS } else { 0 };
    if let Some(queue) = &c.queue {
        let q = enc(queue);
        loop {
            let answer = client.call(
                "POST",
                &format!("/v1/queues/{q}/receive?max=100&wait_ms={wait_ms}"),
                None,
                Vec::new(),
            )?;
            let deliveries = answer["deliveries"].as_array().cloned().unwrap_or_default();
            if deliveries.is_empty() && !c.follow {
                return Ok(());
            }
            for d in &deliveries {
                output::event(out, d, json)?;
                out.flush()?;
                let lease = d["lease"].as_str().unwrap_or_default();
                client.call(
                    "POST",
                    &format!("/v1/queues/{q}/leases/{}/ack", enc(lease)),
                    None,
                    Vec::new(),
                )?;
            }
        }
    }
    let group = c
        .group
        .as_deref()
        .expect("clap requires --group or --queue");
    let topic = c
        .topic
        .as_deref()
        .context("a stream group needs the topic to consume")?;
    let g = enc(group);
    let joined = client.send_json(
        "POST",
        &format!("/v1/groups/{g}/members"),
        &json!({"topic": topic, "from": c.position.from}),
    )?;
    let member = joined["member"]
        .as_str()
        .context("no member id in the answer")?
        .to_owned();
    let m = enc(&member);
    let result = (|| -> Result<()> {
        loop {
            let polled = client.get(&format!(
                "/v1/groups/{g}/members/{m}/events?wait_ms={wait_ms}"
            ))?;
            let events = polled["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() && !c.follow {
                return Ok(());
            }
            for e in &events {
                output::event(out, e, json)?;
            }
            out.flush()?;
            if !events.is_empty() {
                client.send_json(
                    "POST",
                    &format!("/v1/groups/{g}/members/{m}/commit"),
                    &json!({"offsets": polled["next"]}),
                )?;
            }
        }
    })();
    // Leave so the group rebalances now rather than after the session timeout.
    let left = client.call(
        "DELETE",
        &format!("/v1/groups/{g}/members/{m}"),
        None,
        Vec::new(),
    );
    result.and(left.map(|_| ()))
}

fn replay(client: &Client, out: &mut impl Write, r: Replay, json: bool) -> Result<()> {
    let source = client.get(&format!("/v1/topics/{}", enc(&r.topic)))?;
    let mut copied = 0u64;
    let partitions = source["partitions"].as_array().cloned().unwrap_or_default();
    let total: u64 = partitions
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap_or(0) - p["log_start"].as_u64().unwrap_or(0))
        .sum();
    let mut progress = Progress::new("events replayed", Some(total));
    let target = format!("/v1/topics/{}/events", enc(&r.to));
    for p in &partitions {
        let id = p["partition"].as_u64().unwrap_or(0);
        let end = p["high_watermark"].as_u64().unwrap_or(0);
        let mut from = r.position.from.clone();
        loop {
            let page = client.get(&format!(
                "/v1/topics/{}/events?partition={id}&from={}&limit=500",
                enc(&r.topic),
                enc(&from)
            ))?;
            let events: Vec<Value> = page["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["offset"].as_u64().unwrap_or(u64::MAX) < end)
                .filter_map(|e| e.get("event").cloned())
                .collect();
            if events.is_empty() {
                break;
            }
            client.call(
                "POST",
                &target,
                Some("application/cloudevents-batch+json"),
                Value::from(events.clone()).to_string().into_bytes(),
            )?;
            copied += events.len() as u64;
            progress.advance(events.len() as u64);
            from = page["next"][id.to_string()].to_string();
        }
    }
    progress.finish();
    show(out, &json!({"replayed": copied}), json, |_| {
        format!("replayed {copied} events from {} to {}", r.topic, r.to)
    })
}

fn topic_line(t: &Value) -> String {
    let parts = t["partitions"].as_array().cloned().unwrap_or_default();
    let events: u64 = parts
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap_or(0) - p["log_start"].as_u64().unwrap_or(0))
        .sum();
    let bytes: u64 = parts
        .iter()
        .map(|p| p["size_bytes"].as_u64().unwrap_or(0))
        .sum();
    format!(
        "{}\t{} partitions\tfsync {}\t{events} events\t{bytes} bytes",
        t["name"].as_str().unwrap_or_default(),
        parts.len(),
        t["config"]["fsync"].as_str().unwrap_or_default()
    )
}

fn topics(client: &Client, out: &mut impl Write, t: Topics, json: bool) -> Result<()> {
    match t {
        Topics::List => {
            let answer = client.get("/v1/topics")?;
            show(out, &answer, json, |a| {
                a["topics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(topic_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Topics::Create { name, settings } => {
            let mut body = settings.json();
            body.insert("name".into(), name.into());
            let answer = client.send_json("POST", "/v1/topics", &Value::Object(body))?;
            show(out, &answer, json, |a| format!("created {}", topic_line(a)))
        }
        Topics::Describe { name } => {
            let answer = client.get(&format!("/v1/topics/{}", enc(&name)))?;
            show(out, &answer, json, |a| {
                let mut s = topic_line(a);
                s.push_str(&format!("\nconfig: {}", a["config"]));
                for p in a["partitions"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "\n  partition {}: offsets {}..{}, {} bytes",
                        p["partition"], p["log_start"], p["high_watermark"], p["size_bytes"]
                    ));
                }
                s
            })
        }
        Topics::Alter { name, settings } => {
            let answer = client.send_json(
                "PATCH",
                &format!("/v1/topics/{}", enc(&name)),
                &Value::Object(settings.json()),
            )?;
            show(out, &answer, json, |a| format!("altered {}", topic_line(a)))
        }
        Topics::Delete { name } => {
            client.call(
                "DELETE",
                &format!("/v1/topics/{}", enc(&name)),
                None,
                Vec::new(),
            )?;
            show(out, &json!({"deleted": name}), json, |_| {
                format!("deleted {name}")
            })
        }
    }
}

fn group_text(g: &Value) -> String {
    let mut s = format!(
        "{}\ttopic {}\tgeneration {}\t{} members\tlag {}",
        g["group"].as_str().unwrap_or_default(),
        g["topic"].as_str().unwrap_or_default(),
        g["generation"],
        g["members"].as_array().map_or(0, Vec::len),
        g["lag"]
    );
    for p in g["partitions"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "\n  partition {}: committed {}, high-watermark {}, lag {}",
            p["partition"], p["committed"], p["high_watermark"], p["lag"]
        ));
    }
    s
}

fn groups(client: &Client, out: &mut impl Write, g: Groups, json: bool) -> Result<()> {
    let answer = match &g {
        Groups::List => client.get("/v1/groups")?,
        Groups::Describe { group } => client.get(&format!("/v1/groups/{}", enc(group)))?,
        Groups::Reset { group, to } => client.send_json(
            "POST",
            &format!("/v1/groups/{}/reset", enc(group)),
            &json!({ "to": to }),
        )?,
    };
    show(out, &answer, json, |a| match &g {
        Groups::List => a["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(group_text)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => group_text(a),
    })
}

fn queue_text(q: &Value) -> String {
    format!(
        "{}\ttopic {}\tlag {}\tdead letters {}\tcounters {}",
        q["name"].as_str().unwrap_or_default(),
        q["topic"].as_str().unwrap_or_default(),
        q["lag"],
        q["dead_letters"],
        q["counters"]
    )
}

fn queues(client: &Client, out: &mut impl Write, q: Queues, json: bool) -> Result<()> {
    match q {
        Queues::List => {
            let answer = client.get("/v1/queues")?;
            show(out, &answer, json, |a| {
                a["queues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(queue_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Queues::Create {
            name,
            topic,
            ack_timeout_ms,
            max_deliveries,
            key_ordering,
        } => {
            let mut body = json!({"name": name, "topic": topic, "key_ordering": key_ordering});
            if let Some(v) = ack_timeout_ms {
                body["ack_timeout_ms"] = v.into();
            }
            if let Some(v) = max_deliveries {
                body["max_deliveries"] = v.into();
            }
            let answer = client.send_json("POST", "/v1/queues", &body)?;
            show(out, &answer, json, |a| format!("created {}", queue_text(a)))
        }
        Queues::Describe { name } => {
            let answer = client.get(&format!("/v1/queues/{}", enc(&name)))?;
            show(out, &answer, json, queue_text)
        }
    }
}

fn dead_letter_text(d: &Value) -> String {
    format!(
        "{}\tfrom {}@{}\tattempts {}\terror {}\t{} {}",
        d["offset"],
        d["source_partition"],
        d["source_offset"],
        d["attempts"],
        d["error"],
        d["event"]["type"].as_str().unwrap_or_default(),
        d["event"]["id"].as_str().unwrap_or_default()
    )
}

fn dlq(client: &Client, out: &mut impl Write, d: Dlq, json: bool) -> Result<()> {
    match d {
        Dlq::List { queue } => {
            let answer = client.get(&format!("/v1/queues/{}/dead-letters", enc(&queue)))?;
            show(out, &answer, json, |a| {
                a["dead_letters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(dead_letter_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Dlq::Show { queue, offset } => {
            let answer =
                client.get(&format!("/v1/queues/{}/dead-letters/{offset}", enc(&queue)))?;
            show(out, &answer, json, |a| {
                format!("{}\n{}", dead_letter_text(a), a["event"])
            })
        }
        Dlq::Redrive { queue, to, max } => {
            let mut progress = Progress::new("dead letters redriven", None);
            let mut body = json!({});
            if let Some(to) = &to {
                body["to"] = to.clone().into();
            }
            if let Some(max) = max {
                body["max"] = max.into();
            }
            let answer = client.send_json(
                "POST",
                &format!("/v1/queues/{}/dead-letters/redrive", enc(&queue)),
                &body,
            )?;
            progress.advance(answer["redriven"].as_u64().unwrap_or(0));
            progress.finish();
            show(out, &answer, json, |a| {
                format!("redrove {} dead letters", a["redriven"])
            })
        }
        Dlq::Purge { queue } => {
            let answer = client.call(
                "DELETE",
                &format!("/v1/queues/{}/dead-letters", enc(&queue)),
                None,
                Vec::new(),
            )?;
            show(out, &answer, json, |a| {
                format!("purged {} dead letters", a["purged"])
            })
        }
    }
}
