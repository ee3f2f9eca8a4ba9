//! The server backend: a `tidings serve` over its HTTP API, through
//! `tidings-client`. The same broker as the embedded backend, so the same
//! capabilities: queue mode is the server's queue groups, stream mode its
//! consumer groups with per-delivery answers emulated, as on the embedded
//! backend.
//!
//! A client holds one connection and makes one call at a time, so the
//! backend keeps a small pool for publishes and answers, and each
//! subscription a client of its own for its long-polls. A call that fails
//! because the server cannot be reached is a transient error: the router
//! tries again, and the client reconnects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidings_api::{
    CommitRequest, CreateQueue, CreateTopic, ErrorCode, JoinRequest, NackRequest, PollQuery,
    PublishEntry, RawHeader, ReadQuery, ReceiveQuery, RejectRequest, StoredEvent, TopicSettings,
    RECEIVE_MAX,
};
use tidings_client::{Client, ClientError};
use tidings_types::CloudEvent;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Answer, Backend, BoxFuture, Capabilities, Incoming, Mode, Payload, RawRecord, Receipt, Source,
    Start, SubscribeOptions, Ticket,
};
use crate::stream::{self, Commit, DeadLetterInfo, GroupLog, Polled, StreamSource};
use crate::Error;

const NAME: &str = "server";

/// Clients shared by publishes and answers.
const POOL_CLIENTS: usize = 8;
/// The longest one long-poll waits, so a stopped subscription returns
/// within it without cutting a call short.
const WAIT_SLICE: Duration = Duration::from_secs(1);
/// Most bytes one stream-mode poll asks for.
const POLL_BYTES_MAX: usize = 1024 * 1024;

/// A `tidings serve` reached over HTTP.
pub struct Server {
    url: String,
    /// The user and password every call logs in with, for a server that
    /// has users.
    login: Option<(String, String)>,
    pool: Vec<Client>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("url", &self.url).finish()
    }
}

impl Server {
    /// A backend on the server at `url` (`http://host:port` or `https://`).
    /// Connections are made at the first call.
    pub fn connect(url: &str) -> Result<Server, Error> {
        Server::with_login(url, None)
    }

    /// [`connect`](Self::connect) to a server that has users, every call
    /// logging in as `user` with `password` (HTTP Basic; the server's
    /// permissions then decide what the application may do).
    pub fn connect_as(url: &str, user: &str, password: &str) -> Result<Server, Error> {
        Server::with_login(url, Some((user.to_owned(), password.to_owned())))
    }

    fn with_login(url: &str, login: Option<(String, String)>) -> Result<Server, Error> {
        let mut server = Server {
            url: url.to_owned(),
            login,
            pool: Vec::with_capacity(POOL_CLIENTS),
            next: AtomicUsize::new(0),
        };
        for _ in 0..POOL_CLIENTS {
            let client = server.own_client()?;
            server.pool.push(client);
        }
        Ok(server)
    }

    fn client(&self) -> &Client {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.pool[n % self.pool.len()]
    }

    fn own_client(&self) -> Result<Client, Error> {
        let client = Client::new(&self.url).map_err(|e| Error::Config(e.to_string()))?;
        Ok(match &self.login {
            Some((user, password)) => client.with_login(user, password),
            None => client,
        })
    }
}

/// The toolkit's error for a client's.
fn client_err(e: ClientError) -> Error {
    let message = e.to_string();
    match &e {
        ClientError::Connect { .. } | ClientError::Http { .. } | ClientError::Timeout { .. } => {
            return Error::transient(NAME, message)
        }
        ClientError::Server { status: 503, .. } => return Error::transient(NAME, message),
        _ => {}
    }
    match e.code() {
        Some(ErrorCode::UnknownTopic) => Error::UnknownTopic(message),
        Some(ErrorCode::UnknownGroup) => Error::UnknownGroup(message),
        Some(ErrorCode::InvalidEvent) => Error::InvalidEvent(message),
        Some(ErrorCode::SchemaRejected) => Error::SchemaRejected(message),
        Some(
            ErrorCode::LeaseExpired
            | ErrorCode::UnknownLease
            | ErrorCode::NotAssigned
            | ErrorCode::UnknownMember,
        ) => Error::LeaseExpired(message),
        Some(ErrorCode::ShuttingDown) => Error::ShuttingDown,
        _ => Error::backend(NAME, message),
    }
}

fn lease_text(ticket: &Ticket) -> String {
    format!("{}.{}.{}", ticket.partition, ticket.offset, ticket.lease)
}

fn start_text(start: Start) -> Option<String> {
    match start {
        Start::Earliest => None,
        Start::Latest => Some("latest".into()),
        Start::Offset(offset) => Some(offset.to_string()),
        Start::Time(ms) => {
            let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            time.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }
    }
}

fn base64_bytes(text: Option<&str>) -> Result<Option<Bytes>, Error> {
    use base64::Engine as _;
    text.map(|t| {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map(Bytes::from)
            .map_err(|e| Error::backend(NAME, format!("a raw record is not base64: {e}")))
    })
    .transpose()
}

fn base64_text(bytes: Option<&Bytes>) -> Option<String> {
    use base64::Engine as _;
    bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}

/// A stored event as the server answered it, as a delivery.
fn incoming(stored: StoredEvent, lease: u64, attempt: u32) -> Result<Incoming, Error> {
    let payload = match (stored.event, stored.record) {
        (Some(event), _) => {
            Payload::Event(CloudEvent::from_json_value(event).map_err(|e| {
                Error::backend(NAME, format!("the server sent an invalid event: {e}"))
            })?)
        }
        (None, Some(record)) => Payload::Raw(RawRecord {
            key: base64_bytes(record.key.as_deref())?,
            value: base64_bytes(record.value.as_deref())?,
            headers: record
                .headers
                .into_iter()
                .map(|h| Ok((h.key, base64_bytes(h.value.as_deref())?)))
                .collect::<Result<_, Error>>()?,
        }),
        (None, None) => return Err(Error::backend(NAME, "the server sent an empty entry")),
    };
    Ok(Incoming {
        ticket: Ticket {
            partition: stored.partition,
            offset: stored.offset,
            lease,
            reply: None,
        },
        attempt,
        timestamp_ms: stored.timestamp_ms,
        payload,
    })
}

async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> Result<(), Error> {
    let create = CreateTopic {
        name: topic.to_owned(),
        settings: TopicSettings {
            partitions: Some(partitions),
            ..TopicSettings::default()
        },
    };
    match client.create_topic(&create).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::TopicExists) => Ok(()),
        Err(e) => Err(client_err(e)),
    }
}

impl Backend for Server {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self, mode: Mode) -> Capabilities {
        match mode {
            Mode::Queue => Capabilities::NATIVE,
            Mode::Stream => crate::embedded::STREAM_CAPABILITIES,
        }
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(ensure_topic(self.client(), topic, partitions))
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: Vec<CloudEvent>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, Error>> {
        Box::pin(async move {
            let answer = self
                .client()
                .publish(topic, &events)
                .await
                .map_err(client_err)?;
            Ok(answer
                .events
                .into_iter()
                .map(|e| Receipt {
                    partition: e.partition,
                    offset: e.offset,
                    duplicate: e.duplicate,
                })
                .collect())
        })
    }

    fn subscribe<'a>(
        &'a self,
        options: &'a SubscribeOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn Source>, Error>> {
        Box::pin(async move {
            let own = self.own_client()?;
            match options.mode {
                Mode::Queue => {
                    let create = CreateQueue {
                        name: options.group.clone(),
                        topic: options.topic.clone(),
                        ack_timeout_ms: Some(ms(options.ack_timeout)),
                        max_deliveries: Some(options.max_deliveries),
                        backoff_initial_ms: Some(ms(options.backoff.initial)),
                        backoff_factor: Some(options.backoff.factor),
                        backoff_max_ms: Some(ms(options.backoff.max)),
                        key_ordering: Some(options.key_ordering),
                        from: start_text(options.start),
                    };
                    match own.create_queue(&create).await {
                        Ok(_) => {}
                        Err(e) if e.code() == Some(ErrorCode::GroupExists) => {
                            let queue = own
                                .describe_queue(&options.group)
                                .await
                                .map_err(client_err)?;
                            if queue.topic != options.topic {
                                return Err(crate::embedded::group_elsewhere(
                                    &options.group,
                                    &queue.topic,
                                    &options.topic,
                                ));
                            }
                        }
                        Err(e) => return Err(client_err(e)),
                    }
                    let source: Arc<dyn Source> = Arc::new(QueueSource {
                        receiver: own,
                        answers: (0..2)
                            .map(|_| self.own_client())
                            .collect::<Result<_, _>>()?,
                        next: AtomicUsize::new(0),
                        group: options.group.clone(),
                        stop: CancellationToken::new(),
                    });
                    Ok(source)
                }
                Mode::Stream => {
                    let join = JoinRequest {
                        topic: options.topic.clone(),
                        from: start_text(options.start),
                        session_timeout_ms: None,
                    };
                    let member = own
                        .join_group(&options.group, &join)
                        .await
                        .map_err(client_err)?
                        .member;
                    let log = Member {
                        poller: own,
                        other: self.own_client()?,
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A queue group of the server.
struct QueueSource {
    /// Its long-polls.
    receiver: Client,
    /// Its answers, taking turns.
    answers: Vec<Client>,
    next: AtomicUsize,
    group: String,
    stop: CancellationToken,
}

impl QueueSource {
    fn answerer(&self) -> &Client {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.answers[n % self.answers.len()]
    }
}

fn parse_lease(text: &str) -> Result<(u32, u64, u64), Error> {
    let bad = || {
        Error::backend(
            NAME,
            format!("the server sent a lease {text:?} of an unknown shape"),
        )
    };
    let mut parts = text.split('.');
    let mut next = || parts.next().ok_or_else(bad);
    let p = next()?.parse().map_err(|_| bad())?;
    let o = next()?.parse().map_err(|_| bad())?;
    let id = next()?.parse().map_err(|_| bad())?;
    Ok((p, o, id))
}

impl Source for QueueSource {
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>> {
        Box::pin(async move {
            if self.stop.is_cancelled() {
                return Ok(Vec::new());
            }
            let query = ReceiveQuery {
                max: Some(max.clamp(1, RECEIVE_MAX)),
                wait_ms: Some(ms(wait.min(WAIT_SLICE))),
                max_in_flight: None,
            };
            let answer = self
                .receiver
                .receive(&self.group, &query)
                .await
                .map_err(client_err)?;
            answer
                .deliveries
                .into_iter()
                .map(|d| {
                    let (_, _, lease) = parse_lease(&d.lease)?;
                    incoming(d.entry, lease, d.attempt)
                })
                .collect()
        })
    }

    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let lease = lease_text(ticket);
            let (client, g) = (self.answerer(), &self.group);
            let result = match answer {
                Answer::Ack => client.ack(g, &lease).await,
                Answer::Nack { delay, reason } => {
                    let nack = NackRequest {
                        delay_ms: delay.map(ms),
                        error: Some(reason.to_owned()),
                    };
                    client.nack(g, &lease, &nack).await
                }
                Answer::Reject { reason } => {
                    let reject = RejectRequest {
                        reason: Some(reason.to_owned()),
                    };
                    client.reject(g, &lease, &reject).await
                }
                Answer::Release => client.release(g, &lease).await,
            };
            result.map_err(client_err)
        })
    }

    fn ack_many<'a>(&'a self, tickets: &'a [Ticket]) -> BoxFuture<'a, Vec<Result<(), Error>>> {
        Box::pin(async move {
            let leases: Vec<String> = tickets.iter().map(lease_text).collect();
            match self.answerer().ack_many(&self.group, &leases).await {
                Ok(answer) => {
                    let failed: BTreeMap<&str, &str> = answer
                        .failed
                        .iter()
                        .map(|f| (f.lease.as_str(), f.message.as_str()))
                        .collect();
                    leases
                        .iter()
                        .map(|l| match failed.get(l.as_str()) {
                            None => Ok(()),
                            Some(message) => Err(Error::LeaseExpired((*message).to_owned())),
                        })
                        .collect()
                }
                Err(e) => {
                    let message = e.to_string();
                    let transient = client_err(e).is_transient();
                    tickets
                        .iter()
                        .map(|_| {
                            Err(Error::Backend {
                                backend: NAME,
                                message: message.clone(),
                                transient,
                            })
                        })
                        .collect()
                }
            }
        })
    }

    /// One HTTP request acks up to a thousand.
    fn batches_acks(&self) -> bool {
        true
    }

    fn extend<'a>(
        &'a self,
        ticket: &'a Ticket,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.answerer()
                .extend(&self.group, &lease_text(ticket), ms(timeout))
                .await
                .map(drop)
                .map_err(client_err)
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

/// A member of one of the server's consumer groups.
struct Member {
    /// Its polls.
    poller: Client,
    /// Everything else.
    other: Client,
    group: String,
    topic: String,
    join: JoinRequest,
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
        _stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Polled, Error>> {
        Box::pin(async move {
            let query = PollQuery {
                wait_ms: Some(ms(wait.min(WAIT_SLICE))),
                max_bytes: Some(POLL_BYTES_MAX),
                limit: Some(max.max(1)),
            };
            let answer = self
                .poller
                .poll(&self.group, &self.id(), &query)
                .await
                .map_err(client_err)?;
            let generation = answer.generation;
            Ok(Polled {
                generation,
                assignment: answer.assignment,
                entries: answer
                    .events
                    .into_iter()
                    .map(|e| incoming(e, generation, 1))
                    .collect::<Result<_, _>>()?,
                positions: answer.next.into_iter().collect(),
                restarted: Vec::new(),
                notes: Vec::new(),
            })
        })
    }

    fn commit<'a>(&'a self, commits: &'a [Commit]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let commit = CommitRequest {
                offsets: commits.iter().map(|c| (c.partition, c.next)).collect(),
            };
            self.other
                .commit(&self.group, &self.id(), &commit)
                .await
                .map_err(client_err)
        })
    }

    fn read_one(
        &self,
        partition: u32,
        offset: u64,
    ) -> BoxFuture<'_, Result<Option<Incoming>, Error>> {
        Box::pin(async move {
            let query = ReadQuery {
                from: Some(offset.to_string()),
                limit: Some(1),
                partition: Some(partition),
            };
            let answer = self
                .other
                .read_events(&self.topic, &query)
                .await
                .map_err(client_err)?;
            answer
                .events
                .into_iter()
                .find(|e| e.partition == partition && e.offset == offset)
                .map(|e| incoming(e, 0, 1))
                .transpose()
        })
    }

    fn dead_letter<'a>(
        &'a self,
        payload: Payload,
        info: DeadLetterInfo<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let topic = &self.dead_letters;
            ensure_topic(&self.other, topic, 1).await?;
            let extensions = stream::dead_letter_extensions(&info);
            let entry = match payload {
                Payload::Event(mut event) => {
                    for (name, value) in extensions {
                        event = event
                            .with_extension(name, value)
                            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
                    }
                    PublishEntry {
                        event: Some(
                            event
                                .to_json_value()
                                .map_err(|e| Error::InvalidEvent(e.to_string()))?,
                        ),
                        record: None,
                    }
                }
                Payload::Raw(raw) => {
                    let mut headers: Vec<RawHeader> = raw
                        .headers
                        .iter()
                        .map(|(key, value)| RawHeader {
                            key: key.clone(),
                            value: base64_text(value.as_ref()),
                        })
                        .collect();
                    for (name, value) in extensions {
                        headers.push(RawHeader {
                            key: format!("ce_{name}"),
                            value: base64_text(Some(&Bytes::from(value))),
                        });
                    }
                    PublishEntry {
                        event: None,
                        record: Some(tidings_api::RawRecord {
                            headers,
                            key: base64_text(raw.key.as_ref()),
                            value: base64_text(raw.value.as_ref()),
                        }),
                    }
                }
            };
            self.other
                .publish_entries(topic, &[entry])
                .await
                .map(drop)
                .map_err(client_err)
        })
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.other
                .heartbeat(&self.group, &self.id())
                .await
                .map(drop)
                .map_err(client_err)
        })
    }

    fn rejoin(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let member = self
                .other
                .join_group(&self.group, &self.join)
                .await
                .map_err(client_err)?
                .member;
            *self.member.lock().expect("member lock") = member;
            Ok(())
        })
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.other
                .leave_group(&self.group, &self.id())
                .await
                .map_err(client_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_read_as_the_server_writes_them() {
        let ticket = Ticket {
            partition: 2,
            offset: 41,
            lease: 1_700_000_000_000_123,
            reply: None,
        };
        let (p, o, id) = parse_lease(&lease_text(&ticket)).unwrap();
        assert_eq!((p, o, id), (2, 41, 1_700_000_000_000_123));
        assert!(parse_lease("2.41").is_err());
        assert!(parse_lease("a.b.c").is_err());
    }
}
