//! Produce: the producer's batches, appended as sent.

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_types::PartitionId;

use crate::errors::Failure;
use crate::Shared;

/// Appends every partition's batches, all partitions at once, and answers once
/// each append is durable under its topic's fsync policy (for `acks` 1 and all
/// alike: this node is every partition's only replica). With `acks` 0 the
/// caller sends no answer, but the appends still finish before the next
/// request on the connection is read.
pub(crate) async fn produce(
    shared: &Shared,
    request: ProduceRequest,
    version: i16,
) -> ProduceResponse {
    let mut appends = tokio::task::JoinSet::new();
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
            let pending = Failure::new(
                ResponseError::UnknownServerError,
                "the append did not finish",
            );
            fail(&mut partitions[p], pending, version);
            let broker = std::sync::Arc::clone(&shared.broker);
            let name = name.clone();
            appends.spawn(async move {
                let partition = PartitionId(index);
                let appended = broker
                    .append_batches(&name, partition, BytesMut::from(&records[..]))
                    .await;
                let log_start = broker.offsets(&name, partition).map(|(s, _)| s.0).ok();
                (t, p, appended, log_start)
            });
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    while let Some(joined) = appends.join_next().await {
        let Ok((t, p, appended, log_start)) = joined else {
            // A panicked append task: its partition keeps its "did not finish"
            // answer, and the client retries it.
            continue;
        };
        let out = &mut topics[t].partition_responses[p];
        match appended {
            Ok(a) => {
                out.base_offset = i64::try_from(a.base_offset.0).unwrap_or(i64::MAX);
                out.log_append_time_ms = -1;
                if version >= 5 {
                    out.log_start_offset = log_start.map_or(-1, |s| i64::try_from(s).unwrap_or(0));
                }
                out.error_code = 0;
                out.error_message = None;
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

/// Marks a partition's answer failed; the message travels from version 8 on.
fn fail(out: &mut PartitionProduceResponse, f: Failure, version: i16) {
    out.error_code = f.code.code();
    out.base_offset = -1;
    if version >= 8 {
        out.error_message = Some(StrBytes::from_string(f.message));
    }
}
