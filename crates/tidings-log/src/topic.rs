//! Topics: a name, a configuration kept in `topic.meta`, and N partitions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tidings_types::{PartitionId, TopicName};

use crate::config::{FsyncPolicy, TopicConfig};
use crate::error::{RecoveryError, TopicError};
use crate::format::{self, Fields, FormatError};
use crate::partition::Partition;

pub(crate) const TOPIC_META_FILE: &str = "topic.meta";
pub(crate) const TOPIC_META_MAGIC: [u8; 4] = *b"TDTP";
pub(crate) const TOPIC_META_BODY_BYTES: usize = 56;

type Slot = Result<Arc<Partition>, Arc<RecoveryError>>;

/// A topic and its partitions. Partitions that failed recovery stay listed as
/// refused, so the others keep serving. [`Log::alter_topic`](crate::Log::alter_topic)
/// changes the configuration and adds partitions in place.
#[derive(Debug)]
pub struct Topic {
    pub(crate) name: TopicName,
    pub(crate) config: RwLock<TopicConfig>,
    pub(crate) dir: PathBuf,
    pub(crate) partitions: RwLock<Vec<Slot>>,
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &TopicName {
        &self.name
    }

    /// The topic's configuration.
    pub fn config(&self) -> TopicConfig {
        self.config.read().expect("config lock").clone()
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.config.read().expect("config lock").partitions
    }

    /// One partition, or why it cannot be had.
    pub fn partition(&self, id: PartitionId) -> Result<Arc<Partition>, TopicError> {
        let partitions = self.partitions.read().expect("partitions lock");
        let slot = usize::try_from(id.0).ok().and_then(|i| partitions.get(i));
        match slot {
            None => Err(TopicError::NoSuchPartition {
                topic: self.name.clone(),
                partition: id,
                count: u32::try_from(partitions.len()).expect("bounded by PARTITIONS_MAX"),
            }),
            Some(Ok(p)) => Ok(Arc::clone(p)),
            Some(Err(error)) => Err(TopicError::Refused {
                topic: self.name.clone(),
                partition: id,
                error: Arc::clone(error),
            }),
        }
    }

    /// Partitions that recovery refused, with the reason.
    pub fn refused(&self) -> Vec<(PartitionId, Arc<RecoveryError>)> {
        self.partitions
            .read()
            .expect("partitions lock")
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let id = PartitionId(u32::try_from(i).expect("bounded by PARTITIONS_MAX"));
                p.as_ref().err().map(|e| (id, Arc::clone(e)))
            })
            .collect()
    }

    pub(crate) fn partition_dir(dir: &Path, id: PartitionId) -> PathBuf {
        dir.join(id.0.to_string())
    }

    /// The partitions that are open (not refused).
    pub(crate) fn open_partitions(&self) -> Vec<Arc<Partition>> {
        let partitions = self.partitions.read().expect("partitions lock");
        partitions.iter().flatten().cloned().collect()
    }
}

/// The last handle on a topic stops its partitions' writers: they hold the
/// partitions, so nothing else would.
impl Drop for Topic {
    fn drop(&mut self) {
        let partitions = self.partitions.get_mut().expect("partitions lock");
        for p in partitions.iter().flatten() {
            if let Err(e) = p.close() {
                tracing::error!(error = %e, "partition did not close cleanly");
            }
        }
    }
}

fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

pub(crate) fn encode_meta(config: &TopicConfig) -> Vec<u8> {
    let (kind, interval): (u32, Option<Duration>) = match config.fsync {
        FsyncPolicy::Always => (0, None),
        FsyncPolicy::Interval(d) => (1, Some(d)),
        FsyncPolicy::Never => (2, None),
    };
    let mut body = Vec::with_capacity(TOPIC_META_BODY_BYTES);
    body.extend_from_slice(&config.partitions.to_le_bytes());
    body.extend_from_slice(&kind.to_le_bytes());
    body.extend_from_slice(&millis(interval).to_le_bytes());
    body.extend_from_slice(&config.segment_bytes.to_le_bytes());
    body.extend_from_slice(&millis(config.segment_age).to_le_bytes());
    body.extend_from_slice(&millis(config.retention_age).to_le_bytes());
    body.extend_from_slice(&config.retention_bytes.unwrap_or(u64::MAX).to_le_bytes());
    body.extend_from_slice(&config.index_interval_bytes.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(body.len(), TOPIC_META_BODY_BYTES);
    format::encode_record(TOPIC_META_MAGIC, &body)
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<TopicConfig, String> {
    let body = format::decode_record(bytes, TOPIC_META_MAGIC, TOPIC_META_BODY_BYTES)
        .map_err(|e: FormatError| e.to_string())?;
    let mut f = Fields(body);
    let partitions = f.u32();
    let kind = f.u32();
    let interval_ms = f.u64();
    let fsync = match kind {
        0 => FsyncPolicy::Always,
        1 => FsyncPolicy::Interval(Duration::from_millis(interval_ms)),
        2 => FsyncPolicy::Never,
        other => return Err(format!("unknown fsync policy code {other}")),
    };
    let config = TopicConfig {
        partitions,
        fsync,
        segment_bytes: f.u64(),
        segment_age: duration(f.u64()),
        retention_age: duration(f.u64()),
        retention_bytes: Some(f.u64()).filter(|&b| b != u64::MAX),
        index_interval_bytes: f.u32(),
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_metadata_round_trips() {
        let config = TopicConfig {
            partitions: 7,
            fsync: FsyncPolicy::Interval(Duration::from_millis(25)),
            segment_bytes: 1 << 20,
            segment_age: None,
            retention_age: Some(Duration::from_secs(60)),
            retention_bytes: Some(5 << 20),
            index_interval_bytes: 512,
        };
        assert_eq!(decode_meta(&encode_meta(&config)), Ok(config));
        assert_eq!(
            decode_meta(&encode_meta(&TopicConfig::default())),
            Ok(TopicConfig::default())
        );
    }
}
