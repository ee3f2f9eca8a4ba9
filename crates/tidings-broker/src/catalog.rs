//! What the topics hold, by event type: the raw material of the event
//! catalog. A scan follows every partition as a reader does — never on the
//! append path — and counts each record under its CloudEvent `type`
//! (`ce_type` header) with its first and last append time, its sources and
//! the `dataschema`s it named; records that are not CloudEvents are counted
//! together. Each call scans at most a budget of bytes, so the server runs it
//! in small steps and a catalog request catches up before answering.
//!
//! The counts live in memory. After a restart the scan starts again from each
//! partition's log start, so they always describe what is stored (retention
//! included: what was deleted before the scan reached it is not counted).
//! A topic deleted is forgotten; one recreated under the same name starts over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use tidings_types::{Offset, PartitionId, TopicName};

use crate::Broker;

/// Sources kept per type; more are counted in [`TypeSeen::more_sources`].
pub const SOURCES_PER_TYPE_MAX: usize = 16;
/// `dataschema` values kept per type.
pub const DATASCHEMAS_PER_TYPE_MAX: usize = 8;
/// Types kept per topic; records of further types count under
/// [`TopicSeen::other_types`].
pub const TYPES_PER_TOPIC_MAX: usize = 1000;
/// Bytes read per partition per step of a scan.
const READ_BYTES: usize = 1024 * 1024;

/// One event type as a topic holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeSeen {
    /// The CloudEvent type; `None` for records that are not CloudEvents.
    pub ty: Option<String>,
    /// Records of the type.
    pub count: u64,
    /// Append time of the first, in ms since the epoch.
    pub first_ms: i64,
    /// Append time of the last.
    pub last_ms: i64,
    /// Their `source`s, at most [`SOURCES_PER_TYPE_MAX`].
    pub sources: BTreeSet<String>,
    /// Whether more sources were seen than kept.
    pub more_sources: bool,
    /// The `dataschema`s they named, at most [`DATASCHEMAS_PER_TYPE_MAX`].
    pub dataschemas: BTreeSet<String>,
}

/// What one topic holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSeen {
    /// The topic.
    pub topic: TopicName,
    /// Each type, by name (records that are not CloudEvents first).
    pub types: Vec<TypeSeen>,
    /// Records of types past [`TYPES_PER_TOPIC_MAX`].
    pub other_types: u64,
    /// Records stored but not scanned yet.
    pub unscanned: u64,
}

#[derive(Default)]
struct TopicState {
    /// Which topic of the name this counts (a topic deleted and made again
    /// is another).
    serial: u64,
    /// The next offset to scan, per partition.
    next: Vec<Offset>,
    types: BTreeMap<Option<String>, TypeSeen>,
    other_types: u64,
}

/// The broker's scan state.
#[derive(Default)]
pub(crate) struct Catalog {
    topics: Mutex<HashMap<TopicName, TopicState>>,
}

fn header<'a>(r: &'a tidings_log::Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl TopicState {
    fn count(&mut self, r: &tidings_log::Record) {
        let ty = header(r, "ce_type").map(str::to_owned);
        let at = r.timestamp.0;
        if !self.types.contains_key(&ty) && self.types.len() >= TYPES_PER_TOPIC_MAX {
            self.other_types += 1;
            return;
        }
        let seen = self.types.entry(ty.clone()).or_insert_with(|| TypeSeen {
            ty,
            first_ms: at,
            last_ms: at,
            ..TypeSeen::default()
        });
        seen.count += 1;
        seen.first_ms = seen.first_ms.min(at);
        seen.last_ms = seen.last_ms.max(at);
        if let Some(source) = header(r, "ce_source") {
            if !seen.sources.contains(source) {
                if seen.sources.len() < SOURCES_PER_TYPE_MAX {
                    seen.sources.insert(source.to_owned());
                } else {
                    seen.more_sources = true;
                }
            }
        }
        if let Some(schema) = header(r, "ce_dataschema") {
            if seen.dataschemas.len() < DATASCHEMAS_PER_TYPE_MAX {
                seen.dataschemas.insert(schema.to_owned());
            }
        }
    }
}

impl Broker {
    /// Every topic as it is now, outside the topics lock.
    fn topics_now(&self) -> Vec<std::sync::Arc<crate::topics::BrokerTopic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    /// Scans what was appended since the last scan, reading at most about
    /// `budget_bytes`; whether every partition is scanned to its end.
    /// Blocks on the disk: call it off the async workers.
    pub fn scan_catalog(&self, budget_bytes: usize) -> bool {
        let topics = self.topics_now();
        let mut state = self.catalog.topics.lock().expect("catalog lock");
        state.retain(|name, _| topics.iter().any(|t| &t.name == name));
        let mut spent = 0usize;
        let mut done = true;
        for t in &topics {
            let s = state.entry(t.name.clone()).or_default();
            if s.serial != t.serial {
                *s = TopicState {
                    serial: t.serial,
                    ..TopicState::default()
                };
            }
            for p in 0..t.partitions() {
                let Ok(partition) = t.partition(PartitionId(p)) else {
                    continue;
                };
                let at = p as usize;
                if s.next.len() <= at {
                    s.next.resize(at + 1, Offset(0));
                }
                let end = partition.high_watermark();
                s.next[at] = s.next[at].max(partition.log_start_offset());
                while s.next[at] < end {
                    if spent >= budget_bytes {
                        done = false;
                        break;
                    }
                    let Ok(records) = partition.read_records(s.next[at], READ_BYTES) else {
                        // Retention removed the segment under the scan, or a
                        // read failed: take it up again on the next call.
                        done = false;
                        break;
                    };
                    let Some(last) = records.last().map(|r| r.offset) else {
                        break;
                    };
                    for r in &records {
                        spent += r.record.payload_bytes();
                        s.count(&r.record);
                    }
                    s.next[at] = last.next();
                }
            }
        }
        done
    }

    /// What each topic holds by type, as far as the scan has gone.
    pub fn catalog(&self) -> Vec<TopicSeen> {
        let topics = self.topics_now();
        let state = self.catalog.topics.lock().expect("catalog lock");
        topics
            .iter()
            .map(|t| {
                let s = state.get(&t.name);
                let unscanned = (0..t.partitions())
                    .filter_map(|p| t.partition(PartitionId(p)).ok())
                    .map(|partition| {
                        let next = s
                            .and_then(|s| s.next.get(partition.id().0 as usize).copied())
                            .unwrap_or(Offset(0))
                            .max(partition.log_start_offset());
                        partition.high_watermark().0.saturating_sub(next.0)
                    })
                    .sum();
                TopicSeen {
                    topic: t.name.clone(),
                    types: s
                        .map(|s| s.types.values().cloned().collect())
                        .unwrap_or_default(),
                    other_types: s.map_or(0, |s| s.other_types),
                    unscanned,
                }
            })
            .collect()
    }
}
