//! The NATS JetStream backend (`nats://host:port`, several servers
//! comma-separated; `?replicas=3` for streams replicated over a cluster;
//! `&timeout=S` for how long a JetStream request or publish ack may take,
//! 5 s unless said; an idempotent request left unanswered that long is sent
//! again, three sends in all).
//!
//! - A topic is a stream (`tidings-<topic>`, its dots written `~`, one
//!   subject) of CloudEvents in the NATS binding's binary mode (`ce-*`
//!   headers, the data as payload). It has one partition: offsets are stream
//!   sequences. JetStream's duplicate window (2 minutes) keyed by
//!   `Nats-Msg-Id` = the event's source and id gives publish dedup.
//! - A queue group is a durable pull consumer with explicit acks, shared by
//!   every subscriber of the group. Acks are confirmed by the server (a
//!   request, not a fire-and-forget publish); a nack is JetStream's `-NAK`
//!   with the delay (or the group's backoff); extending a lease is
//!   `+WPI` (JetStream extends by the consumer's ack wait, whatever was
//!   asked).
//! - Dead letters are emulated: the consumer redelivers without limit, and
//!   the toolkit counts attempts itself. After `max_deliveries`, or at a
//!   reject, it publishes the event to `<topic>.<group>.dlq` with the `dlq*`
//!   extensions, then terminates it (`+TERM`); a delivery that arrives past
//!   `max_deliveries` (its lease ran out on the last attempt) goes there
//!   without being handed out. JetStream's own `max_deliver` would drop it
//!   silently into an advisory.
//! - A release is a `-NAK` the subscriber does not count as an attempt;
//!   that discount lives in the subscriber's memory, so it is lost when the
//!   event goes to another process. Key ordering is the router's (one event
//!   per key in flight within one process).
//!
//! Stream mode is served by the same queue group: a JetStream stream has no
//! partitions to assign, and deliveries are answered one by one in either
//! mode, so the capabilities are the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tidings_types::CloudEvent;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Answer, Backend, BoxFuture, Capabilities, Incoming, Mode, Payload, Receipt, Source, Start,
    SubscribeOptions, Support, Ticket,
};
use crate::stream::{dead_letter_extensions, DeadLetterInfo};
use crate::Error;

const NAME: &str = "nats";

/// The longest one fetch waits, so a stopped subscription returns within
/// it.
const WAIT_SLICE: Duration = Duration::from_secs(1);
/// JetStream's duplicate window for publish dedup.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a pull request may go unanswered beyond its expiry before the
/// subscriber gives it up: a request sent to a server that died (or over a
/// connection being replaced) is never answered. A message the server sends
/// to an abandoned request comes again when its lease runs out.
const PULL_ANSWER_MAX: Duration = Duration::from_secs(3);

/// Runs `pull`, or answers a transient error once `limit` has passed.
async fn within(
    limit: Duration,
    pull: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    tokio::time::timeout(limit, pull)
        .await
        .unwrap_or_else(|_| Err(err(format!("a pull request went unanswered for {limit:?}"))))
}

/// How often, and how far apart, a publish to a stream not ready yet is
/// tried again (5 s in all).
const STREAM_READY_TRIES: u32 = 50;
const STREAM_READY_WAIT: Duration = Duration::from_millis(100);
/// How long a JetStream API request or a publish ack may take unless the
/// URL says otherwise (async-nats' own default), and the bounds of what it
/// may say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const TIMEOUT_MAX_S: u64 = 300;
/// How far apart stream creation is tried again while the cluster has too
/// few nodes up to place its replicas (a node restarting, or one whose
/// heartbeat is late): tried until the request timeout has passed again.
const PLACEMENT_WAIT: Duration = Duration::from_millis(250);
/// Messages a subscriber remembers (releases, last errors) before it forgets
/// the ones whose lease ran out longest ago.
const HELD_MAX: usize = 10_000;

/// Streams and durable consumers of a NATS JetStream server or cluster.
pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
    timeout: Duration,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("replicas", &self.replicas)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::transient(NAME, e)
}

/// A topic or group name as a stream or consumer name: dots become `~`
/// (names have no `~` of their own, so two never meet).
fn encode(name: &str) -> String {
    name.replace('.', "~")
}

fn stream_name(topic: &str) -> String {
    format!("tidings-{}", encode(topic))
}

fn subject(topic: &str) -> String {
    format!("tidings.{}", encode(topic))
}

impl Nats {
    /// Connects to `url`:
    /// `nats://host:port[,host:port...][?replicas=N][&timeout=S]`.
    pub async fn connect(url: &str) -> Result<Nats, Error> {
        let (servers, query) = url.split_once('?').unwrap_or((url, ""));
        let mut replicas = 1;
        let mut timeout = DEFAULT_TIMEOUT;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("timeout", s)) => {
                    timeout = s
                        .parse()
                        .ok()
                        .filter(|s| (1..=TIMEOUT_MAX_S).contains(s))
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            Error::Config(format!("timeout={s}: 1 to {TIMEOUT_MAX_S} seconds"))
                        })?;
                }
                Some(("replicas", n)) => {
                    replicas = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| Error::Config(format!("replicas={n}: 1 to 5")))?;
                }
                _ => return Err(Error::Config(format!("{url}: unknown option {pair}"))),
            }
        }
        let addresses: Vec<async_nats::ServerAddr> = servers
            .trim_start_matches("nats://")
            .split(',')
            .map(|s| format!("nats://{s}").parse())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Config(format!("{url}: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .request_timeout(Some(timeout))
            .connect(addresses)
            .await
            .map_err(|e| Error::Config(format!("{url}: {e}")))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        Ok(Nats {
            client,
            js,
            replicas,
            timeout,
        })
    }

    async fn stream(&self, topic: &str) -> Result<jetstream::stream::Stream, Error> {
        lookup_stream(&self.js, topic).await
    }
}

/// How many times an idempotent JetStream request (a stream looked up or
/// made, a durable consumer made, a publish carrying its `Nats-Msg-Id`) is
/// sent while it goes unanswered within the request timeout. A request can
/// be lost without an answer — sent to a server whose Raft group is
/// electing a leader, or over a connection being replaced — and sending it
/// again is then what gets it through; a request that was only slow is
/// answered the same the second time.
const REQUEST_TRIES: u32 = 3;

/// Whether `e`, or an error under it, is a request that went unanswered
/// within its timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::context::{
        CreateStreamError, CreateStreamErrorKind, PublishError, PublishErrorKind, RequestError,
        RequestErrorKind,
    };
    use jetstream::stream::{ConsumerError, ConsumerErrorKind};
    let mut at = Some(e);
    while let Some(e) = at {
        let said_so = e
            .downcast_ref::<RequestError>()
            .is_some_and(|e| e.kind() == RequestErrorKind::TimedOut)
            || e.downcast_ref::<PublishError>()
                .is_some_and(|e| e.kind() == PublishErrorKind::TimedOut)
            || e.downcast_ref::<CreateStreamError>()
                .is_some_and(|e| e.kind() == CreateStreamErrorKind::TimedOut)
            || e.downcast_ref::<ConsumerError>()
                .is_some_and(|e| e.kind() == ConsumerErrorKind::TimedOut);
        if said_so {
            return true;
        }
        at = e.source();
    }
    false
}

/// The topic's stream; [`Error::UnknownTopic`] when there is none.
async fn lookup_stream(
    js: &jetstream::Context,
    topic: &str,
) -> Result<jetstream::stream::Stream, Error> {
    let mut tries = 1;
    loop {
        let e = match js.get_stream(stream_name(topic)).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        match e.kind() {
            // 404: the stream does not exist.
            jetstream::context::GetStreamErrorKind::JetStream(js) if js.code() == 404 => {
                return Err(Error::UnknownTopic(topic.to_owned()))
            }
            _ if tries < REQUEST_TRIES && timed_out(&e) => {
                tracing::debug!(%topic, tries, error = %e, "a stream lookup went unanswered; asking again");
                tries += 1;
            }
            _ => return Err(err(e)),
        }
    }
}

/// The event as a NATS message: headers and payload.
fn to_message(event: &CloudEvent) -> Result<(HeaderMap, Bytes), Error> {
    let mut headers = HeaderMap::new();
    for (name, value) in event
        .to_http_binary_headers()
        .map_err(|e| Error::InvalidEvent(e.to_string()))?
    {
        headers.insert(name.as_str(), value.as_str());
    }
    let id = format!("{}:{}{}", event.source().len(), event.source(), event.id());
    headers.insert("Nats-Msg-Id", id.as_str());
    Ok((headers, event.data().cloned().unwrap_or_default()))
}

/// A stored NATS message as an event.
fn from_message(headers: Option<&HeaderMap>, payload: Bytes) -> Result<CloudEvent, Error> {
    let pairs: Vec<(String, Vec<u8>)> = headers
        .map(|h| {
            h.iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().as_bytes().to_vec()))
                })
                .collect()
        })
        .unwrap_or_default();
    CloudEvent::from_http_binary(
        pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        payload,
    )
    .map_err(|e| Error::backend(NAME, format!("a stored message is not a CloudEvent: {e}")))
}

/// Makes the topic's stream unless it exists. While the cluster has too few
/// nodes up to place `replicas` copies, tries again until `patience` has
/// passed, then says so.
async fn ensure_stream(
    js: &jetstream::Context,
    topic: &str,
    replicas: usize,
    patience: Duration,
) -> Result<(), Error> {
    let config = jetstream::stream::Config {
        name: stream_name(topic),
        subjects: vec![subject(topic)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let deadline = Instant::now() + patience;
    let mut tries = 1;
    loop {
        let e = match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if tries < REQUEST_TRIES && timed_out(&e) {
            tracing::debug!(%topic, tries, error = %e, "a stream creation went unanswered; asking again");
            tries += 1;
            continue;
        }
        let no_peers = matches!(
            e.kind(),
            jetstream::context::CreateStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS
        );
        if !no_peers {
            return Err(err(e));
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "stream for {topic}: fewer than {replicas} nodes up to place its replicas \
                 after {patience:?}: {e}"
            )));
        }
        tokio::time::sleep(PLACEMENT_WAIT).await;
    }
}

async fn publish_all(
    js: &jetstream::Context,
    topic: &str,
    events: &[CloudEvent],
    timeout: Duration,
) -> Result<Vec<Receipt>, Error> {
    let mut acks = Vec::with_capacity(events.len());
    let sent_at = Instant::now();
    for event in events {
        event
            .validate()
            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        let (headers, payload) = to_message(event)?;
        let ack = js
            .publish_with_headers(subject(topic), headers, payload)
            .await
            .map_err(err)?;
        acks.push(ack);
    }
    let mut receipts = Vec::with_capacity(acks.len());
    for (event, ack) in events.iter().zip(acks) {
        let ack = match ack.await {
            Ok(ack) => ack,
            Err(e) => republish(js, topic, event, e, sent_at, timeout).await?,
        };
        receipts.push(Receipt {
            partition: 0,
            offset: ack.sequence,
            duplicate: ack.duplicate,
        });
    }
    Ok(receipts)
}

/// Publishes `event` again after `first` failed, while the failure is one
/// that sending again cures:
///
/// - no stream serves the subject: the topic has no stream
///   ([`Error::UnknownTopic`]), or it was just made on a cluster and takes a
///   moment before its subject is served;
/// - the ack went unanswered: up to [`REQUEST_TRIES`] sends in all, and
///   only while the duplicate window still covers the first send.
///
/// The same `Nats-Msg-Id` keeps a publish that did land from being stored
/// twice.
async fn republish(
    js: &jetstream::Context,
    topic: &str,
    event: &CloudEvent,
    first: jetstream::context::PublishError,
    sent_at: Instant,
    timeout: Duration,
) -> Result<jetstream::publish::PublishAck, Error> {
    let not_ready = |e: &jetstream::context::PublishError| {
        let text = e.to_string();
        text.contains("no stream found") || text.contains("no responders")
    };
    if not_ready(&first) {
        // Unknown, unless it exists and is not served yet.
        lookup_stream(js, topic).await?;
    }
    let (mut waits, mut sends) = (0, 1);
    let mut last = first;
    loop {
        if not_ready(&last) {
            if waits == STREAM_READY_TRIES {
                return Err(err(last));
            }
            waits += 1;
            tokio::time::sleep(STREAM_READY_WAIT).await;
        } else if timed_out(&last) {
            // The next send's ack may take the whole timeout again.
            if sends == REQUEST_TRIES || sent_at.elapsed() + timeout >= DUPLICATE_WINDOW {
                return Err(err(last));
            }
            sends += 1;
            tracing::debug!(%topic, id = event.id(), sends, "a publish ack went unanswered; sending again");
        } else {
            return Err(err(last));
        }
        let (headers, payload) = to_message(event)?;
        let sent = js
            .publish_with_headers(subject(topic), headers, payload)
            .await
            .map_err(err)?;
        match sent.await {
            Ok(ack) => return Ok(ack),
            Err(e) => last = e,
        }
    }
}

impl Backend for Nats {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Both modes are the same queue group.
    fn capabilities(&self, _mode: Mode) -> Capabilities {
        Capabilities {
            consumer_groups: Support::Native,
            per_message_ack: Support::Native,
            nack_delay: Support::Native,
            dead_letters: Support::Emulated(
                "the toolkit counts attempts, publishes to <topic>.<group>.dlq and terminates the message",
            ),
            key_ordering: Support::Emulated(
                "the router keeps one event per key in flight, within one process",
            ),
            replay: Support::Native,
            publish_dedup: Support::Native,
            lease_extension: Support::Native,
        }
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        _partitions: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            tidings_types::TopicName::new(topic).map_err(|e| Error::Config(e.to_string()))?;
            ensure_stream(&self.js, topic, self.replicas, self.timeout).await
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: Vec<CloudEvent>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, Error>> {
        // No stream lookup first: a publish to a topic without a stream
        // is answered at once, and told apart from one not served yet then.
        Box::pin(async move { publish_all(&self.js, topic, &events, self.timeout).await })
    }

    fn subscribe<'a>(
        &'a self,
        options: &'a SubscribeOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn Source>, Error>> {
        Box::pin(async move {
            let stream = self.stream(&options.topic).await?;
            let deliver_policy = match options.start {
                // Offsets are stream sequences, from 1.
                Start::Earliest | Start::Offset(0..=1) => DeliverPolicy::All,
                Start::Offset(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
                Start::Latest => DeliverPolicy::New,
                Start::Time(ms) => DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(ms) * 1_000_000,
                    )
                    .map_err(|e| Error::Config(e.to_string()))?,
                },
            };
            let config = pull::Config {
                durable_name: Some(encode(&options.group)),
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_timeout,
                deliver_policy,
                // The toolkit counts attempts and dead-letters itself.
                max_deliver: -1,
                ..Default::default()
            };
            let mut tries = 1;
            let consumer: jetstream::consumer::Consumer<pull::Config> = loop {
                match stream
                    .get_or_create_consumer(&encode(&options.group), config.clone())
                    .await
                {
                    Ok(consumer) => break consumer,
                    Err(e) if tries < REQUEST_TRIES && timed_out(&e) => {
                        tracing::debug!(
                            topic = %options.topic,
                            group = %options.group,
                            tries,
                            error = %e,
                            "a consumer creation went unanswered; asking again"
                        );
                        tries += 1;
                    }
                    Err(e) => return Err(err(e)),
                }
            };
            let source: Arc<dyn Source> = Arc::new(QueueSource {
                client: self.client.clone(),
                js: self.js.clone(),
                stream,
                consumer,
                topic: options.topic.clone(),
                dead_letters: self.dead_letter_topic(&options.topic, &options.group),
                replicas: self.replicas,
                timeout: self.timeout,
                max_deliveries: options.max_deliveries,
                ack_timeout: options.ack_timeout,
                backoff: options.backoff,
                held: Mutex::new(HashMap::new()),
                random: crate::Jitter::new(),
                stop: CancellationToken::new(),
            });
            Ok(source)
        })
    }
}

/// What the subscriber knows of one message it handed out.
struct Held {
    /// JetStream's delivery count at the hand-out.
    delivered: u64,
    /// Its releases, which do not count as attempts.
    released: u32,
    /// When its lease runs out.
    deadline: Instant,
    /// Its last failure, for a dead letter.
    error: Option<String>,
}

/// One subscriber of a durable consumer.
struct QueueSource {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    topic: String,
    dead_letters: String,
    replicas: usize,
    /// The backend's JetStream request timeout.
    timeout: Duration,
    max_deliveries: u32,
    ack_timeout: Duration,
    backoff: crate::backend::Backoff,
    /// By stream sequence.
    held: Mutex<HashMap<u64, Held>>,
    random: crate::Jitter,
    stop: CancellationToken,
}

impl QueueSource {
    /// Takes up to `max` messages available now, without waiting.
    async fn fetch_now(&self, max: usize, into: &mut Vec<jetstream::Message>) -> Result<(), Error> {
        let fetch = async {
            let mut now = self
                .consumer
                .fetch()
                .max_messages(max)
                .messages()
                .await
                .map_err(err)?;
            while let Some(message) = now.next().await {
                into.push(message.map_err(err)?);
            }
            Ok(())
        };
        within(PULL_ANSWER_MAX, fetch).await
    }

    /// Bounds what the subscriber remembers: past [`HELD_MAX`], the half
    /// whose leases ran out longest ago is forgotten (a forgotten release
    /// counts as an attempt after all).
    fn forget_old(&self) {
        let mut held = self.held.lock().expect("held lock");
        if held.len() <= HELD_MAX {
            return;
        }
        let mut deadlines: Vec<Instant> = held.values().map(|h| h.deadline).collect();
        deadlines.sort_unstable();
        let cut = deadlines[deadlines.len() / 2];
        held.retain(|_, h| h.deadline > cut);
    }

    /// The attempt a ticket's delivery is, if its lease still holds.
    fn attempt_of(&self, ticket: &Ticket) -> Result<u32, Error> {
        let held = self.held.lock().expect("held lock");
        match held.get(&ticket.offset) {
            Some(h) if h.delivered == ticket.lease && h.deadline > Instant::now() => {
                Ok(u32::try_from(h.delivered)
                    .unwrap_or(u32::MAX)
                    .saturating_sub(h.released))
            }
            _ => Err(Error::LeaseExpired(format!(
                "{}.{}",
                ticket.offset, ticket.lease
            ))),
        }
    }

    fn reply<'a>(&self, ticket: &'a Ticket) -> Result<&'a str, Error> {
        ticket
            .reply
            .as_deref()
            .ok_or_else(|| Error::backend(NAME, "a delivery without its reply subject"))
    }

    async fn send(&self, reply: &str, kind: jetstream::AckKind) -> Result<(), Error> {
        self.client
            .publish(reply.to_owned(), Bytes::from(kind))
            .await
            .map_err(err)?;
        self.client.flush().await.map_err(err)
    }

    /// Publishes the event at `sequence` to the dead letters, then
    /// terminates it.
    async fn dead_letter(
        &self,
        reply: &str,
        sequence: u64,
        attempts: u32,
        error: &str,
    ) -> Result<(), Error> {
        let stored = self.stream.get_raw_message(sequence).await.map_err(err)?;
        let mut event = from_message(Some(&stored.headers), stored.payload)?;
        let info = DeadLetterInfo {
            topic: &self.topic,
            partition: 0,
            offset: sequence,
            attempts,
            error,
        };
        for (name, value) in dead_letter_extensions(&info) {
            event = event
                .with_extension(name, value)
                .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        }
        ensure_stream(&self.js, &self.dead_letters, self.replicas, self.timeout).await?;
        publish_all(&self.js, &self.dead_letters, &[event], self.timeout).await?;
        self.send(reply, jetstream::AckKind::Term).await?;
        self.held.lock().expect("held lock").remove(&sequence);
        Ok(())
    }
}

impl Source for QueueSource {
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>> {
        Box::pin(async move {
            if self.stop.is_cancelled() {
                return Ok(Vec::new());
            }
            self.forget_old();
            // What is there now; when nothing is, wait for one message only
            // (a batch ends at its count or its expiry, and a message that
            // waited in a batch for the others would spend its lease
            // there), then take what came meanwhile.
            let mut messages = Vec::new();
            self.fetch_now(max.max(1), &mut messages).await?;
            if messages.is_empty() {
                let expires = wait.clamp(Duration::from_millis(50), WAIT_SLICE);
                let first = async {
                    let mut first = self
                        .consumer
                        .batch()
                        .max_messages(1)
                        .expires(expires)
                        .messages()
                        .await
                        .map_err(err)?;
                    while let Some(message) = first.next().await {
                        messages.push(message.map_err(err)?);
                    }
                    Ok(())
                };
                within(expires + PULL_ANSWER_MAX, first).await?;
                if !messages.is_empty() && max > 1 {
                    self.fetch_now(max - 1, &mut messages).await?;
                }
            }
            let mut out = Vec::new();
            for message in messages {
                let (sequence, delivered, published) = {
                    let info = message.info().map_err(err)?;
                    (
                        info.stream_sequence,
                        u64::try_from(info.delivered).unwrap_or(1),
                        info.published,
                    )
                };
                let reply = message
                    .reply
                    .as_ref()
                    .map(|r| r.as_str().to_owned())
                    .ok_or_else(|| Error::backend(NAME, "a message without a reply subject"))?;
                let (attempt, error) = {
                    let mut held = self.held.lock().expect("held lock");
                    let h = held.entry(sequence).or_insert(Held {
                        delivered,
                        released: 0,
                        deadline: Instant::now(),
                        error: None,
                    });
                    h.delivered = delivered;
                    h.deadline = Instant::now() + self.ack_timeout;
                    let attempt = u32::try_from(delivered)
                        .unwrap_or(u32::MAX)
                        .saturating_sub(h.released);
                    (attempt, h.error.clone())
                };
                if attempt > self.max_deliveries {
                    // Its lease ran out on its last attempt.
                    let error = error.unwrap_or_else(|| "lease expired".to_owned());
                    self.dead_letter(&reply, sequence, attempt - 1, &error)
                        .await?;
                    continue;
                }
                let event = from_message(message.headers.as_ref(), message.payload.clone())?;
                out.push(Incoming {
                    ticket: Ticket {
                        partition: 0,
                        offset: sequence,
                        lease: delivered,
                        reply: Some(reply.into_boxed_str()),
                    },
                    attempt,
                    timestamp_ms: i64::try_from(published.unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or(0),
                    payload: Payload::Event(event),
                });
            }
            Ok(out)
        })
    }

    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let attempt = self.attempt_of(ticket)?;
            let reply = self.reply(ticket)?;
            match answer {
                Answer::Ack => {
                    // A request, so the ack is known to have reached the server.
                    self.client
                        .request(reply.to_owned(), Bytes::from(jetstream::AckKind::Ack))
                        .await
                        .map_err(err)?;
                    self.held.lock().expect("held lock").remove(&ticket.offset);
                    Ok(())
                }
                Answer::Reject { reason } => {
                    self.dead_letter(reply, ticket.offset, attempt, reason)
                        .await
                }
                Answer::Nack { reason, .. } if attempt >= self.max_deliveries => {
                    self.dead_letter(reply, ticket.offset, attempt, reason)
                        .await
                }
                Answer::Nack { delay, reason } => {
                    let delay =
                        delay.unwrap_or_else(|| self.backoff.delay(attempt, self.random.next()));
                    if let Some(h) = self.held.lock().expect("held lock").get_mut(&ticket.offset) {
                        h.error = Some(reason.to_owned());
                        h.deadline = Instant::now();
                    }
                    self.send(reply, jetstream::AckKind::Nak(Some(delay))).await
                }
                Answer::Release => {
                    if let Some(h) = self.held.lock().expect("held lock").get_mut(&ticket.offset) {
                        h.released += 1;
                        h.deadline = Instant::now();
                    }
                    self.send(reply, jetstream::AckKind::Nak(None)).await
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
            self.attempt_of(ticket)?;
            let reply = self.reply(ticket)?;
            self.send(reply, jetstream::AckKind::Progress).await?;
            if let Some(h) = self.held.lock().expect("held lock").get_mut(&ticket.offset) {
                h.deadline = Instant::now() + self.ack_timeout;
            }
            Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Options are checked before any server is reached.
    #[tokio::test]
    async fn bad_url_options_are_named() {
        for (url, said) in [
            (
                "nats://127.0.0.1:1?timeout=0",
                "timeout=0: 1 to 300 seconds",
            ),
            (
                "nats://127.0.0.1:1?timeout=5m",
                "timeout=5m: 1 to 300 seconds",
            ),
            ("nats://127.0.0.1:1?replicas=6", "replicas=6: 1 to 5"),
            (
                "nats://127.0.0.1:1?replicas=3&wait=1",
                "unknown option wait=1",
            ),
        ] {
            match Nats::connect(url).await {
                Err(Error::Config(message)) => assert!(message.contains(said), "{url}: {message}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
