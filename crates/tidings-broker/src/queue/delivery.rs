//! The broker's side of queue delivery: creating a group, receiving (reading
//! the log into the group's state, leasing what is due, reading the leased
//! events back), the answers (ack, nack, reject), expiries, stats, and the
//! journal every change goes through.
//!
//! All of it except the leases is durable before anyone hears of it: every
//! delivery (its attempt count), ack, nack, reject and dead-letter is a record
//! in the group's journal, synced before the call returns; calls on one group
//! that overlap share one `fdatasync`. When the journal has grown past twice
//! the snapshot (and at least 1 MiB), the snapshot is replaced atomically and
//! the journal starts over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use tidings_log::{FsyncPolicy, Partition, StoredRecord};
use tidings_types::{ErrorKind, Offset, PartitionId, TimestampMs, TopicName};

use super::state::{Failure, Outcome, QueueState, LANE};
use super::{
    codec, first_lease, journal_error, journal_path, state_path, Delivery, DeliveryState, LeaseId,
    PendingDelivery, QueueConfig, QueueError, QueueGroup, QueuePartitionStats, QueueStats, Staged,
    ACK_TIMEOUT_MAX, COMPACT_BYTES_MIN, NACK_DELAY_MAX,
};
use crate::journal::Journal;
use crate::read::{entry_of, wait_for_any};
use crate::{Broker, GroupName, ReadError, StartPosition, TopicSpec};

/// Bytes read from a partition at a time when filling the pending set.
const READ_BYTES: usize = 256 * 1024;
/// How much a receive reads to hand out the events it chose: a receive takes a
/// few dozen events, so reading a whole `READ_BYTES` for them would decode
/// records it does not deliver.
const DELIVERY_READ_BYTES: usize = 32 * 1024;
/// How often a waiting receive looks again for retries and expired leases that
/// came due, when no publish wakes it sooner.
const QUEUE_WAIT_TICK: Duration = Duration::from_millis(50);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The span of carrying out a consumer's answer (`ack`, `nack`, `reject`,
/// `release`) to deliveries of `g`: under the request that sent it, with
/// what follows (a dead-lettering) under it.
fn settle_span(operation: &'static str, g: &QueueGroup) -> tracing::Span {
    tidings_trace::settle_span(
        tidings_trace::SYSTEM,
        "internal",
        operation,
        g.topic.as_str(),
        g.name.as_str(),
    )
}

fn partition_id(p: usize) -> PartitionId {
    PartitionId(u32::try_from(p).expect("partitions are bounded"))
}

/// Reads slot `p`'s new events (from `part`, its log partition) into
/// `state`, within the group's window; first raises the floor past events
/// retention removed unread. A lane with no retry topic yet has none.
fn fill(
    state: &mut QueueState,
    part: Option<&Partition>,
    p: usize,
    max: usize,
) -> Result<(), QueueError> {
    let Some(part) = part else { return Ok(()) };
    state.skip_removed(p, part.log_start_offset().0);
    while state.wants(p, part.high_watermark().0, max) {
        // Offsets and keys are all the pending set keeps.
        let keys = part
            .read_keys(Offset(state.cursor(p)), READ_BYTES)
            .map_err(ReadError::from)?;
        if keys.is_empty() {
            break;
        }
        for (offset, key) in &keys {
            state.take(p, offset.0, key.as_ref());
        }
    }
    Ok(())
}

impl Broker {
    /// Creates a queue-mode group on `topic`, delivering from `start` in each
    /// partition (the earliest stored event, the end, an offset or the first
    /// event at or after a time). Its dead letters go to the topic
    /// `<topic>.<group>.dlq`, created here.
    pub fn create_queue_group(
        &self,
        group: &str,
        topic: &str,
        config: QueueConfig,
        start: StartPosition,
    ) -> Result<(), QueueError> {
        let name = GroupName::new(group)?;
        config.validate()?;
        let t = self
            .topic(topic)
            .ok_or_else(|| QueueError::UnknownTopic(topic.to_owned()))?;
        let _creating = self.queues.creating.lock().expect("creating lock");
        if self
            .queues
            .groups
            .lock()
            .expect("queues lock")
            .contains_key(group)
        {
            return Err(QueueError::Exists(group.to_owned()));
        }
        // Both topics derived from the group's name are checked now: a
        // retry topic found invalid only at the first delayed nack or
        // redrive would fail the group in use.
        let dlq = format!("{topic}.{group}.dlq");
        let dead_letters = TopicName::new(&dlq)
            .map_err(|e| super::dead_letters::derived_name_error(&t.name, &name, "dlq", &e))?;
        let retry = super::dead_letters::retry_topic_of(&t.name, &name)
            .map_err(|e| super::dead_letters::derived_name_error(&t.name, &name, "retry", &e))?;
        if self.topic(&dlq).is_none() {
            let mut spec = TopicSpec {
                dedup_window: None,
                ..t.spec()
            };
            spec.log.partitions = 1;
            spec.log.fsync = FsyncPolicy::Always;
            match self.create_topic(&dlq, spec) {
                Ok(_) => {}
                // Created meanwhile (a reader of the dead letters came
                // first): the group uses it as it is.
                Err(e) if e.kind() == ErrorKind::TopicExists => {}
                Err(e) => return Err(QueueError::DeadLetterTopic(e)),
            }
        }
        let mut starts = Vec::new();
        for p in 0..t.partitions() {
            starts.push(self.position(topic, PartitionId(p), start)?.0);
        }
        let seed = u64::try_from(self.clock.now().0).unwrap_or(1);
        let state = QueueState::new(config, starts, first_lease(self.started_ms), seed);
        // The journal first: a snapshot is what makes the group exist.
        let jpath = journal_path(&self.dir, &name);
        let created = Journal::create(Arc::clone(&self.storage), &jpath, 0);
        let journal = created.map_err(|e| QueueError::State {
            path: jpath.clone(),
            reason: e.to_string(),
        })?;
        let mut g = QueueGroup {
            retry: Ok(retry),
            name: name.clone(),
            topic: t.name.clone(),
            dead_letters,
            state,
            generation: 0,
            snapshot_bytes: 0,
            journal: self.queues.track(journal),
            deleted: false,
        };
        self.write_snapshot(&mut g)?;
        self.queues
            .groups
            .lock()
            .expect("queues lock")
            .insert(name, Arc::new(tokio::sync::Mutex::new(g)));
        Ok(())
    }

    /// Writes the group's state as its snapshot (replaced atomically).
    fn write_snapshot(&self, g: &mut QueueGroup) -> Result<(), QueueError> {
        let path = state_path(&self.dir, &g.name);
        let bytes = codec::encode(g.generation, &g.topic, &g.dead_letters, &g.state);
        self.storage
            .replace_durably(&path, &bytes)
            .map_err(|e| QueueError::State {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        g.snapshot_bytes = bytes.len() as u64;
        Ok(())
    }

    /// Stages the journal records of the operation that just changed `g`. When
    /// the journal has grown enough, folds it into a new snapshot instead (with
    /// the group still locked, so nothing else stages meanwhile).
    pub(super) async fn stage(&self, g: &mut QueueGroup) -> Result<Staged, QueueError> {
        let journal = Arc::clone(&g.journal);
        let mut records = g.state.take_records();
        let seq = journal
            .stage(&mut records)
            .map_err(|reason| journal_error(&journal, &reason))?;
        if journal.len() <= COMPACT_BYTES_MIN.max(2 * g.snapshot_bytes) {
            return Ok(Staged { journal, seq });
        }
        Staged {
            journal: Arc::clone(&journal),
            seq,
        }
        .durable()
        .await?;
        g.generation = journal.generation() + 1;
        self.write_snapshot(g)?;
        journal
            .restart(g.generation)
            .map_err(|e| journal_error(&journal, &e.to_string()))?;
        Ok(Staged { journal, seq: 0 })
    }

    /// Settles what a failed delivery leads to: nothing more for a retry; for
    /// a dead letter, the append to the dead-letter topic, then its resolution.
    async fn settle_failure(
        &self,
        g: &mut QueueGroup,
        p: usize,
        offset: u64,
        outcome: Outcome,
    ) -> Result<(), QueueError> {
        match outcome {
            Outcome::Retry => Ok(()),
            Outcome::DeadLetter(pending) => {
                self.dead_letter(g, p, offset, &pending).await?;
                g.state.dead_lettered(p, offset);
                Ok(())
            }
        }
    }

    /// Expires leases past their deadline as failed attempts. Returns whether
    /// any had.
    async fn expire_leases(&self, g: &mut QueueGroup) -> Result<bool, QueueError> {
        let expired = g.state.expired(self.clock.now().0);
        // The attempt failed when the lease ran out, not when this noticed it.
        for &(p, off, deadline) in &expired {
            let failure = Failure::Retry(None, "lease expired".into());
            let outcome = g.state.fail(p, off, deadline, failure);
            self.settle_failure(g, p, off, outcome).await?;
        }
        Ok(!expired.is_empty())
    }

    /// Like [`receive`](Self::receive), but when nothing is due it waits up to
    /// `wait` for an event to be published or a retry to come due (a long-poll).
    pub async fn receive_wait(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.receive_wait_until(group, max, wait, std::future::pending())
            .await
    }

    /// [`receive_wait`](Self::receive_wait), but the wait also ends when `stop`
    /// resolves (a server draining, a client gone), answering nothing. Only the
    /// wait is cut short: a receive under way finishes, so no event is leased
    /// to a consumer that never hears of it. (Dropping the future instead can
    /// do that: its leases then run out and count as failed attempts.)
    pub async fn receive_wait_until(
        &self,
        group: &str,
        max: usize,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut stop = std::pin::pin!(stop);
        loop {
            // Taken before the receive, so a publish landing after it still wakes us.
            let watchers = {
                let g = self.queues.lock(group).await?;
                let t = self
                    .topic(g.topic.as_str())
                    .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?;
                let mut watchers: Vec<_> = (0..t.partitions())
                    .filter_map(|p| t.partition(PartitionId(p)).ok())
                    .map(|p| p.watch_high_watermark())
                    .collect();
                // A redrive wakes a waiting receive too.
                if let Some(lane) = self.slot_partition(&g, LANE)? {
                    watchers.push(lane.watch_high_watermark());
                }
                watchers
            };
            let got = self.receive(group, max).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Retries and expired leases come due on the clock, not on appends.
            let tick = (now + QUEUE_WAIT_TICK).min(deadline);
            tokio::select! {
                () = wait_for_any(watchers, tick) => {}
                () = &mut stop => return Ok(got),
            }
        }
    }

    /// Leases up to `max` events that are due, oldest first per partition. With
    /// key ordering, an event waits while an earlier event of its key in the same
    /// partition is unresolved.
    pub async fn receive(&self, group: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        if self.queues.closing.load(Ordering::Acquire) {
            return Err(QueueError::ShuttingDown);
        }
        let mut g = self.queues.lock(group).await?;
        let expired = self.expire_leases(&mut g).await?;
        let now = self.clock.now().0;
        let t = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?;
        g.state.follow_partitions(t.partitions() as usize);
        let parts: Vec<Arc<Partition>> = (0..t.partitions())
            .map(|p| t.partition(PartitionId(p)).map_err(ReadError::from))
            .collect::<Result<_, _>>()?;
        let lane = self.slot_partition(&g, LANE)?;
        let chosen = g.state.choose(max, now, |state, p| {
            let part = if p == LANE {
                lane.as_deref()
            } else {
                parts.get(p).map(|p| &**p)
            };
            fill(state, part, p, max)
        })?;
        let deadline = now.saturating_add(ms(g.state.config.ack_timeout));
        let mut out = Vec::with_capacity(chosen.len());
        let mut read: Option<(usize, Vec<StoredRecord>)> = None;
        // The last offset chosen in each partition: reads stop at its batch.
        let mut last_chosen: Vec<(usize, u64)> = Vec::new();
        for &(p, off) in &chosen {
            match last_chosen.iter_mut().find(|(lp, _)| *lp == p) {
                Some((_, last)) => *last = (*last).max(off),
                None => last_chosen.push((p, off)),
            }
        }
        for (p, off) in chosen {
            let (lease, attempt) = g.state.lease(p, off, deadline);
            if p == LANE {
                // A redriven event shows the place it first had.
                let r = self.slot_record(&g, p, off)?;
                let stored = StoredRecord {
                    offset: r.offset,
                    record: r.record,
                };
                out.push(Delivery {
                    lease,
                    attempt,
                    entry: entry_of(r.partition, &stored),
                });
                continue;
            }
            // Chosen offsets ascend per partition: one read serves the next
            // ones too, instead of decoding a whole batch for each event. Only
            // the chosen records become entries.
            let partition = partition_id(p);
            let cached = |read: &Option<(usize, Vec<StoredRecord>)>| {
                read.as_ref().and_then(|(rp, records)| {
                    let i = records.binary_search_by_key(&off, |r| r.offset.0).ok();
                    i.filter(|_| *rp == p)
                        .map(|i| entry_of(partition, &records[i]))
                })
            };
            let entry = match cached(&read) {
                Some(entry) => entry,
                None => {
                    let last = last_chosen
                        .iter()
                        .find(|(lp, _)| *lp == p)
                        .map_or(off, |(_, last)| *last);
                    let records = parts[p]
                        .read_records_through(Offset(off), Offset(last), DELIVERY_READ_BYTES)
                        .map_err(ReadError::from)?;
                    read = Some((p, records));
                    cached(&read).ok_or_else(|| {
                        QueueError::DeadLetter(format!("offset {off} of partition {p} is gone"))
                    })?
                }
            };
            out.push(Delivery {
                lease,
                attempt,
                entry,
            });
        }
        // The leases and attempt counts are staged, not synced: the next
        // sync of the group's journal (an ack's, usually, which follows them
        // in the file) carries them, and a crash before it can only forget
        // these deliveries, which are then handed out again with the attempt
        // counts from before (ARCHITECTURE.md, "Queue groups" under recovery).
        // Expiries may have dead-lettered events: those are durable before
        // anyone is answered, as every answer is.
        if g.state.changed() {
            let staged = self.stage(&mut g).await?;
            drop(g);
            if expired {
                staged.durable().await?;
            }
        }
        Ok(out)
    }

    /// Answers a held lease: an ack (`failure` none), or a failure.
    async fn answer(
        &self,
        group: &str,
        lease: &LeaseId,
        failure: Option<Failure>,
    ) -> Result<(), QueueError> {
        let operation = match &failure {
            None => "ack",
            Some(Failure::Retry(..)) => "nack",
            Some(Failure::Reject(_)) => "reject",
        };
        let mut g = self.queues.lock(group).await?;
        let span = settle_span(operation, &g);
        async move {
            // A lease that is unknown or ran out is refused after what the
            // expiries changed (a dead letter's resolution among it) is
            // durable, as for any answer: returned early, it would wait in
            // memory for the next operation, and a crash meanwhile would
            // deliver an event that is in the dead-letter topic again.
            let held = match self.expire_leases(&mut g).await {
                Ok(_) => g.state.held(lease),
                Err(e) => Err(e),
            };
            let result = match (held, failure) {
                (Err(e), _) => Err(e),
                (Ok((p, off)), None) => {
                    g.state.ack(p, off);
                    Ok(())
                }
                (Ok((p, off)), Some(f)) => {
                    let now = self.clock.now().0;
                    let outcome = match f {
                        Failure::Retry(delay, error) => g.state.nack(p, off, now, delay, error),
                        reject => g.state.fail(p, off, now, reject),
                    };
                    self.settle_failure(&mut g, p, off, outcome).await
                }
            };
            // What changed is staged even if dead-lettering failed part-way (the
            // failure itself is recorded): memory and journal stay in step.
            let staged = self.stage(&mut g).await;
            drop(g);
            let durable = match staged {
                Ok(staged) => staged.durable().await,
                Err(e) => Err(e),
            };
            self.queues.answered.notify_waiters();
            result.and(durable)
        }
        .instrument(span)
        .await
    }

    /// Acknowledges a delivery: the event is done for this group, durably, and
    /// will not be delivered again.
    pub async fn ack(&self, group: &str, lease: &LeaseId) -> Result<(), QueueError> {
        self.answer(group, lease, None).await
    }

    /// Acknowledges several deliveries of one group with one journal write and
    /// one sync. Each lease is answered on its own, in the order given: the
    /// result at index `i` is `leases[i]`'s, and a lease that is unknown or ran
    /// out does not stop the others. The outer error is the group's (unknown,
    /// or its journal could not be written), and then none of the acks is
    /// known to be durable.
    pub async fn ack_many(
        &self,
        group: &str,
        leases: &[LeaseId],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        self.answer_each(group, leases, "ack", QueueState::ack)
            .await
    }

    /// Answers each of `leases` with `answer` under one lock and one sync,
    /// each on its own: a lease that is unknown or ran out does not stop the
    /// others.
    async fn answer_each(
        &self,
        group: &str,
        leases: &[LeaseId],
        operation: &'static str,
        answer: fn(&mut QueueState, usize, u64),
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let mut g = self.queues.lock(group).await?;
        let span = settle_span(operation, &g);
        async move {
            self.expire_leases(&mut g).await?;
            let results: Vec<Result<(), QueueError>> = leases
                .iter()
                .map(|lease| {
                    let (p, off) = g.state.held(lease)?;
                    answer(&mut g.state, p, off);
                    Ok(())
                })
                .collect();
            let staged = self.stage(&mut g).await?;
            drop(g);
            staged.durable().await?;
            self.queues.answered.notify_waiters();
            Ok(results)
        }
        .instrument(span)
        .await
    }

    /// Fails a delivery: the event is retried after `delay`, or after the group's
    /// backoff, or dead-lettered once it has had `max_deliveries` attempts.
    pub async fn nack(
        &self,
        group: &str,
        lease: &LeaseId,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<(), QueueError> {
        if let Some(d) = delay.filter(|d| *d > NACK_DELAY_MAX) {
            return Err(QueueError::InvalidConfig(format!(
                "a nack delay of {d:?} is longer than the limit of {NACK_DELAY_MAX:?}"
            )));
        }
        self.answer(group, lease, Some(Failure::Retry(delay, error.to_owned())))
            .await
    }

    /// Dead-letters a delivery now, without further attempts.
    pub async fn reject(
        &self,
        group: &str,
        lease: &LeaseId,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.answer(group, lease, Some(Failure::Reject(reason.to_owned())))
            .await
    }

    /// Gives the consumer of a held lease until `timeout` from now to answer
    /// it (SQS's ChangeMessageVisibility, BullMQ's lock extension): a long job
    /// keeps its event. Returns the new deadline (ms since the epoch). A lease
    /// that ran out cannot be extended: its event is another attempt's.
    pub async fn extend_lease(
        &self,
        group: &str,
        lease: &LeaseId,
        timeout: Duration,
    ) -> Result<i64, QueueError> {
        if timeout.is_zero() || timeout > ACK_TIMEOUT_MAX {
            return Err(QueueError::InvalidConfig(format!(
                "an extension of {timeout:?} is outside 1 ms..={ACK_TIMEOUT_MAX:?}"
            )));
        }
        let mut g = self.queues.lock(group).await?;
        self.expire_leases(&mut g).await?;
        let held = g.state.held(lease);
        let deadline = self.clock.now().0.saturating_add(ms(timeout));
        if let Ok((p, off)) = held {
            g.state.extend(p, off, deadline);
        }
        // Leases live in memory only; the expiries above may have changed
        // what is durable, and are made so before any answer, a refusal too.
        if g.state.changed() {
            let staged = self.stage(&mut g).await?;
            drop(g);
            staged.durable().await?;
        }
        held.map(|_| deadline)
    }

    /// Gives held leases back unhandled — a consumer stopping with events it
    /// never started on: each is due at once for the next consumer, and the
    /// delivery does not count as an attempt. Answered per lease, as
    /// [`ack_many`](Self::ack_many) is.
    pub async fn release(
        &self,
        group: &str,
        leases: &[LeaseId],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        self.answer_each(group, leases, "release", QueueState::release)
            .await
    }

    /// Which of `leases` the group still holds (neither answered nor run out).
    pub async fn held_leases(
        &self,
        group: &str,
        leases: &[LeaseId],
    ) -> Result<Vec<LeaseId>, QueueError> {
        let mut g = self.queues.lock(group).await?;
        self.expire_leases(&mut g).await?;
        let held = leases
            .iter()
            .filter(|l| g.state.held(l).is_ok())
            .copied()
            .collect();
        if g.state.changed() {
            let staged = self.stage(&mut g).await?;
            drop(g);
            staged.durable().await?;
        }
        Ok(held)
    }

    /// Waits until some lease of any group is answered, or `timeout` passes.
    pub async fn wait_for_answers(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.queues.answered.notified()).await;
    }

    /// Deletes a queue group: its state, its dead-letter topic and its retry
    /// topic. Refused while deliveries are leased, unless `force`. Returns the
    /// dead letters that were not yet redriven or purged, now gone with it.
    pub async fn delete_queue_group(&self, group: &str, force: bool) -> Result<u64, QueueError> {
        let mut g = self.queues.lock(group).await?;
        self.expire_leases(&mut g).await?;
        let leased = g.state.leases();
        if leased > 0 && !force {
            return Err(QueueError::Busy {
                group: group.to_owned(),
                leased,
            });
        }
        let dropped = self.queue_stats_locked(&mut g)?.dead_letters;
        // The snapshot is what makes the group exist: once it is gone
        // durably, the group is; the journal and topics follow.
        let state = state_path(&self.dir, &g.name);
        let dir = state.parent().expect("a directory").to_owned();
        let io = |path: &std::path::Path, e: std::io::Error| QueueError::State {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        self.storage
            .remove_file(&state)
            .map_err(|e| io(&state, e))?;
        self.storage.sync_dir(&dir).map_err(|e| io(&dir, e))?;
        g.deleted = true;
        self.queues
            .groups
            .lock()
            .expect("queues lock")
            .remove(group);
        let journal = journal_path(&self.dir, &g.name);
        if let Err(e) = self.storage.remove_file(&journal) {
            tracing::warn!(path = %journal.display(), error = %e, "cannot remove a deleted queue group's journal");
        }
        let retry = super::dead_letters::retry_topic_name(&g)?;
        for topic in [g.dead_letters.clone(), retry] {
            match self.delete_topic(topic.as_str()) {
                Ok(()) | Err(crate::AdminError::UnknownTopic(_)) => {}
                Err(e) => return Err(QueueError::DeadLetterTopic(e)),
            }
        }
        Ok(dropped)
    }

    /// The group's lag, leases and counters.
    pub async fn queue_stats(&self, group: &str) -> Result<QueueStats, QueueError> {
        let mut g = self.queues.lock(group).await?;
        self.queue_stats_locked(&mut g)
    }

    fn queue_stats_locked(&self, g: &mut QueueGroup) -> Result<QueueStats, QueueError> {
        let t = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?;
        // Not journaled here: the next receive does that, and a reload would
        // extend the group the same way.
        g.state.follow_partitions(t.partitions() as usize);
        let slot_stats =
            |pq: &super::state::PartitionQueue, id: PartitionId, hwm: Offset| QueuePartitionStats {
                partition: id,
                ack_floor: Offset(pq.floor),
                high_watermark: hwm,
                lag: hwm
                    .0
                    .saturating_sub(pq.floor)
                    .saturating_sub(pq.resolved.len() as u64),
                in_flight: pq.pending.values().filter(|pe| pe.lease.is_some()).count() as u64,
                retrying: pq
                    .pending
                    .values()
                    .filter(|pe| pe.lease.is_none() && pe.attempts > 0)
                    .count() as u64,
            };
        let mut partitions = Vec::new();
        for (p, pq) in g.state.partitions.iter().enumerate() {
            let id = partition_id(p);
            let hwm = t.partition(id).map_err(ReadError::from)?.high_watermark();
            partitions.push(slot_stats(pq, id, hwm));
        }
        let redriven = match self.slot_partition(g, LANE)? {
            Some(lane) => slot_stats(&g.state.lane, PartitionId(0), lane.high_watermark()),
            None => slot_stats(&g.state.lane, PartitionId(0), Offset(0)),
        };
        let dead_letters = match self.topic(g.dead_letters.as_str()) {
            Some(d) => d
                .partition(PartitionId(0))
                .map_err(ReadError::from)?
                .high_watermark()
                .0
                .saturating_sub(g.state.dlq_floor)
                .saturating_sub(g.state.dlq_handled.len() as u64),
            None => 0,
        };
        Ok(QueueStats {
            topic: g.topic.clone(),
            dead_letter_topic: g.dead_letters.clone(),
            config: g.state.config,
            partitions,
            redriven,
            dead_letters,
            counters: g.state.counters,
        })
    }

    /// Up to `max` of the group's events delivered and not yet resolved,
    /// leased ones first, then by partition and offset; and how many there
    /// are in all. Only looks: a lease past its deadline is shown as it is
    /// until the next receive expires it.
    pub async fn pending_deliveries(
        &self,
        group: &str,
        max: usize,
    ) -> Result<(Vec<PendingDelivery>, usize), QueueError> {
        let g = self.queues.lock(group).await?;
        let slots = g
            .state
            .partitions
            .iter()
            .enumerate()
            .map(|(p, pq)| (Some(partition_id(p)), pq))
            .chain(std::iter::once((None, &g.state.lane)));
        let mut all: Vec<PendingDelivery> = Vec::new();
        for (partition, pq) in slots {
            for (&offset, pe) in &pq.pending {
                if pe.attempts == 0 && pe.lease.is_none() {
                    continue;
                }
                let lease_partition = partition.unwrap_or(partition_id(LANE));
                all.push(PendingDelivery {
                    partition,
                    offset: Offset(offset),
                    attempts: pe.attempts,
                    lease: pe.lease.map(|(id, deadline)| {
                        (
                            LeaseId::from_parts(lease_partition, Offset(offset), id),
                            TimestampMs(deadline),
                        )
                    }),
                    retry_at: pe.lease.is_none().then_some(TimestampMs(pe.eligible_at)),
                    last_error: pe.last_error.clone(),
                });
            }
        }
        let total = all.len();
        all.sort_by_key(|d| {
            (
                d.lease.is_none(),
                d.partition.is_none(),
                d.partition,
                d.offset,
            )
        });
        all.truncate(max);
        Ok((all, total))
    }

    /// Where the event at `offset` of `partition` (of the group's topic, or
    /// `None` for the redrive lane) stands in the group. Only looks.
    pub async fn delivery_state(
        &self,
        group: &str,
        partition: Option<PartitionId>,
        offset: Offset,
    ) -> Result<DeliveryState, QueueError> {
        let g = self.queues.lock(group).await?;
        let slot = match partition {
            Some(p) => match g.state.partitions.get(p.0 as usize) {
                Some(pq) => pq,
                None => return Ok(DeliveryState::Waiting),
            },
            None => &g.state.lane,
        };
        let o = offset.0;
        if o < slot.floor || slot.resolved.contains(&o) {
            return Ok(DeliveryState::Resolved);
        }
        match slot.pending.get(&o) {
            Some(pe) if pe.attempts > 0 || pe.lease.is_some() => {
                let lease_partition = partition.unwrap_or(partition_id(LANE));
                Ok(DeliveryState::Pending(PendingDelivery {
                    partition,
                    offset,
                    attempts: pe.attempts,
                    lease: pe.lease.map(|(id, deadline)| {
                        (
                            LeaseId::from_parts(lease_partition, offset, id),
                            TimestampMs(deadline),
                        )
                    }),
                    retry_at: pe.lease.is_none().then_some(TimestampMs(pe.eligible_at)),
                    last_error: pe.last_error.clone(),
                }))
            }
            _ => Ok(DeliveryState::Waiting),
        }
    }

    /// The topic a queue group consumes.
    pub async fn queue_topic(&self, group: &str) -> Result<TopicName, QueueError> {
        Ok(self.queues.lock(group).await?.topic.clone())
    }

    /// Whether a queue group of that name exists.
    pub fn has_queue_group(&self, group: &str) -> bool {
        self.queues.get(group).is_ok()
    }

    /// The queue groups, by name.
    pub fn list_queue_groups(&self) -> Vec<String> {
        self.queues
            .all()
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Leases held right now, per queue group that holds any, by name.
    pub async fn leases_held(&self) -> Vec<(String, usize)> {
        let mut held = Vec::new();
        for (name, g) in self.queues.all() {
            let n = g.lock().await.state.leases();
            if n > 0 {
                held.push((name.to_string(), n));
            }
        }
        held
    }

    /// Leases held right now, over every queue group.
    pub(crate) async fn leases_in_flight(&self) -> usize {
        let mut n = 0;
        for (_, g) in self.queues.all() {
            n += g.lock().await.state.leases();
        }
        n
    }

    /// Waits until no lease is held or `deadline` passes; returns how many remain.
    pub(crate) async fn drain_leases(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let answered = self.queues.answered.notified();
            let mut answered = std::pin::pin!(answered);
            answered.as_mut().enable();
            let left = self.leases_in_flight().await;
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            // Leases also end by running out; look again at least every 100 ms.
            let step = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            let _ = tokio::time::timeout_at(step, answered).await;
        }
    }
}
