//! What the broker tests share: a clock they move by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings_broker::BrokerOptions;
use tidings_log::{Clock, LogOptions};
use tidings_types::TimestampMs;

#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)))
    }

    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(i64::try_from(d.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> TimestampMs {
        TimestampMs(self.0.load(Ordering::SeqCst))
    }
}

/// Broker options reading `clock`.
pub fn options(clock: &Arc<ManualClock>) -> BrokerOptions {
    BrokerOptions {
        log: LogOptions {
            clock: clock.clone(),
            ..LogOptions::default()
        },
    }
}
