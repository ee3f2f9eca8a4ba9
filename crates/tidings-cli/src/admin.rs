//! Administration: topics, stream groups, queue groups and their dead letters.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use tidings_api::{
    CreateQueue, CreateTopic, DeadLetter, DeadLetterQuery, Group, Queue, RedriveRequest, Topic,
    TopicSettings,
};

use crate::output::{json, plural, Progress};
use crate::Ctx;

#[derive(Debug, Args, Default)]
pub(crate) struct Settings {
    /// Partitions (alter: only more).
    #[arg(long)]
    partitions: Option<u32>,
    /// When appends are synced to disk: always, never or interval:<ms>.
    #[arg(long, value_parser = crate::values::fsync)]
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
    /// Check events against their schemas in the registry before appending:
    /// off or validate.
    #[arg(long, value_parser = ["off", "validate"])]
    schema_validation: Option<String>,
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
            schema_validation: self.schema_validation.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Topics {
    /// List topics.
    List,
    /// Create a topic.
    Create {
        /// The topic's name: letters, digits, '.', '_' and '-'.
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show a topic's configuration and partitions.
    Describe {
        /// The topic.
        name: String,
    },
    /// Change a topic's settings.
    Alter {
        /// The topic.
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a topic and its events.
    Delete {
        /// The topic.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Groups {
    /// List stream groups with their lag.
    List,
    /// Show a group's members, committed offsets and lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets (it must have no members): replay.
    Reset {
        /// The group.
        group: String,
        /// earliest, latest or an RFC 3339 time.
        #[arg(long, value_parser = crate::values::start)]
        to: String,
    },
    /// Delete a group and its committed offsets (it must have no members).
    Delete {
        /// The group.
        group: String,
    },
}

/// How a queue group delivers and retries; absent ones take the server's
/// defaults.
#[derive(Debug, Args)]
pub(crate) struct QueueSettings {
    /// Lease length in milliseconds: an event not answered by then is another
    /// attempt's.
    #[arg(long, value_name = "MS")]
    ack_timeout_ms: Option<u64>,
    /// Attempts before an event is dead-lettered.
    #[arg(long, value_name = "N")]
    max_deliveries: Option<u32>,
    /// Delay before the first retry, in milliseconds.
    #[arg(long, value_name = "MS")]
    backoff_initial_ms: Option<u64>,
    /// Growth of the delay per attempt, 1 to 10.
    #[arg(long, value_name = "N")]
    backoff_factor: Option<u32>,
    /// Longest delay between attempts, in milliseconds.
    #[arg(long, value_name = "MS")]
    backoff_max_ms: Option<u64>,
    /// At most one event per key in flight.
    #[arg(long)]
    key_ordering: bool,
    /// Where delivery starts: earliest (every stored event), latest (only
    /// events published from now on) or an RFC 3339 time.
    #[arg(long, default_value = "earliest", value_parser = crate::values::start)]
    from: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Queues {
    /// List queue groups.
    List,
    /// Create a queue group on a topic.
    Create {
        /// The group's name.
        name: String,
        /// The topic it consumes.
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        settings: QueueSettings,
    },
    /// Show a queue group's progress and counters.
    Describe {
        /// The group.
        name: String,
    },
    /// Delete a queue group with its dead letters (refused while deliveries
    /// are leased, unless --force).
    Delete {
        /// The group.
        name: String,
        /// Delete even while deliveries are leased.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Dlq {
    /// List a queue group's dead letters.
    List {
        /// The queue group.
        queue: String,
    },
    /// Show one dead letter.
    Show {
        /// The queue group.
        queue: String,
        /// The dead letter's offset, as `dlq list` shows it.
        offset: u64,
    },
    /// Deliver dead letters again to their queue group only, or with --to
    /// publish them to a topic for all its consumers.
    Redrive {
        /// The queue group.
        queue: String,
        /// Publish them to this topic instead (the one they came from too).
        #[arg(long)]
        to: Option<String>,
        /// At most this many.
        #[arg(long)]
        max: Option<usize>,
        /// Only those dead-lettered with exactly this error.
        #[arg(long)]
        error: Option<String>,
    },
    /// Drop every dead letter.
    Purge {
        /// The queue group.
        queue: String,
    },
}

fn topic_line(t: &Topic) -> String {
    let events: u64 = t
        .partitions
        .iter()
        .map(|p| p.high_watermark - p.log_start)
        .sum();
    let bytes: u64 = t.partitions.iter().map(|p| p.size_bytes).sum();
    format!(
        "{}\t{}\tfsync {}\t{}\t{}",
        t.name,
        plural(t.partitions.len() as u64, "partition"),
        t.config.fsync,
        plural(events, "event"),
        plural(bytes, "byte")
    )
}

/// A topic's settings in words.
fn config_text(c: &tidings_api::TopicConfig) -> String {
    let or_none =
        |v: Option<u64>, unit: &str| v.map_or("none".to_owned(), |v| format!("{v} {unit}"));
    format!(
        "fsync {}, segments of {}, retention by age {}, by size {}, dedup window {}",
        c.fsync,
        plural(c.segment_bytes, "byte"),
        or_none(c.retention_ms, "ms"),
        c.retention_bytes
            .map_or("none".to_owned(), |b| plural(b, "byte")),
        c.dedup_window_ms
            .map_or("off".to_owned(), |v| format!("{v} ms")),
    )
}

pub(crate) async fn topics(ctx: &mut Ctx, t: Topics) -> Result<()> {
    match t {
        Topics::List => {
            let answer = ctx.client.list_topics().await?;
            ctx.out.answer(&answer, |a| {
                lines_or(a.topics.iter().map(topic_line), "no topics")
            })
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
                s.push_str(&format!("\n  {}", config_text(&a.config)));
                for p in &a.partitions {
                    let stored = if p.high_watermark == p.log_start + 1 {
                        format!("1 event at offset {}", p.log_start)
                    } else if p.high_watermark > p.log_start {
                        format!(
                            "{} at offsets {} to {}",
                            plural(p.high_watermark - p.log_start, "event"),
                            p.log_start,
                            p.high_watermark - 1
                        )
                    } else {
                        format!("no events stored, the next at offset {}", p.high_watermark)
                    };
                    s.push_str(&format!(
                        "\n  partition {}: {stored}, {}",
                        p.partition,
                        plural(p.size_bytes, "byte")
                    ));
                }
                s
            })
        }
        Topics::Alter { name, settings } => {
            let changes = settings.api();
            if changes == TopicSettings::default() {
                anyhow::bail!(
                    "nothing to change: give --partitions, --fsync, --segment-bytes, --retention-ms, --retention-bytes or --dedup-window-ms"
                );
            }
            let before = ctx.client.describe_topic(&name).await?;
            let answer = ctx.client.alter_topic(&name, &changes).await?;
            ctx.out.answer(&answer, |a| {
                if a.config == before.config {
                    format!("no change: {name} has those settings already")
                } else {
                    format!("altered {}\n  {}", topic_line(a), config_text(&a.config))
                }
            })
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

/// Lines joined, one per item, or `empty` when there is none.
fn lines_or(items: impl Iterator<Item = String>, empty: &str) -> String {
    let text = lines(items);
    if text.is_empty() {
        empty.to_owned()
    } else {
        text
    }
}

fn group_text(g: &Group) -> String {
    let topics = if g.topics.is_empty() {
        "no topics".to_owned()
    } else {
        format!(
            "{} {}",
            if g.topics.len() == 1 {
                "topic"
            } else {
                "topics"
            },
            g.topics.join(", ")
        )
    };
    let mut s = format!(
        "{}\t{topics}\tgeneration {}\t{}\tlag {}",
        g.group,
        g.generation,
        plural(g.members.len() as u64, "member"),
        g.lag
    );
    for m in &g.members {
        let owned: Vec<String> = m
            .assignment
            .iter()
            .map(|(topic, ps)| {
                let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
                if ps.is_empty() {
                    format!("{topic} (no partitions)")
                } else {
                    format!("{topic} {}", ps.join(", "))
                }
            })
            .collect();
        let owned = if owned.is_empty() {
            "nothing yet".to_owned()
        } else {
            owned.join("; ")
        };
        s.push_str(&format!("\n  member {} ({}): {owned}", m.member, m.client));
    }
    for p in &g.partitions {
        s.push_str(&format!(
            "\n  {} partition {}: committed {}, high-watermark {}, lag {}",
            p.topic,
            p.partition,
            p.committed.map_or("nothing".to_owned(), |c| c.to_string()),
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
            ctx.out.answer(&answer, |a| {
                lines_or(a.groups.iter().map(group_text), "no stream groups")
            })
        }
        Groups::Describe { group } => {
            let answer = ctx.client.describe_group(&group).await?;
            ctx.out.answer(&answer, group_text)
        }
        Groups::Reset { group, to } => {
            let answer = ctx.client.reset_group(&group, &to).await?;
            ctx.out.answer(&answer, group_text)
        }
        Groups::Delete { group } => {
            ctx.client.delete_group(&group).await?;
            ctx.out.answer(&json!({ "deleted": group }), |_| {
                format!("deleted group {group}")
            })
        }
    }
}

fn queue_text(q: &Queue) -> String {
    format!(
        "{}\ttopic {}\tlag {}\tin flight {}\tredriven {}\tdead letters {}",
        q.name, q.topic, q.lag, q.in_flight, q.redriven, q.dead_letters
    )
}

/// A queue group with its settings, counters and partitions.
fn queue_details(q: &Queue) -> String {
    let c = &q.config;
    let n = &q.counters;
    let mut s = queue_text(q);
    s.push_str(&format!(
        "\n  leases of {} ms, {} attempts, backoff {} ms ×{} up to {} ms{}",
        c.ack_timeout_ms,
        c.max_deliveries,
        c.backoff_initial_ms,
        c.backoff_factor,
        c.backoff_max_ms,
        if c.key_ordering {
            ", one event per key at a time"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "\n  since the server started: {} delivered ({} again), {} acked, {} nacked, {} expired, {} released, {} dead-lettered, {} redriven",
        n.delivered, n.redelivered, n.acked, n.nacked, n.expired, n.released, n.dead_lettered, n.redriven
    ));
    for p in &q.partitions {
        s.push_str(&format!(
            "\n  partition {}: acked below {}, high-watermark {}, lag {}, in flight {}, retrying {}",
            p.partition, p.ack_floor, p.high_watermark, p.lag, p.in_flight, p.retrying
        ));
    }
    s
}

pub(crate) async fn queues(ctx: &mut Ctx, q: Queues) -> Result<()> {
    match q {
        Queues::List => {
            let answer = ctx.client.list_queues().await?;
            ctx.out.answer(&answer, |a| {
                lines_or(a.queues.iter().map(queue_text), "no queue groups")
            })
        }
        Queues::Create {
            name,
            topic,
            settings: s,
        } => {
            let create = CreateQueue {
                name,
                topic,
                ack_timeout_ms: s.ack_timeout_ms,
                max_deliveries: s.max_deliveries,
                backoff_initial_ms: s.backoff_initial_ms,
                backoff_factor: s.backoff_factor,
                backoff_max_ms: s.backoff_max_ms,
                key_ordering: Some(s.key_ordering),
                from: Some(s.from),
            };
            let answer = ctx.client.create_queue(&create).await?;
            ctx.out
                .answer(&answer, |a| format!("created {}", queue_details(a)))
        }
        Queues::Describe { name } => {
            let answer = ctx.client.describe_queue(&name).await?;
            ctx.out.answer(&answer, queue_details)
        }
        Queues::Delete { name, force } => {
            let answer = ctx.client.delete_queue(&name, force).await?;
            ctx.out.answer(&answer, |a| {
                let mut line = format!("deleted queue group {name}");
                if a.dead_letters_dropped > 0 {
                    line.push_str(&format!(
                        " and {}",
                        plural(a.dead_letters_dropped, "dead letter")
                    ));
                }
                line
            })
        }
    }
}

fn dead_letter_text(d: &DeadLetter) -> String {
    let attribute = |name: &str| crate::output::attribute(&d.entry, name);
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
                lines_or(
                    a.dead_letters.iter().map(dead_letter_text),
                    &format!("no dead letters in {queue}"),
                )
            })
        }
        Dlq::Show { queue, offset } => {
            let answer = ctx.client.dead_letter(&queue, offset).await?;
            ctx.out.answer(&answer, |a| {
                let mut text = dead_letter_text(a);
                match &a.entry.event {
                    Some(event) => text.push_str(&crate::output::event_details(event)),
                    None => text.push_str("\n  a raw record, without CloudEvents headers"),
                }
                text
            })
        }
        Dlq::Redrive {
            queue,
            to,
            max,
            error,
        } => {
            let mut progress = Progress::new("dead letters redriven", None);
            let answer = ctx
                .client
                .redrive(
                    &queue,
                    &RedriveRequest {
                        max,
                        to: to.clone(),
                        error,
                    },
                )
                .await?;
            progress.advance(answer.redriven as u64);
            progress.finish();
            let to_where = match &to {
                Some(topic) => format!("published to {topic}"),
                None => format!("delivered again to {queue}"),
            };
            ctx.out.answer(&answer, |a| {
                format!(
                    "redrove {}: {to_where}",
                    plural(a.redriven as u64, "dead letter")
                )
            })
        }
        Dlq::Purge { queue } => {
            let answer = ctx.client.purge(&queue).await?;
            ctx.out.answer(&answer, |a| {
                format!("purged {}", plural(a.purged, "dead letter"))
            })
        }
    }
}
