//! Queue-mode groups: receive events under leases (long-poll), ack, nack with
//! an optional delay, reject; dead letters listed, inspected, redriven and
//! purged.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidings_broker::{Backoff, QueueConfig, QueueStats};
use tidings_types::{ErrorKind, Offset};

use crate::events::entry_json;
use crate::groups::{wait, LONG_POLL_SLICE};
use crate::{body, sse, Api, ApiError, PathJson, QueryJson};

/// Most deliveries one receive hands out.
const RECEIVE_MAX: usize = 1_000;
/// Bytes of dead letters one listing reads.
const DEAD_LETTER_READ_BYTES: usize = 1024 * 1024;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Serialize)]
pub(crate) struct QueueJson {
    name: String,
    topic: String,
    dead_letter_topic: String,
    config: Value,
    partitions: Vec<Value>,
    lag: u64,
    dead_letters: u64,
    counters: Value,
}

fn queue_json(name: String, s: QueueStats) -> QueueJson {
    let c = s.config;
    QueueJson {
        name,
        topic: s.topic.to_string(),
        dead_letter_topic: s.dead_letter_topic.to_string(),
        config: serde_json::json!({
            "ack_timeout_ms": ms(c.ack_timeout),
            "max_deliveries": c.max_deliveries,
            "backoff_initial_ms": ms(c.backoff.initial),
            "backoff_factor": c.backoff.factor,
            "backoff_max_ms": ms(c.backoff.max),
            "key_ordering": c.key_ordering,
        }),
        lag: s.partitions.iter().map(|p| p.lag).sum(),
        partitions: s
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "partition": p.partition.0,
                    "ack_floor": p.ack_floor.0,
                    "high_watermark": p.high_watermark.0,
                    "lag": p.lag,
                    "in_flight": p.in_flight,
                    "retrying": p.retrying,
                })
            })
            .collect(),
        dead_letters: s.dead_letters,
        counters: serde_json::json!({
            "delivered": s.counters.delivered,
            "redelivered": s.counters.redelivered,
            "acked": s.counters.acked,
            "nacked": s.counters.nacked,
            "expired": s.counters.expired,
            "dead_lettered": s.counters.dead_lettered,
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQueue {
    name: String,
    topic: String,
    ack_timeout_ms: Option<u64>,
    max_deliveries: Option<u32>,
    backoff_initial_ms: Option<u64>,
    backoff_factor: Option<u32>,
    backoff_max_ms: Option<u64>,
    key_ordering: Option<bool>,
}

/// `POST /v1/queues`: a queue group on a topic; its dead letters go to the topic
/// `<topic>.<group>.dlq`.
pub(crate) async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let q: CreateQueue = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let d = QueueConfig::default();
    let millis = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let config = QueueConfig {
        ack_timeout: millis(q.ack_timeout_ms, d.ack_timeout),
        max_deliveries: q.max_deliveries.unwrap_or(d.max_deliveries),
        backoff: Backoff {
            initial: millis(q.backoff_initial_ms, d.backoff.initial),
            factor: q.backoff_factor.unwrap_or(d.backoff.factor),
            max: millis(q.backoff_max_ms, d.backoff.max),
        },
        key_ordering: q.key_ordering.unwrap_or(d.key_ordering),
    };
    let broker = std::sync::Arc::clone(api.broker());
    let (name, topic) = (q.name.clone(), q.topic.clone());
    crate::blocking(move || Ok(broker.create_queue_group(&name, &topic, config)?)).await?;
    tracing::info!(group = %q.name, topic = %q.topic, "queue group created");
    let stats = api.broker().queue_stats(&q.name).await?;
    Ok((StatusCode::CREATED, Json(queue_json(q.name, stats))).into_response())
}

/// `GET /v1/queues`.
pub(crate) async fn list(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let mut queues = Vec::new();
    for name in api.broker().list_queue_groups() {
        match api.broker().queue_stats(&name).await {
            Ok(stats) => queues.push(queue_json(name, stats)),
            Err(e) => tracing::debug!(group = %name, error = %e, "queue left out of the listing"),
        }
    }
    Ok(Json(serde_json::json!({ "queues": queues })))
}

/// `GET /v1/queues/{group}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
) -> Result<Json<QueueJson>, ApiError> {
    let stats = api.broker().queue_stats(&group).await?;
    Ok(Json(queue_json(group, stats)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiveQuery {
    max: Option<usize>,
    wait_ms: Option<u64>,
}

/// `POST /v1/queues/{group}/receive`: up to `max` due events, each under a
/// lease to answer with ack, nack or reject before the ack timeout; waits up
/// to `wait_ms` when none is due.
pub(crate) async fn receive(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
    headers: HeaderMap,
    QueryJson(query): QueryJson<ReceiveQuery>,
) -> Result<Response, ApiError> {
    let max = query.max.unwrap_or(1);
    if !(1..=RECEIVE_MAX).contains(&max) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("max={max}: it must be 1..={RECEIVE_MAX}"),
        ));
    }
    let wait = wait(&api, query.wait_ms)?;
    if sse::wanted(&headers) {
        api.broker().queue_stats(&group).await?;
        let producer_api = api.clone();
        return sse::open(&api, move |sink| async move {
            while sink.open() {
                let got = producer_api
                    .broker()
                    .receive_wait(&group, max, sse::SLICE)
                    .await;
                let got = match got {
                    Ok(got) => got,
                    Err(e) => return sink.fail(e.into()).await,
                };
                for d in &got {
                    let json = match delivery_json(d) {
                        Ok(json) => json,
                        Err(e) => return sink.fail(e).await,
                    };
                    if !sink.send(&json).await {
                        return;
                    }
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + wait;
    let deliveries = loop {
        let slice = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(LONG_POLL_SLICE);
        let got = api.broker().receive_wait(&group, max, slice).await?;
        if !got.is_empty() || slice.is_zero() || api.draining() {
            break got;
        }
    };
    let out = deliveries
        .iter()
        .map(delivery_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(serde_json::json!({ "deliveries": out })).into_response())
}

/// A delivery as JSON: the entry, its lease and its attempt number.
fn delivery_json(d: &tidings_broker::Delivery) -> Result<Value, ApiError> {
    tidings_telemetry::delivered(tidings_types::TimestampMs::now().0 - d.entry.timestamp.0);
    let mut json = entry_json(&d.entry)?;
    json["lease"] = d.lease.clone().into();
    json["attempt"] = d.attempt.into();
    Ok(json)
}

/// `POST /v1/queues/{group}/leases/{lease}/ack`.
pub(crate) async fn ack(
    State(api): State<Api>,
    PathJson((group, lease)): PathJson<(String, String)>,
) -> Result<StatusCode, ApiError> {
    api.broker().ack(&group, &lease).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBatch {
    leases: Vec<String>,
}

/// `POST /v1/queues/{group}/acks`: acks many leases of the group with one
/// journal sync. Each lease is answered on its own; the ones that could not be
/// acked are listed with their error, and the rest are acked.
pub(crate) async fn ack_batch(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Value>, ApiError> {
    let batch: AckBatch = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    if !(1..=RECEIVE_MAX).contains(&batch.leases.len()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "{} leases: a batch acks 1..={RECEIVE_MAX}",
                batch.leases.len()
            ),
        ));
    }
    let results = api.broker().ack_many(&group, &batch.leases).await?;
    let mut acked = 0_usize;
    let mut failed = Vec::new();
    for (lease, result) in batch.leases.into_iter().zip(results) {
        match result {
            Ok(()) => acked += 1,
            Err(e) => {
                let e = ApiError::from(e);
                failed.push(serde_json::json!({
                    "lease": lease,
                    "error_code": e.code(),
                    "message": e.message(),
                }));
            }
        }
    }
    Ok(Json(
        serde_json::json!({ "acked": acked, "failed": failed }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Nack {
    delay_ms: Option<u64>,
    error: Option<String>,
}

/// `POST /v1/queues/{group}/leases/{lease}/nack`: `{"delay_ms", "error"}`, both
/// optional; the event is retried after the delay or the group's backoff, or
/// dead-lettered after its last attempt.
pub(crate) async fn nack(
    State(api): State<Api>,
    PathJson((group, lease)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<StatusCode, ApiError> {
    let nack: Nack = body::parse_or_default(&headers, request, api.limits().body_bytes_max).await?;
    let error = nack.error.unwrap_or_else(|| "nacked".to_owned());
    api.broker()
        .nack(
            &group,
            &lease,
            nack.delay_ms.map(Duration::from_millis),
            &error,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reject {
    reason: Option<String>,
}

/// `POST /v1/queues/{group}/leases/{lease}/reject`: dead-letters the event now.
pub(crate) async fn reject(
    State(api): State<Api>,
    PathJson((group, lease)): PathJson<(String, String)>,
    headers: HeaderMap,
    request: Body,
) -> Result<StatusCode, ApiError> {
    let reject: Reject =
        body::parse_or_default(&headers, request, api.limits().body_bytes_max).await?;
    let reason = reject.reason.unwrap_or_else(|| "rejected".to_owned());
    api.broker().reject(&group, &lease, &reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

fn dead_letter_json(d: &tidings_broker::DeadLetter) -> Result<Value, ApiError> {
    let mut json = entry_json(&d.entry)?;
    json["source_partition"] = d.source_partition.0.into();
    json["source_offset"] = d.source_offset.0.into();
    json["attempts"] = d.attempts.into();
    json["error"] = d.error.clone().into();
    Ok(json)
}

/// `GET /v1/queues/{group}/dead-letters`: the dead letters not yet redriven or
/// purged, from `from` (an offset in the dead-letter topic) on.
pub(crate) async fn dead_letters(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
    QueryJson(query): QueryJson<DeadLetterQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(100)
        .clamp(1, api.limits().read_events_max);
    let letters = api
        .broker()
        .dead_letters(
            &group,
            Offset(query.from.unwrap_or(0)),
            DEAD_LETTER_READ_BYTES,
        )
        .await?;
    let out = letters
        .iter()
        .take(limit)
        .map(dead_letter_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(serde_json::json!({ "dead_letters": out })))
}

/// `GET /v1/queues/{group}/dead-letters/{offset}`: one dead letter.
pub(crate) async fn dead_letter(
    State(api): State<Api>,
    PathJson((group, offset)): PathJson<(String, u64)>,
) -> Result<Json<Value>, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_dead_letter",
            format!("group {group} has no dead letter at offset {offset}"),
        )
    };
    let letters = match api
        .broker()
        .dead_letters(&group, Offset(offset), DEAD_LETTER_READ_BYTES)
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Redrive {
    to: Option<String>,
    max: Option<usize>,
}

/// `POST /v1/queues/{group}/dead-letters/redrive`: publishes dead letters again,
/// to their source topic or to `to`, and marks them handled.
pub(crate) async fn redrive(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Value>, ApiError> {
    let redrive: Redrive =
        body::parse_or_default(&headers, request, api.limits().body_bytes_max).await?;
    let max = redrive.max.unwrap_or(usize::MAX);
    if max == 0 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "max=0 would redrive nothing; leave it out to redrive everything",
        ));
    }
    let moved = api
        .broker()
        .redrive_dead_letters(&group, redrive.to.as_deref(), max)
        .await?;
    tracing::info!(%group, redriven = moved, "dead letters redriven");
    Ok(Json(serde_json::json!({ "redriven": moved })))
}

/// `DELETE /v1/queues/{group}/dead-letters`: drops every dead letter.
pub(crate) async fn purge(
    State(api): State<Api>,
    PathJson(group): PathJson<String>,
) -> Result<Json<Value>, ApiError> {
    let purged = api.broker().purge_dead_letters(&group).await?;
    tracing::info!(%group, purged, "dead letters purged");
    Ok(Json(serde_json::json!({ "purged": purged })))
}
