//! Fetch (long-poll, whole batches) and ListOffsets.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::ResponseError;
use tidings_broker::StartPosition;
use tidings_types::{Offset, PartitionId, TimestampMs};

use crate::errors::Failure;
use crate::Shared;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

fn to_i64(o: Offset) -> i64 {
    i64::try_from(o.0).unwrap_or(i64::MAX)
}

/// One partition the fetch asks for, and what reading it gave.
struct Wanted {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// Reads every partition once; returns the answer and how many record bytes it
/// holds, or the first failure that ends the wait at once.
fn read_all(
    shared: &Shared,
    version: i16,
    names: &[String],
    wanted: &[Wanted],
    response_max: usize,
) -> (Vec<PartitionData>, usize, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut failed = false;
    for w in wanted {
        let mut data = PartitionData::default()
            .with_partition_index(w.partition)
            .with_records(Some(Bytes::new()));
        let result = (|| -> Result<(), Failure> {
            let topic = &names[w.topic];
            let partition = u32::try_from(w.partition).map_err(|_| {
                Failure::new(ResponseError::UnknownTopicOrPartition, "negative partition")
            })?;
            let partition = PartitionId(partition);
            let (log_start, high) = shared.broker.offsets(topic, partition)?;
            data.high_watermark = to_i64(high);
            data.last_stable_offset = to_i64(high);
            if version >= 5 {
                data.log_start_offset = to_i64(log_start);
            }
            let from = u64::try_from(w.offset)
                .ok()
                .filter(|o| (log_start.0..=high.0).contains(o))
                .ok_or_else(|| {
                    Failure::new(
                        ResponseError::OffsetOutOfRange,
                        format!(
                            "offset {} is outside {}..={}",
                            w.offset, log_start.0, high.0
                        ),
                    )
                })?;
            // Whole batches; the first partition with data gets at least one
            // batch even past the limits, so a consumer always makes progress.
            let budget = w.max_bytes.min(response_max.saturating_sub(total));
            if from == high.0 || (budget == 0 && total > 0) {
                return Ok(());
            }
            let read = shared
                .broker
                .read_batches(topic, partition, Offset(from), budget.max(1))?;
            total += read.bytes.len();
            data.records = Some(read.bytes);
            Ok(())
        })();
        if let Err(f) = result {
            data.error_code = f.code.code();
            failed = true;
        }
        out.push(data);
    }
    (out, total, failed)
}

pub(crate) async fn fetch(shared: &Shared, request: FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
        .min(shared.config.fetch_wait_max());
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0).max(1);
    let response_max = usize::try_from(request.max_bytes).unwrap_or(0);
    let mut names = Vec::new();
    let mut wanted = Vec::new();
    for topic in &request.topics {
        names.push(topic.topic.0.as_str().to_owned());
        for p in &topic.partitions {
            wanted.push(Wanted {
                topic: names.len() - 1,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    let partitions = loop {
        let (partitions, total, failed) = read_all(shared, version, &names, &wanted, response_max);
        if total >= min_bytes || failed || tokio::time::Instant::now() >= deadline {
            break partitions;
        }
        let positions: Vec<(&str, PartitionId, Offset)> = wanted
            .iter()
            .filter_map(|w| {
                Some((
                    names[w.topic].as_str(),
                    PartitionId(u32::try_from(w.partition).ok()?),
                    Offset(u64::try_from(w.offset).ok()?),
                ))
            })
            .collect();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            // A topic that went away while waiting is reported by the next read.
            _ = shared.broker.wait_for_events_in(&positions, left) => {}
            () = shared.shutdown.cancelled() => {
                let (partitions, _, _) = read_all(shared, version, &names, &wanted, response_max);
                break partitions;
            }
        }
    };
    // Group the partitions back under their topics, in request order.
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .into_iter()
        .map(|t| FetchableTopicResponse::default().with_topic(t.topic))
        .collect();
    for (w, data) in wanted.iter().zip(partitions) {
        topics[w.topic].partitions.push(data);
    }
    FetchResponse::default().with_responses(topics)
}

pub(crate) fn list_offsets(
    shared: &Shared,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_owned();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let mut out = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    if version >= 4 {
                        out.leader_epoch = 0;
                    }
                    match offset_for(shared, &name, p.partition_index, p.timestamp) {
                        Ok((timestamp, offset)) => {
                            out.with_timestamp(timestamp).with_offset(offset)
                        }
                        Err(code) => out
                            .with_error_code(code.code())
                            .with_timestamp(-1)
                            .with_offset(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The (timestamp, offset) ListOffsets answers for one partition.
fn offset_for(
    shared: &Shared,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), ResponseError> {
    let partition =
        PartitionId(u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition)?);
    let (log_start, high) = shared
        .broker
        .offsets(topic, partition)
        .map_err(|e| Failure::from(e).code)?;
    match timestamp {
        LATEST => Ok((-1, to_i64(high))),
        EARLIEST => Ok((-1, to_i64(log_start))),
        MAX_TIMESTAMP => Ok(shared
            .broker
            .offset_of_max_timestamp(topic, partition)
            .map_err(|e| Failure::from(e).code)?
            .map_or((-1, -1), |(offset, ts)| (ts.0, to_i64(offset)))),
        ts if ts >= 0 => {
            let found = shared
                .broker
                .position(topic, partition, StartPosition::Timestamp(TimestampMs(ts)))
                .map_err(|e| Failure::from(e).code)?;
            if found >= high {
                // Nothing at or after that time, as Kafka answers it.
                return Ok((-1, -1));
            }
            let stamp = shared
                .broker
                .read(topic, partition, found, 1)
                .ok()
                .and_then(|entries| entries.into_iter().find(|e| e.offset >= found))
                .map_or(-1, |e| e.timestamp.0);
            Ok((stamp, to_i64(found)))
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}
