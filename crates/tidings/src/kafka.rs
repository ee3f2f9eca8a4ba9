//! The Kafka backend (`kafka://host:port[,host:port...][?property=value&...]`,
//! feature `kafka`): any Kafka cluster, `tidings serve`'s Kafka listener
//! included, through librdkafka. The query's properties go to librdkafka as
//! they are (`security.protocol`, `sasl.*`, `client.id`, ...).
//!
//! - A topic is a Kafka topic; events travel in the CloudEvents Kafka
//!   binding's binary mode (`ce_*` headers, the data as value, the
//!   `partitionkey` as key), so other Kafka clients read them as they are. A
//!   record that carries no CloudEvent is delivered raw.
//! - Publishing uses an idempotent producer (no duplicate or reordering when
//!   librdkafka retries) and Java's partitioner (murmur2 of the key), so a
//!   key lands on the partition a Java producer would choose.
//! - A group, in either mode, is a Kafka consumer group with cooperative
//!   rebalancing and no automatic commits; per-delivery answers are the
//!   toolkit's stream emulation (see `stream.rs`): acks commit the lowest
//!   unacked offset of each partition, nacks are held by the subscriber until
//!   their delay has passed, dead letters are published to
//!   `<topic>.<group>.dlq`. Concurrent acks share one synchronous commit, so an
//!   ack answers once the group coordinator has the offset.
//! - What Kafka does not offer: publish dedup across producers (the
//!   idempotent producer only removes its own retries), and leases per
//!   delivery (a delivery is held while its member owns the partition).
//!   Kafka 4's share groups are not used: librdkafka has no share consumer
//!   yet, so queue mode is the same emulation as stream mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tidings_types::{CloudEvent, KafkaMessage};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Backend, BoxFuture, Capabilities, Incoming, Mode, Payload, RawRecord, Receipt, Source, Start,
    SubscribeOptions, Support, Ticket,
};
use crate::stream::{self, Commit, DeadLetterInfo, GroupLog, Polled, StreamSource};
use crate::Error;

const NAME: &str = "kafka";

/// How long a metadata or admin request may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publish waits in the producer's queue when it is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// Both modes: the stream emulation on consumer groups, with attempts kept
/// in the commits' metadata, without publish dedup.
const CAPABILITIES: Capabilities = Capabilities {
    nack_delay: Support::Emulated(
        "the event stays unacked, holding back the commit of those above it, and comes again after the delay; its attempt and due time are committed with the partition's offset (commit metadata), so they survive a restart or a rebalance",
    ),
    dead_letters: Support::Emulated(
        "attempts are counted across restarts in the commit metadata; the toolkit publishes the event to <topic>.<group>.dlq, then acks it",
    ),
    publish_dedup: Support::Absent,
    lease_extension: Support::Emulated(
        "a delivery is held while its member owns the partition; librdkafka heartbeats for it",
    ),
    ..crate::embedded::STREAM_CAPABILITIES
};

fn err(e: KafkaError) -> Error {
    use RDKafkaErrorCode as C;
    match &e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => {
            Error::Config(format!("kafka: {e}"))
        }
        _ => match e.rdkafka_error_code() {
            Some(
                C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidConfig
                | C::PolicyViolation
                | C::UnsupportedVersion
                | C::InvalidArgument,
            ) => Error::backend(NAME, e),
            _ => Error::transient(NAME, e),
        },
    }
}

/// A commit's error. A commit the group coordinator refused because the
/// group has moved on — a rebalance under way, a newer generation, this
/// member forgotten (its session or its poll interval ran out), its
/// assignment lost — is the member's lease on `topic`'s partitions running
/// out: what it acked since its last commit is delivered again, here after
/// the rebalance or to the partition's new owner. Any other error is
/// `err`'s.
fn commit_err(topic: &str, e: KafkaError) -> Error {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::RebalanceInProgress
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::AssignmentLost
            | C::FencedMemberEpoch
            | C::StaleMemberEpoch,
        ) => Error::LeaseExpired(format!("{topic}: the commit (the group has moved on: {e})")),
        _ => err(e),
    }
}

/// A thread for a blocking librdkafka call.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| Error::backend(NAME, format!("a librdkafka call failed: {e}")))?
}

/// Kafka topics and consumer groups, reached through librdkafka.
pub struct Kafka {
    /// Every client's settings (bootstrap servers and the URL's properties).
    base: ClientConfig,
    bootstrap: String,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// Reads a `kafka://` URL: the bootstrap servers and librdkafka properties.
fn parse_url(url: &str) -> Result<(String, Vec<(String, String)>), Error> {
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| Error::Config(format!("{url:?} is not a kafka:// URL")))?;
    let (servers, query) = rest.split_once('?').unwrap_or((rest, ""));
    let servers = servers.trim_end_matches('/');
    if servers.is_empty() || servers.split(',').any(|s| !s.contains(':')) {
        return Err(Error::Config(format!(
            "{url:?}: expected kafka://host:port[,host:port...][?property=value&...]"
        )));
    }
    let mut properties = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "{url:?}: property {pair:?} has no value (name=value)"
            ))
        })?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| Error::Config(format!("{url:?}: {s:?} is not UTF-8")))
        };
        let name = decode(name)?;
        if name == "bootstrap.servers" {
            return Err(Error::Config(format!(
                "{url:?}: the servers go before the '?', not in bootstrap.servers"
            )));
        }
        properties.push((name, decode(value)?));
    }
    Ok((servers.to_owned(), properties))
}

impl Kafka {
    /// Connects to the cluster `url` names, and checks that it answers.
    pub async fn connect(url: &str) -> Result<Kafka, Error> {
        let (bootstrap, properties) = parse_url(url)?;
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &bootstrap)
            .set("client.id", "tidings");
        for (name, value) in &properties {
            base.set(name, value);
        }
        let mut producer = base.clone();
        producer
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random");
        for (name, value) in &properties {
            producer.set(name, value);
        }
        let producer: FutureProducer = producer.create().map_err(err)?;
        let admin: AdminClient<DefaultClientContext> = base.create().map_err(err)?;
        let probe = producer.clone();
        blocking(move || {
            probe
                .client()
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map(drop)
                .map_err(|e| {
                    Error::transient(NAME, format!("the cluster did not answer metadata: {e}"))
                })
        })
        .await?;
        Ok(Kafka {
            base,
            bootstrap,
            producer,
            admin: Arc::new(admin),
        })
    }

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), Error> {
        let partitions = i32::try_from(partitions)
            .map_err(|_| Error::Config(format!("{partitions} partitions is too many")))?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(err)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(err(KafkaError::AdminOp(code)))
                        .map_err(|e| Error::backend(NAME, format!("creating {name}: {e}")));
                }
            }
        }
        Ok(())
    }
}

/// An event's record, in the binary content mode.
struct Record {
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: OwnedHeaders,
}

impl Record {
    fn of_event(event: &CloudEvent) -> Result<Record, Error> {
        let message = event
            .to_kafka()
            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        Ok(Record::of_message(message))
    }

    fn of_message(message: KafkaMessage) -> Record {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_ref()),
            });
        }
        Record {
            key: message.key,
            value: message.value,
            headers,
        }
    }
}

/// Publishes `records` to `topic` in order: all are queued before any
/// delivery is awaited, so one batch is one round trip.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<Record>,
) -> Result<Vec<Receipt>, Error> {
    let mut deliveries = Vec::with_capacity(records.len());
    for record in &records {
        let mut future = FutureRecord::to(topic).headers(record.headers.clone());
        if let Some(key) = &record.key {
            future = future.key(key.as_ref());
        }
        if let Some(value) = &record.value {
            future = future.payload(value.as_ref());
        }
        loop {
            match producer.send_result(future) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    future = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => return Err(err(e)),
            }
        }
    }
    let mut receipts = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(d)) => receipts.push(Receipt {
                partition: u32::try_from(d.partition).unwrap_or_default(),
                offset: u64::try_from(d.offset).unwrap_or_default(),
                duplicate: false,
            }),
            Ok(Err((e, _))) => return Err(err(e)),
            Err(_) => return Err(Error::ShuttingDown),
        }
    }
    Ok(receipts)
}

impl Backend for Kafka {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self, _mode: Mode) -> Capabilities {
        CAPABILITIES
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.create_topic(topic, partitions))
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: Vec<CloudEvent>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, Error>> {
        Box::pin(async move {
            let records = events
                .iter()
                .map(Record::of_event)
                .collect::<Result<Vec<_>, _>>()?;
            produce(&self.producer, topic, records).await
        })
    }

    fn subscribe<'a>(
        &'a self,
        options: &'a SubscribeOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn Source>, Error>> {
        Box::pin(async move {
            let mut config = self.base.clone();
            config
                .set("group.id", &options.group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set(
                    "auto.offset.reset",
                    match options.start {
                        Start::Latest => "latest",
                        Start::Earliest | Start::Time(_) | Start::Offset(_) => "earliest",
                    },
                );
            if matches!(options.start, Start::Time(_) | Start::Offset(_)) {
                start_at(&config, &options.topic, options.start).await?;
            }
            let context = Rebalances {
                topic: options.topic.clone(),
                generation: AtomicU64::new(0),
                restarted: Mutex::new(Vec::new()),
            };
            let consumer: StreamConsumer<Rebalances> =
                config.create_with_context(context).map_err(err)?;
            consumer.subscribe(&[&options.topic]).map_err(err)?;
            let consumer = Arc::new(consumer);
            let member = Member {
                consumer: Arc::clone(&consumer),
                topic: options.topic.clone(),
                dead_letters: self.dead_letter_topic(&options.topic, &options.group),
                producer: self.producer.clone(),
                admin: Arc::clone(&self.admin),
                held: Mutex::new(HashMap::new()),
                commits: Arc::new(Commits {
                    consumer,
                    state: Mutex::new(CommitState::default()),
                }),
            };
            let source: Arc<dyn Source> = Arc::new(StreamSource::new(
                member,
                &options.topic,
                options.max_deliveries,
                options.backoff,
            ));
            Ok(source)
        })
    }
}

/// A new group starting at a time or an offset: unless the group has
/// committed offsets for the topic already, commits, per partition, the first
/// offset at or after the time, or the offset clamped into what the
/// partition stores, before the first member joins.
async fn start_at(config: &ClientConfig, topic: &str, start: Start) -> Result<(), Error> {
    let consumer: Arc<BaseConsumer> = Arc::new(config.create().map_err(err)?);
    let mut tries = 0;
    loop {
        let (consumer, topic) = (Arc::clone(&consumer), topic.to_owned());
        match blocking(move || start_at_once(&consumer, &topic, start)).await {
            // A new group's coordinator may still be loading.
            Err(e) if e.is_transient() && tries < START_TRIES => {
                tracing::debug!(error = %e, "placing a new group's offsets; trying again");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// How often placing a new group's offsets is tried.
const START_TRIES: u32 = 25;

fn start_at_once(consumer: &BaseConsumer, topic: &str, start: Start) -> Result<(), Error> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(err)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut all = TopicPartitionList::new();
    for &p in &partitions {
        all.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(all, REQUEST_TIMEOUT)
        .map_err(err)?;
    if committed
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), Offset::Offset(_)))
    {
        return Ok(());
    }
    let ms = match start {
        Start::Time(ms) => ms,
        Start::Offset(offset) => {
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let mut at = TopicPartitionList::new();
            for &p in &partitions {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .map_err(err)?;
                at.add_partition_offset(topic, p, Offset::Offset(offset.clamp(low, high)))
                    .map_err(err)?;
            }
            return consumer.commit(&at, CommitMode::Sync).map_err(err);
        }
        Start::Earliest | Start::Latest => return Ok(()),
    };
    let mut at = TopicPartitionList::new();
    for &p in &partitions {
        at.add_partition_offset(topic, p, Offset::Offset(ms))
            .map_err(err)?;
    }
    let found = consumer
        .offsets_for_times(at, REQUEST_TIMEOUT)
        .map_err(err)?;
    let mut start = TopicPartitionList::new();
    for e in found.elements() {
        let offset = match e.offset() {
            // No event at or after the time: start at the end.
            Offset::End | Offset::Invalid => {
                let (_, high) = consumer
                    .fetch_watermarks(topic, e.partition(), REQUEST_TIMEOUT)
                    .map_err(err)?;
                high
            }
            Offset::Offset(o) => o,
            other => {
                return Err(Error::backend(
                    NAME,
                    format!("offsets for time answered {other:?}"),
                ))
            }
        };
        start
            .add_partition_offset(topic, e.partition(), Offset::Offset(offset))
            .map_err(err)?;
    }
    consumer.commit(&start, CommitMode::Sync).map_err(err)
}

/// What librdkafka's rebalances tell the member: a generation that moves at
/// each, and the partitions whose reading starts again from the committed
/// offset.
struct Rebalances {
    topic: String,
    generation: AtomicU64,
    restarted: Mutex<Vec<u32>>,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let mut restarted = self.restarted.lock().expect("rebalance lock");
                for e in partitions.elements() {
                    if e.topic() == self.topic {
                        restarted.push(u32::try_from(e.partition()).unwrap_or_default());
                    }
                }
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Revoke(_) => {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }
}

/// An event held for an answer: what a retry or a dead letter sends again.
struct Held {
    timestamp_ms: i64,
    payload: Payload,
}

/// One member of a Kafka consumer group.
struct Member {
    consumer: Arc<StreamConsumer<Rebalances>>,
    topic: String,
    dead_letters: String,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// The events delivered and not yet acked, by (partition, offset).
    held: Mutex<HashMap<(u32, u64), Held>>,
    commits: Arc<Commits>,
}

impl Member {
    fn partitions(&self) -> Result<Vec<u32>, Error> {
        let assignment = self.consumer.assignment().map_err(err)?;
        Ok(assignment
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| u32::try_from(e.partition()).unwrap_or_default())
            .collect())
    }

    /// The notes committed with `partitions`' offsets. Failing to read them
    /// costs only the attempts they carry (they start over), never an event.
    async fn notes(&self, partitions: &[u32]) -> Vec<(u32, u64, String)> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let partitions = partitions.to_vec();
        let read = blocking(move || {
            let mut list = TopicPartitionList::new();
            for p in partitions {
                let p = i32::try_from(p).map_err(|_| Error::backend(NAME, "partition"))?;
                list.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(list, REQUEST_TIMEOUT)
                .map_err(err)?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| {
                    let Offset::Offset(next) = e.offset() else {
                        return None;
                    };
                    // rdkafka's accessor panics on metadata that is not
                    // UTF-8, which another client may have written.
                    let note = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        e.metadata().to_owned()
                    }))
                    .ok()?;
                    let partition = u32::try_from(e.partition()).ok()?;
                    (!note.is_empty()).then_some((partition, u64::try_from(next).ok()?, note))
                })
                .collect())
        })
        .await;
        read.unwrap_or_else(|e| {
            tracing::warn!(error = %e, topic = %self.topic, "could not read the attempts committed with the offsets; they start over");
            Vec::new()
        })
    }

    /// A message as a delivery; the payload is held until the ack.
    fn take_in(&self, message: &BorrowedMessage<'_>) -> Incoming {
        let record = KafkaMessage {
            key: message.key().map(Bytes::copy_from_slice),
            value: message.payload().map(Bytes::copy_from_slice),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                Bytes::copy_from_slice(h.value.unwrap_or_default()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let payload = match CloudEvent::from_kafka(&record) {
            Ok(event) => Payload::Event(event),
            Err(_) => Payload::Raw(RawRecord {
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect(),
            }),
        };
        let partition = u32::try_from(message.partition()).unwrap_or_default();
        let offset = u64::try_from(message.offset()).unwrap_or_default();
        let timestamp_ms = message.timestamp().to_millis().unwrap_or_default();
        self.held.lock().expect("held lock").insert(
            (partition, offset),
            Held {
                timestamp_ms,
                payload: payload.clone(),
            },
        );
        Incoming {
            ticket: Ticket {
                partition,
                offset,
                lease: 0,
                reply: None,
            },
            attempt: 1,
            timestamp_ms,
            payload,
        }
    }
}

impl GroupLog for Member {
    fn keeps_notes(&self) -> bool {
        true
    }

    fn poll<'a>(
        &'a self,
        max: usize,
        wait: Duration,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Polled, Error>> {
        Box::pin(async move {
            let context = self.consumer.context();
            let generation = context.generation.load(Ordering::SeqCst);
            let mut entries: Vec<Incoming> = Vec::new();
            // How many entries were read before a rebalance during this poll.
            let mut before_rebalance = None;
            let deadline = tokio::time::Instant::now() + wait;
            while entries.len() < max {
                let received = if entries.is_empty() {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep_until(deadline) => break,
                        received = self.consumer.recv() => received,
                    }
                } else {
                    match self.consumer.recv().now_or_never() {
                        Some(received) => received,
                        None => break,
                    }
                };
                let message = match received {
                    Ok(message) => message,
                    Err(e) => {
                        let e = err(e);
                        if !e.is_transient() {
                            return Err(e);
                        }
                        // librdkafka reconnects and rejoins on its own.
                        tracing::debug!(error = %e, topic = %self.topic, "kafka consumer");
                        continue;
                    }
                };
                if before_rebalance.is_none()
                    && context.generation.load(Ordering::SeqCst) != generation
                {
                    before_rebalance = Some(entries.len());
                }
                entries.push(self.take_in(&message));
            }
            // Rebalances run inside `recv`: from here on nothing changes.
            let generation = context.generation.load(Ordering::SeqCst);
            let restarted = std::mem::take(&mut *context.restarted.lock().expect("rebalance lock"));
            let assignment = self.partitions()?;
            if let Some(split) = before_rebalance {
                // Read before a rebalance that took the partition away, or
                // made it start again from its committed offset: it comes
                // again from there (or to another member).
                let mut index = 0;
                entries.retain(|e| {
                    let p = e.ticket.partition;
                    let keep =
                        index >= split || (assignment.contains(&p) && !restarted.contains(&p));
                    index += 1;
                    keep
                });
            }
            {
                // What this member no longer reads from where it was is
                // forgotten, as the stream source forgets it.
                let mut held = self.held.lock().expect("held lock");
                held.retain(|(p, o), _| {
                    assignment.contains(p)
                        && (!restarted.contains(p)
                            || entries
                                .iter()
                                .any(|e| (e.ticket.partition, e.ticket.offset) == (*p, *o)))
                });
            }
            let mut positions: HashMap<u32, u64> = HashMap::new();
            for e in &entries {
                let next = positions.entry(e.ticket.partition).or_default();
                *next = (*next).max(e.ticket.offset + 1);
            }
            let notes = if restarted.is_empty() {
                Vec::new()
            } else {
                self.notes(&restarted).await
            };
            Ok(Polled {
                generation,
                assignment,
                entries,
                positions: positions.into_iter().collect(),
                restarted,
                notes,
            })
        })
    }

    fn commit<'a>(&'a self, commits: &'a [Commit]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let owned = self.partitions()?;
            if let Some(c) = commits.iter().find(|c| !owned.contains(&c.partition)) {
                return Err(Error::LeaseExpired(format!(
                    "{}:{} (this member no longer owns the partition; not committing {})",
                    self.topic, c.partition, c.next
                )));
            }
            Commits::commit(&self.commits, &self.topic, commits).await
        })
    }

    fn read_one(
        &self,
        partition: u32,
        offset: u64,
    ) -> BoxFuture<'_, Result<Option<Incoming>, Error>> {
        Box::pin(async move {
            let held = self.held.lock().expect("held lock");
            let Some(h) = held.get(&(partition, offset)) else {
                return Err(Error::LeaseExpired(format!(
                    "{}:{partition}:{offset}",
                    self.topic
                )));
            };
            Ok(Some(Incoming {
                ticket: Ticket {
                    partition,
                    offset,
                    lease: 0,
                    reply: None,
                },
                attempt: 1,
                timestamp_ms: h.timestamp_ms,
                payload: h.payload.clone(),
            }))
        })
    }

    fn forget(&self, partition: u32, offset: u64) {
        self.held
            .lock()
            .expect("held lock")
            .remove(&(partition, offset));
    }

    fn dead_letter<'a>(
        &'a self,
        payload: Payload,
        info: DeadLetterInfo<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let topic = &self.dead_letters;
            let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1));
            let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
            for result in self
                .admin
                .create_topics([&new], &options)
                .await
                .map_err(err)?
            {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(err(KafkaError::AdminOp(code))),
                }
            }
            let extensions = stream::dead_letter_extensions(&info);
            let record = match payload {
                Payload::Event(mut event) => {
                    for (name, value) in extensions {
                        event = event
                            .with_extension(name, value)
                            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
                    }
                    Record::of_event(&event)?
                }
                Payload::Raw(raw) => {
                    let mut headers: Vec<(String, Bytes)> = raw
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect();
                    for (name, value) in extensions {
                        headers.push((format!("ce_{name}"), Bytes::from(value)));
                    }
                    Record::of_message(KafkaMessage {
                        key: raw.key,
                        value: raw.value,
                        headers,
                    })
                }
            };
            produce(&self.producer, topic, vec![record]).await.map(drop)
        })
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<(), Error>> {
        // librdkafka heartbeats on its own thread.
        Box::pin(async { Ok(()) })
    }

    fn rejoin(&self) -> BoxFuture<'_, Result<(), Error>> {
        // librdkafka joins again on its own.
        Box::pin(async { Ok(()) })
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let consumer = Arc::clone(&self.consumer);
            // Unsubscribing revokes the partitions and leaves the group; it
            // waits for the coordinator, so off the runtime's threads.
            blocking(move || {
                consumer.unsubscribe();
                Ok(())
            })
            .await
        })
    }
}

/// Commits shared by concurrent acks: one synchronous commit at a time, of
/// the highest offset each partition asked for (with the note asked with it;
/// the latest at that offset); the acks that arrive during a commit go in the
/// next.
struct Commits {
    consumer: Arc<StreamConsumer<Rebalances>>,
    state: Mutex<CommitState>,
}

#[derive(Default)]
struct CommitState {
    pending: HashMap<u32, (u64, String)>,
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    running: bool,
}

impl Commits {
    async fn commit(this: &Arc<Commits>, topic: &str, commits: &[Commit]) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = this.state.lock().expect("commit lock");
            for c in commits {
                let pending = state.pending.entry(c.partition).or_default();
                if c.next >= pending.0 {
                    *pending = (c.next, c.note.clone());
                }
            }
            state.waiters.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(Commits::rounds(Arc::clone(this), topic.to_owned()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Commits until nothing is pending.
    async fn rounds(this: Arc<Commits>, topic: String) {
        loop {
            let (pending, waiters) = {
                let mut state = this.state.lock().expect("commit lock");
                if state.waiters.is_empty() {
                    state.running = false;
                    return;
                }
                (
                    std::mem::take(&mut state.pending),
                    std::mem::take(&mut state.waiters),
                )
            };
            let consumer = Arc::clone(&this.consumer);
            let topic = topic.clone();
            let result = blocking(move || {
                let mut list = TopicPartitionList::new();
                for (p, (o, note)) in pending {
                    let (p, o) = (
                        i32::try_from(p).map_err(|_| Error::backend(NAME, "partition"))?,
                        i64::try_from(o).map_err(|_| Error::backend(NAME, "offset"))?,
                    );
                    list.add_partition_offset(&topic, p, Offset::Offset(o))
                        .map_err(err)?;
                    if !note.is_empty() {
                        if let Some(mut e) = list.find_partition(&topic, p) {
                            e.set_metadata(note);
                        }
                    }
                }
                consumer
                    .commit(&list, CommitMode::Sync)
                    .map_err(|e| commit_err(&topic, e))
            })
            .await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_the_group_refused_is_a_lost_lease() {
        use RDKafkaErrorCode as C;
        for moved in [
            C::RebalanceInProgress,
            C::IllegalGeneration,
            C::UnknownMemberId,
            C::AssignmentLost,
            C::StaleMemberEpoch,
        ] {
            let e = commit_err("orders", KafkaError::ConsumerCommit(moved));
            assert!(
                matches!(&e, Error::LeaseExpired(m) if m.starts_with("orders: ")),
                "{moved:?}: {e:?}"
            );
        }
        let e = commit_err(
            "orders",
            KafkaError::ConsumerCommit(C::BrokerTransportFailure),
        );
        assert!(e.is_transient(), "{e:?}");
        let e = commit_err(
            "orders",
            KafkaError::ConsumerCommit(C::GroupAuthorizationFailed),
        );
        assert!(
            matches!(
                e,
                Error::Backend {
                    transient: false,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn urls_name_servers_and_properties() {
        let (servers, properties) =
            parse_url("kafka://a:9092,b:9093?client.id=shop&sasl.password=p%26w").unwrap();
        assert_eq!(servers, "a:9092,b:9093");
        assert_eq!(
            properties,
            vec![
                ("client.id".to_owned(), "shop".to_owned()),
                ("sasl.password".to_owned(), "p&w".to_owned())
            ]
        );
        for bad in [
            "kafka://",
            "kafka://host",
            "kafka://a:1?novalue",
            "kafka://a:1?bootstrap.servers=b:2",
            "http://a:1",
        ] {
            assert!(matches!(parse_url(bad), Err(Error::Config(_))), "{bad}");
        }
    }
}
