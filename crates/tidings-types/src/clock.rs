//! Wall-clock time as an input: logic that tests must control reads a [`Clock`]
//! instead of the system time, so a test can age segments, expire leases and
//! time out sessions without sleeping.

use std::fmt;

use crate::TimestampMs;

/// Wall-clock time: record timestamps, segment age, retention, dedup windows,
/// leases and session timeouts.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> TimestampMs;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> TimestampMs {
        TimestampMs::now()
    }
}

/// A clock that moves only when told to, for tests.
///
/// ```
/// use std::time::Duration;
/// use tidings_types::{Clock, ManualClock, TimestampMs};
///
/// let clock = ManualClock::new(TimestampMs(1_000));
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(clock.now(), TimestampMs(1_250));
/// ```
#[cfg(feature = "manual-clock")]
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

#[cfg(feature = "manual-clock")]
impl ManualClock {
    /// A clock that reads `start` until it is moved.
    #[must_use]
    pub fn new(start: TimestampMs) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(start.0))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the clock to `to`, backwards too (a clock step).
    pub fn set(&self, to: TimestampMs) {
        self.0.store(to.0, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(feature = "manual-clock")]
impl Clock for ManualClock {
    fn now(&self) -> TimestampMs {
        TimestampMs(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
