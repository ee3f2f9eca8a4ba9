//! Produce: the producer's batches, appended as sent.

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_types::PartitionId;

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
                    "transactions are not supported",
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
            match shared
                .broker
                .queue_append_batches(&name, partition, BytesMut::from(&records[..]))
                .await
            {
                Ok(appended) => queued.push((t, p, name.clone(), partition, appended)),
                Err(e) => fail(&mut partitions[p], Failure::from(e), version),
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
        for (t, p, name, partition, appended) in queued {
            let out = &mut topics[t].partition_responses[p];
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

/// Marks a partition's answer failed; the message travels from version 8 on.
fn fail(out: &mut PartitionProduceResponse, f: Failure, version: i16) {
    out.error_code = f.code.code();
    out.base_offset = -1;
    if version >= 8 {
        out.error_message = Some(StrBytes::from_string(f.message));
    }
}
