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
//!   the delay has passed (or after the backoff of its attempt). Attempts are
//!   counted in memory; a log that stores metadata with its commits (Kafka)
//!   also gets them in a [note](encode_note) committed with the partition's
//!   offset at each nack, so a member that owns the partition next — after a
//!   restart or a rebalance — continues the count and waits out the delay.
//!   Elsewhere they start over.
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
    /// The note committed with each restarted partition's offset, where the
    /// log keeps one: (partition, committed offset, note).
    pub(crate) notes: Vec<(u32, u64, String)>,
}

/// One partition's commit: the next offset to read, and the note of the
/// attempts above it (empty where the log keeps none).
pub(crate) struct Commit {
    pub(crate) partition: u32,
    pub(crate) next: u64,
    /// Read only by a log that keeps notes: Kafka's, behind its feature.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) note: String,
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

    /// Whether [`commit`](Self::commit) stores notes, and polls answer them.
    fn keeps_notes(&self) -> bool {
        false
    }

    /// Commits, per partition, the next offset to read (and its note, where
    /// the log keeps notes).
    fn commit<'a>(&'a self, commits: &'a [Commit]) -> BoxFuture<'a, Result<(), Error>>;

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
    /// Attempts read from a commit's note, for events not read again yet:
    /// (partition, offset) → (attempt, due in ms since the epoch).
    carried: HashMap<(u32, u64), (u32, i64)>,
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
                carried: HashMap::new(),
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
    /// longer owns; events read are outstanding at their first attempt, or at
    /// the attempt a note carried for them — and one whose retry is not due
    /// yet waits for it instead of being handed out.
    fn take(&self, polled: &mut Polled) {
        let mut s = self.state.lock().expect("stream state");
        for p in &polled.restarted {
            s.parts.remove(p);
            s.retries.retain(|r| r.partition != *p);
            s.carried.retain(|(partition, _), _| partition != p);
        }
        for (partition, committed, note) in &polled.notes {
            for (offset, attempt, due_ms) in decode_note(note, *committed) {
                s.carried.insert((*partition, offset), (attempt, due_ms));
            }
        }
        if polled.generation != s.generation {
            s.generation = polled.generation;
            let owned = &polled.assignment;
            s.parts.retain(|p, _| owned.contains(p));
            s.retries.retain(|r| owned.contains(&r.partition));
            s.carried.retain(|(p, _), _| owned.contains(p));
        }
        let (now, now_ms) = (Instant::now(), epoch_ms());
        let s = &mut *s;
        polled.entries.retain_mut(|e| {
            e.ticket.lease = polled.generation;
            let (partition, offset) = (e.ticket.partition, e.ticket.offset);
            let part = s.parts.entry(partition).or_insert_with(|| Part {
                outstanding: BTreeMap::new(),
                next: offset,
                committed: offset,
            });
            let Some((attempt, due_ms)) = s.carried.remove(&(partition, offset)) else {
                part.outstanding.insert(offset, 1);
                return true;
            };
            part.outstanding.insert(offset, attempt);
            e.attempt = attempt;
            let wait_ms = u64::try_from(due_ms.saturating_sub(now_ms)).unwrap_or(0);
            if wait_ms == 0 {
                return true;
            }
            s.retries.push(Retry {
                due: now + Duration::from_millis(wait_ms),
                partition,
                offset,
                attempt,
            });
            false
        });
        for &(p, next) in &polled.positions {
            let part = s.parts.entry(p).or_insert_with(|| Part {
                outstanding: BTreeMap::new(),
                next,
                committed: next,
            });
            part.next = next;
        }
    }

    /// Commits the partition's floor if it moved, or `always` (a nack whose
    /// attempt the note must keep).
    async fn commit_floor(&self, partition: u32, always: bool) -> Result<(), Error> {
        let commit = {
            let s = self.state.lock().expect("stream state");
            match s.parts.get(&partition) {
                Some(part) if always || part.floor() > part.committed => {
                    let next = part.floor().max(part.committed);
                    let note = if self.log.keeps_notes() {
                        encode_note(part, &s.retries, partition, next)
                    } else {
                        String::new()
                    };
                    Commit {
                        partition,
                        next,
                        note,
                    }
                }
                _ => return Ok(()),
            }
        };
        let floor = commit.next;
        self.log.commit(std::slice::from_ref(&commit)).await?;
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
        self.commit_floor(ticket.partition, false).await
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
                    s.carried.clear();
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
                    if self.log.keeps_notes() {
                        // The attempt is kept with the commit, so the count
                        // goes on after a restart or a rebalance.
                        self.commit_floor(ticket.partition, true).await?;
                    }
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
            // A partition the group gave to another member while this one
            // was busy is no longer this member's to commit: its new owner
            // delivers what was not committed again (another attempt), so a
            // refusal for it is not the close's failure. Any other failure
            // is, but the member still leaves first.
            let mut failed = None;
            for p in parts {
                match self.commit_floor(p, false).await {
                    Ok(()) | Err(Error::LeaseExpired(_)) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            let left = self.log.leave().await;
            match failed {
                Some(e) => Err(e),
                None => left,
            }
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

/// The longest note: within the broker's limit on commit metadata
/// ([`tidings_broker::COMMIT_METADATA_BYTES_MAX`]) and Apache Kafka's default
/// `offset.metadata.max.bytes` (4096), both of which refuse a longer one.
const NOTE_BYTES_MAX: usize = 3_072;
const _: () = assert!(NOTE_BYTES_MAX <= tidings_broker::COMMIT_METADATA_BYTES_MAX);
const _: () = assert!(NOTE_BYTES_MAX <= 4_096);

/// What a note starts with; a note without it (another client's metadata)
/// carries nothing.
const NOTE_PREFIX: &str = "tidings-attempts/1";

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The note committed with a partition's offset `next`: for each event above
/// it that has failed at least once, `<offset − next>:<attempt>:<due ms>`
/// (the attempt it is due for, and when; 0 when due now), lowest offsets
/// first — the first to come again — as many as [`NOTE_BYTES_MAX`] holds. An
/// event left out starts its count over after a restart, as without notes.
fn encode_note(part: &Part, retries: &[Retry], partition: u32, next: u64) -> String {
    let (now, now_ms) = (Instant::now(), epoch_ms());
    let mut note = String::new();
    let mut left_out = 0usize;
    for (&offset, &attempt) in part.outstanding.range(next..) {
        if attempt <= 1 {
            continue;
        }
        let due_ms = retries
            .iter()
            .find(|r| (r.partition, r.offset) == (partition, offset))
            .map_or(0, |r| {
                let wait = r.due.saturating_duration_since(now);
                now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
            });
        let entry = format!(" {}:{attempt}:{due_ms}", offset - next);
        if NOTE_PREFIX.len() + note.len() + entry.len() > NOTE_BYTES_MAX {
            left_out += 1;
            continue;
        }
        note.push_str(&entry);
    }
    if left_out > 0 {
        tracing::warn!(
            partition,
            left_out,
            "too many failed events above the commit to note them all; theirs start over after a restart"
        );
    }
    if note.is_empty() {
        return note;
    }
    format!("{NOTE_PREFIX}{note}")
}

/// A note's entries as (offset, attempt, due ms), for a note committed with
/// offset `next`; a malformed note (or another client's metadata) carries
/// none.
fn decode_note(note: &str, next: u64) -> Vec<(u64, u32, i64)> {
    let Some(entries) = note.strip_prefix(NOTE_PREFIX) else {
        return Vec::new();
    };
    let parse = |entry: &str| -> Option<(u64, u32, i64)> {
        let mut fields = entry.split(':');
        let above: u64 = fields.next()?.parse().ok()?;
        let attempt: u32 = fields.next()?.parse().ok()?;
        let due_ms: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() || attempt < 2 {
            return None;
        }
        Some((next.checked_add(above)?, attempt, due_ms))
    };
    let parsed: Option<Vec<_>> = entries.split_whitespace().map(parse).collect();
    parsed.unwrap_or_else(|| {
        tracing::warn!(note, "a malformed attempts note; its attempts start over");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(next: u64, outstanding: &[(u64, u32)]) -> Part {
        Part {
            outstanding: outstanding.iter().copied().collect(),
            next,
            committed: 0,
        }
    }

    #[test]
    fn a_note_carries_the_failed_events_above_the_commit() {
        let retry = Retry {
            due: Instant::now() + Duration::from_secs(60),
            partition: 3,
            offset: 12,
            attempt: 4,
        };
        // 10 is delivered at its first attempt, 11 is being retried now, 12
        // waits a minute for its fourth; 9 is below the commit.
        let p = part(20, &[(9, 2), (10, 1), (11, 2), (12, 4)]);
        let note = encode_note(&p, &[retry], 3, 10);
        assert!(note.starts_with(NOTE_PREFIX), "{note}");
        let entries = decode_note(&note, 10);
        assert_eq!(entries.len(), 2, "{note}");
        assert_eq!(entries[0], (11, 2, 0));
        let (offset, attempt, due_ms) = entries[1];
        assert_eq!((offset, attempt), (12, 4));
        let wait = due_ms - epoch_ms();
        assert!((50_000..=60_000).contains(&wait), "due in {wait} ms");
    }

    #[test]
    fn nothing_failed_is_an_empty_note() {
        assert_eq!(encode_note(&part(5, &[(3, 1), (4, 1)]), &[], 0, 3), "");
        assert!(decode_note("", 0).is_empty());
    }

    #[test]
    fn a_note_stays_within_its_bound_keeping_the_lowest_offsets() {
        let many: Vec<(u64, u32)> = (0..1_000).map(|o| (1_000_000 + o, 7)).collect();
        let note = encode_note(&part(1_001_000, &many), &[], 0, 1_000_000);
        assert!(note.len() <= NOTE_BYTES_MAX, "{} bytes", note.len());
        let entries = decode_note(&note, 1_000_000);
        assert!(entries.len() > 100, "{} entries", entries.len());
        for (i, (offset, attempt, _)) in entries.iter().enumerate() {
            assert_eq!((*offset, *attempt), (1_000_000 + i as u64, 7));
        }
    }

    /// A member that owns partition 0 and reads one event at offset 5 from
    /// it; its commits fail with `refusal`.
    struct Refused {
        refusal: fn() -> Error,
        polls: std::sync::atomic::AtomicU32,
        left: std::sync::atomic::AtomicBool,
    }

    impl GroupLog for Refused {
        fn poll<'a>(
            &'a self,
            _max: usize,
            _wait: Duration,
            _stop: &'a CancellationToken,
        ) -> BoxFuture<'a, Result<Polled, Error>> {
            let first = self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let entries = if first {
                vec![Incoming {
                    ticket: Ticket {
                        partition: 0,
                        offset: 5,
                        lease: 0,
                        reply: None,
                    },
                    attempt: 1,
                    timestamp_ms: 0,
                    payload: Payload::Event(crate::CloudEvent::new("/test", "test.event")),
                }]
            } else {
                Vec::new()
            };
            Box::pin(async move {
                Ok(Polled {
                    generation: 1,
                    assignment: vec![0],
                    entries,
                    positions: vec![(0, 6)],
                    restarted: Vec::new(),
                    notes: Vec::new(),
                })
            })
        }
        fn commit<'a>(&'a self, _commits: &'a [Commit]) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(async move { Err((self.refusal)()) })
        }
        fn read_one(&self, _: u32, _: u64) -> BoxFuture<'_, Result<Option<Incoming>, Error>> {
            Box::pin(async { Ok(None) })
        }
        fn dead_letter<'a>(
            &'a self,
            _: Payload,
            _: DeadLetterInfo<'a>,
        ) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn heartbeat(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn rejoin(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn leave(&self) -> BoxFuture<'_, Result<(), Error>> {
            self.left.store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    /// Receives the event, acks it (the commit is refused), and closes.
    async fn ack_then_close(
        refusal: fn() -> Error,
    ) -> (Result<(), Error>, Result<(), Error>, bool) {
        let source = StreamSource::new(
            Refused {
                refusal,
                polls: Default::default(),
                left: Default::default(),
            },
            "t",
            5,
            Backoff::default(),
        );
        let got = source.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        let acked = source.answer(&got[0].ticket, Answer::Ack).await;
        let closed = source.close().await;
        let left = source.log.left.load(std::sync::atomic::Ordering::SeqCst);
        (acked, closed, left)
    }

    #[tokio::test]
    async fn a_partition_given_to_another_member_does_not_fail_the_close() {
        let (acked, closed, left) =
            ack_then_close(|| Error::LeaseExpired("partition 0 is not assigned".into())).await;
        assert!(matches!(acked, Err(Error::LeaseExpired(_))), "{acked:?}");
        assert!(closed.is_ok(), "{closed:?}");
        assert!(left, "the member left its group");
    }

    #[tokio::test]
    async fn a_failed_final_commit_fails_the_close_after_leaving() {
        let (_, closed, left) = ack_then_close(|| Error::Backend {
            backend: "test",
            message: "connection refused".into(),
            transient: true,
        })
        .await;
        assert!(matches!(closed, Err(Error::Backend { .. })), "{closed:?}");
        assert!(left, "the member left its group all the same");
    }

    #[test]
    fn foreign_or_malformed_notes_carry_nothing() {
        for note in [
            "someone else's metadata",
            "tidings-attempts/1 x:2:0",
            "tidings-attempts/1 1:2",
            "tidings-attempts/1 1:2:0:9",
            "tidings-attempts/1 1:1:0",
            "tidings-attempts/1 18446744073709551615:2:0",
        ] {
            assert!(decode_note(note, 1).is_empty(), "{note}");
        }
        assert_eq!(
            decode_note("tidings-attempts/1 0:2:5 3:9:0", 7),
            vec![(7, 2, 5), (10, 9, 0)]
        );
    }
}
