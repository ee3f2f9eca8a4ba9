//! `GET /ui`: the server at a glance, and what needs someone's attention.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use tidings_auth::acl::ResourceType;

use super::format::{bytes, count};
use super::history::{change, Key};
use super::{html, Chrome};
use crate::Api;

/// At most this many rows in each "needs attention" list.
const ATTENTION_ROWS_MAX: usize = 10;
/// How far back "growing" looks.
const GROWTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Overview {
    chrome: Chrome,
    status: &'static str,
    version: &'static str,
    listeners: Vec<(&'static str, String)>,
    stored: String,
    disk: Option<String>,
    figures: Vec<(&'static str, String, &'static str)>,
    lagging: Vec<Lagging>,
    dead: Vec<Dead>,
    leased: Vec<Leased>,
    refused: Vec<Refused>,
    trends_left_out: usize,
}

struct Lagging {
    group: String,
    lag: String,
    members: usize,
}

struct Dead {
    queue: String,
    dead_letters: String,
    /// Dead letters added over the last ten minutes, when any.
    growing: Option<String>,
}

struct Leased {
    queue: String,
    leases: String,
    /// Leases past their deadline that no receive has taken back yet (a
    /// consumer gone quiet), and how long the oldest has been over.
    stuck: Option<String>,
}

/// Leases looked at per queue to find those past their deadline.
const LEASES_LOOKED_AT_MAX: usize = 10_000;

struct Refused {
    topic: String,
    partition: u32,
    reason: String,
}

pub(crate) async fn page(State(api): State<Api>, chrome: Chrome) -> Response {
    let broker = api.broker();
    let topics: Vec<_> = broker
        .list_topics()
        .into_iter()
        .filter(|t| chrome.may_describe(ResourceType::Topic, t.name.as_str()))
        .collect();
    let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
    let stored: u64 = topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.size_bytes)
        .sum();
    let mut refused = Vec::new();
    for t in &topics {
        for (p, reason) in &t.refused {
            refused.push(Refused {
                topic: t.name.to_string(),
                partition: p.0,
                reason: reason.clone(),
            });
        }
        for p in &t.partitions {
            if let Some(failure) = &p.failure {
                refused.push(Refused {
                    topic: t.name.to_string(),
                    partition: p.partition.0,
                    reason: format!("stopped accepting appends: {failure}"),
                });
            }
        }
    }

    let groups: Vec<String> = broker
        .list_groups()
        .into_iter()
        .filter(|g| chrome.may_describe(ResourceType::Group, g))
        .collect();
    let mut lagging: Vec<(u64, Lagging)> = groups
        .iter()
        .filter_map(|g| broker.describe_group(g).ok())
        .map(|d| {
            let lag: u64 = d.partitions.iter().map(|p| p.lag).sum();
            (
                lag,
                Lagging {
                    group: d.group.to_string(),
                    lag: count(lag),
                    members: d.members.len(),
                },
            )
        })
        .filter(|(lag, _)| *lag > 0)
        .collect();
    lagging.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.group.cmp(&b.1.group)));

    let queues: Vec<String> = broker
        .list_queue_groups()
        .into_iter()
        .filter(|q| chrome.may_describe(ResourceType::Group, q))
        .collect();
    let mut dead = Vec::new();
    let mut dead_total = 0;
    for q in &queues {
        if let Ok(stats) = broker.queue_stats(q).await {
            dead_total += stats.dead_letters;
            if stats.dead_letters > 0 {
                dead.push((stats.dead_letters, q.clone()));
            }
        }
    }
    dead.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let held: Vec<(String, usize)> = broker
        .leases_held()
        .await
        .into_iter()
        .filter(|(q, n)| *n > 0 && chrome.may_describe(ResourceType::Group, q))
        .collect();
    let leases_total: usize = held.iter().map(|(_, n)| n).sum();
    let now = broker.clock().now().0;
    let mut leased = Vec::new();
    for (queue, n) in held {
        let stuck = match broker
            .pending_deliveries(&queue, LEASES_LOOKED_AT_MAX)
            .await
        {
            Ok((pending, _)) => {
                let over: Vec<i64> = pending
                    .iter()
                    .filter_map(|d| d.lease.map(|(_, deadline)| now - deadline.0))
                    .filter(|over| *over > 0)
                    .collect();
                over.iter().max().map(|longest| {
                    format!(
                        "{} past their deadline, the oldest by {}",
                        count(over.len() as u64),
                        super::format::duration_ms(u64::try_from(*longest).unwrap_or(0))
                    )
                })
            }
            Err(_) => None,
        };
        leased.push(Leased {
            queue,
            leases: count(n as u64),
            stuck,
        });
    }
    // Stuck ones first, then the most held.
    leased.sort_by_key(|l| l.stuck.is_none());
    leased.truncate(ATTENTION_ROWS_MAX);

    let context = &chrome.context;
    let scheme = if context.https { "https" } else { "http" };
    let mut listeners = Vec::new();
    if let Some(addr) = context.http_addr {
        listeners.push(("HTTP", format!("{scheme}://{addr}")));
    }
    if let Some(addr) = context.kafka_addr {
        listeners.push(("Kafka", addr.to_string()));
    }
    let page = Overview {
        status: if api.draining() { "draining" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        listeners,
        stored: bytes(stored),
        disk: context.data_dir.as_deref().and_then(disk_free),
        figures: vec![
            ("Topics", count(topics.len() as u64), "/ui/topics"),
            ("Partitions", count(partitions as u64), "/ui/topics"),
            ("Stream groups", count(groups.len() as u64), "/ui/groups"),
            ("Queues", count(queues.len() as u64), "/ui/queues"),
            ("Leases held", count(leases_total as u64), "/ui/queues"),
            ("Dead letters", count(dead_total), "/ui/queues"),
        ],
        lagging: lagging
            .into_iter()
            .take(ATTENTION_ROWS_MAX)
            .map(|(_, l)| l)
            .collect(),
        dead: dead
            .into_iter()
            .take(ATTENTION_ROWS_MAX)
            .map(|(n, queue)| {
                let points = api.inner.history.points(&Key::QueueDead(queue.clone()));
                Dead {
                    growing: change(&points, GROWTH_WINDOW)
                        .filter(|c| *c > 0)
                        .map(|c| count(c.unsigned_abs())),
                    queue,
                    dead_letters: count(n),
                }
            })
            .collect(),
        leased,
        refused,
        trends_left_out: api.inner.history.left_out(),
        chrome,
    };
    html(&page)
}

/// Free and total space of the file system holding `dir`.
fn disk_free(dir: &std::path::Path) -> Option<String> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    Some(format!("{} free of {}", bytes(free), bytes(total)))
}
