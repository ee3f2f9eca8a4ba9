//! `GET /ui/groups` and `GET /ui/groups/{group}`: stream groups (HTTP
//! members and Kafka consumer groups alike), their members and how far
//! behind they are, in events and in time.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_broker::{Broker, GroupDescription, PartitionLag};
use tidings_types::{Offset, TimestampMs};

use super::format::{count, duration_ms, per_second, query, When};
use super::history::{change, rate, sparkline, time_to_drain_ms, Key};
use super::topics::RATE_WINDOW;
use super::{html, Chrome};
use crate::{blocking, Api, ApiError};

/// Groups on one page of the list.
const GROUPS_PER_PAGE: usize = 100;
/// How far back a lag's trend looks.
const TREND_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Template)]
#[template(path = "ui/groups.html")]
struct GroupsPage {
    chrome: Chrome,
    q: String,
    rows: Vec<GroupRow>,
    total: usize,
    matched: usize,
    pages: Vec<(usize, String, bool)>,
}

struct GroupRow {
    name: String,
    topics: String,
    members: usize,
    lag: String,
    behind: bool,
    trend: String,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /ui/groups?q=&page=`: most lag first.
pub(crate) async fn list(
    State(api): State<Api>,
    chrome: Chrome,
    Query(query_in): Query<ListQuery>,
) -> Response {
    let broker = api.broker();
    let names: Vec<String> = broker
        .list_groups()
        .into_iter()
        .filter(|g| chrome.may_describe(ResourceType::Group, g))
        .collect();
    let total = names.len();
    let needle = query_in.q.trim().to_lowercase();
    let mut described: Vec<(u64, GroupDescription)> = names
        .iter()
        .filter(|g| needle.is_empty() || g.to_lowercase().contains(&needle))
        .filter_map(|g| broker.describe_group(g).ok())
        .map(|d| (d.partitions.iter().map(|p| p.lag).sum(), d))
        .collect();
    described.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.group.as_str().cmp(b.1.group.as_str()))
    });
    let matched = described.len();
    let page_count = matched.div_ceil(GROUPS_PER_PAGE).max(1);
    let page = query_in.page.unwrap_or(1).clamp(1, page_count);
    let rows = described
        .iter()
        .skip((page - 1) * GROUPS_PER_PAGE)
        .take(GROUPS_PER_PAGE)
        .map(|(lag, d)| GroupRow {
            name: d.group.to_string(),
            topics: d
                .topics
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            members: d.members.len(),
            lag: count(*lag),
            behind: *lag > 0,
            trend: trend(&api, d.group.as_str()),
        })
        .collect();
    let pages = (1..=page_count)
        .map(|n| {
            let number = n.to_string();
            let href = format!(
                "/ui/groups?{}",
                query(&[
                    ("q", query_in.q.trim()),
                    ("page", if n == 1 { "" } else { &number })
                ])
            );
            (n, href, n == page)
        })
        .collect();
    html(&GroupsPage {
        q: query_in.q.trim().to_owned(),
        rows,
        total,
        matched,
        pages,
        chrome,
    })
}

/// How a group's lag moved over the last five minutes, in words.
fn trend(api: &Api, group: &str) -> String {
    let points = api.inner.history.points(&Key::GroupLag(group.to_owned()));
    match change(&points, TREND_WINDOW) {
        None => "–".to_owned(),
        Some(0) => "steady".to_owned(),
        Some(n) if n > 0 => format!("growing (+{})", count(n.unsigned_abs())),
        Some(n) => format!("shrinking (−{})", count(n.unsigned_abs())),
    }
}

#[derive(Template)]
#[template(path = "ui/group.html")]
struct GroupPage {
    chrome: Chrome,
    name: String,
    generation: u64,
    members: Vec<MemberRow>,
    partitions: Vec<LagRow>,
    lag: String,
    behind: Option<String>,
    trend: String,
    chart: String,
    consumed: String,
    published: String,
    drain: String,
    may_reset: bool,
}

struct MemberRow {
    member: String,
    client: String,
    topics: String,
    partitions: String,
    heard: String,
    late: bool,
}

struct LagRow {
    topic: String,
    partition: u32,
    committed: String,
    end: String,
    lag: String,
    behind: String,
    oldest: Option<(String, When)>,
}

/// How long ago the first event a group has not yet consumed in a
/// partition was appended, if it has one to consume.
fn oldest_unconsumed(broker: &Broker, p: &PartitionLag) -> Option<(Offset, TimestampMs)> {
    if p.lag == 0 {
        return None;
    }
    let from = match p.committed {
        Some(o) => o,
        None => broker.offsets(p.topic.as_str(), p.partition).ok()?.0,
    };
    let entries = broker
        .read(p.topic.as_str(), p.partition, from, 64 * 1024)
        .ok()?;
    entries
        .into_iter()
        .find(|e| e.offset >= from)
        .map(|e| (e.offset, e.timestamp))
}

/// `GET /ui/groups/{group}`.
pub(crate) async fn detail(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = chrome
        .access
        .require(ResourceType::Group, &name, Operation::Describe)
    {
        return chrome.error(e);
    }
    let broker = Arc::clone(api.broker());
    let d = match broker.describe_group(&name) {
        Ok(d) => d,
        Err(e) => return chrome.error(ApiError::from(e)),
    };
    let now = broker.clock().now();
    let partitions = d.partitions.clone();
    let oldest = match blocking(move || {
        Ok(partitions
            .iter()
            .map(|p| oldest_unconsumed(&broker, p))
            .collect::<Vec<_>>())
    })
    .await
    {
        Ok(o) => o,
        Err(e) => return chrome.error(e),
    };
    let mut most_behind_ms: Option<i64> = None;
    let partitions = d
        .partitions
        .iter()
        .zip(oldest)
        .map(|(p, oldest)| {
            let behind_ms = oldest.map(|(_, ts)| (now.0 - ts.0).max(0));
            if let Some(ms) = behind_ms {
                most_behind_ms = Some(most_behind_ms.map_or(ms, |m| m.max(ms)));
            }
            LagRow {
                topic: p.topic.to_string(),
                partition: p.partition.0,
                committed: p
                    .committed
                    .map_or_else(|| "none".to_owned(), |o| count(o.0)),
                end: count(p.high_watermark.0),
                lag: count(p.lag),
                behind: behind_ms.map_or_else(
                    || "–".to_owned(),
                    |ms| duration_ms(u64::try_from(ms).unwrap_or(0)),
                ),
                oldest: oldest.map(|(o, ts)| {
                    (
                        format!("/ui/topics/{}/events/{}/{}", p.topic, p.partition.0, o.0),
                        When::of(ts),
                    )
                }),
            }
        })
        .collect();
    let members = d
        .members
        .iter()
        .map(|m| MemberRow {
            heard: format!(
                "{} ago (session {})",
                duration_ms(u64::try_from(now.0 - m.last_seen.0).unwrap_or(0)),
                duration_ms(u64::try_from(m.session_timeout.as_millis()).unwrap_or(u64::MAX))
            ),
            // Past half its session without a word: it may be about to go.
            late: u128::try_from(now.0 - m.last_seen.0).unwrap_or(0) * 2
                > m.session_timeout.as_millis(),
            member: m.member.clone(),
            client: m.client.clone(),
            topics: m
                .topics
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            partitions: m
                .partitions
                .iter()
                .map(|(t, p)| format!("{t}/{}", p.0))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let history = &api.inner.history;
    let lag_points = history.points(&Key::GroupLag(name.clone()));
    let consumed = rate(
        &history.points(&Key::GroupCommitted(name.clone())),
        RATE_WINDOW,
    );
    let published: Option<f64> = d
        .topics
        .iter()
        .map(|t| rate(&history.points(&Key::Published(t.to_string())), RATE_WINDOW))
        .sum();
    let lag_total: u64 = d.partitions.iter().map(|p| p.lag).sum();
    let drain = match (consumed, published) {
        (Some(c), Some(p)) => match time_to_drain_ms(lag_total, c, p) {
            Some(0) => "caught up".to_owned(),
            Some(ms) => format!("about {} at the last minute's rates", duration_ms(ms)),
            None => "not while it consumes no faster than events arrive".to_owned(),
        },
        _ => "not known yet (the rates need a minute of samples)".to_owned(),
    };
    html(&GroupPage {
        may_reset: chrome.may_change(ResourceType::Group, &name, Operation::Alter),
        generation: d.generation,
        trend: trend(&api, &name),
        chart: sparkline(&lag_points, 480, 60, "lag in events over the last hour"),
        consumed: per_second(consumed),
        published: per_second(published),
        drain,
        lag: count(lag_total),
        behind: most_behind_ms.map(|ms| duration_ms(u64::try_from(ms).unwrap_or(0))),
        members,
        partitions,
        name,
        chrome,
    })
}
