//! Events out: `tail` reads a topic without a group (or follows it), `consume`
//! reads as a member of a stream group or from a queue group.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::Args;
use tidings_api::{CommitRequest, JoinRequest, PollQuery, ReadQuery, ReceiveQuery, StoredEvent};

use crate::publish::Position;
use crate::Ctx;

#[derive(Debug, Args)]
pub(crate) struct Tail {
    /// The topic.
    topic: String,
    #[command(flatten)]
    position: Position,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Most events to print (without --follow).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Keep printing events as they are published.
    #[arg(long)]
    follow: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["group", "queue"])))]
pub(crate) struct Consume {
    /// The topic (stream groups only).
    #[arg(required_unless_present = "queue")]
    topic: Option<String>,
    /// Join this stream group.
    #[arg(long)]
    group: Option<String>,
    /// Receive from this queue group.
    #[arg(long)]
    queue: Option<String>,
    #[command(flatten)]
    position: Position,
    /// Keep consuming when caught up.
    #[arg(long)]
    follow: bool,
}

/// Most events one page of a tail asks for.
const TAIL_PAGE_EVENTS_MAX: usize = 1000;

pub(crate) async fn tail(ctx: &mut Ctx, t: Tail) -> Result<()> {
    if t.follow {
        let query = ReadQuery {
            from: Some(t.position.from.clone()),
            limit: None,
            partition: t.partition,
        };
        let mut stream = ctx.client.follow_events(&t.topic, &query).await?;
        while let Some(item) = stream.next().await {
            ctx.out.event(&item?)?;
            ctx.out.flush()?;
        }
        return Ok(());
    }
    // Page through, partition by partition, until the limit or the end.
    let mut printed = 0;
    let mut next: Option<BTreeMap<u32, u64>> = None;
    while printed < t.limit {
        let page = (t.limit - printed).min(TAIL_PAGE_EVENTS_MAX);
        let (events, positions) = match &next {
            None => {
                let query = ReadQuery {
                    from: Some(t.position.from.clone()),
                    limit: Some(page),
                    partition: t.partition,
                };
                let answer = ctx.client.read_events(&t.topic, &query).await?;
                (answer.events, answer.next)
            }
            Some(next) => {
                // Resume each partition where the last page ended.
                let mut events: Vec<StoredEvent> = Vec::new();
                for (&p, offset) in next {
                    let query = ReadQuery {
                        from: Some(offset.to_string()),
                        limit: Some(page),
                        partition: Some(p),
                    };
                    events.extend(ctx.client.read_events(&t.topic, &query).await?.events);
                }
                events.sort_by_key(|e| e.timestamp_ms);
                events.truncate(page);
                let mut n = next.clone();
                for e in &events {
                    n.insert(e.partition, e.offset + 1);
                }
                (events, n)
            }
        };
        if events.is_empty() {
            break;
        }
        for e in &events {
            ctx.out.event(e)?;
        }
        printed += events.len();
        next = Some(positions);
    }
    Ok(())
}

/// How long one consume poll waits for events when following; without
/// --follow a poll does not wait, and an empty one means caught up.
const CONSUME_WAIT_MS: u64 = 5_000;
/// Deliveries one receive of `consume --queue` asks for.
const CONSUME_RECEIVE_MAX: usize = 100;

pub(crate) async fn consume(ctx: &mut Ctx, c: Consume) -> Result<()> {
    let wait_ms = if c.follow { CONSUME_WAIT_MS } else { 0 };
    if let Some(queue) = &c.queue {
        let query = ReceiveQuery {
            max: Some(CONSUME_RECEIVE_MAX),
            wait_ms: Some(wait_ms),
        };
        loop {
            let answer = ctx.client.receive(queue, &query).await?;
            if answer.deliveries.is_empty() && !c.follow {
                return Ok(());
            }
            for d in &answer.deliveries {
                ctx.out.event(d)?;
                ctx.out.flush()?;
                ctx.client.ack(queue, &d.lease).await?;
            }
        }
    }
    let group = c
        .group
        .as_deref()
        .expect("clap requires --group or --queue");
    let topic = c
        .topic
        .as_deref()
        .context("a stream group needs the topic to consume")?;
    let joined = ctx
        .client
        .join_group(
            group,
            &JoinRequest {
                topic: topic.to_owned(),
                from: Some(c.position.from.clone()),
                session_timeout_ms: None,
            },
        )
        .await?;
    let member = joined.member;
    let result = async {
        loop {
            let query = PollQuery {
                wait_ms: Some(wait_ms),
                max_bytes: None,
            };
            let polled = ctx.client.poll(group, &member, &query).await?;
            if polled.events.is_empty() && !c.follow {
                return Ok(());
            }
            for e in &polled.events {
                ctx.out.event(e)?;
            }
            ctx.out.flush()?;
            if !polled.events.is_empty() {
                let commit = CommitRequest {
                    offsets: polled.next,
                };
                ctx.client.commit(group, &member, &commit).await?;
            }
        }
    }
    .await;
    // Leave so the group rebalances now rather than after the session timeout.
    let left = ctx.client.leave_group(group, &member).await;
    result.and(left.map_err(anyhow::Error::from))
}
