//! Events in: `publish` builds events from lines and sends them in batches;
//! `replay` copies a topic's events into another.

use std::io::{self, BufRead};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use tidings_api::ReadQuery;

use crate::output::Progress;
use crate::Ctx;

#[derive(Debug, Args)]
pub(crate) struct Publish {
    /// The topic.
    topic: String,
    /// Event data, one event each; without any, lines are read.
    data: Vec<String>,
    /// Read lines from this file instead of standard input.
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    template: Template,
    /// The `partitionkey` of events built here.
    #[arg(long)]
    key: Option<String>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

/// The attributes of events built from lines.
#[derive(Debug, Args)]
pub(crate) struct Template {
    /// The `type` of events built here.
    #[arg(long = "type", default_value = "tidings.cli.published")]
    pub(crate) ty: String,
    /// The `source` of events built here.
    #[arg(long, default_value = "/tidings-cli")]
    pub(crate) source: String,
}

#[derive(Debug, Args)]
pub(crate) struct Position {
    /// Where to start: earliest, latest, an offset (with --partition on a topic
    /// of several) or an RFC 3339 time.
    #[arg(long, default_value = "earliest")]
    pub(crate) from: String,
}

#[derive(Debug, Args)]
pub(crate) struct Replay {
    /// The topic to read.
    topic: String,
    /// The topic to publish into.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    position: Position,
}

/// The lines of `reader` that hold more than whitespace: one event each.
pub(crate) fn non_empty_lines(reader: impl BufRead) -> Result<Vec<String>> {
    Ok(reader
        .lines()
        .collect::<io::Result<Vec<_>>>()
        .context("reading events")?
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect())
}

/// A whole CloudEvent from a JSON line, or a new event carrying the line as data.
pub(crate) fn build_event(template: &Template, key: Option<&str>, line: &str) -> Value {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
        if m.contains_key("specversion") {
            return Value::Object(m);
        }
    }
    let mut event = json!({
        "specversion": "1.0",
        "id": tidings_types::uuid_v7().to_string(),
        "source": template.source,
        "type": template.ty,
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
    if let Some(key) = key {
        event["partitionkey"] = key.into();
    }
    event
}

pub(crate) async fn publish(ctx: &mut Ctx, p: Publish) -> Result<()> {
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
    let events: Vec<Value> = lines
        .iter()
        .map(|l| build_event(&p.template, p.key.as_deref(), l))
        .collect();
    let mut progress = Progress::new("events published", Some(events.len() as u64));
    let (mut published, mut duplicates) = (0, 0);
    for chunk in events.chunks(p.batch) {
        let answer = ctx.client.publish_json(&p.topic, chunk).await?;
        for e in &answer.events {
            ctx.out.json_line(e)?;
            if e.duplicate {
                duplicates += 1;
            } else {
                published += 1;
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    ctx.out.text_line(&format!(
        "published {published} events to {}{}",
        p.topic,
        if duplicates > 0 {
            format!(" ({duplicates} duplicates answered their original offsets)")
        } else {
            String::new()
        }
    ))
}

/// Events a replay reads per request.
const REPLAY_PAGE_EVENTS: usize = 500;

pub(crate) async fn replay(ctx: &mut Ctx, r: Replay) -> Result<()> {
    let source = ctx.client.describe_topic(&r.topic).await?;
    let mut copied = 0u64;
    let total: u64 = source
        .partitions
        .iter()
        .map(|p| p.high_watermark - p.log_start)
        .sum();
    let mut progress = Progress::new("events replayed", Some(total));
    for p in &source.partitions {
        let end = p.high_watermark;
        let mut from = r.position.from.clone();
        loop {
            let page = ctx
                .client
                .read_events(
                    &r.topic,
                    &ReadQuery {
                        from: Some(from.clone()),
                        limit: Some(REPLAY_PAGE_EVENTS),
                        partition: Some(p.partition),
                    },
                )
                .await?;
            let events: Vec<Value> = page
                .events
                .into_iter()
                .filter(|e| e.offset < end)
                .filter_map(|e| e.event)
                .collect();
            if events.is_empty() {
                break;
            }
            ctx.client.publish_json(&r.to, &events).await?;
            copied += events.len() as u64;
            progress.advance(events.len() as u64);
            from = page
                .next
                .get(&p.partition)
                .map_or_else(|| "null".to_owned(), u64::to_string);
        }
    }
    progress.finish();
    ctx.out.answer(&json!({ "replayed": copied }), |_| {
        format!("replayed {copied} events from {} to {}", r.topic, r.to)
    })
}
