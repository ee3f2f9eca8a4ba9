//! A topic's events: the browser (`/ui/topics/{topic}/events`), one event
//! (`.../events/{partition}/{offset}`), the export of a view as NDJSON
//! (`.../export`) and its live tail (`.../tail`, Server-Sent Events of
//! table rows).
//!
//! A view is its address: where it starts (`from`: earliest, latest, an
//! offset or an RFC 3339 time; or `at`, the positions a previous page ended
//! at), the partition, the CloudEvents attributes it filters on (`type`,
//! `source`, `subject`, `id`; exact, or a prefix ending in `*`) and the text
//! it searches for in the data, attributes, extensions and headers (`q`).
//!
//! Every scan is bounded ([`SCAN_EVENTS_MAX`] events, [`SCAN_BYTES_MAX`]
//! bytes) and says how much it read, so a filter over a large topic answers
//! quickly with "scanned N, go on" rather than reading the whole topic.
//! Reading is the topic read of the API: nothing is leased or committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use tidings_api::ErrorCode;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_broker::{Broker, Entry, Payload, StartPosition};
use tidings_types::{Offset, PartitionId};

use super::format::{count, preview, query, When};
use super::{html, Chrome};
use crate::sse::{self, Item, Source};
use crate::stop::Stop;
use crate::{blocking, wire, Api, ApiError};

/// Most events one view scans, across its partitions.
pub(crate) const SCAN_EVENTS_MAX: usize = 20_000;
/// Most bytes one view reads, across its partitions.
pub(crate) const SCAN_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most events one export writes, and scans.
const EXPORT_EVENTS_MAX: usize = 100_000;
/// Bytes asked of the broker per read.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Events per page unless the view says otherwise, and at most.
const PAGE_EVENTS_DEFAULT: usize = 50;
const PAGE_EVENTS_MAX: usize = 500;
/// Characters of an event's data shown in a row.
const ROW_DATA_CHARS: usize = 160;

/// A view of a topic's events, as its address states it.
#[derive(serde::Deserialize, Default, Clone, Debug)]
pub(crate) struct View {
    #[serde(default)]
    from: String,
    #[serde(default)]
    at: String,
    #[serde(default)]
    partition: String,
    #[serde(default, rename = "type")]
    ty: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    live: String,
}

impl View {
    fn latest(&self) -> bool {
        self.at.is_empty() && (self.from.is_empty() || self.from == "latest")
    }

    /// The address of this view with `at` (and nothing else) changed.
    fn href(&self, topic: &str, at: &str) -> String {
        format!("/ui/topics/{topic}/events?{}", self.query_with(at))
    }

    fn query_with(&self, at: &str) -> String {
        query(&[
            ("from", if at.is_empty() { &self.from } else { "" }),
            ("at", at),
            ("partition", &self.partition),
            ("type", self.ty.trim()),
            ("source", self.source.trim()),
            ("subject", self.subject.trim()),
            ("id", self.id.trim()),
            ("q", self.q.trim()),
            ("limit", &self.limit),
        ])
    }

    fn limit(&self) -> Result<usize, ApiError> {
        if self.limit.is_empty() {
            return Ok(PAGE_EVENTS_DEFAULT);
        }
        match self.limit.parse::<usize>() {
            Ok(n) if (1..=PAGE_EVENTS_MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_request(format!(
                "limit={:?}: it must be 1..={PAGE_EVENTS_MAX}",
                self.limit
            ))),
        }
    }

    fn partitions(&self, count: u32, topic: &str) -> Result<Vec<PartitionId>, ApiError> {
        if self.partition.is_empty() {
            return Ok((0..count).map(PartitionId).collect());
        }
        match self.partition.parse::<u32>() {
            Ok(p) if p < count => Ok(vec![PartitionId(p)]),
            Ok(p) => Err(ApiError::new(
                ErrorCode::UnknownPartition,
                format!("topic {topic} has {count} partitions; partition {p} does not exist"),
            )),
            Err(_) => Err(ApiError::invalid_request(format!(
                "partition={:?}: expected a partition number",
                self.partition
            ))),
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            ty: Pattern::of(&self.ty),
            source: Pattern::of(&self.source),
            subject: Pattern::of(&self.subject),
            id: Pattern::of(&self.id),
            text: self.q.trim().to_lowercase(),
        }
    }
}

/// An attribute filter: exact, or a prefix when it ends in `*`.
#[derive(Clone, Debug)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn of(text: &str) -> Pattern {
        let text = text.trim();
        if text.is_empty() {
            Pattern::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else {
            Pattern::Exact(text.to_owned())
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Pattern::Any, _) => true,
            (_, None) => false,
            (Pattern::Exact(e), Some(v)) => v == e,
            (Pattern::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
        }
    }
}

/// What a view keeps of the events it scans.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    ty: Pattern,
    source: Pattern,
    subject: Pattern,
    id: Pattern,
    /// Lowercase; empty for none.
    text: String,
}

impl Filter {
    pub(crate) fn matches(&self, entry: &Entry) -> bool {
        let shown = Shown::of(entry);
        self.ty.matches(shown.ty.as_deref())
            && self.source.matches(shown.source.as_deref())
            && self.subject.matches(shown.subject.as_deref())
            && self.id.matches(shown.id.as_deref())
            && (self.text.is_empty() || shown.contains(&self.text))
    }
}

/// An entry's attributes as text: a CloudEvent's own, or for a raw record
/// the `ce_*` headers of the CloudEvents Kafka binding when it has them.
struct Shown {
    ty: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    id: Option<String>,
    /// Extensions, or a raw record's headers (and its key).
    others: Vec<(String, String)>,
    data: String,
}

impl Shown {
    fn of(entry: &Entry) -> Shown {
        match &entry.payload {
            Payload::Event(e) => Shown {
                ty: Some(e.ty().to_owned()),
                source: Some(e.source().to_owned()),
                subject: e.subject().map(str::to_owned),
                id: Some(e.id().to_owned()),
                others: e
                    .extensions()
                    .map(|(k, v)| (k.to_owned(), v.to_canonical_string()))
                    .collect(),
                data: e
                    .data()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .unwrap_or_default(),
            },
            Payload::Raw(r) => {
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value.as_ref())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let mut others: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        let value = h
                            .value
                            .as_ref()
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default();
                        (h.key.clone(), value)
                    })
                    .collect();
                if let Some(key) = &r.key {
                    others.insert(
                        0,
                        ("key".to_owned(), String::from_utf8_lossy(key).into_owned()),
                    );
                }
                Shown {
                    ty: header("ce_type"),
                    source: header("ce_source"),
                    subject: header("ce_subject"),
                    id: header("ce_id"),
                    others,
                    data: r
                        .value
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default(),
                }
            }
        }
    }

    /// Whether `needle` (lowercase) is in any of it.
    fn contains(&self, needle: &str) -> bool {
        let has = |s: &str| s.to_lowercase().contains(needle);
        [&self.ty, &self.source, &self.subject, &self.id]
            .iter()
            .any(|v| v.as_deref().is_some_and(has))
            || self.others.iter().any(|(k, v)| has(k) || has(v))
            || has(&self.data)
    }
}

/// One row of the events table.
pub(crate) struct Row {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) when: When,
    pub(crate) ty: String,
    pub(crate) source: String,
    pub(crate) subject: String,
    pub(crate) id: String,
    pub(crate) data: String,
    pub(crate) raw: bool,
}

impl Row {
    pub(crate) fn of(entry: &Entry) -> Row {
        let shown = Shown::of(entry);
        let dash = |v: Option<String>| v.unwrap_or_else(|| "–".to_owned());
        Row {
            partition: entry.partition.0,
            offset: entry.offset.0,
            when: When::of(entry.timestamp),
            ty: dash(shown.ty),
            source: dash(shown.source),
            subject: shown.subject.unwrap_or_default(),
            id: dash(shown.id),
            data: preview(&shown.data, ROW_DATA_CHARS),
            raw: matches!(entry.payload, Payload::Raw(_)),
        }
    }
}

/// The row of one event, as a live tail sends it.
#[derive(Template)]
#[template(path = "ui/event_row.html")]
struct RowFragment<'a> {
    topic: &'a str,
    row: &'a Row,
}

/// What a scan reads: the partitions, where each starts (none: from the
/// log start, or for `latest` the most recent events), what it keeps, and
/// its bounds.
struct Ask {
    partitions: Vec<PartitionId>,
    starts: BTreeMap<u32, Offset>,
    latest: bool,
    filter: Filter,
    limit: usize,
    events_budget: usize,
}

/// What a scan found and where it ended.
struct Scanned {
    entries: Vec<Entry>,
    /// Events read.
    read: usize,
    /// Where each partition would be read next for the following page.
    next: BTreeMap<u32, u64>,
    /// Whether the budget ran out before the page was full.
    budget_spent: bool,
    /// Whether every partition was read to its end.
    at_end: bool,
}

/// Scans the view's partitions from where it starts, keeping matches.
/// Forward from a position, the page holds the first `limit` matches by
/// append time; from `latest`, the last `limit` matches of the most recent
/// events the budget covers.
fn scan(broker: &Broker, topic: &str, ask: &Ask) -> Result<Scanned, ApiError> {
    let Ask {
        partitions,
        starts,
        latest,
        filter,
        limit,
        events_budget,
    } = ask;
    let (latest, limit, events_budget) = (*latest, *limit, *events_budget);
    let per_partition_events = (events_budget / partitions.len().max(1)).max(1);
    let per_partition_bytes = (SCAN_BYTES_MAX / partitions.len().max(1)).max(READ_CHUNK_BYTES);
    let mut kept: Vec<(Entry, usize)> = Vec::new();
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    let mut read = 0;
    let mut budget_spent = false;
    let mut at_end = true;
    for (index, &p) in partitions.iter().enumerate() {
        let (log_start, high) = broker.offsets(topic, p)?;
        let mut at = match starts.get(&p.0) {
            Some(&o) => o.clamp(log_start, high),
            None if latest => {
                let back = if filter_is_empty(filter) {
                    limit
                } else {
                    per_partition_events
                };
                Offset(high.0.saturating_sub(back as u64).max(log_start.0))
            }
            None => log_start,
        };
        let mut matches: Vec<Entry> = Vec::new();
        let (mut events, mut bytes) = (0, 0);
        while at < high {
            if events >= per_partition_events || bytes >= per_partition_bytes {
                budget_spent = true;
                break;
            }
            if !latest && matches.len() >= limit {
                break;
            }
            let chunk = broker.read(topic, p, at, READ_CHUNK_BYTES)?;
            if chunk.is_empty() {
                break;
            }
            for entry in chunk {
                if entry.offset < at {
                    continue;
                }
                if events >= per_partition_events || (!latest && matches.len() >= limit) {
                    break;
                }
                at = entry.offset.next();
                events += 1;
                bytes += entry_size(&entry);
                if filter.matches(&entry) {
                    matches.push(entry);
                    if latest && matches.len() > limit {
                        matches.remove(0);
                    }
                }
            }
        }
        if at < high {
            at_end = false;
        }
        read += events;
        ends.insert(p.0, at.0);
        kept.extend(matches.into_iter().map(|e| (e, index)));
    }
    kept.sort_by_key(|(e, _)| (e.timestamp, e.partition, e.offset));
    let dropped: Vec<(Entry, usize)> = if latest {
        let cut = kept.len().saturating_sub(limit);
        kept.drain(..cut).collect()
    } else {
        kept.split_off(kept.len().min(limit))
    };
    // A partition resumes at its first match left off the page, or where
    // its scan ended.
    let mut next = ends;
    if !latest {
        for (entry, _) in &dropped {
            let n = next.entry(entry.partition.0).or_default();
            *n = (*n).min(entry.offset.0);
        }
    }
    Ok(Scanned {
        entries: kept.into_iter().map(|(e, _)| e).collect(),
        read,
        next,
        budget_spent,
        at_end,
    })
}

fn filter_is_empty(filter: &Filter) -> bool {
    matches!(
        (&filter.ty, &filter.source, &filter.subject, &filter.id),
        (Pattern::Any, Pattern::Any, Pattern::Any, Pattern::Any)
    ) && filter.text.is_empty()
}

/// About how many bytes an entry held.
fn entry_size(entry: &Entry) -> usize {
    match &entry.payload {
        Payload::Event(e) => e.data().map_or(0, bytes::Bytes::len) + 64,
        Payload::Raw(r) => {
            r.value.as_ref().map_or(0, bytes::Bytes::len)
                + r.key.as_ref().map_or(0, bytes::Bytes::len)
                + 64
        }
    }
}

/// `p:o,p:o` as positions.
fn parse_at(at: &str, partitions: u32) -> Result<BTreeMap<u32, Offset>, ApiError> {
    wire::parse_positions(at, partitions).map_err(|why| {
        ApiError::invalid_request(format!("at={at:?}: {why}; it is <partition>:<offset>,..."))
    })
}

fn format_at(positions: &BTreeMap<u32, u64>) -> String {
    positions
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Where each partition of the view starts.
fn starts(
    broker: &Broker,
    topic: &str,
    view: &View,
    partitions: &[PartitionId],
    count: u32,
) -> Result<BTreeMap<u32, Offset>, ApiError> {
    if !view.at.is_empty() {
        return parse_at(&view.at, count);
    }
    if view.latest() {
        return Ok(BTreeMap::new());
    }
    let start = wire::parse_start(Some(view.from.as_str()))?;
    if matches!(start, StartPosition::Offset(_)) && partitions.len() > 1 {
        return Err(ApiError::invalid_request(format!(
            "topic {topic} has {count} partitions: an offset needs a partition"
        )));
    }
    partitions
        .iter()
        .map(|&p| Ok((p.0, broker.position(topic, p, start)?)))
        .collect()
}

/// The topic, if the principal may read it.
fn readable(chrome: &Chrome, broker: &Broker, topic: &str) -> Result<u32, ApiError> {
    chrome
        .access
        .require(ResourceType::Topic, topic, Operation::Read)?;
    Ok(broker.describe_topic(topic)?.spec.log.partitions)
}

#[derive(Template)]
#[template(path = "ui/events.html")]
struct EventsPage {
    chrome: Chrome,
    topic: String,
    view: View,
    partition_count: u32,
    rows: Vec<Row>,
    summary: String,
    next: Option<String>,
    newest_first: bool,
    export: String,
    tail: String,
    live: bool,
    curl: String,
    kcat: Option<String>,
    may_publish: bool,
}

/// `GET /ui/topics/{topic}/events`.
pub(crate) async fn events(
    State(api): State<Api>,
    chrome: Chrome,
    Path(topic): Path<String>,
    Query(view): Query<View>,
) -> Response {
    match events_page(&api, &chrome, &topic, &view).await {
        Ok((rows, summary, next, partition_count)) => {
            let latest = view.latest();
            let mut rows = rows;
            if latest {
                rows.reverse();
            }
            let export = format!("/ui/topics/{topic}/export?{}", view.query_with(&view.at));
            let tail = format!("/ui/topics/{topic}/tail?{}", view.query_with(""));
            let curl = format!(
                "curl -s '{}/v1/topics/{topic}/events?{}'",
                chrome.context.http_base(),
                query(&[
                    (
                        "from",
                        if view.from.is_empty() {
                            "latest"
                        } else {
                            &view.from
                        }
                    ),
                    ("partition", &view.partition),
                    ("limit", &view.limit),
                ])
            );
            let kcat = chrome
                .context
                .kafka_addr
                .map(|addr| kcat_of(&view, &topic, addr));
            html(&EventsPage {
                kcat,
                may_publish: chrome.may_change(ResourceType::Topic, &topic, Operation::Write),
                live: view.live == "1",
                newest_first: latest,
                partition_count,
                rows,
                summary,
                next,
                export,
                tail,
                curl,
                topic,
                view,
                chrome,
            })
        }
        Err(e) => chrome.error(e),
    }
}

/// The kcat command reading what the view starts at: the partition, and
/// `-o` for its start (`beginning`, `end` less the page, an offset, or
/// `s@<ms>` for a time). Filters are the dashboard's; kcat reads them all.
fn kcat_of(view: &View, topic: &str, addr: std::net::SocketAddr) -> String {
    let limit = view.limit().unwrap_or(PAGE_EVENTS_DEFAULT);
    let from = view.from.trim();
    let offset = match from {
        "" | "latest" => format!("-{limit}"),
        "earliest" => "beginning".to_owned(),
        f if f.parse::<u64>().is_ok() => f.to_owned(),
        f => match wire::parse_start(Some(f)) {
            Ok(StartPosition::Timestamp(ms)) => format!("s@{}", ms.0),
            _ => "beginning".to_owned(),
        },
    };
    let partition = if view.partition.is_empty() {
        String::new()
    } else {
        format!(" -p {}", view.partition)
    };
    format!("kcat -b {addr} -C -t {topic}{partition} -o {offset} -c {limit} -e -J")
}

async fn events_page(
    api: &Api,
    chrome: &Chrome,
    topic: &str,
    view: &View,
) -> Result<(Vec<Row>, String, Option<String>, u32), ApiError> {
    let broker = Arc::clone(api.broker());
    let count_p = readable(chrome, &broker, topic)?;
    let limit = view.limit()?;
    let partitions = view.partitions(count_p, topic)?;
    let starts = starts(&broker, topic, view, &partitions, count_p)?;
    let latest = view.latest();
    let ask = Ask {
        partitions,
        starts,
        latest,
        filter: view.filter(),
        limit,
        events_budget: SCAN_EVENTS_MAX,
    };
    let t = topic.to_owned();
    let scanned = blocking(move || scan(&broker, &t, &ask)).await?;
    let rows: Vec<Row> = scanned.entries.iter().map(Row::of).collect();
    let mut summary = format!(
        "{} event{} shown of {} scanned",
        count(rows.len() as u64),
        if rows.len() == 1 { "" } else { "s" },
        count(scanned.read as u64)
    );
    if scanned.budget_spent {
        summary.push_str(&format!(
            "; the scan stopped at its bound of {} events",
            count(SCAN_EVENTS_MAX as u64)
        ));
    }
    if scanned.at_end {
        summary.push_str("; the end of the topic was reached");
    }
    let next = (!latest && (!scanned.at_end || rows.len() == limit))
        .then(|| view.href(topic, &format_at(&scanned.next)));
    Ok((rows, summary, next, count_p))
}

#[derive(Template)]
#[template(path = "ui/event.html")]
struct EventPage {
    chrome: Chrome,
    topic: String,
    partition: u32,
    offset: u64,
    when: When,
    attributes: Vec<(String, String)>,
    others_title: &'static str,
    others: Vec<(String, String)>,
    data: String,
    data_note: String,
    previous: Option<String>,
    next: Option<String>,
    curl: String,
    kcat: Option<String>,
    json: String,
    journey: Option<String>,
}

/// `GET /ui/topics/{topic}/events/{partition}/{offset}`: one event, all of it.
pub(crate) async fn event(
    State(api): State<Api>,
    chrome: Chrome,
    Path((topic, partition, offset)): Path<(String, u32, u64)>,
) -> Response {
    let broker = Arc::clone(api.broker());
    let found = async {
        let count_p = readable(&chrome, &broker, &topic)?;
        if partition >= count_p {
            return Err(ApiError::new(
                ErrorCode::UnknownPartition,
                format!("topic {topic} has {count_p} partitions; partition {partition} does not exist"),
            ));
        }
        let (b, t) = (Arc::clone(&broker), topic.clone());
        let entries = blocking(move || {
            let (low, high) = b.offsets(&t, PartitionId(partition))?;
            if offset < low.0 || offset >= high.0 {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "partition {partition} of {t} holds offsets {}..{}; {offset} is not among them",
                        low.0, high.0
                    ),
                ));
            }
            Ok((b.read(&t, PartitionId(partition), Offset(offset), 64 * 1024)?, low, high))
        })
        .await?;
        let (entries, low, high) = entries;
        let entry = entries
            .into_iter()
            .find(|e| e.offset.0 == offset)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no event at offset {offset} of partition {partition} (a transaction marker or a compacted gap)"),
                )
            })?;
        Ok((entry, low, high))
    }
    .await;
    let (entry, low, high) = match found {
        Ok(found) => found,
        Err(e) => return chrome.error(e),
    };
    let shown = Shown::of(&entry);
    let mut attributes = Vec::new();
    let mut data_note = String::new();
    let mut data = shown.data.clone();
    match &entry.payload {
        Payload::Event(e) => {
            attributes.push(("id".to_owned(), e.id().to_owned()));
            attributes.push(("source".to_owned(), e.source().to_owned()));
            attributes.push(("type".to_owned(), e.ty().to_owned()));
            attributes.push(("specversion".to_owned(), e.specversion().to_owned()));
            if let Some(s) = e.subject() {
                attributes.push(("subject".to_owned(), s.to_owned()));
            }
            if let Some(t) = e.time_rfc3339() {
                attributes.push(("time".to_owned(), t));
            }
            if let Some(c) = e.datacontenttype() {
                attributes.push(("datacontenttype".to_owned(), c.to_owned()));
            }
            if let Some(s) = e.dataschema() {
                attributes.push(("dataschema".to_owned(), s.to_owned()));
            }
            if let Some(bytes) = e.data() {
                data_note = format!("{} bytes", count(bytes.len() as u64));
                if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
                    data = serde_json::to_string_pretty(&value).unwrap_or(data);
                }
            }
        }
        Payload::Raw(r) => {
            data_note = match &r.value {
                Some(v) => format!(
                    "a record without CloudEvents attributes; its value, {} bytes",
                    count(v.len() as u64)
                ),
                None => {
                    "a record without CloudEvents attributes and with a null value (a tombstone)"
                        .to_owned()
                }
            };
            if let Some(value) = r
                .value
                .as_ref()
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            {
                data = serde_json::to_string_pretty(&value).unwrap_or(data);
            }
        }
    }
    let json = wire::stored_event(&entry)
        .ok()
        .and_then(|s| serde_json::to_string_pretty(&s).ok())
        .unwrap_or_default();
    let link = |o: u64| format!("/ui/topics/{topic}/events/{partition}/{o}");
    let context = &chrome.context;
    html(&EventPage {
        journey: shown.id.as_deref().map(super::journey::href),
        previous: (offset > low.0).then(|| link(offset - 1)),
        next: (offset + 1 < high.0).then(|| link(offset + 1)),
        curl: format!(
            "curl -s '{}/v1/topics/{topic}/events?partition={partition}&from={offset}&limit=1'",
            context.http_base()
        ),
        kcat: context
            .kafka_addr
            .map(|addr| format!("kcat -b {addr} -C -t {topic} -p {partition} -o {offset} -c 1 -J")),
        when: When::of(entry.timestamp),
        others_title: if shown.ty.is_some() && !matches!(entry.payload, Payload::Raw(_)) {
            "Extensions"
        } else {
            "Key and headers"
        },
        others: shown.others,
        attributes,
        data,
        data_note,
        json,
        topic,
        partition,
        offset,
        chrome,
    })
}

/// `GET /ui/topics/{topic}/export?<view>`: the view's events as NDJSON, one
/// event per line in the API's shape, up to [`EXPORT_EVENTS_MAX`].
pub(crate) async fn export(
    State(api): State<Api>,
    chrome: Chrome,
    Path(topic): Path<String>,
    Query(view): Query<View>,
) -> Response {
    let broker = Arc::clone(api.broker());
    let made = async {
        let count_p = readable(&chrome, &broker, &topic)?;
        let partitions = view.partitions(count_p, &topic)?;
        let starts = starts(&broker, &topic, &view, &partitions, count_p)?;
        let ask = Ask {
            partitions,
            starts,
            latest: view.latest(),
            filter: view.filter(),
            limit: EXPORT_EVENTS_MAX,
            events_budget: EXPORT_EVENTS_MAX,
        };
        let t = topic.clone();
        let scanned = blocking(move || scan(&broker, &t, &ask)).await?;
        let mut body = String::new();
        for entry in &scanned.entries {
            let line = serde_json::to_string(&wire::stored_event(entry)?)
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
            body.push_str(&line);
            body.push('\n');
        }
        Ok::<_, ApiError>(body)
    }
    .await;
    match made {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{topic}.ndjson\""),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /ui/topics/{topic}/tail?<view>`: new events of the view as they are
/// appended, each as the HTML row the events table shows, over Server-Sent
/// Events. It starts at the end of the topic (or where its `Last-Event-ID`
/// says) and never leases or commits.
pub(crate) async fn tail(
    State(api): State<Api>,
    chrome: Chrome,
    Path(topic): Path<String>,
    headers: HeaderMap,
    Query(view): Query<View>,
) -> Response {
    let broker = Arc::clone(api.broker());
    let opened = (|| {
        let count_p = readable(&chrome, &broker, &topic)?;
        let partitions = view.partitions(count_p, &topic)?;
        // Where a reconnecting browser (`Last-Event-ID`) or a resumed
        // tail (`at`, the id of the last row it had) left off.
        let resume = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            Some(id) => parse_at(id, count_p)?,
            None if !view.at.is_empty() => parse_at(&view.at, count_p)?,
            None => BTreeMap::new(),
        };
        let mut positions = Vec::with_capacity(partitions.len());
        for p in partitions {
            let at = match resume.get(&p.0) {
                Some(&at) => at.max(broker.position(&topic, p, StartPosition::Earliest)?),
                None => broker.position(&topic, p, StartPosition::Latest)?,
            };
            positions.push((p, at));
        }
        sse::open(
            &api,
            Tail {
                broker: Arc::clone(&broker),
                topic: topic.clone(),
                positions,
                filter: view.filter(),
            },
        )
    })();
    opened.unwrap_or_else(IntoResponse::into_response)
}

/// A topic followed for the live tail.
struct Tail {
    broker: Arc<Broker>,
    topic: String,
    positions: Vec<(PartitionId, Offset)>,
    filter: Filter,
}

impl Source for Tail {
    async fn next(&mut self, stop: &Stop) -> Result<Vec<Item>, ApiError> {
        let mut items = Vec::new();
        let mut read_any = false;
        for i in 0..self.positions.len() {
            let (partition, from) = self.positions[i];
            let (broker, topic) = (Arc::clone(&self.broker), self.topic.clone());
            let chunk =
                blocking(move || Ok(broker.read(&topic, partition, from, READ_CHUNK_BYTES)?))
                    .await?;
            for entry in &chunk {
                read_any = true;
                self.positions[i].1 = entry.offset.next();
                if !self.filter.matches(entry) {
                    continue;
                }
                let row = Row::of(entry);
                let html = RowFragment {
                    topic: &self.topic,
                    row: &row,
                }
                .render()
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
                let id = self
                    .positions
                    .iter()
                    .map(|(p, o)| format!("{}:{}", p.0, o.0))
                    .collect::<Vec<_>>()
                    .join(",");
                items.push(Item::text(id, html));
            }
        }
        if !read_any {
            // A pure wait: ending it early loses nothing.
            tokio::select! {
                waited = self.broker.wait_for_events(&self.topic, &self.positions, sse::SOURCE_WAIT) => waited?,
                () = stop.wait() => {}
            }
        }
        Ok(items)
    }
}
