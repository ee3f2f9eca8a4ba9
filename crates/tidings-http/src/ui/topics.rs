//! `GET /ui/topics` and `GET /ui/topics/{topic}`: the topics, with what
//! they hold and who consumes them.

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_broker::{Broker, TopicDescription};

use super::format::{bytes, count, duration_ms, per_second, query};
use super::history::{rate, sparkline, Key};
use super::{html, Chrome};
use crate::Api;

/// Topics on one page of the list.
const TOPICS_PER_PAGE: usize = 100;
/// The window rates are measured over.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Who consumes a topic: a stream group's or queue's name and how far
/// behind it is.
pub(crate) struct Consumer {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) href: String,
    pub(crate) lag: u64,
}

/// Every consumer of every topic the principal may see, by topic.
pub(crate) async fn consumers(broker: &Broker, chrome: &Chrome) -> HashMap<String, Vec<Consumer>> {
    let mut by_topic: HashMap<String, Vec<Consumer>> = HashMap::new();
    for group in broker.list_groups() {
        if !chrome.may_describe(ResourceType::Group, &group) {
            continue;
        }
        let Ok(d) = broker.describe_group(&group) else {
            continue;
        };
        for topic in &d.topics {
            let lag = d
                .partitions
                .iter()
                .filter(|p| &p.topic == topic)
                .map(|p| p.lag)
                .sum();
            by_topic
                .entry(topic.to_string())
                .or_default()
                .push(Consumer {
                    href: format!("/ui/groups/{group}"),
                    name: group.clone(),
                    kind: "stream group",
                    lag,
                });
        }
    }
    for queue in broker.list_queue_groups() {
        if !chrome.may_describe(ResourceType::Group, &queue) {
            continue;
        }
        let Ok(stats) = broker.queue_stats(&queue).await else {
            continue;
        };
        by_topic
            .entry(stats.topic.to_string())
            .or_default()
            .push(Consumer {
                href: format!("/ui/queues/{queue}"),
                name: queue,
                kind: "queue",
                lag: stats.partitions.iter().map(|p| p.lag).sum(),
            });
    }
    by_topic
}

#[derive(Template)]
#[template(path = "ui/topics.html")]
struct TopicsPage {
    chrome: Chrome,
    q: String,
    sort: &'static str,
    rows: Vec<TopicRow>,
    shown: String,
    total: usize,
    matched: usize,
    pages: Vec<(usize, String, bool)>,
    sorts: Vec<(&'static str, &'static str, String, bool)>,
}

struct TopicRow {
    name: String,
    partitions: usize,
    events: String,
    size: String,
    published: String,
    rate: String,
    consumers: usize,
    max_lag: Option<String>,
    trouble: bool,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: Option<usize>,
}

fn stored_events(t: &TopicDescription) -> u64 {
    t.partitions
        .iter()
        .map(|p| p.high_watermark.0.saturating_sub(p.log_start.0))
        .sum()
}

fn stored_bytes(t: &TopicDescription) -> u64 {
    t.partitions.iter().map(|p| p.size_bytes).sum()
}

/// `GET /ui/topics?q=&sort=&page=`.
pub(crate) async fn list(
    State(api): State<Api>,
    chrome: Chrome,
    Query(query_in): Query<ListQuery>,
) -> Response {
    let broker = api.broker();
    let mut topics: Vec<TopicDescription> = broker
        .list_topics()
        .into_iter()
        .filter(|t| chrome.may_describe(ResourceType::Topic, t.name.as_str()))
        .collect();
    let total = topics.len();
    let needle = query_in.q.trim().to_lowercase();
    if !needle.is_empty() {
        topics.retain(|t| t.name.as_str().to_lowercase().contains(&needle));
    }
    let consumers = consumers(broker, &chrome).await;
    let max_lag = |t: &TopicDescription| {
        consumers
            .get(t.name.as_str())
            .and_then(|c| c.iter().map(|c| c.lag).max())
    };
    let sort: &'static str = match query_in.sort.as_str() {
        "size" => "size",
        "events" => "events",
        "lag" => "lag",
        _ => "name",
    };
    match sort {
        "size" => topics.sort_by_key(|t| std::cmp::Reverse(stored_bytes(t))),
        "events" => topics.sort_by_key(|t| std::cmp::Reverse(stored_events(t))),
        "lag" => topics.sort_by_key(|t| std::cmp::Reverse(max_lag(t))),
        _ => topics.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str())),
    }
    let matched = topics.len();
    let page_count = matched.div_ceil(TOPICS_PER_PAGE).max(1);
    let page = query_in.page.unwrap_or(1).clamp(1, page_count);
    let first = (page - 1) * TOPICS_PER_PAGE;
    let rows = topics
        .iter()
        .skip(first)
        .take(TOPICS_PER_PAGE)
        .map(|t| {
            let c = consumers.get(t.name.as_str());
            TopicRow {
                name: t.name.to_string(),
                partitions: t.partitions.len() + t.refused.len(),
                events: count(stored_events(t)),
                size: bytes(stored_bytes(t)),
                published: count(t.published),
                rate: per_second(rate(
                    &api.inner
                        .history
                        .points(&Key::Published(t.name.to_string())),
                    RATE_WINDOW,
                )),
                consumers: c.map_or(0, Vec::len),
                max_lag: max_lag(t).map(count),
                trouble: !t.refused.is_empty() || t.partitions.iter().any(|p| p.failure.is_some()),
            }
        })
        .collect::<Vec<_>>();
    let link = |page: usize, sort: &str| {
        let page = page.to_string();
        format!(
            "/ui/topics?{}",
            query(&[
                ("q", query_in.q.trim()),
                ("sort", if sort == "name" { "" } else { sort }),
                ("page", if page == "1" { "" } else { &page }),
            ])
        )
    };
    let pages = (1..=page_count)
        .map(|n| (n, link(n, sort), n == page))
        .collect();
    let sorts = [
        ("name", "Name"),
        ("events", "Events"),
        ("size", "Size"),
        ("lag", "Lag"),
    ]
    .into_iter()
    .map(|(key, label)| (key, label, link(1, key), key == sort))
    .collect();
    let shown = if rows.is_empty() {
        "0".to_owned()
    } else {
        format!("{}–{}", first + 1, first + rows.len())
    };
    html(&TopicsPage {
        q: query_in.q.trim().to_owned(),
        sort,
        rows,
        shown,
        total,
        matched,
        pages,
        sorts,
        chrome,
    })
}

#[derive(Template)]
#[template(path = "ui/topic.html")]
struct TopicPage {
    chrome: Chrome,
    name: String,
    settings: Vec<(&'static str, String)>,
    partitions: Vec<PartitionRow>,
    consumers: Vec<Consumer>,
    may_read: bool,
    may_delete: bool,
    may_alter: bool,
    rate: String,
    trend: String,
    curl: String,
    kcat: Option<String>,
}

struct PartitionRow {
    partition: u32,
    log_start: String,
    high_watermark: String,
    events: String,
    size: String,
    published: String,
    state: String,
    ok: bool,
}

/// `GET /ui/topics/{topic}`.
pub(crate) async fn detail(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
) -> Response {
    if !chrome.may_describe(ResourceType::Topic, &name) {
        let refused = chrome
            .access
            .require(ResourceType::Topic, &name, Operation::Describe);
        if let Err(e) = refused {
            return chrome.error(e);
        }
    }
    let broker = api.broker();
    let t = match broker.describe_topic(&name) {
        Ok(t) => t,
        Err(e) => return chrome.error(e.into()),
    };
    let spec = &t.spec;
    let optional_ms = |d: Option<Duration>| {
        d.map_or_else(
            || "none".to_owned(),
            |d| duration_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    };
    let settings = vec![
        ("Partitions", spec.log.partitions.to_string()),
        ("Fsync", spec.log.fsync.to_string()),
        ("Segment size", bytes(spec.log.segment_bytes)),
        ("Retention by age", optional_ms(spec.log.retention_age)),
        (
            "Retention by size",
            spec.log
                .retention_bytes
                .map_or_else(|| "none".to_owned(), bytes),
        ),
        ("Dedup window", optional_ms(spec.dedup_window)),
        (
            "Schema validation",
            spec.schema_validation.as_str().to_owned(),
        ),
        ("Published since start", count(t.published)),
        ("Dedup ids evicted early", count(t.dedup_evicted)),
    ];
    let mut partitions: Vec<PartitionRow> = t
        .partitions
        .iter()
        .map(|p| PartitionRow {
            partition: p.partition.0,
            log_start: count(p.log_start.0),
            high_watermark: count(p.high_watermark.0),
            events: count(p.high_watermark.0.saturating_sub(p.log_start.0)),
            size: bytes(p.size_bytes),
            published: count(p.published_events),
            state: p
                .failure
                .as_ref()
                .map_or_else(|| "accepting".to_owned(), |f| format!("stopped: {f}")),
            ok: p.failure.is_none(),
        })
        .collect();
    for (p, reason) in &t.refused {
        partitions.push(PartitionRow {
            partition: p.0,
            log_start: "–".into(),
            high_watermark: "–".into(),
            events: "–".into(),
            size: "–".into(),
            published: "–".into(),
            state: format!("refused at start: {reason}"),
            ok: false,
        });
    }
    partitions.sort_by_key(|p| p.partition);
    let mut consumers = consumers(broker, &chrome)
        .await
        .remove(&name)
        .unwrap_or_default();
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    let context = &chrome.context;
    let curl = format!(
        "curl -s '{}/v1/topics/{name}/events?from=earliest&limit=100'",
        context.http_base()
    );
    let kcat = context
        .kafka_addr
        .map(|addr| format!("kcat -b {addr} -C -t {name} -o beginning -e"));
    let published = api.inner.history.points(&Key::Published(name.clone()));
    html(&TopicPage {
        rate: per_second(rate(&published, RATE_WINDOW)),
        trend: sparkline(&published, 240, 40, "events published since start"),
        may_read: chrome
            .access
            .allows(ResourceType::Topic, &name, Operation::Read),
        may_delete: chrome.may_change(ResourceType::Topic, &name, Operation::Delete),
        may_alter: chrome.may_change(ResourceType::Topic, &name, Operation::AlterConfigs),
        name,
        settings,
        partitions,
        consumers,
        curl,
        kcat,
        chrome,
    })
}
