//! Stream mode: per-delivery answers on top of a partitioned log whose groups
//! only commit offsets (the embedded engine's and the server's stream groups,
//! Kafka's consumer groups).
//!
//! What the toolkit adds, and what it costs:
//! - **Acks commit in order.** Per owned partition the source keeps the
//!   offsets delivered and not yet acked; the group's committed offset is the
//!   lowest of them (or the next to read), committed when it moves. An event
//!   acked above an unacked one is delivered again after a crash or a
//!   rebalance (at least once).
//! - **Nack with a delay** keeps the event unacked and hands it out again when
//!   the delay has passed (or after the backoff of its attempt); attempts are
//!   counted in memory, so they start over after a restart or a rebalance.
//! - **Dead letters**: after `max_deliveries` attempts, or at a reject, the
//!   event is published to `<topic>.<group>.dlq` with the same `dlq*`
//!   extensions the broker's queue groups write, then acked.
//! - **Leases** are the partition's ownership: `extend` is a heartbeat.
//!
//! [`GroupLog`] is the little a log must offer; [`StreamSource`] is the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{Answer, Backoff, BoxFuture, Incoming, Payload, Source, Ticket};
use crate::Error;

/// What a poll of a group member answered.
pub(crate) struct Polled {
    /// The group's generation.
    pub(crate) generation: u64,
    /// The partitions the member owns.
    pub(crate) assignment: Vec<u32>,
    /// Events read, in order within each partition.
    pub(crate) entries: Vec<Incoming>,
    /// Where the member reads next in each owned partition.
    pub(crate) positions: Vec<(u32, u64)>,
    /// Partitions whose reading starts again from the committed offset (a
    /// rebalance gave them anew): what was delivered from them is delivered
    /// again, so the source forgets it.
    pub(crate) restarted: Vec<u32>,
}

/// Why an event went to the dead letters, and where it came from.
pub(crate) struct DeadLetterInfo<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) attempts: u32,
    pub(crate) error: &'a str,
}

/// One member of a log's consumer group.
pub(crate) trait GroupLog: Send + Sync + 'static {
    /// Reads up to `max` events from the member's partitions, waiting up to
    /// `wait` (or until `stop`) when there are none.
    fn poll<'a>(
        &'a self,
        max: usize,
        wait: Duration,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Polled, Error>>;

    /// Commits, per partition, the next offset to read.
    fn commit<'a>(&'a self, offsets: &'a [(u32, u64)]) -> BoxFuture<'a, Result<(), Error>>;

    /// Reads the event at `offset` again (`None`: it is gone).
    fn read_one(
        &self,
        partition: u32,
        offset: u64,
    ) -> BoxFuture<'_, Result<Option<Incoming>, Error>>;

    /// The event at `offset` was acked (or is gone): a log that keeps
    /// delivered events for [`read_one`](Self::read_one) lets it go.
    fn forget(&self, _partition: u32, _offset: u64) {}

    /// Publishes `payload` to the group's dead-letter topic with `info`.
    fn dead_letter<'a>(
        &'a self,
        payload: Payload,
        info: DeadLetterInfo<'a>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Keeps the membership alive.
    fn heartbeat(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Joins the group again as a new member: the old one is gone (its
    /// session ran out, or the server restarted).
    fn rejoin(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Leaves the group.
    fn leave(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// One owned partition.
#[derive(Default)]
struct Part {
    /// Offsets delivered and not yet acked, with the attempts each has had.
    outstanding: BTreeMap<u64, u32>,
    /// The next offset the member reads.
    next: u64,
    /// The offset committed last.
    committed: u64,
}

impl Part {
    /// What the group may commit: nothing below it is unacked.
    fn floor(&self) -> u64 {
        self.outstanding.keys().next().copied().unwrap_or(self.next)
    }
}

/// An event to hand out again.
struct Retry {
    due: Instant,
    partition: u32,
    offset: u64,
    attempt: u32,
}

struct State {
    generation: u64,
    parts: HashMap<u32, Part>,
    retries: Vec<Retry>,
}

/// Per-delivery answers over a [`GroupLog`]; see the module documentation.
pub(crate) struct StreamSource<L> {
    log: L,
    topic: String,
    max_deliveries: u32,
    backoff: Backoff,
    state: Mutex<State>,
    random: crate::Jitter,
    stop: CancellationToken,
}

impl<L: GroupLog> StreamSource<L> {
    pub(crate) fn new(log: L, topic: &str, max_deliveries: u32, backoff: Backoff) -> Self {
        StreamSource {
            log,
            topic: topic.to_owned(),
            max_deliveries,
            backoff,
            state: Mutex::new(State {
                generation: u64::MAX,
                parts: HashMap::new(),
                retries: Vec::new(),
            }),
            random: crate::Jitter::new(),
            stop: CancellationToken::new(),
        }
    }

    /// The retries due now, oldest first (left in the list until handed
    /// out, so a failed receive loses none).
    fn due_retries(&self, max: usize) -> Vec<(u32, u64, u32)> {
        let now = Instant::now();
        let s = self.state.lock().expect("stream state");
        let mut due: Vec<&Retry> = s.retries.iter().filter(|r| r.due <= now).collect();
        due.sort_by_key(|r| r.due);
        due.iter()
            .take(max)
            .map(|r| (r.partition, r.offset, r.attempt))
            .collect()
    }

    /// Takes a retry out of the list once it is handed out.
    fn handed_out(&self, partition: u32, offset: u64) {
        let mut s = self.state.lock().expect("stream state");
        s.retries
            .retain(|r| (r.partition, r.offset) != (partition, offset));
    }

    fn next_retry(&self) -> Option<Instant> {
        let s = self.state.lock().expect("stream state");
        s.retries.iter().map(|r| r.due).min()
    }

    /// Takes a poll's answer in: a new generation drops what the member no
    /// longer owns; events read are outstanding at their first attempt.
    fn take(&self, polled: &mut Polled) {
        let mut s = self.state.lock().expect("stream state");
        for p in &polled.restarted {
            s.parts.remove(p);
            s.retries.retain(|r| r.partition != *p);
        }
        if polled.generation != s.generation {
            s.generation = polled.generation;
            let owned = &polled.assignment;
            s.parts.retain(|p, _| owned.contains(p));
            s.retries.retain(|r| owned.contains(&r.partition));
        }
        for e in &mut polled.entries {
            e.ticket.lease = polled.generation;
            let part = s.parts.entry(e.ticket.partition).or_insert_with(|| Part {
                outstanding: BTreeMap::new(),
                next: e.ticket.offset,
                committed: e.ticket.offset,
            });
            part.outstanding.insert(e.ticket.offset, 1);
        }
        for &(p, next) in &polled.positions {
            let part = s.parts.entry(p).or_insert_with(|| Part {
                outstanding: BTreeMap::new(),
                next,
                committed: next,
            });
            part.next = next;
        }
    }

    /// Commits the partition's floor if it moved.
    async fn commit_floor(&self, partition: u32) -> Result<(), Error> {
        let floor = {
            let s = self.state.lock().expect("stream state");
            match s.parts.get(&partition) {
                Some(part) if part.floor() > part.committed => part.floor(),
                _ => return Ok(()),
            }
        };
        self.log.commit(&[(partition, floor)]).await?;
        let mut s = self.state.lock().expect("stream state");
        if let Some(part) = s.parts.get_mut(&partition) {
            part.committed = part.committed.max(floor);
        }
        Ok(())
    }

    /// The attempts of an outstanding event, or the error for one this member
    /// no longer holds.
    fn attempts(&self, ticket: &Ticket) -> Result<u32, Error> {
        let s = self.state.lock().expect("stream state");
        s.parts
            .get(&ticket.partition)
            .and_then(|p| p.outstanding.get(&ticket.offset))
            .copied()
            .ok_or_else(|| Error::LeaseExpired(format!("{}:{}", ticket.partition, ticket.offset)))
    }

    async fn ack(&self, ticket: &Ticket) -> Result<(), Error> {
        self.attempts(ticket)?;
        {
            let mut s = self.state.lock().expect("stream state");
            if let Some(part) = s.parts.get_mut(&ticket.partition) {
                part.outstanding.remove(&ticket.offset);
            }
        }
        self.log.forget(ticket.partition, ticket.offset);
        self.commit_floor(ticket.partition).await
    }

    async fn dead_letter(&self, ticket: &Ticket, attempts: u32, error: &str) -> Result<(), Error> {
        if let Some(incoming) = self.log.read_one(ticket.partition, ticket.offset).await? {
            let info = DeadLetterInfo {
                topic: &self.topic,
                partition: ticket.partition,
                offset: ticket.offset,
                attempts,
                error,
            };
            self.log.dead_letter(incoming.payload, info).await?;
        }
        self.ack(ticket).await
    }

    fn retry_later(&self, ticket: &Ticket, delay: Duration, attempt: u32) {
        let mut s = self.state.lock().expect("stream state");
        if let Some(part) = s.parts.get_mut(&ticket.partition) {
            part.outstanding.insert(ticket.offset, attempt);
        }
        s.retries.push(Retry {
            due: Instant::now() + delay,
            partition: ticket.partition,
            offset: ticket.offset,
            attempt,
        });
    }

    /// An event that retention removed before its retry: nothing holds the
    /// floor back for it any more.
    fn release_gone(&self, partition: u32, offset: u64) {
        let mut s = self.state.lock().expect("stream state");
        if let Some(part) = s.parts.get_mut(&partition) {
            part.outstanding.remove(&offset);
        }
        drop(s);
        self.log.forget(partition, offset);
    }
}

impl<L: GroupLog> Source for StreamSource<L> {
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>> {
        Box::pin(async move {
            if self.stop.is_cancelled() {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            for (partition, offset, attempt) in self.due_retries(max) {
                match self.log.read_one(partition, offset).await? {
                    Some(mut incoming) => {
                        incoming.attempt = attempt;
                        incoming.ticket.lease = self.state.lock().expect("stream state").generation;
                        out.push(incoming);
                    }
                    // Gone (retention): nothing to hand out or to wait for.
                    None => self.release_gone(partition, offset),
                }
                self.handed_out(partition, offset);
            }
            if out.len() >= max {
                // No poll this time; keep the membership alive.
                self.log.heartbeat().await?;
                return Ok(out);
            }
            // A poll heartbeats too, so poll even with retries to hand out.
            let wait = if out.is_empty() {
                self.next_retry().map_or(wait, |due| {
                    due.saturating_duration_since(Instant::now()).min(wait)
                })
            } else {
                Duration::ZERO
            };
            let mut polled = match self.log.poll(max - out.len(), wait, &self.stop).await {
                Ok(polled) => polled,
                Err(Error::LeaseExpired(why) | Error::UnknownGroup(why)) => {
                    // The membership is gone, and with it every partition:
                    // what was delivered and not acked comes again to
                    // whichever member owns its partition now.
                    tracing::info!(reason = %why, "the group no longer knows this member; joining again");
                    self.log.rejoin().await?;
                    let mut s = self.state.lock().expect("stream state");
                    s.generation = u64::MAX;
                    s.parts.clear();
                    s.retries.clear();
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            };
            self.take(&mut polled);
            out.append(&mut polled.entries);
            Ok(out)
        })
    }

    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match answer {
                Answer::Ack => self.ack(ticket).await,
                Answer::Reject { reason } => {
                    let attempts = self.attempts(ticket)?;
                    self.dead_letter(ticket, attempts, reason).await
                }
                Answer::Nack { delay, reason } => {
                    let attempts = self.attempts(ticket)?;
                    if attempts >= self.max_deliveries {
                        return self.dead_letter(ticket, attempts, reason).await;
                    }
                    let delay =
                        delay.unwrap_or_else(|| self.backoff.delay(attempts, self.random.next()));
                    self.retry_later(ticket, delay, attempts + 1);
                    Ok(())
                }
                Answer::Release => {
                    let attempts = self.attempts(ticket)?;
                    self.retry_later(ticket, Duration::ZERO, attempts);
                    Ok(())
                }
            }
        })
    }

    fn extend<'a>(
        &'a self,
        ticket: &'a Ticket,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.attempts(ticket)?;
            self.log.heartbeat().await
        })
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.stop.cancel();
            let parts: Vec<u32> = {
                let s = self.state.lock().expect("stream state");
                s.parts.keys().copied().collect()
            };
            for p in parts {
                self.commit_floor(p).await?;
            }
            self.log.leave().await
        })
    }
}

/// The `dlq*` extensions of a dead letter, as the broker's queue groups
/// write them.
pub(crate) fn dead_letter_extensions(info: &DeadLetterInfo<'_>) -> [(&'static str, String); 5] {
    [
        ("dlqtopic", info.topic.to_owned()),
        ("dlqpartition", info.partition.to_string()),
        ("dlqoffset", info.offset.to_string()),
        ("dlqattempts", info.attempts.to_string()),
        ("dlqerror", info.error.to_owned()),
    ]
}
