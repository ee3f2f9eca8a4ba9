//! Appending: the one path by which records reach a topic's partitions.
//! Publishes (after dedup), dead letters and redrives all go through
//! [`Broker::append_records`]: keyed records to the partition Kafka's
//! partitioner picks for their key, unkeyed ones round-robin, each partition's
//! records appended together and all partitions at once, stamped with the
//! broker's append time and counted. Kafka producers' batches, which arrive
//! already partitioned and encoded, take [`Broker::queue_append_batches`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tidings_log::{AppendError, Appended, BatchBuilder, Record};
use tidings_types::{CloudEvent, Offset, PartitionId, TimestampMs, TopicName};

use crate::dedup::{self, Claim, Key, KeyMap, Placement};
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
        let count = records.len();
        match encode_shares(t, self.clock.now(), records.iter().map(Item::Record)) {
            Ok(shares) => append_shares(t, shares, count).await,
            Err(e) => Placed {
                placements: vec![None; count],
                failure: Some(e),
            },
        }
    }
}

/// One record of an append, as the caller holds it.
#[derive(Clone, Copy)]
enum Item<'a> {
    /// A CloudEvent, stored in Kafka's binary content mode.
    Event(&'a CloudEvent),
    /// A record, stored as it is.
    Record(&'a Record),
}

impl<'a> Item<'a> {
    fn of(payload: &'a Payload) -> Item<'a> {
        match payload {
            Payload::Event(e) => Item::Event(e),
            Payload::Raw(r) => Item::Record(r),
        }
    }

    fn key(self) -> Option<&'a [u8]> {
        match self {
            Item::Event(e) => e.partitionkey().map(str::as_bytes),
            Item::Record(r) => r.key.as_deref(),
        }
    }

    fn value(self) -> Option<&'a [u8]> {
        match self {
            Item::Event(e) => e.data().map(|d| &d[..]),
            Item::Record(r) => r.value.as_deref(),
        }
    }

    /// Writes the record into `batch`, stamped `now`.
    fn write(self, batch: &mut BatchBuilder, now: TimestampMs) -> Result<(), AppendError> {
        let mut w = batch.record(now, self.key(), self.value())?;
        match self {
            Item::Event(e) => e.for_each_kafka_header(|name, value| {
                w.header(name, Some(value));
            }),
            Item::Record(r) => {
                for h in &r.headers {
                    w.header(h.key.as_bytes(), h.value.as_deref());
                }
            }
        }
        w.finish()
    }
}

/// One partition's part of an append, encoded.
struct Share {
    partition: PartitionId,
    /// Positions of its records among the items encoded, in order.
    indexes: Vec<usize>,
    batch: BatchBuilder,
}

/// Bytes a stored event takes beyond its data, to size a batch's buffer: the
/// record's framing and the headers of a typical CloudEvent.
const EVENT_OVERHEAD_BYTES_TYPICAL: usize = 256;

/// Encodes `items` into one batch per partition, stamped `now`: keyed ones to
/// the partition Kafka's partitioner picks for their key, unkeyed ones
/// round-robin. A record past the log's limits refuses the whole append
/// before anything is written, naming the record's position among `items`.
fn encode_shares<'a>(
    t: &BrokerTopic,
    now: TimestampMs,
    items: impl Iterator<Item = Item<'a>>,
) -> Result<Vec<Share>, PublishError> {
    let partitions = t.partitions();
    let items: Vec<(u32, Item<'a>)> = items
        .map(|item| {
            let p = match item.key() {
                Some(key) => partitioner::partition_for_key(key, partitions),
                None => t.next_unkeyed.fetch_add(1, Ordering::Relaxed) % partitions,
            };
            (p, item)
        })
        .collect();
    // Each partition's records and the bytes they will take, roughly.
    let mut sizes: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (p, item) in &items {
        let (records, bytes) = sizes.entry(*p).or_default();
        *records += 1;
        *bytes += item.key().map_or(0, <[u8]>::len)
            + item.value().map_or(0, <[u8]>::len)
            + EVENT_OVERHEAD_BYTES_TYPICAL;
    }
    let mut shares: Vec<Share> = sizes
        .iter()
        .map(|(&p, &(records, bytes))| Share {
            partition: PartitionId(p),
            indexes: Vec::with_capacity(records),
            batch: BatchBuilder::new(now, bytes),
        })
        .collect();
    let slot: BTreeMap<u32, usize> = sizes.keys().enumerate().map(|(i, &p)| (p, i)).collect();
    for (i, (p, item)) in items.into_iter().enumerate() {
        let share = if shares.len() == 1 {
            &mut shares[0]
        } else {
            &mut shares[slot[&p]]
        };
        item.write(&mut share.batch, now).map_err(|e| match e {
            AppendError::RecordTooLarge { bytes, .. } => {
                AppendError::RecordTooLarge { index: i, bytes }
            }
            other => other,
        })?;
        share.indexes.push(i);
    }
    Ok(shares)
}

/// Appends each share to its partition, all at once on the caller's task,
/// and counts what was appended. `count` is the number of items encoded.
async fn append_shares(t: &BrokerTopic, shares: Vec<Share>, count: usize) -> Placed {
    let mut placed = Placed {
        placements: vec![None; count],
        failure: None,
    };
    let mut appends = Vec::with_capacity(shares.len());
    for share in shares {
        let partition = match t.partition(share.partition) {
            Ok(partition) => partition,
            Err(e) => {
                placed.failure.get_or_insert(e.into());
                continue;
            }
        };
        appends.push(async move {
            let bytes = share.batch.payload_bytes();
            let appended = partition.append_built(share.batch).await;
            (share.partition, share.indexes, bytes, appended)
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

impl Broker {
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
        if t.validates_schemas() {
            self.check_payloads(&t, &payloads)?;
        }
        // Every event is checked before anything is claimed or written.
        let dedup = t.dedup.enabled();
        let mut events = 0usize;
        // The dedup key of each event (when the topic deduplicates); raw
        // records have none.
        let mut keys: Vec<Option<Key>> = Vec::with_capacity(payloads.len());
        for (index, payload) in payloads.iter().enumerate() {
            match payload {
                Payload::Event(event) => {
                    event
                        .validate()
                        .map_err(|error| PublishError::InvalidEvent { index, error })?;
                    events += 1;
                    keys.push(dedup.then(|| t.dedup.key(event.source(), event.id())));
                }
                Payload::Raw(_) => keys.push(None),
            }
        }
        if events > 0 {
            if let Some((partition, reason)) = t.dedup_gap() {
                return Err(PublishError::DedupIncomplete {
                    topic: topic.to_owned(),
                    partition,
                    reason,
                });
            }
        }
        let ids: Vec<Key> = keys.iter().flatten().copied().collect();
        let (guard, known_events) = loop {
            if ids.is_empty() {
                break (None, Vec::new());
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
            .map(|k| k.and_then(|_| known_events.next().flatten()))
            .collect();

        // Which payloads are appended: raw ones and new events, in order. A
        // repeat of an event (source and id) earlier in the same batch follows
        // its first occurrence.
        let count = payloads.len();
        let mut first_of: KeyMap<usize> = KeyMap::default();
        let mut follows = vec![None; count];
        let mut fresh = Vec::with_capacity(count);
        for i in 0..count {
            if known[i].is_some() {
                continue;
            }
            if let Some(key) = keys[i] {
                if let Some(&first) = first_of.get(&key) {
                    follows[i] = Some(first);
                    continue;
                }
                first_of.insert(key, i);
            }
            fresh.push(i);
        }
        let shares = encode_shares(
            &t,
            self.clock.now(),
            fresh.iter().map(|&i| Item::of(&payloads[i])),
        )?;
        drop(payloads);
        let appended = match guard {
            // The ids claimed are recorded once their events are appended even
            // when the caller stops waiting (an HTTP client that goes away
            // drops its request, and the log finishes an append it was
            // handed): otherwise a retry of an appended event would find no
            // record and be appended again. So the append and the record run
            // on a task of their own.
            Some(guard) => {
                let fresh_keys: Vec<Option<Key>> = fresh.iter().map(|&i| keys[i]).collect();
                let (clock, topic) = (Arc::clone(&self.clock), Arc::clone(&t));
                let task = tokio::spawn(async move {
                    let appended = append_shares(&topic, shares, fresh_keys.len()).await;
                    let done: Vec<(Key, Placement)> = fresh_keys
                        .iter()
                        .zip(&appended.placements)
                        .filter_map(|(k, p)| Some(((*k)?, (*p)?)))
                        .collect();
                    guard.finish(&done, clock.now().0);
                    appended
                });
                match task.await {
                    Ok(appended) => appended,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("the append task was cancelled: {e}"),
                }
            }
            None => append_shares(&t, shares, fresh.len()).await,
        };
        let mut placed: Vec<Option<Placement>> = vec![None; count];
        for (&i, placement) in fresh.iter().zip(&appended.placements) {
            placed[i] = *placement;
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

    /// The trace context each record of a Kafka producer's `batches` carries
    /// in a `traceparent` or `ce_traceparent` header, in record order, at
    /// most `max`: for the span of the produce request. Batches that do not
    /// decode give none (their append says why).
    pub fn batch_trace_contexts(batches: &[u8], max: usize) -> Vec<tidings_types::TraceParent> {
        let Ok(records) = tidings_log::decode_batches(bytes::Bytes::copy_from_slice(batches))
        else {
            return Vec::new();
        };
        records
            .iter()
            .filter_map(|r| record_trace_context(&r.record))
            .take(max)
            .collect()
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
        if t.validates_schemas() {
            let records = tidings_log::decode_batches(bytes::Bytes::copy_from_slice(&batches))
                .map_err(PublishError::Undecodable)?;
            for (index, r) in records.iter().enumerate() {
                self.check_record(&t, &r.record)
                    .map_err(|rejection| PublishError::SchemaRejected { index, rejection })?;
            }
        }
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

impl Broker {
    fn registry(&self) -> Result<&tidings_schema::Registry, tidings_schema::Rejection> {
        self.registry.as_deref().ok_or_else(|| {
            tidings_schema::Rejection::NoSchema(
                "the topic validates events and this broker has no schema registry".into(),
            )
        })
    }

    /// Checks every payload of a batch bound for a topic that validates;
    /// nothing is appended unless all pass.
    fn check_payloads(&self, t: &BrokerTopic, payloads: &[Payload]) -> Result<(), PublishError> {
        for (index, payload) in payloads.iter().enumerate() {
            let checked = match payload {
                Payload::Event(event) => self.registry().and_then(|r| {
                    r.check_event(
                        t.name.as_str(),
                        tidings_schema::EventRef {
                            ty: event.ty(),
                            dataschema: event.dataschema(),
                            data: event.data().map(|d| &d[..]),
                        },
                    )
                }),
                Payload::Raw(record) => self.check_record(t, record),
            };
            checked.map_err(|rejection| PublishError::SchemaRejected { index, rejection })?;
        }
        Ok(())
    }

    /// Checks one record as stored: a CloudEvent in Kafka's binary mode
    /// (`ce_type` and the other attributes as headers) by its event's schema,
    /// any other record by its value's.
    fn check_record(
        &self,
        t: &BrokerTopic,
        record: &Record,
    ) -> Result<u32, tidings_schema::Rejection> {
        let registry = self.registry()?;
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value.as_deref())
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let value = record.value.as_deref();
        match header("ce_type") {
            Some(ty) => registry.check_event(
                t.name.as_str(),
                tidings_schema::EventRef {
                    ty,
                    dataschema: header("ce_dataschema"),
                    data: value,
                },
            ),
            None => registry.check_record(t.name.as_str(), value),
        }
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

/// The trace context a record carries: its `traceparent` header (a Kafka
/// client's instrumentation) or `ce_traceparent` (the CloudEvents binding's).
pub(crate) fn record_trace_context(
    record: &tidings_log::Record,
) -> Option<tidings_types::TraceParent> {
    tidings_types::TraceParent::from_record_headers(
        record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref())),
    )
}
