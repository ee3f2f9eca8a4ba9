//! The event store: append to a stream with an expected version, read a
//! stream, read or follow `$all` or a category, show a stream.

use std::io;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::Value;
use tidings_api::{AllQuery, StreamQuery};

use crate::output::plural;
use crate::publish::{build_all, read_lines, Builder, Ids, Template};
use crate::send::Origin;
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub(crate) enum Streams {
    /// Append events to a stream: one per DATA argument, or one per line of
    /// standard input, built as `publish` builds them.
    Append {
        /// The stream, such as order-17.
        stream: String,
        /// Event data, one event each; without any, lines are read.
        data: Vec<String>,
        /// `any`, `no_stream`, `stream_exists`, or the version the stream must be at.
        #[arg(long, default_value = "any")]
        expected_version: String,
        /// The `type` of events built here.
        #[arg(long = "type", default_value = "tidings.cli.appended")]
        ty: String,
        /// The `source` of events built here.
        #[arg(long, default_value = "/tidings-cli")]
        source: String,
        /// Send every line as text data, as it is: no JSON, no whole CloudEvents.
        #[arg(long)]
        raw: bool,
    },
    /// Print a stream's events.
    Read {
        /// The stream.
        stream: String,
        /// First version to print (newest first with --backward).
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// Most events to print.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print `$all`, or one category, from a global position; --follow keeps
    /// printing new events.
    All {
        /// Only streams of this category (the name before the first '-').
        #[arg(long)]
        category: Option<String>,
        /// Global position to start at.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most events to print without --follow.
        #[arg(long)]
        limit: Option<usize>,
        /// Keep printing events as they are appended.
        #[arg(long)]
        follow: bool,
    },
    /// Show a stream's version, metadata and deletion.
    Info {
        /// The stream.
        stream: String,
    },
}

pub(crate) async fn streams(ctx: &mut Ctx, s: Streams) -> Result<()> {
    match s {
        Streams::Append {
            stream,
            data,
            expected_version,
            ty,
            source,
            raw,
        } => {
            let (inputs, what) = if data.is_empty() {
                (read_lines(io::stdin().lock())?, "standard input")
            } else {
                let args = data.into_iter().enumerate();
                let inputs = args
                    .map(|(i, d)| (Origin::Argument(i as u64 + 1), d.into_bytes()))
                    .collect();
                (inputs, "the arguments")
            };
            if inputs.is_empty() {
                bail!("nothing to append: give data as arguments or lines on standard input");
            }
            let template = Template { ty, source };
            let builder = Builder {
                template: &template,
                key: None,
                ids: Ids::Fresh,
                raw,
            };
            let events: Vec<Value> = build_all(&builder, inputs, what)?;
            let answer = ctx
                .client
                .append_json(&stream, &expected_version, &events)
                .await?;
            ctx.out.answer(&answer, |a| {
                let count = a.last_version - a.first_version + 1;
                if count == 1 {
                    format!(
                        "appended 1 event to {} at version {} (position {})",
                        a.stream, a.first_version, a.first_position
                    )
                } else {
                    format!(
                        "appended {count} events to {}: versions {}–{} (positions {}–{})",
                        a.stream,
                        a.first_version,
                        a.last_version,
                        a.first_position,
                        a.last_position
                    )
                }
            })
        }
        Streams::Read {
            stream,
            from,
            backward,
            limit,
        } => {
            let query = StreamQuery {
                from,
                direction: Some(if backward { "backward" } else { "forward" }.to_owned()),
                limit,
            };
            let answer = ctx.client.read_stream(&stream, &query).await?;
            if answer.version.is_none() {
                bail!("stream {stream} does not exist: no event was ever appended to it");
            }
            for e in &answer.events {
                ctx.out.event(e)?;
            }
            if answer.events.is_empty() {
                eprintln!("tidings: stream {stream} has no events to read from there");
            }
            Ok(())
        }
        Streams::All {
            category,
            from,
            limit,
            follow,
        } => {
            if follow {
                let query = AllQuery {
                    from: Some(from),
                    limit: None,
                    category,
                };
                let mut stream = ctx.client.subscribe(&query).await?;
                while let Some(item) = stream.next().await {
                    ctx.out.event(&item?)?;
                    ctx.out.flush()?;
                }
                return Ok(());
            }
            let query = AllQuery {
                from: Some(from),
                limit,
                category,
            };
            let answer = ctx.client.read_all(&query).await?;
            for e in &answer.events {
                ctx.out.event(e)?;
            }
            Ok(())
        }
        Streams::Info { stream } => {
            let answer = ctx.client.describe_stream(&stream).await?;
            ctx.out.answer(&answer, |a| {
                let version = a
                    .version
                    .map_or("no events".to_owned(), |v| format!("version {v}"));
                let limits = match (a.metadata.max_count, a.metadata.max_age) {
                    (None, None) => "no read limits".to_owned(),
                    (count, age) => {
                        let mut parts = Vec::new();
                        if let Some(c) = count {
                            parts.push(format!("the newest {}", plural(c, "event")));
                        }
                        if let Some(ms) = age {
                            parts.push(format!("events younger than {ms} ms"));
                        }
                        format!("reads {}", parts.join(" and "))
                    }
                };
                format!(
                    "{}\tcategory {}\t{version}{}\t{limits}",
                    a.stream,
                    a.category,
                    if a.deleted { "\tdeleted" } else { "" }
                )
            })
        }
    }
}
