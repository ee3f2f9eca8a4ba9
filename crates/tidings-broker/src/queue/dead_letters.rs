//! The dead-letter topic of a queue group (`<topic>.<group>.dlq`, one
//! partition): appending a failed event with headers that say where it came
//! from and why it failed, listing dead letters, redriving them (publishing
//! them again to the topic they came from, or another) and purging them.
//!
//! A dead letter is the original record, headers and all, plus the
//! `ce_dlq*` headers below. As CloudEvents Kafka-binding headers they read back
//! as the extensions `dlqtopic`, `dlqpartition`, ... of the event.

use bytes::Bytes;
use tidings_log::{Header, Record};
use tidings_types::{Offset, PartitionId};

use super::state::Pending;
use super::{DeadLetter, QueueError, QueueGroup};
use crate::{Broker, Entry, Payload, ReadError, StartPosition};

/// The start of every dead-letter header; a redrive strips every header that
/// starts with it.
pub const DLQ_HEADER_PREFIX: &str = "ce_dlq";

/// One dead-letter attribute: its extension name, its header `ce_<name>`.
struct Attribute(&'static str);

impl Attribute {
    fn header(&self) -> String {
        format!("ce_{}", self.0)
    }
}

/// The topic the event came from.
const TOPIC: Attribute = Attribute("dlqtopic");
/// Its partition there.
const PARTITION: Attribute = Attribute("dlqpartition");
/// Its offset there.
const OFFSET: Attribute = Attribute("dlqoffset");
/// The attempts made.
const ATTEMPTS: Attribute = Attribute("dlqattempts");
/// The last error.
const ERROR: Attribute = Attribute("dlqerror");
/// When the first attempt failed (ms since the epoch, `i64::MIN` for none).
const FIRST_FAILURE: Attribute = Attribute("dlqfirstfailure");
/// When the last attempt failed.
const LAST_FAILURE: Attribute = Attribute("dlqlastfailure");

const _: () = {
    // Every attribute's header starts with the prefix a redrive strips.
    let prefix = DLQ_HEADER_PREFIX.as_bytes();
    let names = [
        TOPIC.0,
        PARTITION.0,
        OFFSET.0,
        ATTEMPTS.0,
        ERROR.0,
        FIRST_FAILURE.0,
        LAST_FAILURE.0,
    ];
    let mut n = 0;
    while n < names.len() {
        let name = names[n].as_bytes();
        let mut i = 3;
        while i < prefix.len() {
            assert!(name[i - 3] == prefix[i]);
            i += 1;
        }
        n += 1;
    }
};

fn time(t: Option<i64>) -> String {
    t.unwrap_or(i64::MIN).to_string()
}

impl Broker {
    /// Appends partition `p`'s event at `offset`, which failed as `pending`
    /// says, to the group's dead-letter topic. The caller resolves it after.
    pub(super) async fn dead_letter(
        &self,
        g: &QueueGroup,
        p: usize,
        offset: u64,
        pending: &Pending,
    ) -> Result<(), QueueError> {
        let partition = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?
            .partition(PartitionId(u32::try_from(p).expect("bounded")))
            .map_err(ReadError::from)?;
        let stored = partition
            .read_records(Offset(offset), 1)
            .map_err(ReadError::from)?
            .into_iter()
            .find(|r| r.offset.0 == offset)
            .ok_or_else(|| {
                QueueError::DeadLetter(format!("offset {offset} of partition {p} is gone"))
            })?;
        let mut record: Record = stored.record;
        for (attribute, value) in [
            (TOPIC, g.topic.to_string()),
            (PARTITION, p.to_string()),
            (OFFSET, offset.to_string()),
            (ATTEMPTS, pending.attempts.to_string()),
            (ERROR, pending.last_error.clone()),
            (FIRST_FAILURE, time(pending.first_failure)),
            (LAST_FAILURE, time(pending.last_failure)),
        ] {
            record.headers.push(Header {
                key: attribute.header(),
                value: Some(Bytes::from(value)),
            });
        }
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        self.append_records(&dlq, vec![record])
            .await
            .all()
            .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
        Ok(())
    }

    /// The events in the group's dead-letter topic, from `from` on.
    pub async fn dead_letters(
        &self,
        group: &str,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let (dlq, floor) = {
            let g = self.queues.get(group)?;
            let g = g.lock().await;
            (g.dead_letters.clone(), g.state.dlq_floor)
        };
        // Retention may have removed dead letters nobody handled.
        let log_start = self
            .position(dlq.as_str(), PartitionId(0), StartPosition::Earliest)
            .map_err(QueueError::Read)?;
        let from = from.max(Offset(floor)).max(log_start);
        let entries = match self.read(dlq.as_str(), PartitionId(0), from, max_bytes) {
            // Nothing past the end: no dead letters, not an error.
            Err(ReadError::Log(tidings_log::ReadError::OffsetOutOfRange {
                requested,
                high_watermark,
                ..
            })) if requested == high_watermark => Vec::new(),
            other => other?,
        };
        Ok(entries.into_iter().filter_map(dead_letter_of).collect())
    }

    /// Publishes the group's dead letters again — to the topic they came from, or
    /// to `to` — without their dead-letter headers and bypassing dedup (a redrive
    /// is meant to repeat), then marks them handled. Returns how many.
    pub async fn redrive_dead_letters(
        &self,
        group: &str,
        to: Option<&str>,
        max: usize,
    ) -> Result<usize, QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        let target = to.unwrap_or(g.topic.as_str()).to_owned();
        let t = self
            .topic(&target)
            .ok_or_else(|| QueueError::UnknownTopic(target.clone()))?;
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        let dlq = dlq.partition(PartitionId(0)).map_err(ReadError::from)?;
        let mut moved = 0;
        let mut floor = g.state.dlq_floor.max(dlq.log_start_offset().0);
        while moved < max && floor < dlq.high_watermark().0 {
            let records = dlq
                .read_records(Offset(floor), 1024 * 1024)
                .map_err(ReadError::from)?;
            let mut chunk = Vec::new();
            let mut last = floor;
            for r in records
                .into_iter()
                .filter(|r| r.offset.0 >= floor)
                .take(max - moved)
            {
                let mut record = r.record;
                record
                    .headers
                    .retain(|h| !h.key.starts_with(DLQ_HEADER_PREFIX));
                chunk.push(record);
                last = r.offset.0 + 1;
                moved += 1;
            }
            self.append_records(&t, chunk)
                .await
                .all()
                .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
            floor = last;
            // Each chunk is marked handled once its events are durable at the target.
            g.state.set_dlq_floor(floor);
            self.stage(&mut g).await?.durable().await?;
        }
        Ok(moved)
    }

    /// Marks every dead letter of the group handled, without publishing them.
    /// Returns how many.
    pub async fn purge_dead_letters(&self, group: &str) -> Result<u64, QueueError> {
        let g = self.queues.get(group)?;
        let mut g = g.lock().await;
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        let end = dlq
            .partition(PartitionId(0))
            .map_err(ReadError::from)?
            .high_watermark()
            .0;
        let before = g.state.dlq_floor;
        g.state.set_dlq_floor(end.max(before));
        self.stage(&mut g).await?.durable().await?;
        Ok(end.saturating_sub(before))
    }
}

/// A dead letter read back: the event and what its dead-letter attributes say.
fn dead_letter_of(entry: Entry) -> Option<DeadLetter> {
    let value = |attribute: &Attribute| -> Option<String> {
        match &entry.payload {
            Payload::Event(e) => e.extension(attribute.0).map(|v| v.to_canonical_string()),
            Payload::Raw(r) => {
                let header = attribute.header();
                r.headers.iter().find(|h| h.key == header).and_then(|h| {
                    h.value
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            }
        }
    };
    Some(DeadLetter {
        offset: entry.offset,
        source_partition: PartitionId(value(&PARTITION)?.parse().ok()?),
        source_offset: Offset(value(&OFFSET)?.parse().ok()?),
        attempts: value(&ATTEMPTS)?.parse().ok()?,
        error: value(&ERROR).unwrap_or_default(),
        entry,
    })
}
