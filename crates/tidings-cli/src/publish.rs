//! Events in: `publish` builds events from arguments or lines and sends them
//! in batches sized under the server's limits; `replay` copies a topic's
//! records, CloudEvents and raw ones alike, into another topic.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tidings_api::{CreateTopic, ErrorCode, PublishEntry, ReadQuery, TopicSettings};
use tidings_types::{CloudEvent, JSON_BATCH_MEDIA_TYPE};

use crate::output::{plural, Progress};
use crate::send::{Origin, Sender, Sent};
use crate::Ctx;

#[derive(Debug, Args)]
pub(crate) struct Publish {
    /// The topic to publish to.
    topic: String,
    /// Event data, one event each; without any, lines of --file or standard
    /// input are read.
    data: Vec<String>,
    /// Read lines from this file instead of standard input. Every line is
    /// checked before any is sent, and each event's id is derived from the
    /// file, the line's number and its content, so publishing the file again
    /// within the topic's dedup window appends only what is missing.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    #[command(flatten)]
    template: Template,
    /// The `partitionkey` of events built here.
    #[arg(long)]
    key: Option<String>,
    /// Take each event's id from this member of its JSON data: a name, or a
    /// JSON pointer such as /order/id.
    #[arg(long, value_name = "FIELD")]
    id_from: Option<String>,
    /// Send every line as text data, as it is: no JSON, no whole CloudEvents.
    #[arg(long)]
    raw: bool,
    /// Most events per request; by default as many as the server's limits
    /// allow.
    #[arg(long, value_name = "EVENTS")]
    batch: Option<usize>,
    /// How long lines read from standard input wait for more before they are
    /// sent, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    linger_ms: u64,
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
    /// Where to start in every partition: earliest, latest or an RFC 3339
    /// time.
    #[arg(long, default_value = "earliest", value_parser = crate::values::start)]
    pub(crate) from: String,
}

#[derive(Debug, Args)]
pub(crate) struct Replay {
    /// The topic to copy from.
    topic: String,
    /// The topic to copy into. It must exist, unless --create is given.
    #[arg(long, value_name = "TOPIC")]
    to: String,
    /// Create the target topic, with as many partitions as the source, if it
    /// does not exist.
    #[arg(long)]
    create: bool,
    #[command(flatten)]
    position: Position,
}

/// How events built from lines get their ids.
#[derive(Debug)]
pub(crate) enum Ids {
    /// A new UUIDv7 each.
    Fresh,
    /// Derived from the input's name, the line's number and its bytes: the
    /// same line of the same file gets the same id every run.
    Stable(String),
    /// A member of the event's JSON data.
    From(String),
}

/// Builds events from lines (or arguments) and checks them.
pub(crate) struct Builder<'a> {
    pub(crate) template: &'a Template,
    pub(crate) key: Option<&'a str>,
    pub(crate) ids: Ids,
    pub(crate) raw: bool,
}

impl Builder<'_> {
    /// The event for line `number` (without its line ending), checked as the
    /// server will check it. A line that is a JSON object with `specversion`
    /// is a whole CloudEvent; any other is the data of a new event: JSON data
    /// when it parses, text when it does not look like JSON, bytes
    /// (`data_base64`) when it is not UTF-8.
    pub(crate) fn build(&self, number: u64, line: &[u8]) -> Result<Value, String> {
        let text = std::str::from_utf8(line).ok();
        let parsed = match text {
            Some(text) if !self.raw => match serde_json::from_str::<Value>(text) {
                Ok(value) => Some(value),
                Err(e) if looks_like_json(text) => {
                    return Err(format!(
                        "this looks like JSON but does not parse ({e}); pass --raw to send lines as text"
                    ))
                }
                Err(_) => None,
            },
            _ => None,
        };
        if let Some(Value::Object(m)) = &parsed {
            if m.contains_key("specversion") {
                let event = Value::Object(m.clone());
                check(&event).map_err(|e| format!("not a valid CloudEvent: {e}"))?;
                return Ok(event);
            }
        }
        let id = match &self.ids {
            Ids::Fresh => tidings_types::uuid_v7().to_string(),
            Ids::Stable(input) => stable_id(input, number, line),
            Ids::From(field) => id_from(parsed.as_ref(), field)?,
        };
        let mut event = json!({
            "specversion": "1.0",
            "id": id,
            "source": self.template.source,
            "type": self.template.ty,
        });
        match (parsed, text) {
            (Some(data), _) => {
                event["datacontenttype"] = "application/json".into();
                event["data"] = data;
            }
            (None, Some(text)) => {
                event["datacontenttype"] = "text/plain".into();
                event["data"] = text.into();
            }
            (None, None) => {
                event["datacontenttype"] = "application/octet-stream".into();
                event["data_base64"] = BASE64.encode(line).into();
            }
        }
        if let Some(key) = self.key {
            event["partitionkey"] = key.into();
        }
        check(&event)?;
        Ok(event)
    }
}

/// Whether text that does not parse as JSON was meant to be JSON.
fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().chars().next(), Some('{' | '['))
}

/// Checks an event in the JSON format as the server will.
fn check(event: &Value) -> Result<(), String> {
    CloudEvent::from_json_value(event.clone())
        .and_then(|e| e.validate())
        .map_err(|e| e.to_string())
}

/// The id of line `number` of `input`: the first 128 bits of a SHA-256 of the
/// three, in hex.
fn stable_id(input: &str, number: u64, line: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(input.as_bytes());
    hash.update([0]);
    hash.update(number.to_be_bytes());
    hash.update(line);
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id `--id-from` names in the data: a string, or a number as written.
fn id_from(data: Option<&Value>, field: &str) -> Result<String, String> {
    let found = match data {
        Some(data) if field.starts_with('/') => data.pointer(field),
        Some(data) => data.get(field),
        None => None,
    };
    match found {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(format!(
            "{field} (from --id-from) is {other}; an id is a non-empty string or a number"
        )),
        None => Err(format!("the data has no {field} (from --id-from)")),
    }
}

/// A line without its line ending.
fn trim_line_ending(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
    }
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether a line holds only whitespace (skipped, as it carries no event).
fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// The non-blank lines of a reader, numbered from 1 (blank ones count), one
/// at a time, without their line endings.
struct Lines<R> {
    reader: R,
    line: Vec<u8>,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            line: Vec::new(),
            number: 0,
        }
    }

    /// The next non-blank line and its number; `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, &[u8])>> {
        loop {
            self.line.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.line)
                .context("reading events")?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            if !blank(trim_line_ending(&self.line)) {
                return Ok(Some((self.number, trim_line_ending(&self.line))));
            }
        }
    }
}

/// Reads the non-blank lines of `reader`, numbered from 1, calling `each`
/// with each.
fn for_each_line(
    reader: impl BufRead,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut lines = Lines::new(reader);
    while let Some((number, line)) = lines.next()? {
        each(number, line)?;
    }
    Ok(())
}

/// Most bad lines a check lists before it counts the rest.
const BAD_LINES_SHOWN: usize = 10;

/// The checks of a whole input: every bad line, or nothing.
#[derive(Default)]
struct Bad {
    shown: Vec<String>,
    count: u64,
}

impl Bad {
    fn add(&mut self, origin: Origin, why: impl std::fmt::Display) {
        self.count += 1;
        if self.shown.len() < BAD_LINES_SHOWN {
            self.shown.push(format!("{origin}: {why}"));
        }
    }

    fn into_result(self, what: &str) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let mut message = format!(
            "{} of {what} cannot be published, so nothing was:\n{}",
            plural(self.count, "entry"),
            self.shown.join("\n")
        );
        if self.count > self.shown.len() as u64 {
            message.push_str(&format!(
                "\n...and {} more",
                self.count - self.shown.len() as u64
            ));
        }
        bail!(message)
    }
}

pub(crate) async fn publish(ctx: &mut Ctx, p: Publish) -> Result<()> {
    if p.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    if p.raw && p.id_from.is_some() {
        bail!("--id-from reads JSON data, and --raw sends lines as text: give one of them");
    }
    // The topic first, so a typo is not found after reading a whole file.
    ctx.client.describe_topic(&p.topic).await?;
    let limits = ctx.client.limits().await?;
    let ids = |stable: Option<String>| match (&p.id_from, stable) {
        (Some(field), _) => Ids::From(field.clone()),
        (None, Some(input)) => Ids::Stable(input),
        (None, None) => Ids::Fresh,
    };
    let sent = if !p.data.is_empty() {
        if p.file.is_some() {
            bail!("give DATA arguments or --file, not both");
        }
        let builder = Builder {
            template: &p.template,
            key: p.key.as_deref(),
            ids: ids(None),
            raw: p.raw,
        };
        let mut sender = Sender::new(
            &p.topic,
            JSON_BATCH_MEDIA_TYPE,
            &limits,
            p.batch,
            Progress::new("events published", Some(p.data.len() as u64)),
        );
        let mut events = Vec::with_capacity(p.data.len());
        let mut bad = Bad::default();
        for (i, data) in p.data.iter().enumerate() {
            let origin = Origin::Argument(i as u64 + 1);
            match encode(&builder, &sender, origin, data.as_bytes()) {
                Ok(bytes) => events.push((origin, bytes)),
                Err(why) => bad.add(origin, why),
            }
        }
        bad.into_result("the arguments")?;
        for (origin, bytes) in events {
            sender.push(ctx, origin, &bytes).await?;
        }
        sender.finish(ctx).await?
    } else if let Some(path) = &p.file {
        publish_file(ctx, &p, path, &limits, ids).await?
    } else {
        publish_stdin(ctx, &p, &limits, ids(None)).await?
    };
    ctx.out.text_line(&published_line(&p.topic, sent))
}

/// What a publish appended, in words.
fn published_line(topic: &str, sent: Sent) -> String {
    let mut line = format!("published {} to {topic}", plural(sent.appended, "event"));
    if sent.duplicates > 0 {
        line.push_str(&format!(
            " ({} {} already there within its dedup window: not appended again)",
            plural(sent.duplicates, "event"),
            were(sent.duplicates)
        ));
    }
    line
}

/// An event built from `line` and encoded, or why it cannot be sent.
fn encode(
    builder: &Builder<'_>,
    sender: &Sender,
    origin: Origin,
    line: &[u8],
) -> Result<Vec<u8>, String> {
    let number = match origin {
        Origin::Line(n) | Origin::Argument(n) => n,
        Origin::Record { offset, .. } => offset,
    };
    let event = builder.build(number, line)?;
    let bytes = serde_json::to_vec(&event).expect("a JSON value encodes");
    sender.check_size(bytes.len())?;
    Ok(bytes)
}

/// Every input built into an event, or every bad one named (up to
/// [`BAD_LINES_SHOWN`]) and none sent.
pub(crate) fn build_all(
    builder: &Builder<'_>,
    inputs: impl IntoIterator<Item = (Origin, Vec<u8>)>,
    what: &str,
) -> Result<Vec<Value>> {
    let mut bad = Bad::default();
    let mut events = Vec::new();
    for (origin, input) in inputs {
        let number = match origin {
            Origin::Line(n) | Origin::Argument(n) => n,
            Origin::Record { offset, .. } => offset,
        };
        match builder.build(number, &input) {
            Ok(event) => events.push(event),
            Err(why) => bad.add(origin, why),
        }
    }
    bad.into_result(what)?;
    Ok(events)
}

/// The non-blank lines of `reader`, numbered from 1.
pub(crate) fn read_lines(reader: impl BufRead) -> Result<Vec<(Origin, Vec<u8>)>> {
    let mut lines = Vec::new();
    for_each_line(reader, |number, line| {
        lines.push((Origin::Line(number), line.to_vec()));
        Ok(())
    })?;
    Ok(lines)
}

/// `was` or `were`, for a count.
fn were(n: u64) -> &'static str {
    if n == 1 {
        "was"
    } else {
        "were"
    }
}

/// A file: every line checked first, then sent; ids stable per file and line.
async fn publish_file(
    ctx: &mut Ctx,
    p: &Publish,
    path: &PathBuf,
    limits: &tidings_api::ServerLimits,
    ids: impl Fn(Option<String>) -> Ids,
) -> Result<Sent> {
    let open = || File::open(path).with_context(|| format!("opening {}", path.display()));
    let input = std::fs::canonicalize(path)
        .with_context(|| format!("opening {}", path.display()))?
        .to_string_lossy()
        .into_owned();
    let builder = Builder {
        template: &p.template,
        key: p.key.as_deref(),
        ids: ids(Some(input)),
        raw: p.raw,
    };
    // The check: every line, nothing kept.
    let probe = Sender::new(
        &p.topic,
        JSON_BATCH_MEDIA_TYPE,
        limits,
        p.batch,
        Progress::new("", Some(0)),
    );
    let mut bad = Bad::default();
    let mut lines = 0u64;
    for_each_line(BufReader::new(open()?), |number, line| {
        lines += 1;
        if let Err(why) = encode(&builder, &probe, Origin::Line(number), line) {
            bad.add(Origin::Line(number), why);
        }
        Ok(())
    })?;
    bad.into_result(&path.display().to_string())?;
    if lines == 0 {
        bail!(
            "nothing to publish: {} has no lines with events",
            path.display()
        );
    }
    let mut sender = Sender::new(
        &p.topic,
        JSON_BATCH_MEDIA_TYPE,
        limits,
        p.batch,
        Progress::new("events published", Some(lines)),
    )
    .with_resume_hint(
        "\nthe ids of a file's events are stable: publishing the file again appends only what is missing",
    );
    // The send: read again, one batch in memory at a time.
    let mut lines = Lines::new(BufReader::new(open()?));
    while let Some((number, content)) = lines.next()? {
        let origin = Origin::Line(number);
        let bytes = match encode(&builder, &sender, origin, content) {
            Ok(bytes) => bytes,
            Err(why) => {
                // The file changed since it was checked.
                sender.flush(ctx).await?;
                bail!("{origin}: {why} (the file changed while it was published; lines before it were published)");
            }
        };
        sender.push(ctx, origin, &bytes).await?;
    }
    sender.finish(ctx).await
}

/// Lines of standard input, published as they arrive: a batch goes out when
/// it is full or when its first line has waited `--linger-ms`, so
/// `tail -f app.log | tidings publish logs` sends each line promptly.
async fn publish_stdin(
    ctx: &mut Ctx,
    p: &Publish,
    limits: &tidings_api::ServerLimits,
    ids: Ids,
) -> Result<Sent> {
    let builder = Builder {
        template: &p.template,
        key: p.key.as_deref(),
        ids,
        raw: p.raw,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<(u64, Vec<u8>)>>(4096);
    // Standard input blocks: a thread reads it.
    std::thread::spawn(move || {
        let result = for_each_line(io::stdin().lock(), |number, line| {
            tx.blocking_send(Ok((number, line.to_vec())))
                .map_err(|_| anyhow::anyhow!("the publisher stopped"))
        });
        if let Err(e) = result {
            let e = e
                .downcast::<io::Error>()
                .unwrap_or_else(|e| io::Error::other(e.to_string()));
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut sender = Sender::new(
        &p.topic,
        JSON_BATCH_MEDIA_TYPE,
        limits,
        p.batch,
        Progress::new("events published", None),
    );
    let linger = Duration::from_millis(p.linger_ms);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut any = false;
    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    sender.flush(ctx).await?;
                    deadline = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(next) = next else { break };
        let (number, line) = next.context("reading standard input")?;
        any = true;
        let origin = Origin::Line(number);
        let bytes = match encode(&builder, &sender, origin, &line) {
            Ok(bytes) => bytes,
            Err(why) => {
                sender.flush(ctx).await?;
                let before = if number > 1 {
                    format!("lines before line {number} were published; ")
                } else {
                    String::new()
                };
                bail!("{origin}: {why}\n{before}it and the lines after it were not");
            }
        };
        sender.push(ctx, origin, &bytes).await?;
        if sender.has_pending() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + linger);
        }
    }
    if !any {
        bail!("nothing to publish: give data as arguments, --file, or lines on standard input");
    }
    sender.finish(ctx).await
}

/// Records one replay page asks for: at the log's 1 MiB record limit, a page
/// stays under the client's answer limit even in base64.
const REPLAY_PAGE_RECORDS: usize = 128;

/// What a replay copied.
#[derive(Debug, Default, serde::Serialize)]
struct Replayed {
    /// CloudEvents appended to the target.
    events: u64,
    /// Raw records (no CloudEvents headers) appended to the target.
    raw_records: u64,
    /// Events the target already held within its dedup window.
    duplicates: u64,
    /// Records removed by retention before they could be read.
    skipped: u64,
}

pub(crate) async fn replay(ctx: &mut Ctx, r: Replay) -> Result<()> {
    if r.topic == r.to {
        bail!("--to names the topic being replayed; copy into another topic");
    }
    let source = ctx.client.describe_topic(&r.topic).await?;
    match ctx.client.describe_topic(&r.to).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::UnknownTopic) && r.create => {
            let create = CreateTopic {
                name: r.to.clone(),
                settings: TopicSettings {
                    partitions: Some(source.config.partitions),
                    ..Default::default()
                },
            };
            ctx.client.create_topic(&create).await?;
        }
        Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => bail!(
            "the target topic {} does not exist: create it first (tidings topics create {} --partitions {}), or pass --create",
            r.to,
            r.to,
            source.config.partitions
        ),
        Err(e) => return Err(e.into()),
    }
    let limits = ctx.client.limits().await?;
    let page_limit = REPLAY_PAGE_RECORDS.min(usize::try_from(limits.read_events_max).unwrap_or(1));
    let total: u64 = source
        .partitions
        .iter()
        .map(|p| p.high_watermark - p.log_start)
        .sum();
    let mut sender = Sender::new(
        &r.to,
        tidings_api::RECORDS_MEDIA_TYPE,
        &limits,
        None,
        Progress::new("records replayed", Some(total)),
    )
    .with_resume_hint(
        "\nreplaying again copies CloudEvents once within the target's dedup window, but raw records again",
    );
    let mut replayed = Replayed::default();
    for p in &source.partitions {
        // The end is where the partition ended when the replay began, so a
        // replay into a topic that feeds the source still ends.
        let end = p.high_watermark;
        let mut from = r.position.from.clone();
        let mut expected: Option<u64> = None;
        loop {
            let query = ReadQuery {
                from: Some(from.clone()),
                limit: Some(page_limit),
                partition: Some(p.partition),
            };
            let page = ctx.client.read_events(&r.topic, &query).await?;
            let mut last = None;
            for stored in page.events {
                if stored.offset >= end {
                    break;
                }
                // Offsets are dense: a jump is what retention removed
                // since the replay began.
                if let Some(want) = expected {
                    replayed.skipped += stored.offset.saturating_sub(want);
                }
                expected = Some(stored.offset + 1);
                last = Some(stored.offset);
                let origin = Origin::Record {
                    partition: p.partition,
                    offset: stored.offset,
                };
                if stored.event.is_some() {
                    replayed.events += 1;
                } else {
                    replayed.raw_records += 1;
                }
                let entry =
                    serde_json::to_vec(&PublishEntry::from(stored)).expect("API types encode");
                sender.push(ctx, origin, &entry).await?;
            }
            let next = page.next.get(&p.partition).copied().unwrap_or(end);
            if last.is_none() || next >= end {
                break;
            }
            from = next.to_string();
        }
    }
    let sent = sender.finish(ctx).await?;
    // Every duplicate is an event: raw records are never deduplicated.
    replayed.duplicates = sent.duplicates;
    replayed.events -= sent.duplicates;
    ctx.out
        .answer(&replayed, |r2| replay_line(&r.topic, &r.to, r2))?;
    if replayed.skipped > 0 {
        bail!(
            "{} of {} were removed by retention before they could be copied",
            plural(replayed.skipped, "record"),
            r.topic
        );
    }
    Ok(())
}

/// What a replay did, in words.
fn replay_line(from: &str, to: &str, r: &Replayed) -> String {
    let copied = r.events + r.raw_records;
    let noun = if r.raw_records == 0 {
        "event"
    } else {
        "record"
    };
    let mut line = format!("replayed {} from {from} to {to}", plural(copied, noun));
    if r.raw_records > 0 {
        line.push_str(&format!(
            " ({} and {} without CloudEvents headers)",
            plural(r.events, "event"),
            plural(r.raw_records, "raw record")
        ));
    }
    if r.duplicates > 0 {
        line.push_str(&format!(
            "; {} {} already in {to} within its dedup window, so not appended again",
            plural(r.duplicates, "event"),
            were(r.duplicates)
        ));
    }
    line
}
