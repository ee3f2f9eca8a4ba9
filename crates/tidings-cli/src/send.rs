//! Sending many events: entries already encoded as JSON go out in batches
//! sized under the server's limits (bytes and count, learnt from
//! `GET /v1/limits`), one request at a time, so a failure leaves a known
//! prefix published. `publish` and `replay` both send through a [`Sender`].

use std::fmt;

use anyhow::{bail, Result};
use tidings_api::{PublishedEvent, ServerLimits};
use tidings_client::ClientError;

use crate::output::{plural, Progress};
use crate::Ctx;

/// Where an entry came from, for messages that say what was and was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A line of input (1-based).
    Line(u64),
    /// A DATA argument (1-based).
    Argument(u64),
    /// A record of the topic being copied.
    Record { partition: u32, offset: u64 },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Argument(n) => write!(f, "argument {n}"),
            Origin::Record { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
        }
    }
}

/// A run of origins, `line 3` or `lines 3–9`.
fn span(first: Origin, last: Origin) -> String {
    match (first, last) {
        _ if first == last => first.to_string(),
        (Origin::Line(a), Origin::Line(b)) => format!("lines {a}–{b}"),
        (Origin::Argument(a), Origin::Argument(b)) => format!("arguments {a}–{b}"),
        (
            Origin::Record {
                partition: p,
                offset: a,
            },
            Origin::Record {
                partition: q,
                offset: b,
            },
        ) if p == q => format!("partition {p} offsets {a}–{b}"),
        _ => format!("{first} to {last}"),
    }
}

/// What a sender has sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Entries appended.
    pub(crate) appended: u64,
    /// Events not appended because the topic already held them (same source
    /// and id, within its dedup window).
    pub(crate) duplicates: u64,
}

/// Batches encoded entries and sends them in order.
pub(crate) struct Sender {
    topic: String,
    media_type: &'static str,
    body_bytes_max: usize,
    entries_max: usize,
    /// The body being filled: `[` and the entries so far, comma-separated.
    body: Vec<u8>,
    pending: Vec<Origin>,
    /// The last origin whose batch was answered.
    done_through: Option<Origin>,
    first_sent: Option<Origin>,
    sent: Sent,
    progress: Progress,
    /// A hint added to a failure's message (how to resume).
    resume_hint: &'static str,
}

impl Sender {
    /// A sender of `media_type` bodies (a JSON array) to `topic`, under the
    /// server's `limits` and at most `entries_max` entries a request when given.
    pub(crate) fn new(
        topic: &str,
        media_type: &'static str,
        limits: &ServerLimits,
        entries_max: Option<usize>,
        progress: Progress,
    ) -> Sender {
        let server_max = usize::try_from(limits.batch_events_max).unwrap_or(usize::MAX);
        Sender {
            topic: topic.to_owned(),
            media_type,
            body_bytes_max: usize::try_from(limits.body_bytes_max).unwrap_or(usize::MAX),
            entries_max: entries_max.map_or(server_max, |n| n.min(server_max)).max(1),
            body: Vec::new(),
            pending: Vec::new(),
            done_through: None,
            first_sent: None,
            sent: Sent::default(),
            progress,
            resume_hint: "",
        }
    }

    /// Adds `hint` to the message of a failed send.
    pub(crate) fn with_resume_hint(mut self, hint: &'static str) -> Sender {
        self.resume_hint = hint;
        self
    }

    /// Whether an entry of `len` bytes fits in a request on its own.
    pub(crate) fn check_size(&self, len: usize) -> Result<(), String> {
        // `[` and `]` around it.
        if len + 2 > self.body_bytes_max {
            return Err(format!(
                "it is {len} bytes encoded; the server takes at most {} bytes per request (its --body-bytes-max)",
                self.body_bytes_max
            ));
        }
        Ok(())
    }

    /// Queues one encoded entry, sending the batch before it first when the
    /// entry would take it over a limit.
    pub(crate) async fn push(&mut self, ctx: &mut Ctx, origin: Origin, entry: &[u8]) -> Result<()> {
        if let Err(why) = self.check_size(entry.len()) {
            self.flush(ctx).await?;
            bail!("{origin}: {why}");
        }
        let full = self.pending.len() >= self.entries_max
            || self.body.len() + 1 + entry.len() + 1 > self.body_bytes_max;
        if full {
            self.flush(ctx).await?;
        }
        self.body
            .push(if self.pending.is_empty() { b'[' } else { b',' });
        self.body.extend_from_slice(entry);
        self.pending.push(origin);
        Ok(())
    }

    /// Whether entries wait to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends what is queued. On failure the error says which entries were
    /// published before this batch and which were not.
    pub(crate) async fn flush(&mut self, ctx: &mut Ctx) -> Result<()> {
        let (Some(&first), Some(&last)) = (self.pending.first(), self.pending.last()) else {
            return Ok(());
        };
        self.body.push(b']');
        let body = bytes::Bytes::from(std::mem::take(&mut self.body));
        let answer = ctx
            .client
            .publish_encoded(&self.topic, self.media_type, body)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                self.progress.finish();
                let before = match (self.first_sent, self.done_through) {
                    (Some(a), Some(b)) => format!(
                        "; {} before them {} published ({})",
                        span(a, b),
                        if a == b { "was" } else { "were" },
                        plural(self.sent.appended + self.sent.duplicates, "entry")
                    ),
                    _ => String::new(),
                };
                // A refused request (4xx) stored nothing; a failure of the
                // server or the connection may have stored part of the batch.
                let refused = matches!(&e, ClientError::Server { status, .. } if *status < 500);
                let this = if refused {
                    "none of them was published"
                } else {
                    "they may be partly published"
                };
                bail!(
                    "publishing {} to {} failed: {e}\n{this}{before}; nothing after them was sent{}",
                    span(first, last),
                    self.topic,
                    self.resume_hint
                );
            }
        };
        for e in &answer.events {
            self.count(ctx, e)?;
        }
        self.progress.advance(self.pending.len() as u64);
        self.first_sent.get_or_insert(first);
        self.done_through = Some(last);
        self.pending.clear();
        Ok(())
    }

    fn count(&mut self, ctx: &mut Ctx, e: &PublishedEvent) -> Result<()> {
        ctx.out.json_line(e)?;
        if e.duplicate {
            self.sent.duplicates += 1;
        } else {
            self.sent.appended += 1;
        }
        Ok(())
    }

    /// Sends what is left and answers what was sent.
    pub(crate) async fn finish(mut self, ctx: &mut Ctx) -> Result<Sent> {
        self.flush(ctx).await?;
        self.progress.finish();
        Ok(self.sent)
    }
}
