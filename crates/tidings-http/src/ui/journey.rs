//! One event's journey, by its CloudEvents id (`/ui/journey?id=`): where it
//! was appended, and for each place, what each stream group and queue made
//! of it — consumed or not yet, delivered how often, leased or retrying,
//! dead-lettered with which error, redriven and delivered again.
//!
//! Found by scanning the newest events of each topic the principal may read
//! (or of one topic and its queues' dead-letter and retry topics), within
//! [`JOURNEY_SCAN_EVENTS_MAX`] events in all; the page says how much it
//! scanned. Looking changes nothing.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_broker::{Broker, DeadLetter, DeliveryState, Entry, Payload};
use tidings_types::{Offset, PartitionId};

use super::format::{count, query, When};
use super::{html, Chrome};
use crate::{blocking, Api, ApiError};

/// Most events one search scans, across every topic.
pub(crate) const JOURNEY_SCAN_EVENTS_MAX: usize = 200_000;
/// Most events scanned per partition, from its newest back.
const JOURNEY_PARTITION_EVENTS_MAX: u64 = 20_000;
/// Most places shown (an id published again and again).
const PLACES_MAX: usize = 20;

#[derive(serde::Deserialize, Default)]
pub(crate) struct JourneyQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    topic: String,
}

#[derive(Template)]
#[template(path = "ui/journey.html")]
struct JourneyPage {
    chrome: Chrome,
    id: String,
    topic: String,
    places: Vec<Place>,
    scanned: String,
}

/// One place the event was appended, and what happened to it there.
struct Place {
    title: String,
    href: String,
    when: When,
    kind: &'static str,
    steps: Vec<Step>,
}

/// One group's view of a place.
struct Step {
    who: String,
    href: String,
    what: String,
    when: Option<When>,
    link: Option<(String, String)>,
    bad: bool,
}

/// `GET /ui/journey?id=&topic=`.
pub(crate) async fn page(
    State(api): State<Api>,
    chrome: Chrome,
    Query(q): Query<JourneyQuery>,
) -> Response {
    let id = q.id.trim().to_owned();
    let topic = q.topic.trim().to_owned();
    if id.is_empty() {
        return html(&JourneyPage {
            id,
            topic,
            places: Vec::new(),
            scanned: String::new(),
            chrome,
        });
    }
    let broker = Arc::clone(api.broker());
    // The topics to scan: one and its queues' dead-letter and retry
    // topics, or every one the principal may read.
    let mut topics: Vec<String> = broker
        .list_topics()
        .into_iter()
        .map(|t| t.name.to_string())
        .filter(|t| {
            topic.is_empty()
                || *t == topic
                || t.starts_with(&format!("{topic}."))
                    && (t.ends_with(".dlq") || t.ends_with(".retry"))
        })
        .filter(|t| {
            chrome
                .access
                .allows(ResourceType::Topic, t, Operation::Read)
        })
        .collect();
    topics.sort();
    let (b, wanted, list) = (Arc::clone(&broker), id.clone(), topics.clone());
    let found = blocking(move || Ok(find(&b, &list, &wanted))).await;
    let (hits, scanned) = match found {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let mut places = Vec::new();
    for (topic_name, entry) in hits.into_iter().take(PLACES_MAX) {
        match place(&api, &chrome, &topic_name, &entry).await {
            Ok(p) => places.push(p),
            Err(e) => return chrome.error(e),
        }
    }
    let scanned = format!(
        "Scanned the newest {} events of {} topic{}.",
        count(scanned as u64),
        topics.len(),
        if topics.len() == 1 { "" } else { "s" }
    );
    html(&JourneyPage {
        id,
        topic,
        places,
        scanned,
        chrome,
    })
}

/// Every entry of `topics` whose CloudEvents id is `id`, oldest first, and
/// how many events were scanned.
fn find(broker: &Broker, topics: &[String], id: &str) -> (Vec<(String, Entry)>, usize) {
    let mut hits = Vec::new();
    let mut scanned = 0usize;
    'topics: for topic in topics {
        let Some(partitions) = broker.partition_count(topic) else {
            continue;
        };
        for p in (0..partitions).map(PartitionId) {
            let Ok((low, high)) = broker.offsets(topic, p) else {
                continue;
            };
            let mut at = Offset(
                high.0
                    .saturating_sub(JOURNEY_PARTITION_EVENTS_MAX)
                    .max(low.0),
            );
            while at < high {
                if scanned >= JOURNEY_SCAN_EVENTS_MAX {
                    break 'topics;
                }
                let Ok(chunk) = broker.read(topic, p, at, 1024 * 1024) else {
                    break;
                };
                if chunk.is_empty() {
                    break;
                }
                for entry in chunk {
                    if entry.offset < at {
                        continue;
                    }
                    at = entry.offset.next();
                    scanned += 1;
                    let matches = match &entry.payload {
                        Payload::Event(e) => e.id() == id,
                        Payload::Raw(r) => r
                            .headers
                            .iter()
                            .any(|h| h.key == "ce_id" && h.value.as_deref() == Some(id.as_bytes())),
                    };
                    if matches {
                        hits.push((topic.clone(), entry));
                    }
                }
            }
        }
    }
    hits.sort_by_key(|(_, e)| e.timestamp);
    (hits, scanned)
}

/// What the groups made of the event at one place.
async fn place(api: &Api, chrome: &Chrome, topic: &str, entry: &Entry) -> Result<Place, ApiError> {
    let broker = api.broker();
    let (p, o) = (entry.partition, entry.offset);
    let href = format!("/ui/topics/{topic}/events/{}/{}", p.0, o.0);
    let mut steps = Vec::new();
    // A dead letter, or a redrive into a queue's lane, is a place of its
    // queue's; any other is a topic's.
    if let Some(queue) = queue_of(topic, ".dlq") {
        let letter = DeadLetter::from_entry(entry.clone());
        let what = match &letter {
            Some(d) => format!(
                "dead-lettered by queue {queue} after {} attempt{}: {}",
                d.attempts,
                if d.attempts == 1 { "" } else { "s" },
                if d.error.is_empty() {
                    "(no error given)"
                } else {
                    &d.error
                }
            ),
            None => format!("in queue {queue}'s dead-letter topic"),
        };
        steps.push(Step {
            who: format!("queue {queue}"),
            href: format!("/ui/queues/{queue}"),
            what,
            when: Some(When::of(entry.timestamp)),
            link: Some((
                format!("/ui/queues/{queue}/dead-letters/{}", o.0),
                "The dead letter".to_owned(),
            )),
            bad: true,
        });
        return Ok(Place {
            title: format!("{topic} {}:{}", p.0, o.0),
            href,
            when: When::of(entry.timestamp),
            kind: "dead letter",
            steps,
        });
    }
    if let Some(queue) = queue_of(topic, ".retry") {
        let state = broker.delivery_state(&queue, None, o).await?;
        steps.push(queue_step(&queue, &state, "redriven to it; "));
        return Ok(Place {
            title: format!("{topic} {}:{}", p.0, o.0),
            href,
            when: When::of(entry.timestamp),
            kind: "redrive",
            steps,
        });
    }
    for group in broker.list_groups() {
        if !chrome.may_describe(ResourceType::Group, &group) {
            continue;
        }
        let Ok(d) = broker.describe_group(&group) else {
            continue;
        };
        let Some(lag) = d
            .partitions
            .iter()
            .find(|l| l.topic.as_str() == topic && l.partition == p)
        else {
            continue;
        };
        let (what, bad) = match lag.committed {
            Some(c) if c > o => (format!("consumed: committed at {}", count(c.0)), false),
            Some(c) => (
                format!(
                    "not consumed yet: committed at {}, {} event{} before it",
                    count(c.0),
                    count(o.0 - c.0),
                    if o.0 - c.0 == 1 { "" } else { "s" }
                ),
                true,
            ),
            None => ("not consumed yet: nothing committed".to_owned(), true),
        };
        steps.push(Step {
            who: format!("stream group {group}"),
            href: format!("/ui/groups/{group}"),
            what,
            when: None,
            link: None,
            bad,
        });
    }
    for queue in broker.list_queue_groups() {
        if !chrome.may_describe(ResourceType::Group, &queue) {
            continue;
        }
        match broker.queue_topic(&queue).await {
            Ok(t) if t.as_str() == topic => {}
            _ => continue,
        }
        let state = broker.delivery_state(&queue, Some(p), o).await?;
        steps.push(queue_step(&queue, &state, ""));
    }
    Ok(Place {
        title: format!("{topic} {}:{}", p.0, o.0),
        href,
        when: When::of(entry.timestamp),
        kind: "published",
        steps,
    })
}

/// The queue a dead-letter or retry topic belongs to: `<topic>.<queue>.dlq`.
fn queue_of(topic: &str, suffix: &str) -> Option<String> {
    let rest = topic.strip_suffix(suffix)?;
    rest.rsplit_once('.').map(|(_, q)| q.to_owned())
}

fn queue_step(queue: &str, state: &DeliveryState, prefix: &str) -> Step {
    let (what, when, bad) = match state {
        DeliveryState::Resolved => (
            format!("{prefix}acked (or dead-lettered: see its dead letter below)"),
            None,
            false,
        ),
        DeliveryState::Waiting => (format!("{prefix}not delivered yet"), None, false),
        DeliveryState::Pending(d) => match (&d.lease, d.retry_at) {
            (Some((lease, deadline)), _) => (
                format!(
                    "{prefix}leased now ({lease}), attempt {}{}; the lease runs out at",
                    d.attempts,
                    if d.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(", the last failed with: {}", d.last_error)
                    }
                ),
                Some(When::of(*deadline)),
                false,
            ),
            (None, Some(at)) => (
                format!(
                    "{prefix}failed {} time{}, last with: {}; next attempt at",
                    d.attempts,
                    if d.attempts == 1 { "" } else { "s" },
                    d.last_error
                ),
                Some(When::of(at)),
                true,
            ),
            (None, None) => (
                format!("{prefix}delivered {} times", d.attempts),
                None,
                false,
            ),
        },
    };
    Step {
        who: format!("queue {queue}"),
        href: format!("/ui/queues/{queue}"),
        what,
        when,
        link: None,
        bad,
    }
}

/// The journey page's address for an event id.
pub(crate) fn href(id: &str) -> String {
    format!("/ui/journey?{}", query(&[("id", id)]))
}
