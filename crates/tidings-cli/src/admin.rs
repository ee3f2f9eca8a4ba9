//! Administration: topics, stream groups, queue groups and their dead letters.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use tidings_api::{
    CreateQueue, CreateTopic, DeadLetter, DeadLetterQuery, Group, Queue, RedriveRequest, Topic,
    TopicSettings,
};

use crate::output::{json, Progress};
use crate::Ctx;

#[derive(Debug, Args, Default)]
pub(crate) struct Settings {
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

impl Settings {
    /// The settings as the API takes them: 0 turns a limit off.
    fn api(&self) -> TopicSettings {
        let zero_is_off = |v: Option<u64>| v.map(|v| (v != 0).then_some(v));
        TopicSettings {
            partitions: self.partitions,
            fsync: self.fsync.clone(),
            segment_bytes: self.segment_bytes,
            retention_ms: zero_is_off(self.retention_ms),
            retention_bytes: zero_is_off(self.retention_bytes),
            dedup_window_ms: zero_is_off(self.dedup_window_ms),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Topics {
    /// List topics.
    List,
    /// Create a topic.
    Create {
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Change a topic's settings.
    Alter {
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a topic and its events.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Groups {
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
pub(crate) enum Queues {
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
pub(crate) enum Dlq {
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

fn topic_line(t: &Topic) -> String {
    let events: u64 = t
        .partitions
        .iter()
        .map(|p| p.high_watermark - p.log_start)
        .sum();
    let bytes: u64 = t.partitions.iter().map(|p| p.size_bytes).sum();
    format!(
        "{}\t{} partitions\tfsync {}\t{events} events\t{bytes} bytes",
        t.name,
        t.partitions.len(),
        t.config.fsync
    )
}

pub(crate) async fn topics(ctx: &mut Ctx, t: Topics) -> Result<()> {
    match t {
        Topics::List => {
            let answer = ctx.client.list_topics().await?;
            ctx.out
                .answer(&answer, |a| lines(a.topics.iter().map(topic_line)))
        }
        Topics::Create { name, settings } => {
            let create = CreateTopic {
                name,
                settings: settings.api(),
            };
            let answer = ctx.client.create_topic(&create).await?;
            ctx.out
                .answer(&answer, |a| format!("created {}", topic_line(a)))
        }
        Topics::Describe { name } => {
            let answer = ctx.client.describe_topic(&name).await?;
            ctx.out.answer(&answer, |a| {
                let mut s = topic_line(a);
                s.push_str(&format!("\nconfig: {}", json(&a.config)));
                for p in &a.partitions {
                    s.push_str(&format!(
                        "\n  partition {}: offsets {}..{}, {} bytes",
                        p.partition, p.log_start, p.high_watermark, p.size_bytes
                    ));
                }
                s
            })
        }
        Topics::Alter { name, settings } => {
            let answer = ctx.client.alter_topic(&name, &settings.api()).await?;
            ctx.out
                .answer(&answer, |a| format!("altered {}", topic_line(a)))
        }
        Topics::Delete { name } => {
            ctx.client.delete_topic(&name).await?;
            ctx.out
                .answer(&json!({ "deleted": name }), |_| format!("deleted {name}"))
        }
    }
}

/// Lines joined, one per item.
fn lines(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join("\n")
}

fn group_text(g: &Group) -> String {
    let mut s = format!(
        "{}\ttopic {}\tgeneration {}\t{} members\tlag {}",
        g.group,
        g.topic,
        g.generation,
        g.members.len(),
        g.lag
    );
    for p in &g.partitions {
        s.push_str(&format!(
            "\n  partition {}: committed {}, high-watermark {}, lag {}",
            p.partition,
            json(&p.committed),
            p.high_watermark,
            p.lag
        ));
    }
    s
}

pub(crate) async fn groups(ctx: &mut Ctx, g: Groups) -> Result<()> {
    match g {
        Groups::List => {
            let answer = ctx.client.list_groups().await?;
            ctx.out
                .answer(&answer, |a| lines(a.groups.iter().map(group_text)))
        }
        Groups::Describe { group } => {
            let answer = ctx.client.describe_group(&group).await?;
            ctx.out.answer(&answer, group_text)
        }
        Groups::Reset { group, to } => {
            let answer = ctx.client.reset_group(&group, &to).await?;
            ctx.out.answer(&answer, group_text)
        }
    }
}

fn queue_text(q: &Queue) -> String {
    format!(
        "{}\ttopic {}\tlag {}\tdead letters {}\tcounters {}",
        q.name,
        q.topic,
        q.lag,
        q.dead_letters,
        json(&q.counters)
    )
}

pub(crate) async fn queues(ctx: &mut Ctx, q: Queues) -> Result<()> {
    match q {
        Queues::List => {
            let answer = ctx.client.list_queues().await?;
            ctx.out
                .answer(&answer, |a| lines(a.queues.iter().map(queue_text)))
        }
        Queues::Create {
            name,
            topic,
            ack_timeout_ms,
            max_deliveries,
            key_ordering,
        } => {
            let create = CreateQueue {
                name,
                topic,
                ack_timeout_ms,
                max_deliveries,
                backoff_initial_ms: None,
                backoff_factor: None,
                backoff_max_ms: None,
                key_ordering: Some(key_ordering),
            };
            let answer = ctx.client.create_queue(&create).await?;
            ctx.out
                .answer(&answer, |a| format!("created {}", queue_text(a)))
        }
        Queues::Describe { name } => {
            let answer = ctx.client.describe_queue(&name).await?;
            ctx.out.answer(&answer, queue_text)
        }
    }
}

fn dead_letter_text(d: &DeadLetter) -> String {
    let attribute = |name: &str| {
        d.entry
            .event
            .as_ref()
            .and_then(|e| e[name].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    format!(
        "{}\tfrom {}@{}\tattempts {}\terror {}\t{} {}",
        d.entry.offset,
        d.source_partition,
        d.source_offset,
        d.attempts,
        json(&d.error),
        attribute("type"),
        attribute("id")
    )
}

pub(crate) async fn dlq(ctx: &mut Ctx, d: Dlq) -> Result<()> {
    match d {
        Dlq::List { queue } => {
            let answer = ctx
                .client
                .dead_letters(&queue, &DeadLetterQuery::default())
                .await?;
            ctx.out.answer(&answer, |a| {
                lines(a.dead_letters.iter().map(dead_letter_text))
            })
        }
        Dlq::Show { queue, offset } => {
            let answer = ctx.client.dead_letter(&queue, offset).await?;
            ctx.out.answer(&answer, |a| {
                format!("{}\n{}", dead_letter_text(a), json(&a.entry.event))
            })
        }
        Dlq::Redrive { queue, to, max } => {
            let mut progress = Progress::new("dead letters redriven", None);
            let answer = ctx
                .client
                .redrive(&queue, &RedriveRequest { max, to })
                .await?;
            progress.advance(answer.redriven as u64);
            progress.finish();
            ctx.out
                .answer(&answer, |a| format!("redrove {} dead letters", a.redriven))
        }
        Dlq::Purge { queue } => {
            let answer = ctx.client.purge(&queue).await?;
            ctx.out
                .answer(&answer, |a| format!("purged {} dead letters", a.purged))
        }
    }
}
