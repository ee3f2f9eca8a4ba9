//! Queue-mode groups: receive events under leases (long-poll), ack, nack with
//! an optional delay, reject; dead letters listed, inspected, redriven and
//! purged.

use crate::access::Access;
use std::sync::Arc;
use std::time::Duration;
use tidings_auth::acl::{Operation, ResourceType};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidings_api::{
    AckBatchRequest, AckBatchResponse, AckFailure, CreateQueue, DeadLetterList, DeadLetterQuery,
    DeleteQueueAnswer, DeleteQueueQuery, ErrorCode, ExtendAnswer, ExtendRequest, NackRequest,
    PurgeAnswer, Queue, QueueConfig, QueueCounters, QueueList, QueuePartition, ReceiveAnswer,
    ReceiveQuery, RedriveAnswer, RedriveRequest, RejectRequest, ACK_BATCH_LEASES_MAX, RECEIVE_MAX,
};
use tidings_broker::{Backoff, Broker, LeaseId, QueueError, QueueStats, RedriveTarget};
use tidings_types::{ErrorKind, Offset};

use crate::extract::{PathJson, QueryJson};
use crate::sse::{self, Item, Source};
use crate::stop::Stop;
use crate::{body, wire, Api, ApiError};

/// Bytes of dead letters one listing reads.
const DEAD_LETTER_READ_BYTES: usize = 1024 * 1024;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A queue group as the API shows it.
fn queue(name: String, s: QueueStats) -> Queue {
    let c = s.config;
    Queue {
        name,
        topic: s.topic.to_string(),
        dead_letter_topic: s.dead_letter_topic.to_string(),
        config: QueueConfig {
            ack_timeout_ms: ms(c.ack_timeout),
            backoff_factor: c.backoff.factor,
            backoff_initial_ms: ms(c.backoff.initial),
            backoff_max_ms: ms(c.backoff.max),
            key_ordering: c.key_ordering,
            max_deliveries: c.max_deliveries,
        },
        lag: s.partitions.iter().map(|p| p.lag).sum(),
        in_flight: s.partitions.iter().map(|p| p.in_flight).sum::<u64>() + s.redriven.in_flight,
        redriven: s.redriven.lag,
        partitions: s
            .partitions
            .iter()
            .map(|p| QueuePartition {
                ack_floor: p.ack_floor.0,
                high_watermark: p.high_watermark.0,
                in_flight: p.in_flight,
                lag: p.lag,
                partition: p.partition.0,
                retrying: p.retrying,
            })
            .collect(),
        dead_letters: s.dead_letters,
        counters: QueueCounters {
            acked: s.counters.acked,
            dead_lettered: s.counters.dead_lettered,
            delivered: s.counters.delivered,
            expired: s.counters.expired,
            nacked: s.counters.nacked,
            redelivered: s.counters.redelivered,
            redriven: s.counters.redriven,
            released: s.counters.released,
        },
    }
}

/// `POST /v1/queues`: a queue group on a topic; its dead letters go to the topic
/// `<topic>.<group>.dlq`.
/// Needs `Read` on the group and on the topic, and, when the dead-letter
/// topic is to be made, `Create` on it or on the cluster (as any topic).
pub(crate) async fn create(
    State(api): State<Api>,
    access: Access,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let q: CreateQueue = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    access.require(ResourceType::Group, &q.name, Operation::Read)?;
    access.require(ResourceType::Topic, &q.topic, Operation::Read)?;
    let dead_letters = format!("{}.{}.dlq", q.topic, q.name);
    if api.broker().describe_topic(&dead_letters).is_err()
        && !access.allows(
            ResourceType::Cluster,
            crate::access::CLUSTER,
            Operation::Create,
        )
    {
        access.require(ResourceType::Topic, &dead_letters, Operation::Create)?;
    }
    let d = tidings_broker::QueueConfig::default();
    let millis = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let config = tidings_broker::QueueConfig {
        ack_timeout: millis(q.ack_timeout_ms, d.ack_timeout),
        max_deliveries: q.max_deliveries.unwrap_or(d.max_deliveries),
        backoff: Backoff {
            initial: millis(q.backoff_initial_ms, d.backoff.initial),
            factor: q.backoff_factor.unwrap_or(d.backoff.factor),
            max: millis(q.backoff_max_ms, d.backoff.max),
        },
        key_ordering: q.key_ordering.unwrap_or(d.key_ordering),
    };
    // An offset is the same in every partition, clamped into what each
    // stores, as for a stream group.
    let start = wire::parse_start(q.from.as_deref())?;
    let broker = Arc::clone(api.broker());
    let (name, topic) = (q.name.clone(), q.topic.clone());
    crate::blocking(move || Ok(broker.create_queue_group(&name, &topic, config, start)?)).await?;
    tracing::info!(group = %q.name, topic = %q.topic, "queue group created");
    let stats = api.broker().queue_stats(&q.name).await?;
    Ok((StatusCode::CREATED, Json(queue(q.name, stats))).into_response())
}

/// `GET /v1/queues`: the queue groups the principal may describe.
pub(crate) async fn list(State(api): State<Api>, access: Access) -> Json<QueueList> {
    let mut queues = Vec::new();
    for name in api.broker().list_queue_groups() {
        if !access.allows(ResourceType::Group, &name, Operation::Describe) {
            continue;
        }
        match api.broker().queue_stats(&name).await {
            Ok(stats) => queues.push(queue(name, stats)),
            Err(e) => tracing::debug!(group = %name, error = %e, "queue left out of the listing"),
        }
    }
    Json(QueueList { queues })
}

/// `GET /v1/queues/{group}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
) -> Result<Json<Queue>, ApiError> {
    let stats = api.broker().queue_stats(&name).await?;
    Ok(Json(queue(name, stats)))
}

/// `POST /v1/queues/{group}/receive`: up to `max` due events, each under a
/// lease to answer with ack, nack or reject before the ack timeout; waits up
/// to `wait_ms` when none is due (ending at once if the server drains); with
/// `Accept: text/event-stream`, a stream of deliveries.
pub(crate) async fn receive(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
    headers: HeaderMap,
    QueryJson(query): QueryJson<ReceiveQuery>,
) -> Result<Response, ApiError> {
    let max = query.max.unwrap_or(1);
    if !(1..=RECEIVE_MAX).contains(&max) {
        return Err(ApiError::invalid_request(format!(
            "max={max}: it must be 1..={RECEIVE_MAX}"
        )));
    }
    let wait = wire::wait(&api, query.wait_ms)?;
    if sse::wanted(&headers) {
        let max_in_flight = query.max_in_flight.unwrap_or(STREAM_IN_FLIGHT_DEFAULT);
        if !(1..=RECEIVE_MAX).contains(&max_in_flight) {
            return Err(ApiError::invalid_request(format!(
                "max_in_flight={max_in_flight}: it must be 1..={RECEIVE_MAX}"
            )));
        }
        api.broker().queue_stats(&name).await?;
        let source = Deliveries {
            broker: Arc::clone(api.broker()),
            group: name,
            max,
            max_in_flight,
            handed: Vec::new(),
        };
        return sse::open(&api, source);
    }
    if query.max_in_flight.is_some() {
        return Err(ApiError::invalid_request(
            "max_in_flight applies to a stream (Accept: text/event-stream); a receive takes max",
        ));
    }
    let stop = Stop::server(&api);
    let deliveries = api
        .broker()
        .receive_wait_until(&name, max, wait, stop.wait())
        .await?;
    if !deliveries.is_empty() {
        let topic = api.broker().queue_topic(&name).await?;
        wire::received(topic.as_str(), &name, deliveries.iter().map(|d| &d.entry));
    }
    let deliveries = deliveries
        .iter()
        .map(delivery)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ReceiveAnswer { deliveries }).into_response())
}

/// A delivery as the API shows it.
fn delivery(d: &tidings_broker::Delivery) -> Result<tidings_api::Delivery, ApiError> {
    wire::delivered(&d.entry);
    Ok(tidings_api::Delivery {
        attempt: d.attempt,
        lease: d.lease.to_string(),
        entry: wire::stored_event(&d.entry)?,
    })
}

/// Deliveries a stream holds unanswered at most, unless it asks otherwise.
const STREAM_IN_FLIGHT_DEFAULT: usize = 100;
/// How long a stream at its in-flight limit waits for an answer before it
/// looks again (answers wake it sooner).
const STREAM_ANSWER_WAIT: Duration = Duration::from_millis(250);

/// A queue group's deliveries, streamed as events come due, at most
/// `max_in_flight` unanswered at a time (RabbitMQ's prefetch). When the
/// stream closes, the deliveries it handed out and still holds are given
/// back, due at once for another consumer.
struct Deliveries {
    broker: Arc<Broker>,
    group: String,
    max: usize,
    max_in_flight: usize,
    /// Leases handed out and, when last looked at, unanswered.
    handed: Vec<LeaseId>,
}

impl Source for Deliveries {
    async fn next(&mut self, stop: &Stop) -> Result<Vec<Item>, ApiError> {
        self.handed = self.broker.held_leases(&self.group, &self.handed).await?;
        let room = self.max_in_flight.saturating_sub(self.handed.len());
        if room == 0 {
            tokio::select! {
                () = self.broker.wait_for_answers(STREAM_ANSWER_WAIT) => {}
                () = stop.wait() => {}
            }
            return Ok(Vec::new());
        }
        let got = self
            .broker
            .receive_wait_until(
                &self.group,
                self.max.min(room),
                sse::SOURCE_WAIT,
                stop.wait(),
            )
            .await?;
        self.handed.extend(got.iter().map(|d| d.lease));
        if !got.is_empty() {
            let topic = self.broker.queue_topic(&self.group).await?;
            wire::received(topic.as_str(), &self.group, got.iter().map(|d| &d.entry));
        }
        got.iter()
            .map(|d| Item::at_offset(d.entry.partition.0, d.entry.offset.0, &delivery(d)?))
            .collect()
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        if self.handed.is_empty() {
            return;
        }
        let (broker, group) = (Arc::clone(&self.broker), self.group.clone());
        let leases = std::mem::take(&mut self.handed);
        // Answered ones are skipped: release answers each lease on its own.
        tokio::spawn(async move {
            match broker.release(&group, &leases).await {
                Ok(answers) => {
                    let released = answers.iter().filter(|a| a.is_ok()).count();
                    tracing::debug!(%group, released, "a closed stream gave back its deliveries");
                }
                Err(e) => {
                    tracing::warn!(%group, error = %e, "a closed stream could not give back its deliveries")
                }
            }
        });
    }
}

/// The lease a path names. A text that is no lease is one the group never
/// handed out, once the group itself is known.
fn lease_id(api: &Api, group: &str, text: &str) -> Result<LeaseId, ApiError> {
    text.parse().map_err(|e: QueueError| {
        if api.broker().has_queue_group(group) {
            e.into()
        } else {
            QueueError::UnknownGroup(group.to_owned()).into()
        }
    })
}

/// `POST /v1/queues/{group}/leases/{lease}/ack`.
pub(crate) async fn ack(
    State(api): State<Api>,
    PathJson((name, lease)): PathJson<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let lease = lease_id(&api, &name, &lease)?;
    api.broker().ack(&name, &lease).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/queues/{group}/acks`: acks many leases of the group with one
/// journal sync. Each lease is answered on its own; the ones that could not be
/// acked are listed with their error, and the rest are acked.
pub(crate) async fn ack_batch(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<AckBatchResponse>, ApiError> {
    let batch: AckBatchRequest =
        body::parse(&headers, request, api.limits().body_bytes_max).await?;
    if !(1..=ACK_BATCH_LEASES_MAX).contains(&batch.leases.len()) {
        return Err(ApiError::invalid_request(format!(
            "{} leases: a batch acks 1..={ACK_BATCH_LEASES_MAX}",
            batch.leases.len()
        )));
    }
    // Texts that are no lease are answered as leases the group never gave;
    // the others are acked together.
    let parsed: Vec<Result<LeaseId, QueueError>> =
        batch.leases.iter().map(|text| text.parse()).collect();
    let held: Vec<LeaseId> = parsed
        .iter()
        .filter_map(|l| l.as_ref().ok().copied())
        .collect();
    let mut answers = api.broker().ack_many(&name, &held).await?.into_iter();
    let mut acked = 0_usize;
    let mut failed = Vec::new();
    for (lease, parsed) in batch.leases.into_iter().zip(parsed) {
        let result = match parsed {
            Ok(_) => answers.next().expect("one answer per lease acked"),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => acked += 1,
            Err(e) => {
                let e = ApiError::from(e);
                failed.push(AckFailure {
                    error_code: e.code().as_str().to_owned(),
                    lease,
                    message: e.message().to_owned(),
                });
            }
        }
    }
    Ok(Json(AckBatchResponse { acked, failed }))
}

/// `POST /v1/queues/{group}/leases/{lease}/nack`: `{"delay_ms", "error"}`, both
/// optional; the event is retried after the delay or the group's backoff, or
/// dead-lettered after its last attempt.
pub(crate) async fn nack(
    State(api): State<Api>,
    PathJson((name, lease)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<StatusCode, ApiError> {
    let nack: NackRequest =
        body::parse_or_default(&headers, request, api.limits().body_bytes_max).await?;
    let error = nack.error.unwrap_or_else(|| "nacked".to_owned());
    let lease = lease_id(&api, &name, &lease)?;
    api.broker()
        .nack(
            &name,
            &lease,
            nack.delay_ms.map(Duration::from_millis),
            &error,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/queues/{group}/leases/{lease}/reject`: dead-letters the event now.
pub(crate) async fn reject(
    State(api): State<Api>,
    PathJson((name, lease)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<StatusCode, ApiError> {
    let reject: RejectRequest =
        body::parse_or_default(&headers, request, api.limits().body_bytes_max).await?;
    let reason = reject.reason.unwrap_or_else(|| "rejected".to_owned());
    let lease = lease_id(&api, &name, &lease)?;
    api.broker().reject(&name, &lease, &reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/queues/{group}/leases/{lease}/extend`: `{"timeout_ms"}`, the
/// lease now runs out that long from now.
pub(crate) async fn extend(
    State(api): State<Api>,
    PathJson((name, lease)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<ExtendAnswer>, ApiError> {
    let extend: ExtendRequest = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let lease = lease_id(&api, &name, &lease)?;
    let deadline_ms = api
        .broker()
        .extend_lease(&name, &lease, Duration::from_millis(extend.timeout_ms))
        .await?;
    Ok(Json(ExtendAnswer {
        deadline_ms,
        lease: lease.to_string(),
    }))
}

/// `POST /v1/queues/{group}/leases/{lease}/release`: gives the event back
/// unhandled, due at once, without counting the delivery as an attempt.
pub(crate) async fn release(
    State(api): State<Api>,
    PathJson((name, lease)): PathJson<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let lease = lease_id(&api, &name, &lease)?;
    let mut answers = api.broker().release(&name, &[lease]).await?;
    answers.pop().expect("one answer per lease")?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/queues/{group}`: the group, its dead letters and its retry
/// topic; refused while deliveries are leased unless `force=true`.
pub(crate) async fn delete(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
    QueryJson(query): QueryJson<DeleteQueueQuery>,
) -> Result<Json<DeleteQueueAnswer>, ApiError> {
    let dropped = api
        .broker()
        .delete_queue_group(&name, query.force.unwrap_or(false))
        .await?;
    tracing::info!(group = %name, dead_letters_dropped = dropped, "queue group deleted");
    Ok(Json(DeleteQueueAnswer {
        dead_letters_dropped: dropped,
    }))
}

/// A dead letter as the API shows it.
fn dead_letter_json(d: &tidings_broker::DeadLetter) -> Result<tidings_api::DeadLetter, ApiError> {
    Ok(tidings_api::DeadLetter {
        attempts: d.attempts,
        error: d.error.clone(),
        source_offset: d.source_offset.0,
        source_partition: d.source_partition.0,
        entry: wire::stored_event(&d.entry)?,
    })
}

/// `GET /v1/queues/{group}/dead-letters`: the dead letters not yet redriven or
/// purged, from `from` (an offset in the dead-letter topic) on.
pub(crate) async fn dead_letters(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
    QueryJson(query): QueryJson<DeadLetterQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(100)
        .clamp(1, api.limits().read_events_max);
    let letters = api
        .broker()
        .dead_letters(
            &name,
            Offset(query.from.unwrap_or(0)),
            DEAD_LETTER_READ_BYTES,
        )
        .await?;
    let dead_letters = letters
        .iter()
        .take(limit)
        .map(dead_letter_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(DeadLetterList { dead_letters }))
}

/// `GET /v1/queues/{group}/dead-letters/{offset}`: one dead letter.
pub(crate) async fn dead_letter(
    State(api): State<Api>,
    PathJson((name, offset)): PathJson<(String, u64)>,
) -> Result<Json<tidings_api::DeadLetter>, ApiError> {
    let unknown = || {
        ApiError::new(
            ErrorCode::UnknownDeadLetter,
            format!("group {name} has no dead letter at offset {offset}"),
        )
    };
    let letters = match api
        .broker()
        .dead_letters(&name, Offset(offset), DEAD_LETTER_READ_BYTES)
        .await
    {
        Err(e) if e.kind() == ErrorKind::OffsetOutOfRange => return Err(unknown()),
        other => other?,
    };
    let letter = letters
        .iter()
        .find(|d| d.offset.0 == offset)
        .ok_or_else(unknown)?;
    Ok(Json(dead_letter_json(letter)?))
}

/// `POST /v1/queues/{group}/dead-letters/redrive`: delivers dead letters again
/// to this group only, or publishes them to the topic `to`, and marks them
/// handled.
/// Needs `Alter` on the group, and `Write` on the topic redriven to.
pub(crate) async fn redrive(
    State(api): State<Api>,
    access: Access,
    PathJson(name): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<RedriveAnswer>, ApiError> {
    access.require(ResourceType::Group, &name, Operation::Alter)?;
    let redrive: RedriveRequest =
        body::parse_or_default(&headers, request, api.limits().body_bytes_max).await?;
    if let Some(topic) = &redrive.to {
        access.require(ResourceType::Topic, topic, Operation::Write)?;
    }
    let max = redrive.max.unwrap_or(usize::MAX);
    if max == 0 {
        return Err(ApiError::invalid_request(
            "max=0 would redrive nothing; leave it out to redrive everything",
        ));
    }
    let redriven = api
        .broker()
        .redrive_dead_letters_with(
            &name,
            redrive
                .to
                .map_or(RedriveTarget::Group, RedriveTarget::Topic),
            max,
            redrive.error.as_deref(),
        )
        .await?;
    tracing::info!(group = %name, redriven, "dead letters redriven");
    Ok(Json(RedriveAnswer { redriven }))
}

/// `DELETE /v1/queues/{group}/dead-letters`: drops every dead letter.
pub(crate) async fn purge(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
) -> Result<Json<PurgeAnswer>, ApiError> {
    let purged = api.broker().purge_dead_letters(&name).await?;
    tracing::info!(group = %name, purged, "dead letters purged");
    Ok(Json(PurgeAnswer { purged }))
}
