//! The vocabulary every Tidings layer shares: the CloudEvents envelope, offsets,
//! partition ids, timestamps, validated topic names, the limits that bound them,
//! the [`Clock`] that logic reads time from, and the [`ErrorKind`]s that errors
//! are described in.
//!
//! This crate does no IO of any kind. It holds small value types so that an offset
//! is never confused with a byte position or a partition number across crate
//! boundaries.
//!
//! ```
//! use tidings_types::{Offset, TopicName};
//!
//! let topic = TopicName::new("orders.placed").unwrap();
//! assert_eq!(topic.as_str(), "orders.placed");
//! assert!(TopicName::new("../etc").is_err());
//! assert_eq!(Offset(41).next(), Offset(42));
//! ```

use std::fmt;

mod clock;
mod error;
mod event;
mod id;
mod topic;
mod trace;

#[cfg(feature = "manual-clock")]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use error::ErrorKind;
pub use event::json::{JSON_BATCH_MEDIA_TYPE, JSON_FORMAT_MEDIA_TYPE};
pub use event::{
    check_extension_name, CloudEvent, EventError, ExtensionValue, KafkaMessage,
    ATTRIBUTE_BYTES_MAX, EVENT_DATA_BYTES_MAX, EXTENSIONS_MAX, EXTENSION_NAME_BYTES_MAX,
    SPEC_VERSION,
};
pub use id::{uuid_v7, uuid_v7_at};
pub use time::OffsetDateTime;
pub use topic::{TopicName, TopicNameError, TOPIC_NAME_BYTES_MAX};
pub use trace::{TraceParent, TRACEPARENT_LEN};

/// The position of a record in one partition of a topic.
///
/// Offsets start at 0 and grow by one per record, without gaps, for the life of a
/// partition; retention moves the log-start offset up but never renumbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// The largest offset a partition may ever assign. Kafka offsets are signed
    /// 64-bit numbers, so we stay below `i64::MAX`.
    pub const MAX: Offset = Offset(i64::MAX as u64 - 1);

    /// The offset right after this one.
    #[must_use]
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// The offset `n` records after this one.
    #[must_use]
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The number of a partition within its topic, from 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, as Kafka record timestamps are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// The current wall-clock time.
    ///
    /// Logic that tests must control takes a clock instead of calling this.
    #[must_use]
    pub fn now() -> TimestampMs {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        TimestampMs(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

impl TimestampMs {
    /// The time `d` after this one (saturating).
    #[must_use]
    pub fn plus(self, d: std::time::Duration) -> TimestampMs {
        TimestampMs(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// How long after `earlier` this time is; zero when it is not after.
    #[must_use]
    pub fn since(self, earlier: TimestampMs) -> std::time::Duration {
        std::time::Duration::from_millis(
            u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0),
        )
    }
}

impl fmt::Display for TimestampMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
