//! The dead-letter topic of a queue group (`<topic>.<group>.dlq`, one
//! partition): appending a failed event with headers that say where it came
//! from and why it failed, listing dead letters, redriving them and purging
//! them.
//!
//! A redrive delivers dead letters again to the group that dead-lettered them
//! and to no other consumer of its topic, as RabbitMQ, SQS and BullMQ do: they
//! are appended, without their dead-letter headers, to the group's retry topic
//! (`<topic>.<group>.retry`, one partition, created by the first redrive),
//! which the group reads as its redrive lane. Each carries the partition and
//! offset it first had ([`ORIGIN_PARTITION`], [`ORIGIN_OFFSET`]), so its
//! deliveries and a second dead-lettering name the event's place in the topic.
//! A redrive to a topic (`RedriveTarget::Topic`) publishes them there instead,
//! for every consumer of that topic.
//!
//! A dead letter is the original record, headers and all, plus the
//! `ce_dlq*` headers below. As CloudEvents Kafka-binding headers they read back
//! as the extensions `dlqtopic`, `dlqpartition`, ... of the event.

use bytes::Bytes;
use tidings_log::{Header, Record};
use tidings_types::{Offset, PartitionId};
use tracing::Instrument as _;

use std::sync::Arc;

use tidings_log::{FsyncPolicy, Partition};
use tidings_types::TopicName;

use super::state::{Pending, LANE};
use super::{DeadLetter, QueueError, QueueGroup, DLQ_HANDLED_MAX};
use crate::topics::BrokerTopic;
use crate::{Broker, Entry, Payload, ReadError, StartPosition, TopicSpec};

/// The header of a redriven record naming the partition the event first had.
pub const ORIGIN_PARTITION: &str = "tidings_origin_partition";
/// The header of a redriven record naming the offset the event first had.
pub const ORIGIN_OFFSET: &str = "tidings_origin_offset";

/// Where a redrive sends dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedriveTarget {
    /// Delivered again to the group that dead-lettered them, and to no other
    /// consumer.
    Group,
    /// Published to this topic, for every consumer of it (the topic they came
    /// from included, when named).
    Topic(String),
}

/// A record of one of the group's slots, with the place the event first had
/// in the group's topic.
pub(super) struct SlotRecord {
    pub(super) record: Record,
    pub(super) partition: PartitionId,
    pub(super) offset: Offset,
}

/// The name of the retry topic of group `group` on `topic`.
pub(super) fn retry_topic_of(
    topic: &TopicName,
    group: &crate::GroupName,
) -> Result<TopicName, tidings_types::TopicNameError> {
    TopicName::new(&format!("{topic}.{group}.retry"))
}

/// The name of a group's retry topic (worked out once, with the group).
pub(super) fn retry_topic_name(g: &QueueGroup) -> Result<TopicName, QueueError> {
    g.retry
        .clone()
        .map_err(|e| derived_name_error(&g.topic, &g.name, "retry", &e))
}

/// The error for a group whose `what` topic (`dlq` or `retry`) has no
/// valid name.
pub(super) fn derived_name_error(
    topic: &TopicName,
    group: &crate::GroupName,
    what: &str,
    e: &tidings_types::TopicNameError,
) -> QueueError {
    QueueError::DerivedTopicName {
        group: group.to_string(),
        topic: topic.to_string(),
        reason: format!(
            "its {what} topic {topic}.{group}.{what} is no topic name ({e}); \
             the topic's and the group's names are too long together"
        ),
    }
}

/// `record` as a lane record's content: its origin headers taken off and read.
fn take_origin(mut record: Record) -> Result<SlotRecord, QueueError> {
    let mut place = |name: &str| -> Option<u64> {
        let at = record.headers.iter().position(|h| h.key == name)?;
        let header = record.headers.remove(at);
        std::str::from_utf8(header.value.as_deref()?)
            .ok()?
            .parse()
            .ok()
    };
    let (partition, offset) = (place(ORIGIN_PARTITION), place(ORIGIN_OFFSET));
    match (partition.and_then(|p| u32::try_from(p).ok()), offset) {
        (Some(partition), Some(offset)) => Ok(SlotRecord {
            record,
            partition: PartitionId(partition),
            offset: Offset(offset),
        }),
        _ => Err(QueueError::DeadLetter(
            "a record of the retry topic has no origin headers".into(),
        )),
    }
}

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
    /// The log partition behind slot `p` of the group: a partition of its
    /// topic, or for the lane the retry topic's (none before a first redrive).
    pub(super) fn slot_partition(
        &self,
        g: &QueueGroup,
        p: usize,
    ) -> Result<Option<Arc<Partition>>, QueueError> {
        let (topic, partition) = if p == LANE {
            (retry_topic_name(g)?, PartitionId(0))
        } else {
            let id = PartitionId(u32::try_from(p).expect("partitions are bounded"));
            (g.topic.clone(), id)
        };
        match self.topic(topic.as_str()) {
            Some(t) => Ok(Some(t.partition(partition).map_err(ReadError::from)?)),
            None if p == LANE => Ok(None),
            None => Err(QueueError::UnknownTopic(topic.to_string())),
        }
    }

    /// The record at `offset` of slot `p`, with the place the event first had.
    pub(super) fn slot_record(
        &self,
        g: &QueueGroup,
        p: usize,
        offset: u64,
    ) -> Result<SlotRecord, QueueError> {
        let gone = || QueueError::DeadLetter(format!("offset {offset} of slot {p} is gone"));
        let partition = self.slot_partition(g, p)?.ok_or_else(gone)?;
        let stored = partition
            .read_records(Offset(offset), 1)
            .map_err(ReadError::from)?
            .into_iter()
            .find(|r| r.offset.0 == offset)
            .ok_or_else(gone)?;
        if p == LANE {
            return take_origin(stored.record);
        }
        Ok(SlotRecord {
            record: stored.record,
            partition: PartitionId(u32::try_from(p).expect("partitions are bounded")),
            offset: Offset(offset),
        })
    }

    /// Appends slot `p`'s event at `offset`, which failed as `pending` says, to
    /// the group's dead-letter topic, naming the place it first had. The
    /// caller resolves it after.
    pub(super) async fn dead_letter(
        &self,
        g: &QueueGroup,
        p: usize,
        offset: u64,
        pending: &Pending,
    ) -> Result<(), QueueError> {
        let SlotRecord {
            mut record,
            partition,
            offset,
        } = self.slot_record(g, p, offset)?;
        for (attribute, value) in [
            (TOPIC, g.topic.to_string()),
            (PARTITION, partition.0.to_string()),
            (OFFSET, offset.0.to_string()),
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
        let span = tidings_trace::dead_letter_span(
            g.topic.as_str(),
            g.name.as_str(),
            g.dead_letters.as_str(),
            crate::append::record_trace_context(&record).as_ref(),
        );
        self.append_records(&dlq, vec![record])
            .instrument(span)
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
        let (dlq, floor, handled) = {
            let g = self.queues.lock(group).await?;
            (
                g.dead_letters.clone(),
                g.state.dlq_floor,
                g.state.dlq_handled.clone(),
            )
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
        Ok(entries
            .into_iter()
            .filter(|e| !handled.contains(&e.offset.0))
            .filter_map(dead_letter_of)
            .collect())
    }

    /// Sends up to `max` of the group's dead letters again, without their
    /// dead-letter headers and bypassing dedup (a redrive is meant to
    /// repeat): to the group alone ([`RedriveTarget::Group`], through its
    /// retry topic), or published to a topic. Each chunk is marked handled
    /// once it is durable where it went. Returns how many.
    pub async fn redrive_dead_letters(
        &self,
        group: &str,
        target: RedriveTarget,
        max: usize,
    ) -> Result<usize, QueueError> {
        self.redrive_dead_letters_with(group, target, max, None)
            .await
    }

    /// [`redrive_dead_letters`](Self::redrive_dead_letters), of only the dead
    /// letters whose error is `error` when one is given: those are marked
    /// handled one by one, the older ones with other errors staying where
    /// they are. At most [`DLQ_HANDLED_MAX`] may be handled so above the
    /// oldest unhandled one; a redrive stops there.
    pub async fn redrive_dead_letters_with(
        &self,
        group: &str,
        target: RedriveTarget,
        max: usize,
        error: Option<&str>,
    ) -> Result<usize, QueueError> {
        let mut g = self.queues.lock(group).await?;
        let t = match &target {
            RedriveTarget::Topic(topic) => self
                .topic(topic)
                .ok_or_else(|| QueueError::UnknownTopic(topic.clone()))?,
            RedriveTarget::Group => self.retry_topic(&g)?,
        };
        let dlq = self.topic(g.dead_letters.as_str()).ok_or_else(|| {
            QueueError::DeadLetter(format!("dead-letter topic {} is gone", g.dead_letters))
        })?;
        let dlq = dlq.partition(PartitionId(0)).map_err(ReadError::from)?;
        let span = tidings_trace::redrive_span(g.dead_letters.as_str(), g.name.as_str());
        let mut contexts = Vec::new();
        let mut moved = 0;
        let floor = g.state.dlq_floor.max(dlq.log_start_offset().0);
        // Where the scan is; the state's floor moves only past what was handled.
        let mut at = floor;
        while moved < max && at < dlq.high_watermark().0 {
            let records = dlq
                .read_records(Offset(at), 1024 * 1024)
                .map_err(ReadError::from)?;
            let mut chunk = Vec::new();
            let mut handled = Vec::new();
            let mut last = at;
            for r in records.into_iter().filter(|r| r.offset.0 >= at) {
                if moved == max {
                    break;
                }
                last = r.offset.0 + 1;
                if g.state.dlq_is_handled(r.offset.0) {
                    continue;
                }
                if let Some(wanted) = error {
                    if dead_letter_error(&r.record).as_deref() != Some(wanted) {
                        continue;
                    }
                    if g.state.dlq_handled.len() + handled.len() >= DLQ_HANDLED_MAX
                        && r.offset.0 != g.state.dlq_floor
                    {
                        // No room to remember more out of order.
                        last = r.offset.0;
                        at = dlq.high_watermark().0;
                        break;
                    }
                }
                let mut record = r.record;
                let origin = dead_letter_origin(&record);
                record
                    .headers
                    .retain(|h| !h.key.starts_with(DLQ_HEADER_PREFIX));
                if target == RedriveTarget::Group {
                    let (partition, offset) = origin.ok_or_else(|| {
                        QueueError::DeadLetter(format!(
                            "dead letter {} does not say where it came from",
                            r.offset
                        ))
                    })?;
                    for (name, value) in [(ORIGIN_PARTITION, partition), (ORIGIN_OFFSET, offset)] {
                        record.headers.push(Header {
                            key: name.to_owned(),
                            value: Some(Bytes::from(value.to_string())),
                        });
                    }
                }
                contexts.push(crate::append::record_trace_context(&record));
                chunk.push(record);
                handled.push(r.offset.0);
                moved += 1;
            }
            if !chunk.is_empty() {
                self.append_records(&t, chunk)
                    .instrument(span.clone())
                    .await
                    .all()
                    .map_err(|e| QueueError::DeadLetter(e.to_string()))?;
            }
            // Durable where they went; now marked handled. A crash between
            // the two sends them again at the next redrive (at least once).
            if error.is_none() {
                g.state.set_dlq_floor(last);
            } else if !handled.is_empty() {
                g.state.dlq_handle(&handled);
            }
            if g.state.changed() {
                self.stage(&mut g).await?.durable().await?;
            }
            if last <= at {
                break;
            }
            at = last;
        }
        tidings_trace::link_events(&span, contexts);
        if target == RedriveTarget::Group {
            g.state.counters.redriven += moved as u64;
        }
        Ok(moved)
    }

    /// The group's retry topic, created on first use like its dead-letter
    /// topic: one partition, synced on every append, no dedup.
    fn retry_topic(&self, g: &QueueGroup) -> Result<Arc<BrokerTopic>, QueueError> {
        let name = retry_topic_name(g)?;
        if let Some(t) = self.topic(name.as_str()) {
            return Ok(t);
        }
        let source = self
            .topic(g.topic.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(g.topic.to_string()))?;
        let mut spec = TopicSpec {
            dedup_window: None,
            ..source.spec()
        };
        spec.log.partitions = 1;
        spec.log.fsync = FsyncPolicy::Always;
        self.create_topic(name.as_str(), spec)
            .map_err(QueueError::DeadLetterTopic)?;
        self.topic(name.as_str())
            .ok_or_else(|| QueueError::UnknownTopic(name.to_string()))
    }

    /// Marks every dead letter of the group handled, without publishing them.
    /// Returns how many.
    pub async fn purge_dead_letters(&self, group: &str) -> Result<u64, QueueError> {
        let mut g = self.queues.lock(group).await?;
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

/// The error a dead letter's headers name.
fn dead_letter_error(record: &Record) -> Option<String> {
    let header = ERROR.header();
    let h = record.headers.iter().find(|h| h.key == header)?;
    Some(String::from_utf8_lossy(h.value.as_deref()?).into_owned())
}

/// The partition and offset a dead letter's headers name.
fn dead_letter_origin(record: &Record) -> Option<(u64, u64)> {
    let value = |attribute: &Attribute| -> Option<u64> {
        let header = attribute.header();
        let h = record.headers.iter().find(|h| h.key == header)?;
        std::str::from_utf8(h.value.as_deref()?).ok()?.parse().ok()
    };
    Some((value(&PARTITION)?, value(&OFFSET)?))
}

impl DeadLetter {
    /// The dead letter an entry of a dead-letter topic is, handled or not;
    /// `None` when it carries no dead-letter attributes.
    pub fn from_entry(entry: Entry) -> Option<DeadLetter> {
        dead_letter_of(entry)
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
