//! Every size the log accepts is bounded by one of these constants, and each bound is
//! checked before anything is allocated for it.

/// Largest single record (key + value + header keys and values), in bytes.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// Largest record batch, in bytes, header included. Also bounds what one append
/// request may carry.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most records in one append.
pub const BATCH_RECORDS_MAX: usize = 100_000;

/// Most partitions in one topic.
pub const PARTITIONS_MAX: u32 = 1024;

/// Smallest and largest segment size a topic may be configured with.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// See [`SEGMENT_BYTES_MIN`]. Positions in the index are 32-bit, so this stays well below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Smallest and largest spacing between sparse index entries.
pub const INDEX_INTERVAL_BYTES_MIN: u32 = 64;
/// See [`INDEX_INTERVAL_BYTES_MIN`].
pub const INDEX_INTERVAL_BYTES_MAX: u32 = 1024 * 1024;

/// Longest interval an `interval:<ms>` fsync policy may have. Beyond an hour the
/// policy is `never` in all but name.
pub const FSYNC_INTERVAL_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Append requests queued for one partition's writer before producers wait.
pub const APPEND_QUEUE_DEPTH: usize = 1024;

/// Bytes one group commit gathers before it writes and syncs.
pub const GROUP_COMMIT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Segment files a partition keeps open between reads: the active one. Sealed
/// segments are opened for the length of one read, so a long log never exhausts
/// file handles.
pub const OPEN_SEGMENTS_PER_PARTITION_MAX: usize = 1;

/// Largest segment file the log can write: a segment rolls before it passes
/// `segment_bytes`, except that one append always fits in an empty segment.
pub const SEGMENT_FILE_BYTES_MAX: u64 = SEGMENT_BYTES_MAX + BATCH_BYTES_MAX as u64;

/// Most bytes the records of one compressed batch may decompress to. Kafka
/// producers' batches are far smaller (`batch.size` defaults to 16 KiB, a
/// message to 1 MiB); anything larger is refused as a decompression bomb.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Size of a RecordBatch v2 header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;

const _: () = assert!(RECORD_BYTES_MAX + BATCH_HEADER_BYTES <= BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= GROUP_COMMIT_BYTES_MAX);
const _: () = assert!((BATCH_BYTES_MAX as u64) < SEGMENT_BYTES_MAX);
// Positions inside a segment are stored as u32 in the index.
const _: () = assert!(SEGMENT_FILE_BYTES_MAX < u32::MAX as u64);

/// Batches kept per idempotent producer and partition, to answer a retried one
/// with where it was stored (Kafka keeps five, and idempotent clients keep at
/// most five requests in flight for that reason).
pub const PRODUCER_BATCHES_KEPT: usize = 5;

/// Most idempotent producers one partition keeps state for; past it the
/// longest idle is forgotten (its next batch is then accepted whatever its
/// sequence, as after expiry).
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
