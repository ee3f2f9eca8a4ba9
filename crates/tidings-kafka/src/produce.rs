//! Produce: the producer's batches, appended as sent.

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_types::PartitionId;

use tracing::Instrument as _;

use crate::errors::Failure;
use crate::Shared;

/// Queues every partition's batches for appending, in request order, and returns
/// the answer as a future that resolves once each append is durable under its
/// topic's fsync policy (for `acks` 1 and all alike: this node is every
/// partition's only replica). Queuing before the next request is read keeps a
/// connection's produce requests in order per partition while their syncs
/// overlap. With `acks` 0 the caller sends no answer.
pub(crate) async fn produce(
    shared: &Arc<Shared>,
    request: ProduceRequest,
    version: i16,
) -> impl Future<Output = ProduceResponse> + Send + 'static {
    let mut queued = Vec::new();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for (t, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.as_str().to_owned();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (p, data) in topic.partition_data.into_iter().enumerate() {
            partitions.push(PartitionProduceResponse::default().with_index(data.index));
            if request.transactional_id.is_some() {
                let f = Failure::new(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    TRANSACTIONS_UNSUPPORTED,
                );
                fail(&mut partitions[p], f, version);
                continue;
            }
            let Ok(index) = u32::try_from(data.index) else {
                let f = Failure::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no partition {}", data.index),
                );
                fail(&mut partitions[p], f, version);
                continue;
            };
            let Some(records) = data.records.filter(|r| !r.is_empty()) else {
                let f = Failure::new(ResponseError::CorruptMessage, "no record batches");
                fail(&mut partitions[p], f, version);
                continue;
            };
            let partition = PartitionId(index);
            let span = tidings_trace::exporting().then(|| produce_span(&name, index, &records));
            let queue =
                shared
                    .broker
                    .queue_append_batches(&name, partition, BytesMut::from(&records[..]));
            let queued_now = match &span {
                Some(span) => queue.instrument(span.clone()).await,
                None => queue.await,
            };
            match queued_now {
                Ok(appended) => queued.push((t, p, name.clone(), partition, appended, span)),
                Err(e) => {
                    // A refusal of the client's data (a schema check, an
                    // unknown topic): librdkafka shows its producer only the
                    // code, so the reason is logged for whoever runs it.
                    tracing::info!(topic = %name, partition = index, error = %e, "Kafka produce refused");
                    fail(&mut partitions[p], Failure::from(e), version);
                }
            }
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    let broker = Arc::clone(&shared.broker);
    async move {
        for (t, p, name, partition, appended, span) in queued {
            let out = &mut topics[t].partition_responses[p];
            // The span ends when the append is durable.
            let _span = span;
            match appended.await {
                Ok(a) => {
                    out.base_offset = i64::try_from(a.base_offset.0).unwrap_or(i64::MAX);
                    if version >= 5 {
                        out.log_start_offset = broker
                            .offsets(&name, partition)
                            .map_or(-1, |(s, _)| i64::try_from(s.0).unwrap_or(0));
                    }
                }
                Err(e) => {
                    let f = Failure::from(e);
                    tracing::debug!(error = %f.message, "Kafka produce refused");
                    fail(out, f, version);
                }
            }
        }
        ProduceResponse::default().with_responses(topics)
    }
}

/// Links a span to at most this many records' contexts (OpenTelemetry's
/// SDKs keep 128 links a span by default).
const SPAN_LINKS_MAX: usize = 128;

/// The span of one partition's batches of a produce request: `publish
/// {topic}`, continuing the trace of the one record that brings a context
/// (what OpenTelemetry's Kafka instrumentations write in `traceparent`),
/// or linked to each when several do. Made only while spans are exported:
/// it decodes the batches to read their headers.
fn produce_span(topic: &str, partition: u32, batches: &[u8]) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
    );
    let contexts = tidings_broker::Broker::batch_trace_contexts(batches, SPAN_LINKS_MAX);
    use tidings_trace::Value;
    tidings_trace::set_attributes(
        &span,
        &[
            ("messaging.system", Value::Str(tidings_trace::SYSTEM)),
            ("messaging.operation.type", Value::Str("send")),
            ("messaging.operation.name", Value::Str("publish")),
            ("messaging.destination.name", Value::Str(topic)),
            (
                "messaging.destination.partition.id",
                Value::Str(&partition.to_string()),
            ),
            ("network.protocol.name", Value::Str("kafka")),
        ],
    );
    match &contexts[..] {
        [one] => tidings_trace::continue_from(&span, one),
        many => many.iter().for_each(|c| tidings_trace::link_to(&span, c)),
    }
    span
}

/// What a transactional producer is told: Tidings has no transaction
/// coordinator. The code is one every client treats as fatal, so a producer
/// configured with a `transactional.id` stops at once instead of retrying.
pub(crate) const TRANSACTIONS_UNSUPPORTED: &str =
    "transactions are not supported by Tidings; an idempotent producer (the default of Kafka 3+ clients) without transactional.id works";

/// InitProducerId: a new producer id, epoch 0, for an idempotent producer
/// (as Kafka does for a producer without a transactional id, a request to
/// bump an existing id's epoch gets a new id too). A transactional id is
/// refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub(crate) async fn init_producer_id(
    shared: &Arc<Shared>,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = &request.transactional_id {
        tracing::warn!(transactional_id = %id.0.as_str(), "{TRANSACTIONS_UNSUPPORTED}");
        return failed(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let broker = Arc::clone(&shared.broker);
    match tokio::task::spawn_blocking(move || broker.init_producer_id()).await {
        Ok(Ok(id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot hand out a producer id");
            failed(Failure::from(e).code)
        }
        Err(_) => failed(ResponseError::UnknownServerError),
    }
}

/// Marks a partition's answer failed; the message travels from version 8 on.
fn fail(out: &mut PartitionProduceResponse, f: Failure, version: i16) {
    out.error_code = f.code.code();
    out.base_offset = -1;
    if version >= 8 {
        out.error_message = Some(StrBytes::from_string(f.message));
    }
}

/// A Produce request of version 0, 1 or 2: advertised so that librdkafka
/// before 2.11.1 compresses (it checks for v0 before it compresses gzip,
/// snappy and lz4), and refused when used, as Kafka 4.0 does. The codec does
/// not know these versions, so the body is read and the answer written here:
/// every partition asked for is answered UNSUPPORTED_VERSION; nothing is
/// appended. Returns `acks` (0 takes no answer), the response body and how
/// many partitions it refuses.
pub(crate) fn refuse_old_version(
    body: &mut bytes::Bytes,
    version: i16,
) -> Result<(i16, BytesMut, usize), String> {
    use bytes::{Buf, BufMut};
    fn need(body: &bytes::Bytes, n: usize, what: &str) -> Result<(), String> {
        if body.remaining() < n {
            return Err(format!("truncated at {what}"));
        }
        Ok(())
    }
    fn count(body: &mut bytes::Bytes, what: &str) -> Result<usize, String> {
        need(body, 4, what)?;
        let n = body.get_i32();
        // Each element takes at least a byte, so a count past what remains is
        // malformed, checked before anything is reserved for it.
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= body.remaining())
            .ok_or_else(|| format!("{what} count {n} is not possible here"))
    }
    need(body, 6, "acks and timeout")?;
    let acks = body.get_i16();
    let _timeout_ms = body.get_i32();
    let topics = count(body, "topics")?;
    let mut refused = 0;
    let mut out = BytesMut::new();
    out.put_i32(i32::try_from(topics).expect("counted from an i32"));
    for _ in 0..topics {
        need(body, 2, "topic name")?;
        let len = usize::try_from(body.get_i16()).map_err(|_| "a null topic name")?;
        need(body, len, "topic name")?;
        let name = body.split_to(len);
        out.put_i16(i16::try_from(len).expect("read as an i16"));
        out.put_slice(&name);
        let partitions = count(body, "partitions")?;
        out.put_i32(i32::try_from(partitions).expect("counted from an i32"));
        for _ in 0..partitions {
            need(body, 8, "partition")?;
            let index = body.get_i32();
            let records = body.get_i32();
            if records > 0 {
                let records = usize::try_from(records).expect("positive");
                need(body, records, "records")?;
                body.advance(records);
            }
            refused += 1;
            out.put_i32(index);
            out.put_i16(ResponseError::UnsupportedVersion.code());
            out.put_i64(-1); // base offset
            if version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if body.has_remaining() {
        return Err(format!("{} bytes after the last topic", body.remaining()));
    }
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    Ok((acks, out, refused))
}
