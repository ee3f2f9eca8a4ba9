//! Reading a topic without a group: stored records as entries (a CloudEvent, or
//! the raw record a plain Kafka client wrote), whole batches for Kafka fetches,
//! offsets and start positions, and waiting for new events.

use std::time::Duration;

use tidings_log::{Batches, Record, StoredRecord};
use tidings_types::{CloudEvent, KafkaMessage, Offset, PartitionId, TimestampMs};

use crate::{Broker, ReadError, StartPosition};

/// What a stored record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A CloudEvent (binary or structured mode).
    Event(CloudEvent),
    /// A record without CloudEvents headers, as a plain Kafka client wrote it.
    Raw(Record),
}

/// One stored record, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its partition.
    pub partition: PartitionId,
    /// Its offset.
    pub offset: Offset,
    /// When the broker appended it.
    pub timestamp: TimestampMs,
    /// Its content.
    pub payload: Payload,
}

impl Entry {
    /// The trace context the event carries (its `traceparent`), or the
    /// record (a Kafka client's `traceparent` header).
    pub fn trace_context(&self) -> Option<tidings_types::TraceParent> {
        match &self.payload {
            Payload::Event(event) => event
                .traceparent()
                .and_then(tidings_types::TraceParent::parse),
            Payload::Raw(record) => crate::append::record_trace_context(record),
        }
    }
}

/// A stored record as an entry: a CloudEvent when its headers make one, else
/// the raw record (written by a plain Kafka client).
pub(crate) fn entry_of(partition: PartitionId, r: &StoredRecord) -> Entry {
    let message = KafkaMessage {
        key: r.record.key.clone(),
        value: r.record.value.clone(),
        headers: r
            .record
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone().unwrap_or_default()))
            .collect(),
    };
    let payload = match CloudEvent::from_kafka(&message) {
        Ok(event) => Payload::Event(event),
        Err(_) => Payload::Raw(r.record.clone()),
    };
    Entry {
        partition,
        offset: r.offset,
        timestamp: r.record.timestamp,
        payload,
    }
}

impl Broker {
    /// Reads whole stored batches of one partition from `from` on, up to about
    /// `max_bytes` (at least one batch), byte for byte: what a Kafka fetch serves.
    pub fn read_batches(
        &self,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Batches, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        Ok(t.partition(partition)?.read(from, max_bytes)?)
    }

    /// The first record with a partition's largest timestamp, and that
    /// timestamp; `None` for an empty partition.
    pub fn offset_of_max_timestamp(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Option<(Offset, TimestampMs)>, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        Ok(t.partition(partition)?.offset_of_max_timestamp()?)
    }

    /// A partition's log-start offset and high-watermark.
    pub fn offsets(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<(Offset, Offset), ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        let p = t.partition(partition)?;
        Ok((p.log_start_offset(), p.high_watermark()))
    }

    /// Reads the entries of one partition from `from` on, up to about `max_bytes`
    /// (at least one batch), without a consumer group. Records written by plain
    /// Kafka clients, without CloudEvents headers, come back raw.
    pub fn read(
        &self,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        let p = t.partition(partition)?;
        let records = p.read_records(from, max_bytes)?;
        Ok(records.iter().map(|r| entry_of(partition, r)).collect())
    }

    /// The offset a reader starting at `start` in one partition reads first: the
    /// log start, the high-watermark, an offset clamped into what is stored, or
    /// the first event appended at or after a time (the high-watermark when there
    /// is none).
    pub fn position(
        &self,
        topic: &str,
        partition: PartitionId,
        start: StartPosition,
    ) -> Result<Offset, ReadError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
        let p = t.partition(partition)?;
        let (low, high) = (p.log_start_offset(), p.high_watermark());
        Ok(match start {
            StartPosition::Earliest => low,
            StartPosition::Latest => high,
            StartPosition::Offset(o) => o.clamp(low, high),
            StartPosition::Timestamp(ts) => p.offset_for_timestamp(ts)?.unwrap_or(high),
        })
    }

    /// Waits up to `wait` until any of `positions` (a partition and the offset
    /// a reader reads next) has an event to read, for readers that follow a
    /// topic without a group. Returns at once when one already has.
    pub async fn wait_for_events(
        &self,
        topic: &str,
        positions: &[(PartitionId, Offset)],
        wait: Duration,
    ) -> Result<(), ReadError> {
        let positions: Vec<(&str, PartitionId, Offset)> =
            positions.iter().map(|&(p, at)| (topic, p, at)).collect();
        self.wait_for_events_in(&positions, wait).await
    }

    /// [`wait_for_events`](Self::wait_for_events) over partitions of several
    /// topics: each position names its topic.
    pub async fn wait_for_events_in(
        &self,
        positions: &[(&str, PartitionId, Offset)],
        wait: Duration,
    ) -> Result<(), ReadError> {
        let mut watchers = Vec::with_capacity(positions.len());
        for &(topic, p, at) in positions {
            let t = self
                .topic(topic)
                .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
            let part = t.partition(p)?;
            // Subscribed before the check, so an append right after it still wakes us.
            watchers.push(part.watch_high_watermark());
            if part.high_watermark() > at {
                return Ok(());
            }
        }
        wait_for_any(watchers, tokio::time::Instant::now() + wait).await;
        Ok(())
    }
}

/// Waits until any high-watermark moves past what its watcher has seen, or the
/// deadline passes. Watchers taken before a read report an append that lands
/// between the read and this wait, so no wake-up is lost.
pub(crate) async fn wait_for_any(
    watchers: Vec<tokio::sync::watch::Receiver<Offset>>,
    deadline: tokio::time::Instant,
) {
    if watchers.is_empty() {
        tokio::time::sleep_until(deadline).await;
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for mut w in watchers {
        set.spawn(async move {
            let _ = w.changed().await;
        });
    }
    let _ = tokio::time::timeout_at(deadline, set.join_next()).await;
    set.abort_all();
}
