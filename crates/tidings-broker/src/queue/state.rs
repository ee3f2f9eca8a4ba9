//! A queue group's delivery state, as a pure state machine: no IO, no clock,
//! no log. The broker reads events from the log and hands them in
//! ([`QueueState::take`]), asks which are due ([`QueueState::due`]), leases them,
//! and reports answers and expiries; the state decides what follows (a retry
//! after a backoff, or a dead letter) and writes every change it makes as a
//! journal record ([`QueueState::take_records`]) whose replay
//! ([`QueueState::apply`]) rebuilds it.
//!
//! Per partition it keeps the *ack floor* (every offset below it is acked or
//! dead-lettered), the offsets above the floor already resolved, the offsets it
//! has read but not resolved (their attempts, retry time, last error, key and
//! lease), and the *cursor* (the next offset to read). So every appended event
//! is, for the group, acked, dead-lettered or pending — none is silently
//! dropped.
//!
//! One more slot, [`LANE`], is read the same way: the group's *redrive lane*,
//! the partition of its retry topic, where a redrive puts dead letters to be
//! delivered to this group again (and to no other consumer of the topic).
//! Every slot index below `LANE` is a partition of the topic.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;

use tidings_log::limits::PARTITIONS_MAX;

use super::codec::{self, Out};
use super::{
    LeaseId, QueueConfig, QueueCounters, QueueError, ERROR_TEXT_BYTES_MAX, QUEUE_WINDOW_MAX,
};

/// One read, unresolved event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) key: Option<Bytes>,
    /// Deliveries so far.
    pub(crate) attempts: u32,
    /// Not delivered before this time (ms).
    pub(crate) eligible_at: i64,
    pub(crate) first_failure: Option<i64>,
    pub(crate) last_failure: Option<i64>,
    pub(crate) last_error: String,
    /// `(lease id, deadline)` while delivered. Not persisted.
    pub(crate) lease: Option<(u64, i64)>,
}

impl Pending {
    pub(crate) fn new(key: Option<Bytes>) -> Pending {
        Pending {
            key,
            attempts: 0,
            eligible_at: i64::MIN,
            first_failure: None,
            last_failure: None,
            last_error: String::new(),
            lease: None,
        }
    }
}

/// One partition of a queue group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartitionQueue {
    pub(crate) floor: u64,
    pub(crate) cursor: u64,
    pub(crate) resolved: BTreeSet<u64>,
    pub(crate) pending: BTreeMap<u64, Pending>,
}

impl PartitionQueue {
    /// A partition read from `start`.
    pub(crate) fn from(start: u64) -> PartitionQueue {
        PartitionQueue {
            floor: start,
            cursor: start,
            ..PartitionQueue::default()
        }
    }

    /// Forgets everything below `low` (removed by retention before it was read).
    pub(crate) fn raise_floor(&mut self, low: u64) {
        self.pending.retain(|o, _| *o >= low);
        self.resolved.retain(|o| *o >= low);
        self.floor = self.floor.max(low);
        self.cursor = self.cursor.max(self.floor);
    }

    pub(crate) fn resolve(&mut self, offset: u64) {
        self.pending.remove(&offset);
        self.resolved.insert(offset);
        while self.resolved.remove(&self.floor) {
            self.floor += 1;
        }
    }
}

/// The slot of the redrive lane: past every partition a topic can have, so a
/// lease, a journal record or a snapshot tells it from a partition.
pub(crate) const LANE: usize = PARTITIONS_MAX as usize;

/// How a delivery failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Retry after the backoff, or after this delay.
    Retry(Option<Duration>, String),
    /// Dead-letter now.
    Reject(String),
}

/// What follows a failed delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Another attempt is scheduled.
    Retry,
    /// The event goes to the dead-letter topic: the caller appends it there,
    /// then calls [`QueueState::dead_lettered`]. Until then it stays pending.
    DeadLetter(Pending),
}

/// A queue group's delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueState {
    pub(crate) config: QueueConfig,
    pub(crate) partitions: Vec<PartitionQueue>,
    /// The redrive lane: offsets of the group's retry topic.
    pub(crate) lane: PartitionQueue,
    /// Dead letters below this offset of the dead-letter topic were redriven or
    /// purged.
    pub(crate) dlq_floor: u64,
    /// Dead letters at or above the floor handled one by one (by a redrive
    /// of those with one error): the floor passes each once every one below
    /// it is handled too. At most [`super::DLQ_HANDLED_MAX`].
    pub(crate) dlq_handled: BTreeSet<u64>,
    pub(crate) next_lease: u64,
    /// The backoff's jitter.
    pub(crate) rng: u64,
    pub(crate) counters: QueueCounters,
    /// Journal records of the changes since the last [`take_records`](Self::take_records).
    records: Vec<u8>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `s`, cut to [`ERROR_TEXT_BYTES_MAX`] at a character boundary.
fn truncate(mut s: String) -> String {
    if s.len() > ERROR_TEXT_BYTES_MAX {
        let mut cut = ERROR_TEXT_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl QueueState {
    /// A new group whose partitions are read from `starts`; lease ids start
    /// at `first_lease`, and `seed` seeds the backoff's jitter.
    pub(crate) fn new(
        config: QueueConfig,
        starts: impl IntoIterator<Item = u64>,
        first_lease: u64,
        seed: u64,
    ) -> QueueState {
        QueueState {
            config,
            partitions: starts.into_iter().map(PartitionQueue::from).collect(),
            lane: PartitionQueue::default(),
            dlq_floor: 0,
            dlq_handled: BTreeSet::new(),
            next_lease: first_lease,
            rng: seed | 1,
            counters: QueueCounters::default(),
            records: Vec::new(),
        }
    }

    /// A group read back from its snapshot: no leases, no counters.
    pub(crate) fn restored(
        config: QueueConfig,
        partitions: Vec<PartitionQueue>,
        lane: PartitionQueue,
        dlq_floor: u64,
        dlq_handled: BTreeSet<u64>,
    ) -> QueueState {
        let mut state = QueueState {
            config,
            partitions,
            lane,
            dlq_floor,
            dlq_handled,
            next_lease: 1,
            rng: 0x9e37_79b9,
            counters: QueueCounters::default(),
            records: Vec::new(),
        };
        state.raise_dlq_floor(dlq_floor);
        state
    }

    /// Slot `p`: a partition, or the lane.
    pub(crate) fn slot(&self, p: usize) -> &PartitionQueue {
        if p == LANE {
            &self.lane
        } else {
            &self.partitions[p]
        }
    }

    fn slot_mut(&mut self, p: usize) -> &mut PartitionQueue {
        if p == LANE {
            &mut self.lane
        } else {
            &mut self.partitions[p]
        }
    }

    /// Every slot with its index: the partitions in order, then the lane.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (usize, &PartitionQueue)> {
        self.partitions
            .iter()
            .enumerate()
            .chain(std::iter::once((LANE, &self.lane)))
    }

    /// Whether anything changed since the last [`take_records`](Self::take_records).
    pub(crate) fn changed(&self) -> bool {
        !self.records.is_empty()
    }

    /// The journal records of the changes made since the last call, in order.
    pub(crate) fn take_records(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.records)
    }

    fn note(&mut self, body: Out) {
        crate::journal::frame(&mut self.records, &body.0);
    }

    /// Records the state of a pending offset (after a delivery or a failure).
    fn note_attempt(&mut self, p: usize, offset: u64) {
        let body = codec::attempt(p, offset, &self.slot(p).pending[&offset]);
        self.note(body);
    }

    fn note_resolve(&mut self, p: usize, offset: u64) {
        self.note(codec::resolve(p, offset));
    }

    /// Extends the group to partitions its topic gained: they are read from
    /// their first event, as everything in them came after the group existed.
    /// Returns whether it did.
    pub(crate) fn follow_partitions(&mut self, count: usize) -> bool {
        if self.partitions.len() >= count {
            return false;
        }
        self.partitions.resize_with(count, PartitionQueue::default);
        true
    }

    /// Retention removed partition `p`'s offsets below `log_start`: those the
    /// group never read are gone, with nothing to deliver. Returns whether the
    /// floor moved.
    pub(crate) fn skip_removed(&mut self, p: usize, log_start: u64) -> bool {
        if self.slot(p).cursor >= log_start {
            return false;
        }
        self.slot_mut(p).raise_floor(log_start);
        let floor = self.slot(p).floor;
        self.note(codec::floor(p, floor));
        true
    }

    /// Where partition `p` reads next.
    pub(crate) fn cursor(&self, p: usize) -> u64 {
        self.slot(p).cursor
    }

    /// Whether partition `p`, whose high-watermark is `high`, should read more
    /// events for a receive of up to `max`: it has unread events, within
    /// [`QUEUE_WINDOW_MAX`] of its floor, and not already plenty pending.
    pub(crate) fn wants(&self, p: usize, high: u64, max: usize) -> bool {
        let pq = self.slot(p);
        pq.cursor < high
            && pq.cursor - pq.floor < QUEUE_WINDOW_MAX
            && pq.pending.len() < max.max(64) * 4
    }

    /// Takes an event read from partition `p` at `offset`. Events before the
    /// cursor or beyond the window are ignored; one resolved before a restart
    /// is passed over. Returns false when the window is full.
    pub(crate) fn take(&mut self, p: usize, offset: u64, key: Option<&Bytes>) -> bool {
        let pq = self.slot_mut(p);
        if offset < pq.cursor {
            return true;
        }
        if offset - pq.floor >= QUEUE_WINDOW_MAX {
            return false;
        }
        pq.cursor = offset + 1;
        if pq.resolved.contains(&offset) {
            return true;
        }
        // After a restart, offsets with attempts are known already.
        pq.pending
            .entry(offset)
            .or_insert_with(|| Pending::new(key.cloned()));
        true
    }

    /// Chooses up to `max` events due at `now`, oldest first per slot (each
    /// partition, and the lane). Slots are taken in turn from one that rotates
    /// with the leases handed out; before a slot's events are chosen, `fill`
    /// reads its new events in (through [`take`](Self::take)), and once `max`
    /// are chosen the remaining slots are not read. With key ordering, an event
    /// waits while an earlier event of its key in its slot is unresolved.
    pub(crate) fn choose<E>(
        &mut self,
        max: usize,
        now: i64,
        mut fill: impl FnMut(&mut QueueState, usize) -> Result<(), E>,
    ) -> Result<Vec<(usize, u64)>, E> {
        let mut chosen = Vec::new();
        let slots = self.partitions.len() + 1;
        let start = usize::try_from(self.next_lease).unwrap_or(0) % slots;
        for k in 0..slots {
            if chosen.len() >= max {
                break;
            }
            let s = (start + k) % slots;
            let p = if s == self.partitions.len() { LANE } else { s };
            fill(self, p)?;
            let mut keys_ahead: HashSet<&Bytes> = HashSet::new();
            for (off, pe) in &self.slot(p).pending {
                if chosen.len() >= max {
                    break;
                }
                let blocked = self.config.key_ordering
                    && pe.key.as_ref().is_some_and(|k| !keys_ahead.insert(k));
                if !blocked && pe.lease.is_none() && pe.eligible_at <= now {
                    chosen.push((p, *off));
                }
            }
        }
        Ok(chosen)
    }

    /// Leases a pending event until `deadline`: one more attempt. Returns the
    /// lease and the attempt's number.
    pub(crate) fn lease(&mut self, p: usize, offset: u64, deadline: i64) -> (LeaseId, u32) {
        let id = self.next_lease;
        self.next_lease += 1;
        let pe = self
            .slot_mut(p)
            .pending
            .get_mut(&offset)
            .expect("a lease is for a pending event");
        pe.attempts += 1;
        pe.lease = Some((id, deadline));
        let attempt = pe.attempts;
        self.note_attempt(p, offset);
        self.counters.delivered += 1;
        if attempt > 1 {
            self.counters.redelivered += 1;
        }
        let lease = LeaseId {
            partition: u32::try_from(p).expect("partitions are bounded"),
            offset,
            id,
        };
        (lease, attempt)
    }

    /// The slot and offset of a lease the group handed out and the event
    /// still holds.
    pub(crate) fn held(&self, lease: &LeaseId) -> Result<(usize, u64), QueueError> {
        let unknown = || QueueError::UnknownLease(lease.to_string());
        let p = usize::try_from(lease.partition).map_err(|_| unknown())?;
        if (p >= self.partitions.len() && p != LANE) || lease.id >= self.next_lease {
            return Err(unknown());
        }
        match self.slot(p).pending.get(&lease.offset).map(|pe| pe.lease) {
            Some(Some((held, _))) if held == lease.id => Ok((p, lease.offset)),
            // Still pending under another lease, or waiting for a retry.
            Some(_) => Err(QueueError::LeaseExpired(lease.to_string())),
            // Acked or dead-lettered already, or never read.
            None => Err(unknown()),
        }
    }

    /// Moves a held lease's deadline to `deadline`: the consumer needs longer.
    pub(crate) fn extend(&mut self, p: usize, offset: u64, deadline: i64) {
        let pe = self
            .slot_mut(p)
            .pending
            .get_mut(&offset)
            .expect("an extension is of a held event");
        if let Some((_, d)) = &mut pe.lease {
            *d = deadline;
        }
    }

    /// Gives a held event back untouched: a consumer stopping with events it
    /// never handled. The delivery does not count as an attempt, and the event
    /// is due at once for the next consumer.
    pub(crate) fn release(&mut self, p: usize, offset: u64) {
        let pe = self
            .slot_mut(p)
            .pending
            .get_mut(&offset)
            .expect("a release is of a held event");
        pe.lease = None;
        pe.attempts = pe.attempts.saturating_sub(1);
        self.note_attempt(p, offset);
        self.counters.released += 1;
    }

    /// Acks a held event: done for this group.
    pub(crate) fn ack(&mut self, p: usize, offset: u64) {
        self.slot_mut(p).resolve(offset);
        self.note_resolve(p, offset);
        self.counters.acked += 1;
    }

    /// The delay before retry number `retry`: between half and all of the
    /// backoff's ceiling for it, drawn from the group's jitter.
    fn backoff_delay(&mut self, retry: u32) -> i64 {
        let ceiling = ms(self.config.backoff.ceiling(retry)).max(1);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = ceiling / 2;
        half + i64::try_from(self.rng % u64::try_from(ceiling - half + 1).unwrap_or(1)).unwrap_or(0)
    }

    /// A consumer nacked a held event at `now`: see [`fail`](Self::fail).
    pub(crate) fn nack(
        &mut self,
        p: usize,
        offset: u64,
        now: i64,
        delay: Option<Duration>,
        error: String,
    ) -> Outcome {
        self.counters.nacked += 1;
        self.fail(p, offset, now, Failure::Retry(delay, error))
    }

    /// Records a failed attempt of a pending event that happened at `now`:
    /// schedules the retry, or says the event is to be dead-lettered (after
    /// `max_deliveries` attempts, or at once for a reject).
    pub(crate) fn fail(&mut self, p: usize, offset: u64, now: i64, failure: Failure) -> Outcome {
        let (retry, error) = match failure {
            Failure::Retry(delay, e) => (Some(delay), e),
            Failure::Reject(e) => (None, e),
        };
        let pe = self
            .slot_mut(p)
            .pending
            .get_mut(&offset)
            .expect("a failure is of a pending event");
        pe.lease = None;
        pe.first_failure.get_or_insert(now);
        pe.last_failure = Some(now);
        pe.last_error = truncate(error);
        let attempts = pe.attempts;
        match retry {
            Some(delay) if attempts < self.config.max_deliveries => {
                let wait = delay.map_or_else(|| self.backoff_delay(attempts), ms);
                self.slot_mut(p)
                    .pending
                    .get_mut(&offset)
                    .expect("pending")
                    .eligible_at = now.saturating_add(wait);
                self.note_attempt(p, offset);
                Outcome::Retry
            }
            _ => Outcome::DeadLetter(self.slot(p).pending[&offset].clone()),
        }
    }

    /// The event went to the dead-letter topic: resolved for this group.
    pub(crate) fn dead_lettered(&mut self, p: usize, offset: u64) {
        self.slot_mut(p).resolve(offset);
        self.note_resolve(p, offset);
        self.counters.dead_lettered += 1;
    }

    /// The leases that ran out by `now`, as `(partition, offset, deadline)`,
    /// counted as expired. Each is then a failed attempt, failed when its
    /// lease ran out.
    pub(crate) fn expired(&mut self, now: i64) -> Vec<(usize, u64, i64)> {
        let mut expired = Vec::new();
        for (p, pq) in self.slots() {
            for (off, pe) in &pq.pending {
                if let Some((_, deadline)) = pe.lease.filter(|(_, deadline)| *deadline <= now) {
                    expired.push((p, *off, deadline));
                }
            }
        }
        self.counters.expired += expired.len() as u64;
        expired
    }

    /// Marks the dead letters below `floor` handled (redriven or purged).
    pub(crate) fn set_dlq_floor(&mut self, floor: u64) {
        self.raise_dlq_floor(floor);
        self.note(codec::dlq_floor(floor));
    }

    /// Marks the dead letters at `offsets` handled, each on its own (a
    /// redrive of some of them).
    pub(crate) fn dlq_handle(&mut self, offsets: &[u64]) {
        self.handle_dead_letters(offsets);
        self.note(codec::dlq_handled(offsets));
    }

    /// The floor raised to `floor` (never lowered), past every dead letter
    /// handled on its own right above it.
    pub(crate) fn raise_dlq_floor(&mut self, floor: u64) {
        self.dlq_floor = self.dlq_floor.max(floor);
        let below = self.dlq_floor;
        self.dlq_handled.retain(|o| *o >= below);
        // A floor at the end of the offsets (only a damaged file gets
        // there) stays there rather than wrapping.
        while self.dlq_handled.remove(&self.dlq_floor) {
            match self.dlq_floor.checked_add(1) {
                Some(next) => self.dlq_floor = next,
                None => break,
            }
        }
    }

    /// `offsets` handled, without a journal record (as replayed).
    pub(crate) fn handle_dead_letters(&mut self, offsets: &[u64]) {
        let floor = self.dlq_floor;
        self.dlq_handled
            .extend(offsets.iter().copied().filter(|o| *o >= floor));
        self.raise_dlq_floor(floor);
    }

    /// Whether the dead letter at `offset` was handled.
    pub(crate) fn dlq_is_handled(&self, offset: u64) -> bool {
        offset < self.dlq_floor || self.dlq_handled.contains(&offset)
    }

    /// Leases held now.
    pub(crate) fn leases(&self) -> usize {
        self.slots()
            .flat_map(|(_, p)| p.pending.values())
            .filter(|pe| pe.lease.is_some())
            .count()
    }

    /// Replays one journal record. Records carry whole states, not steps, and
    /// skip offsets already resolved, so replaying one twice changes nothing.
    pub(crate) fn apply(&mut self, body: &[u8]) -> Result<(), String> {
        codec::apply(self, body)
    }

    /// After a restart: leases are void, and events read but never delivered
    /// are read again from the floor.
    pub(crate) fn restart(&mut self, first_lease: u64) {
        self.next_lease = first_lease;
        for pq in self
            .partitions
            .iter_mut()
            .chain(std::iter::once(&mut self.lane))
        {
            pq.cursor = pq.floor;
            for pe in pq.pending.values_mut() {
                pe.lease = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The state machine against a model of what each event went through:
    //! random appends, receives, acks, nacks, rejects, releases, lease
    //! extensions, expiries, redrives of dead letters into the lane, time and
    //! restarts (the state rebuilt from its snapshot and journal), with the
    //! model's account checked after every step.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use tidings_types::TopicName;

    use super::*;
    use crate::queue::Backoff;

    /// What the model says of one appended event.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Status {
        /// `voided`: deliveries whose lease a restart voided. Such a delivery
        /// is not a failed attempt, so it does not count against
        /// `max_deliveries`: the event is delivered again after the restart
        /// (at least once), even past the limit.
        Pending {
            attempts: u32,
            leased: bool,
            voided: u32,
        },
        Acked,
        DeadLettered,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append {
            p: usize,
            key: Option<u8>,
        },
        Receive {
            max: usize,
        },
        Ack {
            which: usize,
        },
        Nack {
            which: usize,
            delay_ms: Option<u64>,
        },
        Reject {
            which: usize,
        },
        Release {
            which: usize,
        },
        Extend {
            which: usize,
            ms: i64,
        },
        Redrive {
            max: usize,
        },
        /// A redrive of only the dead letters whose key's parity is this.
        RedriveSome {
            max: usize,
            parity: u8,
        },
        Advance {
            ms: i64,
        },
        Expire,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, proptest::option::of(0..3u8)).prop_map(|(p, key)| Op::Append { p, key }),
            3 => (1..6usize).prop_map(|max| Op::Receive { max }),
            3 => (0..8usize).prop_map(|which| Op::Ack { which }),
            2 => (0..8usize, proptest::option::of(0..50u64))
                .prop_map(|(which, delay_ms)| Op::Nack { which, delay_ms }),
            1 => (0..8usize).prop_map(|which| Op::Reject { which }),
            1 => (0..8usize).prop_map(|which| Op::Release { which }),
            1 => (0..8usize, 1..500i64).prop_map(|(which, ms)| Op::Extend { which, ms }),
            1 => (1..4usize).prop_map(|max| Op::Redrive { max }),
            1 => (1..4usize, 0..2u8).prop_map(|(max, parity)| Op::RedriveSome { max, parity }),
            2 => (1..400i64).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Expire),
            1 => Just(Op::Restart),
        ]
    }

    const PARTITIONS: usize = 2;
    /// The model's index of the lane: after the partitions.
    const LANE_SLOT: usize = PARTITIONS;

    /// The state's index of a model slot, and back.
    fn index(slot: usize) -> usize {
        if slot == LANE_SLOT {
            LANE
        } else {
            slot
        }
    }

    fn slot(p: usize) -> usize {
        if p == LANE {
            LANE_SLOT
        } else {
            p
        }
    }

    struct World {
        config: QueueConfig,
        state: QueueState,
        /// The keys of each slot's events, by offset: the partitions' logs,
        /// then the retry topic's.
        log: Vec<Vec<Option<Bytes>>>,
        model: Vec<BTreeMap<u64, Status>>,
        /// The dead-letter topic: the key of each dead letter.
        dlq: Vec<Option<Bytes>>,
        /// Whether each dead letter was redriven.
        redriven: Vec<bool>,
        /// Leases handed out and not answered, in order.
        leases: Vec<LeaseId>,
        now: i64,
        /// What is on disk: the snapshot taken at the start, and every
        /// journal record since.
        snapshot: Vec<u8>,
        journal: Vec<u8>,
        restarts: u64,
    }

    fn names() -> (TopicName, TopicName) {
        (
            TopicName::new("jobs").unwrap(),
            TopicName::new("jobs.workers.dlq").unwrap(),
        )
    }

    impl World {
        fn new(config: QueueConfig) -> World {
            let state = QueueState::new(config, vec![0; PARTITIONS], 1_000, 7);
            let (topic, dlq) = names();
            World {
                config,
                snapshot: codec::encode(0, &topic, &dlq, &state),
                state,
                log: vec![Vec::new(); PARTITIONS + 1],
                model: vec![BTreeMap::new(); PARTITIONS + 1],
                dlq: Vec::new(),
                redriven: Vec::new(),
                leases: Vec::new(),
                now: 1_000_000,
                journal: Vec::new(),
                restarts: 0,
            }
        }

        /// Moves the state's journal records to "disk".
        fn sync(&mut self) {
            let records = self.state.take_records();
            self.journal.extend_from_slice(&records);
        }

        fn fill(&mut self, max: usize) -> Vec<(usize, u64)> {
            let log = &self.log;
            let chosen = self.state.choose(max, self.now, |state, p| {
                let log = &log[slot(p)];
                state.skip_removed(p, 0);
                while state.wants(p, log.len() as u64, max) {
                    // A read hands back a few records from the cursor on.
                    let from = state.cursor(p);
                    let to = (from + 3).min(log.len() as u64);
                    for o in from..to {
                        state.take(p, o, log[o as usize].as_ref());
                    }
                }
                Ok::<(), ()>(())
            });
            chosen.unwrap()
        }

        fn pending(&self, s: usize, off: u64) -> (u32, bool, u32) {
            match self.model[s][&off] {
                Status::Pending {
                    attempts,
                    leased,
                    voided,
                } => (attempts, leased, voided),
                other => panic!("{s}/{off} is {other:?}, not pending"),
            }
        }

        /// Settles an outcome as the broker would, the dead-letter append
        /// succeeding.
        fn settle(&mut self, p: usize, off: u64, outcome: Outcome) {
            let s = slot(p);
            let (attempts, _, voided) = self.pending(s, off);
            match outcome {
                Outcome::Retry => {
                    assert!(
                        attempts < self.config.max_deliveries,
                        "retried past the limit"
                    );
                    self.model[s].insert(
                        off,
                        Status::Pending {
                            attempts,
                            leased: false,
                            voided,
                        },
                    );
                }
                Outcome::DeadLetter(pending) => {
                    assert_eq!(pending.attempts, attempts);
                    self.state.dead_lettered(p, off);
                    self.model[s].insert(off, Status::DeadLettered);
                    self.dlq.push(self.log[s][off as usize].clone());
                    self.redriven.push(false);
                }
            }
        }

        /// Dead letter `i` appended to the retry topic.
        fn redrive(&mut self, i: usize) {
            assert!(!self.redriven[i], "dead letter {i} redriven twice");
            self.redriven[i] = true;
            let key = self.dlq[i].clone();
            self.log[LANE_SLOT].push(key);
            let off = self.log[LANE_SLOT].len() as u64 - 1;
            self.model[LANE_SLOT].insert(
                off,
                Status::Pending {
                    attempts: 0,
                    leased: false,
                    voided: 0,
                },
            );
        }

        fn pick(&mut self, which: usize) -> Option<LeaseId> {
            if self.leases.is_empty() {
                return None;
            }
            let i = which % self.leases.len();
            Some(self.leases.remove(i))
        }

        fn step(&mut self, op: Op) {
            match op {
                Op::Append { p, key } => {
                    self.log[p].push(key.map(|k| Bytes::from(vec![k])));
                    let off = self.log[p].len() as u64 - 1;
                    self.model[p].insert(
                        off,
                        Status::Pending {
                            attempts: 0,
                            leased: false,
                            voided: 0,
                        },
                    );
                }
                Op::Receive { max } => {
                    let deadline = self.now + ms(self.config.ack_timeout);
                    for (p, off) in self.fill(max) {
                        let s = slot(p);
                        let key = self.log[s][off as usize].clone();
                        let (attempts, leased, voided) = self.pending(s, off);
                        assert!(!leased, "delivered {s}/{off} while it is leased");
                        if self.config.key_ordering && key.is_some() {
                            for (o, status) in self.model[s].range(..off) {
                                let same = self.log[s][*o as usize] == key;
                                assert!(
                                    !same || !matches!(status, Status::Pending { .. }),
                                    "{s}/{off} delivered while {s}/{o} of its key is unresolved"
                                );
                            }
                        }
                        let (lease, attempt) = self.state.lease(p, off, deadline);
                        assert_eq!(attempt, attempts + 1);
                        self.model[s].insert(
                            off,
                            Status::Pending {
                                attempts: attempt,
                                leased: true,
                                voided,
                            },
                        );
                        self.leases.push(lease);
                    }
                }
                Op::Ack { which } => {
                    if let Some(lease) = self.pick(which) {
                        let (p, off) = self.state.held(&lease).expect("a held lease");
                        self.state.ack(p, off);
                        self.model[slot(p)].insert(off, Status::Acked);
                        // Acked once: the lease is gone.
                        assert!(self.state.held(&lease).is_err());
                    }
                }
                Op::Nack { which, delay_ms } => {
                    if let Some(lease) = self.pick(which) {
                        let (p, off) = self.state.held(&lease).expect("a held lease");
                        let delay = delay_ms.map(Duration::from_millis);
                        let outcome = self.state.nack(p, off, self.now, delay, "no".into());
                        self.settle(p, off, outcome);
                    }
                }
                Op::Reject { which } => {
                    if let Some(lease) = self.pick(which) {
                        let (p, off) = self.state.held(&lease).expect("a held lease");
                        let outcome =
                            self.state
                                .fail(p, off, self.now, Failure::Reject("poison".into()));
                        assert!(matches!(outcome, Outcome::DeadLetter(_)));
                        self.settle(p, off, outcome);
                    }
                }
                Op::Release { which } => {
                    if let Some(lease) = self.pick(which) {
                        let (p, off) = self.state.held(&lease).expect("a held lease");
                        self.state.release(p, off);
                        let s = slot(p);
                        let (attempts, _, voided) = self.pending(s, off);
                        self.model[s].insert(
                            off,
                            Status::Pending {
                                attempts: attempts - 1,
                                leased: false,
                                voided,
                            },
                        );
                        assert!(self.state.held(&lease).is_err(), "released once");
                    }
                }
                Op::Extend { which, ms } => {
                    if !self.leases.is_empty() {
                        let lease = self.leases[which % self.leases.len()];
                        let (p, off) = self.state.held(&lease).expect("a held lease");
                        self.state.extend(p, off, self.now + ms);
                    }
                }
                Op::Redrive { max } => {
                    // As the broker does: the dead letters after the floor
                    // not yet handled go to the retry topic, then the floor
                    // moves past the last one.
                    let mut end = self.state.dlq_floor as usize;
                    let mut moved = 0;
                    while end < self.dlq.len() && moved < max {
                        if !self.state.dlq_is_handled(end as u64) {
                            self.redrive(end);
                            moved += 1;
                        }
                        end += 1;
                    }
                    self.state.set_dlq_floor(end as u64);
                }
                Op::RedriveSome { max, parity } => {
                    // Only those of one kind, each marked handled on its own.
                    let parity_of = |key: &Option<Bytes>| key.as_ref().map_or(0, |k| k[0] % 2);
                    let picked: Vec<usize> = (self.state.dlq_floor as usize..self.dlq.len())
                        .filter(|&i| !self.state.dlq_is_handled(i as u64))
                        .filter(|&i| parity_of(&self.dlq[i]) == parity)
                        .take(max)
                        .collect();
                    for &i in &picked {
                        self.redrive(i);
                    }
                    let offsets: Vec<u64> = picked.iter().map(|&i| i as u64).collect();
                    self.state.dlq_handle(&offsets);
                }
                Op::Advance { ms } => self.now += ms,
                Op::Expire => {
                    for (p, off, deadline) in self.state.expired(self.now) {
                        self.leases
                            .retain(|l| (l.partition as usize, l.offset) != (p, off));
                        let failure = Failure::Retry(None, "lease expired".into());
                        let outcome = self.state.fail(p, off, deadline, failure);
                        self.settle(p, off, outcome);
                    }
                }
                Op::Restart => {
                    self.sync();
                    let mut rebuilt = codec::decode(&self.snapshot).unwrap().state;
                    let mut image = vec![0; crate::journal::HEADER_BYTES as usize];
                    image.extend_from_slice(&self.journal);
                    let (records, end) = crate::journal::records(&image);
                    assert_eq!(end, image.len(), "every journal record reads back");
                    for record in &records {
                        rebuilt.apply(record).unwrap();
                    }
                    self.restarts += 1;
                    let first = 1_000 + self.restarts * 1_000_000;
                    rebuilt.restart(first);
                    self.state.restart(first);
                    // Everything but events read and never delivered, which
                    // are read again from the floor, comes back. (A first
                    // delivery released is journaled at no attempts; it may
                    // come back or be read again, the same either way.)
                    let delivered = |state: &QueueState| {
                        let mut state = state.clone();
                        for pq in state.partitions.iter_mut().chain([&mut state.lane]) {
                            pq.pending.retain(|_, pe| pe.attempts > 0);
                        }
                        (state.partitions, state.lane)
                    };
                    assert_eq!(delivered(&rebuilt), delivered(&self.state));
                    assert_eq!(rebuilt.dlq_floor, self.state.dlq_floor);
                    assert_eq!(rebuilt.dlq_handled, self.state.dlq_handled);
                    // Leases die with a restart.
                    self.leases.clear();
                    for statuses in &mut self.model {
                        for status in statuses.values_mut() {
                            if let Status::Pending { leased, voided, .. } = status {
                                if *leased {
                                    *voided += 1;
                                }
                                *leased = false;
                            }
                        }
                    }
                    self.state.partitions = rebuilt.partitions;
                    self.state.lane = rebuilt.lane;
                }
            }
            self.sync();
            self.check();
        }

        /// Every appended event (in a partition or the lane) is acked,
        /// dead-lettered or pending, as the model says; the floor is the
        /// lowest unresolved offset; no dead letter is redriven twice.
        fn check(&self) {
            for s in 0..=PARTITIONS {
                let pq = self.state.slot(index(s));
                let mut lowest_unresolved = None;
                for (&off, status) in &self.model[s] {
                    let resolved = off < pq.floor || pq.resolved.contains(&off);
                    let pending = pq.pending.get(&off);
                    match status {
                        Status::Acked | Status::DeadLettered => {
                            assert!(resolved, "{s}/{off} is {status:?} but not resolved");
                            assert!(pending.is_none());
                        }
                        Status::Pending {
                            attempts,
                            leased,
                            voided,
                        } => {
                            lowest_unresolved.get_or_insert(off);
                            assert!(!resolved, "{s}/{off} resolved while pending");
                            // Read events are pending; unread ones too once
                            // delivered (after a restart the cursor starts
                            // over, and the journal kept their attempts).
                            match pending {
                                Some(pe) => {
                                    assert_eq!(pe.attempts, *attempts, "{s}/{off}");
                                    assert_eq!(pe.lease.is_some(), *leased, "{s}/{off}");
                                    assert!(
                                        pe.attempts <= self.config.max_deliveries + voided,
                                        "{s}/{off} delivered past max_deliveries"
                                    );
                                }
                                None => assert!(
                                    off >= pq.cursor && *attempts == 0,
                                    "{s}/{off} read or delivered, but lost"
                                ),
                            }
                        }
                    }
                }
                let end = self.log[s].len() as u64;
                assert_eq!(pq.floor, lowest_unresolved.unwrap_or(end), "floor of {s}");
            }
            // Each dead letter redriven at most once, and the state knows
            // which: the floor is the first one not redriven, and those
            // above it that were are the ones it keeps as handled.
            let redriven = self.redriven.iter().filter(|r| **r).count();
            assert_eq!(
                self.log[LANE_SLOT].len(),
                redriven,
                "a redrive appends each once"
            );
            let first_waiting = self
                .redriven
                .iter()
                .position(|r| !r)
                .unwrap_or(self.dlq.len());
            assert_eq!(
                self.state.dlq_floor, first_waiting as u64,
                "the dead-letter floor"
            );
            let above: BTreeSet<u64> = (first_waiting..self.dlq.len())
                .filter(|&i| self.redriven[i])
                .map(|i| i as u64)
                .collect();
            assert_eq!(
                self.state.dlq_handled, above,
                "dead letters handled one by one"
            );
        }
    }

    fn config() -> impl Strategy<Value = QueueConfig> {
        (1..4u32, any::<bool>(), 1..20u64).prop_map(|(max_deliveries, key_ordering, backoff)| {
            QueueConfig {
                ack_timeout: Duration::from_millis(200),
                max_deliveries,
                backoff: Backoff {
                    initial: Duration::from_millis(backoff),
                    factor: 2,
                    max: Duration::from_millis(100),
                },
                key_ordering,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn every_event_is_acked_dead_lettered_or_pending_and_the_journal_rebuilds_the_state(
            config in config(),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut world = World::new(config);
            for op in ops {
                world.step(op);
            }
            // In the end, with time enough and everyone acking, everything
            // resolves.
            for _ in 0..200 {
                world.step(Op::Advance { ms: 1_000 });
                world.step(Op::Expire);
                world.step(Op::Receive { max: 5 });
                while !world.leases.is_empty() {
                    world.step(Op::Ack { which: 0 });
                }
            }
            for statuses in &world.model {
                for (off, status) in statuses {
                    prop_assert!(!matches!(status, Status::Pending { .. }), "{off} never resolved");
                }
            }
        }
    }
}
