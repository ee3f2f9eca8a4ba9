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
        append_to(self.clock.as_ref(), t, records).await
    }
}

/// [`Broker::append_records`] with the clock given, so an append can run on a
/// task of its own.
async fn append_to(
    clock: &dyn tidings_types::Clock,
    t: &BrokerTopic,
    records: Vec<Record>,
) -> Placed {
    let partitions = t.partitions();
    let now = clock.now();
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
        if !ids.is_empty() {
            if let Some((partition, reason)) = t.dedup_gap() {
                return Err(PublishError::DedupIncomplete {
                    topic: topic.to_owned(),
                    partition,
                    reason,
                });
            }
        }
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
        let appended = match guard {
            // The ids claimed are recorded once their events are appended even
            // when the caller stops waiting (an HTTP client that goes away
            // drops its request, and the log finishes an append it was
            // handed): otherwise a retry of an appended event would find no
            // record and be appended again. So the append and the record run
            // on a task of their own.
            Some(guard) => {
                let fresh_keys: Vec<Option<String>> =
                    fresh.iter().map(|&i| keys[i].clone()).collect();
                let (clock, topic) = (Arc::clone(&self.clock), Arc::clone(&t));
                let task = tokio::spawn(async move {
                    let appended = append_to(clock.as_ref(), &topic, appending).await;
                    let done: Vec<(&str, Placement)> = fresh_keys
                        .iter()
                        .zip(&appended.placements)
                        .filter_map(|(k, p)| Some((k.as_deref()?, (*p)?)))
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
            None => self.append_records(&t, appending).await,
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
