//! Appending: the one path by which records reach a topic's partitions.
//! Publishes (after dedup), dead letters and redrives all go through
//! [`Broker::append_records`]: keyed records to the partition Kafka's
//! partitioner picks for their key, unkeyed ones round-robin, each partition's
//! records appended together and all partitions at once, stamped with the
//! broker's append time and counted. Kafka producers' batches, which arrive
//! already partitioned and encoded, take [`Broker::queue_append_batches`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tidings_log::{Appended, Header, Record};
use tidings_types::{CloudEvent, KafkaMessage, Offset, PartitionId, TimestampMs, TopicName};

use crate::dedup::{self, Claim, Placement};
use crate::topics::BrokerTopic;
use crate::{partitioner, Broker, Payload, PublishError};

/// Where a published event is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic: TopicName,
    /// The partition.
    pub partition: PartitionId,
    /// The event's offset in the partition.
    pub offset: Offset,
    /// The event id was already published within the dedup window; nothing was
    /// appended and the answer is the original's place.
    pub duplicate: bool,
}

/// Where each record of an append went (in the order given; `None` for those
/// whose partition's append failed), and the first failure.
pub(crate) struct Placed {
    pub(crate) placements: Vec<Option<Placement>>,
    pub(crate) failure: Option<PublishError>,
}

impl Placed {
    /// Every placement, or the first failure.
    pub(crate) fn all(self) -> Result<Vec<Placement>, PublishError> {
        match self.failure {
            Some(e) => Err(e),
            None => Ok(self
                .placements
                .into_iter()
                .map(|p| p.expect("placed when no append failed"))
                .collect()),
        }
    }
}

impl Broker {
    /// Appends `records` to the topic `t`: each to its key's partition
    /// (round-robin without a key), each partition's records in one append,
    /// all partitions at once on the caller's task. Every record is stamped
    /// with the broker's append time, and the topic's counters count what was
    /// appended. Durable under the topic's fsync policy once this returns.
    pub(crate) async fn append_records(&self, t: &BrokerTopic, records: Vec<Record>) -> Placed {
        let partitions = t.partitions();
        let now = self.clock.now();
        let mut plan: BTreeMap<u32, (Vec<usize>, Vec<Record>)> = BTreeMap::new();
        for (i, mut record) in records.into_iter().enumerate() {
            record.timestamp = now;
            let p = match &record.key {
                Some(key) => partitioner::partition_for_key(key, partitions),
                None => t.next_unkeyed.fetch_add(1, Ordering::Relaxed) % partitions,
            };
            let (indexes, group) = plan.entry(p).or_default();
            indexes.push(i);
            group.push(record);
        }
        let count: usize = plan.values().map(|(indexes, _)| indexes.len()).sum();
        let mut placed = Placed {
            placements: vec![None; count],
            failure: None,
        };
        let mut appends = Vec::with_capacity(plan.len());
        for (p, (indexes, group)) in plan {
            let partition = match t.partition(PartitionId(p)) {
                Ok(partition) => partition,
                Err(e) => {
                    placed.failure.get_or_insert(e.into());
                    continue;
                }
            };
            appends.push(async move {
                let bytes: usize = group
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len()))
                    .sum();
                let appended = partition.append(&group).await;
                (PartitionId(p), indexes, bytes, appended)
            });
        }
        for (partition, indexes, bytes, appended) in join_all(appends).await {
            match appended {
                Ok(appended) => {
                    t.count_published(partition, indexes.len() as u64, bytes as u64);
                    for (n, i) in indexes.into_iter().enumerate() {
                        placed.placements[i] = Some(Placement {
                            partition,
                            offset: appended.base_offset.plus(n as u64),
                        });
                    }
                }
                Err(e) => {
                    placed.failure.get_or_insert(e.into());
                }
            }
        }
        placed
    }

    /// Publishes one event. See [`publish_batch`](Self::publish_batch).
    pub async fn publish(&self, topic: &str, event: CloudEvent) -> Result<Published, PublishError> {
        let mut out = self.publish_batch(topic, vec![event]).await?;
        Ok(out.pop().expect("one event in, one answer out"))
    }

    /// Publishes events to `topic`, each to the partition its `partitionkey`
    /// hashes to (or round-robin without one), and answers where each one is, in
    /// order. Events whose source and id the topic saw within its dedup window
    /// are not appended again; their answer is the original's place, marked
    /// `duplicate`.
    pub async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<Published>, PublishError> {
        self.publish_payloads(topic, events.into_iter().map(Payload::Event).collect())
            .await
    }

    /// Publishes CloudEvents and raw records together, in order: events as
    /// [`publish_batch`](Self::publish_batch) does, raw records (as a plain
    /// Kafka client wrote them, read back as [`Payload::Raw`]) to their key's
    /// partition as they are, without dedup, as a Kafka broker without
    /// idempotence takes them. What a read answered can be published again
    /// this way, raw records included.
    pub async fn publish_payloads(
        &self,
        topic: &str,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Published>, PublishError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| PublishError::UnknownTopic(topic.to_owned()))?;
        let mut records = Vec::with_capacity(payloads.len());
        // The dedup key of each event; raw records have none.
        let mut keys: Vec<Option<String>> = Vec::with_capacity(payloads.len());
        for (index, payload) in payloads.into_iter().enumerate() {
            match payload {
                Payload::Event(event) => {
                    let mut message = event
                        .to_kafka()
                        .map_err(|error| PublishError::InvalidEvent { index, error })?;
                    keys.push(Some(dedup::key(event.source(), event.id())));
                    records.push(to_record(&mut message));
                }
                Payload::Raw(record) => {
                    keys.push(None);
                    records.push(record);
                }
            }
        }
        let ids: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
        let (guard, known_events) = loop {
            if !t.dedup.enabled() || ids.is_empty() {
                break (None, vec![None; ids.len()]);
            }
            match t.dedup.claim(&ids, self.clock.now().0) {
                Claim::Claimed(guard, known) => break (Some(guard), known),
                Claim::Wait(rx) => dedup::wait(rx).await,
            }
        };
        // `known` per payload: the original place of an event seen before.
        let mut known_events = known_events.into_iter();
        let known: Vec<Option<Placement>> = keys
            .iter()
            .map(|k| k.as_ref().and_then(|_| known_events.next().flatten()))
            .collect();

        // Which records are appended: raw ones and new events, in order. A
        // repeat of an event (source and id) earlier in the same batch follows
        // its first occurrence.
        let mut first_of: std::collections::HashMap<&str, usize> = Default::default();
        let mut follows = vec![None; records.len()];
        let mut fresh = Vec::new();
        for i in 0..records.len() {
            if known[i].is_some() {
                continue;
            }
            if let (Some(_), Some(key)) = (&guard, &keys[i]) {
                if let Some(&first) = first_of.get(key.as_str()) {
                    follows[i] = Some(first);
                    continue;
                }
                first_of.insert(key, i);
            }
            fresh.push(i);
        }
        let count = records.len();
        let mut records: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        let appending = fresh
            .iter()
            .map(|&i| records[i].take().expect("each record appended once"))
            .collect();
        let appended = self.append_records(&t, appending).await;
        let mut placed: Vec<Option<Placement>> = vec![None; count];
        for (&i, placement) in fresh.iter().zip(&appended.placements) {
            placed[i] = *placement;
        }
        if let Some(guard) = guard {
            let done: Vec<(&str, Placement)> = fresh
                .iter()
                .filter_map(|&i| Some((keys[i].as_deref()?, placed[i]?)))
                .collect();
            guard.finish(&done, self.clock.now().0);
        }
        if let Some(e) = appended.failure {
            return Err(e);
        }
        Ok((0..count)
            .map(|i| {
                let (p, duplicate) = match (known[i], follows[i]) {
                    (Some(p), _) => (p, true),
                    (None, Some(first)) => (placed[first].expect("appended"), true),
                    (None, None) => (placed[i].expect("appended when no append failed"), false),
                };
                Published {
                    topic: t.name.clone(),
                    partition: p.partition,
                    offset: p.offset,
                    duplicate,
                }
            })
            .collect())
    }

    /// Appends RecordBatch v2 batches to one partition exactly as a Kafka producer
    /// sent them (compressed ones too); the log rewrites only their base offsets.
    /// Durable under the topic's fsync policy when this returns. Raw appends skip
    /// producer dedup, as a Kafka broker without idempotence does.
    pub async fn append_batches(
        &self,
        topic: &str,
        partition: PartitionId,
        batches: bytes::BytesMut,
    ) -> Result<Appended, PublishError> {
        self.queue_append_batches(topic, partition, batches)
            .await?
            .await
    }

    /// [`append_batches`](Self::append_batches) in two steps: this returns once
    /// the batches are queued in order behind earlier ones, with a future of
    /// their acknowledgement. A Kafka connection queues its produce requests one
    /// after another this way and awaits their syncs together.
    pub async fn queue_append_batches(
        &self,
        topic: &str,
        partition: PartitionId,
        batches: bytes::BytesMut,
    ) -> Result<
        impl std::future::Future<Output = Result<Appended, PublishError>> + Send + 'static,
        PublishError,
    > {
        let t = self
            .topic(topic)
            .ok_or_else(|| PublishError::UnknownTopic(topic.to_owned()))?;
        let p = t.partition(partition)?;
        let bytes = batches.len() as u64;
        let queued = p.queue_append_batches(batches).await?;
        Ok(async move {
            let appended = queued.await?;
            if !appended.duplicate {
                let events = appended.last_offset.0 - appended.base_offset.0 + 1;
                t.count_published(partition, events, bytes);
            }
            Ok(appended)
        })
    }
}

/// Runs futures concurrently on the caller's task and returns their outputs in
/// order. An append touches few partitions, so polling each on every wake-up is
/// cheaper than spawning a task per partition.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// The log record for `msg`, whose headers move into it (they are not needed
/// afterwards). Its timestamp is set when it is appended.
fn to_record(msg: &mut KafkaMessage) -> Record {
    Record {
        key: msg.key.clone(),
        value: msg.value.clone(),
        headers: std::mem::take(&mut msg.headers)
            .into_iter()
            .map(|(key, value)| Header {
                key,
                value: Some(value),
            })
            .collect(),
        // The broker's append time: dedup windows and time lookups use it; the
        // event's own time travels in `ce_time`.
        timestamp: TimestampMs(0),
    }
}
