//! What the broker tests share: the manual clock, a broker on it they can reopen.

use std::sync::Arc;
use std::time::Duration;

use tidings_broker::{BrokerOptions, LogOptions};
pub use tidings_types::ManualClock;
use tidings_types::TimestampMs;

/// Broker options reading `clock`.
pub fn options(clock: &Arc<ManualClock>) -> BrokerOptions {
    BrokerOptions {
        log: LogOptions {
            clock: clock.clone(),
            ..LogOptions::default()
        },
        ..BrokerOptions::default()
    }
}

/// A broker on a throwaway data directory and a manual clock, that tests can
/// close and reopen. Each test module wraps it with its own topics.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub broker: Option<tidings_broker::Broker>,
}

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)));
        let broker = tidings_broker::Broker::open(dir.path(), options(&clock)).unwrap();
        Harness {
            dir,
            clock,
            broker: Some(broker),
        }
    }

    pub fn b(&self) -> &tidings_broker::Broker {
        self.broker.as_ref().unwrap()
    }

    pub fn reopen(&mut self) {
        self.broker.take().unwrap().close().unwrap();
        let broker = tidings_broker::Broker::open(self.dir.path(), options(&self.clock)).unwrap();
        self.broker = Some(broker);
    }

    /// Reopens the data directory as a crash of the broker's process leaves
    /// it: the broker is dropped without [`close`](tidings_broker::Broker::close),
    /// so what queue journals staged and never synced (the leases of
    /// receives) is gone. Everything the log acknowledged was synced.
    pub fn crash(&mut self) {
        drop(self.broker.take());
        let broker = tidings_broker::Broker::open(self.dir.path(), options(&self.clock)).unwrap();
        self.broker = Some(broker);
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The high-watermark of every partition of `topic`.
    pub fn high_watermarks(&self, topic: &str) -> Vec<u64> {
        let d = self.b().describe_topic(topic).unwrap();
        d.partitions.iter().map(|p| p.high_watermark.0).collect()
    }
}
