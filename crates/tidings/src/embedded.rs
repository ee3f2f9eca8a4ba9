//! The embedded backend: the broker in the application's own process. No
//! server, no network; events are durable in the data directory as the
//! topics' fsync policy says (every append synced, by default).
//!
//! Queue mode is the broker's queue groups: leases, acks, nacks with delays,
//! dead letters and key ordering are all native. Stream mode is the broker's
//! consumer groups (shared with Kafka clients of a `tidings serve` on the same
//! data), with per-delivery answers emulated (acks commit in order, nacks
//! wait in the subscriber's memory, dead letters are published by the
//! toolkit), as the [`Capabilities`] of stream mode say.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidings_broker::{
    Broker, BrokerOptions, JoinOptions, LeaseId, Payload as BrokerPayload, QueueConfig,
    StartPosition, TopicSpec,
};
use tidings_types::{CloudEvent, ErrorKind, Offset, PartitionId, TimestampMs};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Answer, Backend, BoxFuture, Capabilities, Incoming, Mode, Payload, RawRecord, Receipt, Source,
    Start, SubscribeOptions, Support, Ticket,
};
use crate::stream::{self, Commit, DeadLetterInfo, GroupLog, Polled, StreamSource};
use crate::Error;

const NAME: &str = "embedded";

/// Most bytes one stream-mode poll reads.
const POLL_BYTES_MAX: usize = 1024 * 1024;

/// The broker in this process.
#[derive(Clone, Debug)]
pub struct Embedded {
    broker: Arc<Broker>,
}

impl Embedded {
    /// Opens (or creates) the data directory `dir` with the broker's
    /// defaults.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Embedded, Error> {
        let dir = dir.as_ref().to_owned();
        let broker =
            tokio::task::spawn_blocking(move || Broker::open(&dir, BrokerOptions::default()))
                .await
                .map_err(|e| Error::backend(NAME, e))?
                .map_err(|e| Error::backend(NAME, e))?;
        Ok(Embedded::with_broker(Arc::new(broker)))
    }

    /// A backend on a broker the application opened itself (to choose its
    /// options, or to serve it over HTTP and Kafka at the same time).
    pub fn with_broker(broker: Arc<Broker>) -> Embedded {
        Embedded { broker }
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }
}

/// The toolkit's error for a broker error of `kind`.
pub(crate) fn from_kind(backend: &'static str, kind: ErrorKind, message: String) -> Error {
    match kind {
        ErrorKind::UnknownTopic => Error::UnknownTopic(message),
        ErrorKind::UnknownGroup => Error::UnknownGroup(message),
        ErrorKind::InvalidEvent => Error::InvalidEvent(message),
        ErrorKind::SchemaRejected => Error::SchemaRejected(message),
        ErrorKind::LeaseExpired
        | ErrorKind::UnknownLease
        | ErrorKind::NotAssigned
        | ErrorKind::UnknownMember => Error::LeaseExpired(message),
        ErrorKind::ShuttingDown => Error::ShuttingDown,
        ErrorKind::Unavailable | ErrorKind::StorageFull => Error::transient(backend, message),
        _ => Error::backend(backend, message),
    }
}

/// A queue group's name is the group's alone: one that exists on another
/// topic is refused, never silently consumed.
pub(crate) fn group_elsewhere(group: &str, consumes: &str, asked: &str) -> Error {
    Error::Config(format!(
        "queue group {group} consumes topic {consumes}, not {asked}: choose another group name"
    ))
}

macro_rules! broker_err {
    ($e:expr) => {{
        let e = $e;
        from_kind(NAME, e.kind(), e.to_string())
    }};
}

fn start_position(start: Start) -> StartPosition {
    match start {
        Start::Earliest => StartPosition::Earliest,
        Start::Latest => StartPosition::Latest,
        Start::Time(ms) => StartPosition::Timestamp(TimestampMs(ms)),
        Start::Offset(offset) => StartPosition::Offset(Offset(offset)),
    }
}

/// A broker entry as a delivery.
fn incoming(entry: tidings_broker::Entry, lease: u64, attempt: u32) -> Incoming {
    let payload = match entry.payload {
        BrokerPayload::Event(e) => Payload::Event(e),
        BrokerPayload::Raw(r) => Payload::Raw(RawRecord {
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
        }),
    };
    Incoming {
        ticket: Ticket {
            partition: entry.partition.0,
            offset: entry.offset.0,
            lease,
            reply: None,
        },
        attempt,
        timestamp_ms: entry.timestamp.0,
        payload,
    }
}

impl Backend for Embedded {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self, mode: Mode) -> Capabilities {
        match mode {
            Mode::Queue => Capabilities::NATIVE,
            Mode::Stream => STREAM_CAPABILITIES,
        }
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match self
                .broker
                .create_topic(topic, TopicSpec::with_partitions(partitions))
            {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::TopicExists => Ok(()),
                Err(e) => Err(broker_err!(e)),
            }
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: Vec<CloudEvent>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, Error>> {
        Box::pin(async move {
            let published = self
                .broker
                .publish_batch(topic, events)
                .await
                .map_err(|e| broker_err!(e))?;
            Ok(published
                .into_iter()
                .map(|p| Receipt {
                    partition: p.partition.0,
                    offset: p.offset.0,
                    duplicate: p.duplicate,
                })
                .collect())
        })
    }

    fn subscribe<'a>(
        &'a self,
        options: &'a SubscribeOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn Source>, Error>> {
        Box::pin(async move {
            match options.mode {
                Mode::Queue => {
                    let config = QueueConfig {
                        ack_timeout: options.ack_timeout,
                        max_deliveries: options.max_deliveries,
                        backoff: tidings_broker::Backoff {
                            initial: options.backoff.initial,
                            factor: options.backoff.factor,
                            max: options.backoff.max,
                        },
                        key_ordering: options.key_ordering,
                    };
                    let created = self.broker.create_queue_group(
                        &options.group,
                        &options.topic,
                        config,
                        start_position(options.start),
                    );
                    match created {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::GroupExists => {
                            let stats = self
                                .broker
                                .queue_stats(&options.group)
                                .await
                                .map_err(|e| broker_err!(e))?;
                            if stats.topic.as_str() != options.topic {
                                return Err(group_elsewhere(
                                    &options.group,
                                    stats.topic.as_str(),
                                    &options.topic,
                                ));
                            }
                        }
                        Err(e) => return Err(broker_err!(e)),
                    }
                    let source: Arc<dyn Source> = Arc::new(QueueSource {
                        broker: Arc::clone(&self.broker),
                        group: options.group.clone(),
                        stop: CancellationToken::new(),
                    });
                    Ok(source)
                }
                Mode::Stream => {
                    let join = JoinOptions {
                        start: start_position(options.start),
                        ..JoinOptions::default()
                    };
                    let member = self
                        .broker
                        .join_group(&options.group, &options.topic, join)
                        .map_err(|e| broker_err!(e))?;
                    let log = Member {
                        broker: Arc::clone(&self.broker),
                        group: options.group.clone(),
                        topic: options.topic.clone(),
                        join,
                        member: std::sync::Mutex::new(member),
                        dead_letters: self.dead_letter_topic(&options.topic, &options.group),
                    };
                    let source: Arc<dyn Source> = Arc::new(StreamSource::new(
                        log,
                        &options.topic,
                        options.max_deliveries,
                        options.backoff,
                    ));
                    Ok(source)
                }
            }
        })
    }
}

/// What stream mode offers on a log that commits offsets.
pub(crate) const STREAM_CAPABILITIES: Capabilities = Capabilities {
    consumer_groups: Support::Native,
    per_message_ack: Support::Emulated(
        "acks commit in order: an event acked above an unacked one is delivered again after a crash or a rebalance",
    ),
    nack_delay: Support::Emulated(
        "held in the subscriber's memory; attempts start over after a restart or a rebalance",
    ),
    dead_letters: Support::Emulated(
        "the toolkit publishes the event to <topic>.<group>.dlq, then acks it",
    ),
    key_ordering: Support::Emulated(
        "a partition's events come in order; the router keeps one per key in flight",
    ),
    replay: Support::Native,
    publish_dedup: Support::Native,
    lease_extension: Support::Emulated("a partition is leased while its member heartbeats"),
};

/// A queue group of the broker.
struct QueueSource {
    broker: Arc<Broker>,
    group: String,
    stop: CancellationToken,
}

fn lease_of(ticket: &Ticket) -> LeaseId {
    LeaseId::from_parts(
        PartitionId(ticket.partition),
        Offset(ticket.offset),
        ticket.lease,
    )
}

impl Source for QueueSource {
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>> {
        Box::pin(async move {
            if self.stop.is_cancelled() {
                return Ok(Vec::new());
            }
            let got = self
                .broker
                .receive_wait_until(&self.group, max, wait, self.stop.cancelled())
                .await
                .map_err(|e| broker_err!(e))?;
            Ok(got
                .into_iter()
                .map(|d| incoming(d.entry, d.lease.id(), d.attempt))
                .collect())
        })
    }

    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let lease = lease_of(ticket);
            let g = &self.group;
            let result = match answer {
                Answer::Ack => self.broker.ack(g, &lease).await,
                Answer::Nack { delay, reason } => self.broker.nack(g, &lease, delay, reason).await,
                Answer::Reject { reason } => self.broker.reject(g, &lease, reason).await,
                Answer::Release => match self.broker.release(g, &[lease]).await {
                    Ok(mut each) => each.pop().unwrap_or(Ok(())),
                    Err(e) => Err(e),
                },
            };
            result.map_err(|e| broker_err!(e))
        })
    }

    fn ack_many<'a>(&'a self, tickets: &'a [Ticket]) -> BoxFuture<'a, Vec<Result<(), Error>>> {
        Box::pin(async move {
            let leases: Vec<LeaseId> = tickets.iter().map(lease_of).collect();
            match self.broker.ack_many(&self.group, &leases).await {
                Ok(each) => each
                    .into_iter()
                    .map(|r| r.map_err(|e| broker_err!(e)))
                    .collect(),
                Err(e) => {
                    let message = e.to_string();
                    let kind = e.kind();
                    tickets
                        .iter()
                        .map(|_| Err(from_kind(NAME, kind, message.clone())))
                        .collect()
                }
            }
        })
    }

    fn extend<'a>(
        &'a self,
        ticket: &'a Ticket,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.broker
                .extend_lease(&self.group, &lease_of(ticket), timeout)
                .await
                .map(drop)
                .map_err(|e| broker_err!(e))
        })
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.stop.cancel();
        Box::pin(async { Ok(()) })
    }
}

/// A member of one of the broker's consumer groups.
struct Member {
    broker: Arc<Broker>,
    group: String,
    topic: String,
    join: JoinOptions,
    /// Its id, new at each join.
    member: std::sync::Mutex<String>,
    dead_letters: String,
}

impl Member {
    fn id(&self) -> String {
        self.member.lock().expect("member lock").clone()
    }
}

impl GroupLog for Member {
    fn poll<'a>(
        &'a self,
        max: usize,
        wait: Duration,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Polled, Error>> {
        Box::pin(async move {
            let polled = self
                .broker
                .poll_limited(
                    &self.group,
                    &self.id(),
                    POLL_BYTES_MAX,
                    max,
                    wait,
                    stop.cancelled(),
                )
                .await
                .map_err(|e| broker_err!(e))?;
            Ok(Polled {
                generation: polled.generation,
                assignment: polled.assignment.iter().map(|p| p.0).collect(),
                entries: polled
                    .entries
                    .into_iter()
                    .map(|e| incoming(e, polled.generation, 1))
                    .collect(),
                positions: polled.positions.iter().map(|(p, o)| (p.0, o.0)).collect(),
                restarted: Vec::new(),
                notes: Vec::new(),
            })
        })
    }

    fn commit<'a>(&'a self, commits: &'a [Commit]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let offsets: Vec<(PartitionId, Offset)> = commits
                .iter()
                .map(|c| (PartitionId(c.partition), Offset(c.next)))
                .collect();
            self.broker
                .commit(&self.group, &self.id(), &offsets)
                .map_err(|e| broker_err!(e))
        })
    }

    fn read_one(
        &self,
        partition: u32,
        offset: u64,
    ) -> BoxFuture<'_, Result<Option<Incoming>, Error>> {
        Box::pin(async move {
            let entries = self
                .broker
                .read(&self.topic, PartitionId(partition), Offset(offset), 1)
                .map_err(|e| broker_err!(e))?;
            Ok(entries
                .into_iter()
                .find(|e| e.offset.0 == offset)
                .map(|e| incoming(e, 0, 1)))
        })
    }

    fn dead_letter<'a>(
        &'a self,
        payload: Payload,
        info: DeadLetterInfo<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let topic = &self.dead_letters;
            match self
                .broker
                .create_topic(topic, TopicSpec::with_partitions(1))
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TopicExists => {}
                Err(e) => return Err(broker_err!(e)),
            }
            let extensions = stream::dead_letter_extensions(&info);
            let payload = match payload {
                Payload::Event(mut event) => {
                    for (name, value) in extensions {
                        event = event
                            .with_extension(name, value)
                            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
                    }
                    BrokerPayload::Event(event)
                }
                Payload::Raw(raw) => {
                    let mut headers: Vec<tidings_broker::Header> = raw
                        .headers
                        .into_iter()
                        .map(|(key, value)| tidings_broker::Header { key, value })
                        .collect();
                    for (name, value) in extensions {
                        headers.push(tidings_broker::Header {
                            key: format!("ce_{name}"),
                            value: Some(value.into()),
                        });
                    }
                    BrokerPayload::Raw(tidings_broker::Record {
                        key: raw.key,
                        value: raw.value,
                        headers,
                        timestamp: TimestampMs(0),
                    })
                }
            };
            self.broker
                .publish_payloads(topic, vec![payload])
                .await
                .map(drop)
                .map_err(|e| broker_err!(e))
        })
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.broker
                .heartbeat(&self.group, &self.id())
                .map(drop)
                .map_err(|e| broker_err!(e))
        })
    }

    fn rejoin(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let id = self
                .broker
                .join_group(&self.group, &self.topic, self.join)
                .map_err(|e| broker_err!(e))?;
            *self.member.lock().expect("member lock") = id;
            Ok(())
        })
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.broker
                .leave_group(&self.group, &self.id())
                .map_err(|e| broker_err!(e))
        })
    }
}
