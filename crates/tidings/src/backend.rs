//! What a backend implements: [`Backend`] (topics, publishing, subscribing)
//! and [`Source`] (one subscription's deliveries and their answers), with the
//! [`Capabilities`] it declares.
//!
//! Both traits return boxed futures so that a backend chosen at run time (one
//! line of configuration, see [`crate::connect`]) sits behind `Arc<dyn
//! Backend>`. A box is one allocation per call, and calls move batches: no
//! event is copied on the way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidings_types::CloudEvent;

use crate::Error;

/// A boxed future, `Send`, borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How far a backend supports a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// The backend does it itself.
    Native,
    /// The toolkit does it on top of the backend; the text says how, and what
    /// that costs.
    Emulated(&'static str),
    /// Not available on this backend.
    Absent,
}

impl Support {
    /// Whether the capability is available, natively or emulated.
    pub fn available(self) -> bool {
        !matches!(self, Support::Absent)
    }
}

/// What a backend can do, declared once: the router and the conformance suite
/// read it instead of special-casing backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Several groups each get every event; members of one group share them.
    pub consumer_groups: Support,
    /// Each delivery is acknowledged on its own, not by an offset.
    pub per_message_ack: Support,
    /// A negative acknowledgement can ask for redelivery after a delay.
    pub nack_delay: Support,
    /// Events that fail `max_deliveries` times, or are rejected, go to a
    /// dead-letter topic with the reason and the attempt count.
    pub dead_letters: Support,
    /// At most one event per `partitionkey` in flight within a group.
    pub key_ordering: Support,
    /// A new group can start from the earliest event, an offset or a time.
    pub replay: Support,
    /// An event published twice (same `source` and `id`) within a window is
    /// stored once.
    pub publish_dedup: Support,
    /// A consumer can extend the lease on a delivery it is still working on.
    pub lease_extension: Support,
}

impl Capabilities {
    /// Everything, natively: the broker's queue groups, and what tables or
    /// a server built on them offer.
    pub const NATIVE: Capabilities = Capabilities {
        consumer_groups: Support::Native,
        per_message_ack: Support::Native,
        nack_delay: Support::Native,
        dead_letters: Support::Native,
        key_ordering: Support::Native,
        replay: Support::Native,
        publish_dedup: Support::Native,
        lease_extension: Support::Native,
    };

    /// Every capability by name, for logs and documentation.
    pub fn each(&self) -> [(&'static str, Support); 8] {
        [
            ("consumer_groups", self.consumer_groups),
            ("per_message_ack", self.per_message_ack),
            ("nack_delay", self.nack_delay),
            ("dead_letters", self.dead_letters),
            ("key_ordering", self.key_ordering),
            ("replay", self.replay),
            ("publish_dedup", self.publish_dedup),
            ("lease_extension", self.lease_extension),
        ]
    }
}

/// How a group consumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Members share every partition; each delivery is leased, and answered
    /// on its own (ack, nack with a delay, reject to the dead letters).
    #[default]
    Queue,
    /// Partitions are assigned to members, which read them in order and
    /// commit how far they got (Kafka's consumer groups). A backend without
    /// partitions to assign (NATS JetStream, PostgreSQL) serves this mode
    /// with its queue groups: deliveries are answered the same way, so code
    /// written for either mode runs on every backend.
    Stream,
}

/// Where a new group starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// The earliest stored event.
    #[default]
    Earliest,
    /// Only events published from now on.
    Latest,
    /// The first event appended at or after this time (ms since the epoch).
    Time(i64),
    /// This offset in every partition, clamped into what the partition
    /// stores: with one partition (or the one a key goes to), where a
    /// [`Receipt`] said an event was stored.
    Offset(u64),
}

/// Exponential backoff: retry `n` (from 1) waits a random time between half
/// and all of `min(initial × factor^(n-1), max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Bound of the first delay.
    pub initial: Duration,
    /// Growth per retry, 1 to 10.
    pub factor: u32,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2,
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The bound before jitter of retry `retry` (1-based): the broker's
    /// rule, so every backend backs off alike.
    pub fn ceiling(&self, retry: u32) -> Duration {
        tidings_broker::Backoff {
            initial: self.initial,
            factor: self.factor,
            max: self.max,
        }
        .ceiling(retry)
    }

    /// The delay of retry `retry`, jittered with `random` (any `u64`).
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) })
    }
}

/// What a subscription asks of its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The topic.
    pub topic: String,
    /// The group; created on first use with these options.
    pub group: String,
    /// Queue or stream.
    pub mode: Mode,
    /// Where a new group starts.
    pub start: Start,
    /// How long a delivery is leased before it counts as failed and goes to
    /// another attempt.
    pub ack_timeout: Duration,
    /// Attempts before an event is dead-lettered.
    pub max_deliveries: u32,
    /// Delay between the backend's redeliveries, when a nack names none.
    pub backoff: Backoff,
    /// At most one event per `partitionkey` in flight.
    pub key_ordering: bool,
}

impl SubscribeOptions {
    /// A queue-mode subscription with the defaults: 30 s leases, 5
    /// deliveries, 1 s to 60 s backoff, no key ordering, from the earliest
    /// event.
    pub fn queue(topic: impl Into<String>, group: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            topic: topic.into(),
            group: group.into(),
            mode: Mode::Queue,
            start: Start::Earliest,
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            backoff: Backoff::default(),
            key_ordering: false,
        }
    }

    /// A stream-mode subscription with the same defaults.
    pub fn stream(topic: impl Into<String>, group: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            mode: Mode::Stream,
            ..SubscribeOptions::queue(topic, group)
        }
    }
}

/// Where an event was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Its partition.
    pub partition: u32,
    /// Its offset (or the backend's sequence number).
    pub offset: u64,
    /// The backend already had this event (same source and id) and did not
    /// store it again; partition and offset are the first copy's.
    pub duplicate: bool,
}

/// A stored record that carries no CloudEvent, as a plain Kafka client wrote
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// Its key.
    pub key: Option<Bytes>,
    /// Its value.
    pub value: Option<Bytes>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What a delivery holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A CloudEvent.
    Event(CloudEvent),
    /// A record without one.
    Raw(RawRecord),
}

/// What a backend needs to answer one delivery: where the event is, and
/// which lease (or reply address) it was handed out under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// The event's partition.
    pub partition: u32,
    /// The event's offset.
    pub offset: u64,
    /// The lease, or 0 where the backend has none.
    pub lease: u64,
    /// A backend's own answer address, where it has one.
    pub reply: Option<Box<str>>,
}

/// One delivery as a backend hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// How to answer it.
    pub ticket: Ticket,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the event was stored (ms since the epoch).
    pub timestamp_ms: i64,
    /// The event.
    pub payload: Payload,
}

/// An answer to a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Done: never deliver it to this group again.
    Ack,
    /// Failed: deliver it again after `delay` (or the group's backoff), or
    /// dead-letter it once it has had `max_deliveries` attempts.
    Nack {
        /// How long to wait before the next attempt.
        delay: Option<Duration>,
        /// Why it failed, kept with a dead letter.
        reason: &'a str,
    },
    /// Dead-letter it now.
    Reject {
        /// Why, kept with the dead letter.
        reason: &'a str,
    },
    /// Give it back unhandled: due again at once, the delivery not counted as
    /// an attempt.
    Release,
}

/// A backend: topics, publishing, and subscriptions.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and errors (`embedded`, `server`, ...).
    fn name(&self) -> &'static str;

    /// What it can do for a group in `mode`.
    fn capabilities(&self, mode: Mode) -> Capabilities;

    /// Creates `topic` with `partitions` partitions if it does not exist.
    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Publishes `events` to `topic` in order, answering where each was
    /// stored. Not atomic across events: on an error, some may be stored.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: Vec<CloudEvent>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, Error>>;

    /// Opens a subscription, creating its group when it does not exist.
    fn subscribe<'a>(
        &'a self,
        options: &'a SubscribeOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn Source>, Error>>;

    /// The topic a group's dead letters go to.
    fn dead_letter_topic(&self, topic: &str, group: &str) -> String {
        format!("{topic}.{group}.dlq")
    }
}

/// One subscription: deliveries and their answers.
pub trait Source: Send + Sync + 'static {
    /// Up to `max` deliveries, waiting up to `wait` when none is due. Answers
    /// nothing (at once) once [`stop`](Self::stop) was called.
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>>;

    /// Answers a delivery.
    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Acknowledges several deliveries at once, each answered on its own, in
    /// order. The default sends the single acks concurrently.
    fn ack_many<'a>(&'a self, tickets: &'a [Ticket]) -> BoxFuture<'a, Vec<Result<(), Error>>> {
        Box::pin(futures_util::future::join_all(
            tickets.iter().map(|t| self.answer(t, Answer::Ack)),
        ))
    }

    /// Whether acks sent together through [`ack_many`](Self::ack_many) cost
    /// less than the same acks sent one by one at once (one request for
    /// many over a network); the router batches them then. `false` by
    /// default: a backend that group-commits concurrent acks itself gains
    /// nothing from waiting for a batch.
    fn batches_acks(&self) -> bool {
        false
    }

    /// Gives the consumer until `timeout` from now to answer the delivery.
    fn extend<'a>(
        &'a self,
        ticket: &'a Ticket,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Stops receiving: a waiting [`receive`](Self::receive) returns with
    /// nothing, and later ones return nothing. Answers are still taken.
    fn stop(&self);

    /// Closes the subscription (a stream member leaves its group). Answer or
    /// release what is held first.
    fn close(&self) -> BoxFuture<'_, Result<(), Error>>;
}
