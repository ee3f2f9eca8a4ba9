//! `GET /ui/queues`, `GET /ui/queues/{queue}` and one dead letter: queue
//! groups, what waits, what is held under lease, what is retrying, and the
//! dead letters grouped by the error that sent them there.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_broker::DeadLetter;
use tidings_types::Offset;

use super::browse::Row;
use super::format::{count, duration_ms, preview, query, When};
use super::history::{sparkline, Key};
use super::{html, Chrome};
use crate::{Api, ApiError};

/// Most dead letters one page reads to group them by error.
const DEAD_LETTER_SCAN_MAX: usize = 10_000;
/// Bytes of dead letters asked of the broker per read.
const DEAD_LETTER_READ_BYTES: usize = 1024 * 1024;
/// Dead letters listed on the queue's page.
const DEAD_LETTERS_LISTED: usize = 50;
/// Deliveries in flight or retrying listed on the queue's page.
const PENDING_LISTED: usize = 100;
/// Characters of an error shown in a table.
const ERROR_CHARS: usize = 200;

#[derive(Template)]
#[template(path = "ui/queues.html")]
struct QueuesPage {
    chrome: Chrome,
    q: String,
    rows: Vec<QueueRow>,
    total: usize,
}

struct QueueRow {
    name: String,
    topic: String,
    ready: String,
    in_flight: String,
    retrying: String,
    dead_letters: String,
    has_dead: bool,
    acked: String,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
}

/// `GET /ui/queues?q=`.
pub(crate) async fn list(
    State(api): State<Api>,
    chrome: Chrome,
    Query(query_in): Query<ListQuery>,
) -> Response {
    let broker = api.broker();
    let names: Vec<String> = broker
        .list_queue_groups()
        .into_iter()
        .filter(|q| chrome.may_describe(ResourceType::Group, q))
        .collect();
    let total = names.len();
    let needle = query_in.q.trim().to_lowercase();
    let mut rows = Vec::new();
    for name in names
        .into_iter()
        .filter(|n| needle.is_empty() || n.to_lowercase().contains(&needle))
    {
        let Ok(s) = broker.queue_stats(&name).await else {
            continue;
        };
        let sum = |f: fn(&tidings_broker::QueuePartitionStats) -> u64| {
            s.partitions.iter().map(f).sum::<u64>() + f(&s.redriven)
        };
        let (in_flight, retrying, lag) =
            (sum(|p| p.in_flight), sum(|p| p.retrying), sum(|p| p.lag));
        rows.push(QueueRow {
            topic: s.topic.to_string(),
            ready: count(lag.saturating_sub(in_flight + retrying)),
            in_flight: count(in_flight),
            retrying: count(retrying),
            dead_letters: count(s.dead_letters),
            has_dead: s.dead_letters > 0,
            acked: count(s.counters.acked),
            name,
        });
    }
    html(&QueuesPage {
        q: query_in.q.trim().to_owned(),
        rows,
        total,
        chrome,
    })
}

#[derive(Template)]
#[template(path = "ui/queue.html")]
struct QueuePage {
    chrome: Chrome,
    name: String,
    topic: String,
    dead_letter_topic: String,
    settings: Vec<(&'static str, String)>,
    figures: Vec<(&'static str, String)>,
    partitions: Vec<PartitionRow>,
    pending: Vec<PendingRow>,
    pending_total: usize,
    reasons: Vec<Reason>,
    letters: Vec<LetterRow>,
    letters_caption: String,
    error_filter: String,
    scanned_note: String,
    unresolved_chart: String,
    dead_chart: String,
    may_alter: bool,
}

struct PartitionRow {
    partition: String,
    floor: String,
    end: String,
    unresolved: String,
    in_flight: String,
    retrying: String,
}

struct PendingRow {
    partition: String,
    offset: u64,
    event_href: Option<String>,
    attempts: u32,
    state: String,
    due: When,
    error: String,
}

struct Reason {
    n: u64,
    error: String,
    shown: String,
    count: String,
    first: When,
    last: When,
    href: String,
    redrive: String,
}

struct LetterRow {
    offset: u64,
    when: When,
    attempts: u32,
    source: String,
    error: String,
    row: Row,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct QueueQuery {
    /// Dead letters with exactly this error.
    #[serde(default)]
    error: String,
}

/// The group's dead letters from its oldest on, at most
/// [`DEAD_LETTER_SCAN_MAX`]; and whether there were more.
pub(crate) async fn read_dead_letters(
    api: &Api,
    name: &str,
) -> Result<(Vec<DeadLetter>, bool), ApiError> {
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut from = Offset(0);
    loop {
        let chunk = api
            .broker()
            .dead_letters(name, from, DEAD_LETTER_READ_BYTES)
            .await?;
        let Some(last) = chunk.last() else {
            return Ok((letters, false));
        };
        from = last.offset.next();
        for letter in chunk {
            if letters.len() == DEAD_LETTER_SCAN_MAX {
                return Ok((letters, true));
            }
            letters.push(letter);
        }
    }
}

/// `GET /ui/queues/{queue}?error=`.
pub(crate) async fn detail(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
    Query(query_in): Query<QueueQuery>,
) -> Response {
    if let Err(e) = chrome
        .access
        .require(ResourceType::Group, &name, Operation::Describe)
    {
        return chrome.error(e);
    }
    let broker = api.broker();
    let stats = match broker.queue_stats(&name).await {
        Ok(s) => s,
        Err(e) => return chrome.error(e.into()),
    };
    let (pending, pending_total) = match broker.pending_deliveries(&name, PENDING_LISTED).await {
        Ok(p) => p,
        Err(e) => return chrome.error(e.into()),
    };
    let (letters, more) = match read_dead_letters(&api, &name).await {
        Ok(l) => l,
        Err(e) => return chrome.error(e),
    };
    let c = stats.config;
    let ms = |d: std::time::Duration| duration_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let settings = vec![
        ("Topic", stats.topic.to_string()),
        ("Ack timeout", ms(c.ack_timeout)),
        (
            "Deliveries before dead-lettering",
            c.max_deliveries.to_string(),
        ),
        (
            "Backoff",
            format!(
                "{} × {} up to {}",
                ms(c.backoff.initial),
                c.backoff.factor,
                ms(c.backoff.max)
            ),
        ),
        (
            "Key ordering",
            if c.key_ordering { "on" } else { "off" }.to_owned(),
        ),
    ];
    let counters = stats.counters;
    let figures = vec![
        ("Delivered", count(counters.delivered)),
        ("Redelivered", count(counters.redelivered)),
        ("Acked", count(counters.acked)),
        ("Nacked", count(counters.nacked)),
        ("Leases run out", count(counters.expired)),
        ("Dead-lettered", count(counters.dead_lettered)),
        ("Released by stopping consumers", count(counters.released)),
        ("Redriven", count(counters.redriven)),
    ];
    let row = |label: String, p: &tidings_broker::QueuePartitionStats| PartitionRow {
        partition: label,
        floor: count(p.ack_floor.0),
        end: count(p.high_watermark.0),
        unresolved: count(p.lag),
        in_flight: count(p.in_flight),
        retrying: count(p.retrying),
    };
    let mut partitions: Vec<PartitionRow> = stats
        .partitions
        .iter()
        .map(|p| row(p.partition.0.to_string(), p))
        .collect();
    partitions.push(row("redriven".to_owned(), &stats.redriven));
    let pending = pending
        .into_iter()
        .map(|d| {
            let (state, due) = match (d.lease, d.retry_at) {
                (Some((lease, deadline)), _) => (format!("leased ({lease})"), When::of(deadline)),
                (None, Some(at)) => ("waiting to retry".to_owned(), When::of(at)),
                (None, None) => (
                    "waiting".to_owned(),
                    When::of(tidings_types::TimestampMs(0)),
                ),
            };
            PendingRow {
                partition: d
                    .partition
                    .map_or_else(|| "redriven".to_owned(), |p| p.0.to_string()),
                offset: d.offset.0,
                event_href: d
                    .partition
                    .map(|p| format!("/ui/topics/{}/events/{}/{}", stats.topic, p.0, d.offset.0)),
                attempts: d.attempts,
                state,
                due,
                error: preview(&d.last_error, ERROR_CHARS),
            }
        })
        .collect();

    // Dead letters by error, most first.
    let mut by_error: HashMap<&str, (u64, i64, i64)> = HashMap::new();
    for l in &letters {
        let ts = l.entry.timestamp.0;
        let e = by_error.entry(l.error.as_str()).or_insert((0, ts, ts));
        e.0 += 1;
        e.1 = e.1.min(ts);
        e.2 = e.2.max(ts);
    }
    let mut reasons: Vec<Reason> = by_error
        .into_iter()
        .map(|(error, (n, first, last))| Reason {
            n,
            shown: if error.is_empty() {
                "(no error given)".to_owned()
            } else {
                preview(error, ERROR_CHARS)
            },
            href: format!(
                "/ui/queues/{name}?{}#dead-letters",
                query(&[("error", error)])
            ),
            redrive: format!("/ui/queues/{name}/redrive?{}", query(&[("error", error)])),
            error: error.to_owned(),
            count: count(n),
            first: When::of(tidings_types::TimestampMs(first)),
            last: When::of(tidings_types::TimestampMs(last)),
        })
        .collect();
    reasons.sort_by(|a, b| b.n.cmp(&a.n).then_with(|| a.error.cmp(&b.error)));
    let error_filter = query_in.error;
    let matching: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| error_filter.is_empty() || l.error == error_filter)
        .collect();
    let letters_caption = format!(
        "{} of {} dead letter{}{}",
        count(matching.len().min(DEAD_LETTERS_LISTED) as u64),
        count(matching.len() as u64),
        if matching.len() == 1 { "" } else { "s" },
        if error_filter.is_empty() {
            String::new()
        } else {
            " with this error".to_owned()
        }
    );
    let letter_rows = matching
        .iter()
        .take(DEAD_LETTERS_LISTED)
        .map(|l| LetterRow {
            offset: l.offset.0,
            when: When::of(l.entry.timestamp),
            attempts: l.attempts,
            source: format!("{}:{}", l.source_partition.0, l.source_offset.0),
            error: preview(&l.error, ERROR_CHARS),
            row: Row::of(&l.entry),
        })
        .collect();
    let scanned_note = if more {
        format!(
            "Grouped over the oldest {} dead letters of {}.",
            count(DEAD_LETTER_SCAN_MAX as u64),
            count(stats.dead_letters)
        )
    } else {
        String::new()
    };
    let history = &api.inner.history;
    html(&QueuePage {
        may_alter: chrome.may_change(ResourceType::Group, &name, Operation::Alter),
        unresolved_chart: sparkline(
            &history.points(&Key::QueueUnresolved(name.clone())),
            360,
            48,
            "unresolved events over the last hour",
        ),
        dead_chart: sparkline(
            &history.points(&Key::QueueDead(name.clone())),
            360,
            48,
            "dead letters over the last hour",
        ),
        topic: stats.topic.to_string(),
        dead_letter_topic: stats.dead_letter_topic.to_string(),
        settings,
        figures,
        partitions,
        pending,
        pending_total,
        reasons,
        letters: letter_rows,
        letters_caption,
        error_filter,
        scanned_note,
        name,
        chrome,
    })
}

#[derive(Template)]
#[template(path = "ui/dead_letter.html")]
struct DeadLetterPage {
    chrome: Chrome,
    queue: String,
    dead_letter_topic: String,
    offset: u64,
    when: When,
    attempts: u32,
    error: String,
    source_href: String,
    source: String,
    event_href: String,
    journey: Option<String>,
}

/// `GET /ui/queues/{queue}/dead-letters/{offset}`.
pub(crate) async fn dead_letter(
    State(api): State<Api>,
    chrome: Chrome,
    Path((queue, offset)): Path<(String, u64)>,
) -> Response {
    if let Err(e) = chrome
        .access
        .require(ResourceType::Group, &queue, Operation::Describe)
    {
        return chrome.error(e);
    }
    let broker = api.broker();
    let found = async {
        let stats = broker.queue_stats(&queue).await?;
        let letters = broker
            .dead_letters(&queue, Offset(offset), DEAD_LETTER_READ_BYTES)
            .await?;
        let letter = letters
            .into_iter()
            .find(|l| l.offset.0 == offset)
            .ok_or_else(|| {
                ApiError::new(
                    tidings_api::ErrorCode::UnknownDeadLetter,
                    format!("queue {queue} has no dead letter at offset {offset}: it was redriven, purged, or never was"),
                )
            })?;
        Ok::<_, ApiError>((stats, letter))
    }
    .await;
    let (stats, letter) = match found {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let journey = match &letter.entry.payload {
        tidings_broker::Payload::Event(e) => Some(super::journey::href(e.id())),
        tidings_broker::Payload::Raw(_) => None,
    };
    html(&DeadLetterPage {
        journey,
        dead_letter_topic: stats.dead_letter_topic.to_string(),
        when: When::of(letter.entry.timestamp),
        attempts: letter.attempts,
        error: letter.error.clone(),
        source: format!(
            "{} {}:{}",
            stats.topic, letter.source_partition.0, letter.source_offset.0
        ),
        source_href: format!(
            "/ui/topics/{}/events/{}/{}",
            stats.topic, letter.source_partition.0, letter.source_offset.0
        ),
        event_href: format!("/ui/topics/{}/events/0/{offset}", stats.dead_letter_topic),
        offset,
        queue,
        chrome,
    })
}
