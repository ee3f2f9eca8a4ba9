//! The registry's limits. Every length is checked before anything is stored
//! or compiled.

/// Longest schema text, in bytes (Confluent's registry has no fixed limit;
/// an event's schema is small, and this keeps one request's work bounded).
pub const SCHEMA_BYTES_MAX: usize = 1024 * 1024;

/// Longest subject name, in bytes: a Kafka topic name (249) with `-value`
/// fits, and so does an event type of reasonable length.
pub const SUBJECT_BYTES_MAX: usize = 1024;

/// Most distinct schemas (ids) the registry holds.
pub const SCHEMAS_MAX: usize = 100_000;

/// Most versions, live or soft-deleted, one subject holds.
pub const VERSIONS_PER_SUBJECT_MAX: usize = 10_000;

/// Most subjects the registry holds.
pub const SUBJECTS_MAX: usize = 100_000;

/// Deepest nesting the compatibility check follows.
pub const COMPAT_DEPTH_MAX: usize = 64;

/// Most findings one compatibility answer lists.
pub const COMPAT_FINDINGS_MAX: usize = 100;

/// Longest journal record: a schema with its subject and framing, with room.
pub const RECORD_BYTES_MAX: usize = 2 * SCHEMA_BYTES_MAX;

/// Most validation errors one rejected event reports.
pub const VIOLATIONS_MAX: usize = 10;

const _: () = assert!(RECORD_BYTES_MAX > SCHEMA_BYTES_MAX + SUBJECT_BYTES_MAX + 256);
const _: () = assert!(SCHEMAS_MAX <= u32::MAX as usize);
const _: () = assert!(VERSIONS_PER_SUBJECT_MAX <= i32::MAX as usize);
