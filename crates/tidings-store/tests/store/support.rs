//! What the checks share: a backend to open stores on, and event builders.

use std::future::Future;

use tidings_store::{EventStore, StreamName};
use tidings_types::{CloudEvent, ManualClock, TimestampMs};

/// A place to open stores: a directory or a database, fresh for each check.
pub(crate) trait Backend: Send + Sync {
    type Store: EventStore + Clone + std::fmt::Debug;

    /// Opens the store (again, after [`close`](Self::close)).
    fn open(&self) -> impl Future<Output = Self::Store> + Send;

    /// Closes a store so it can be opened again, as a restart would.
    fn close(&self, store: Self::Store) -> impl Future<Output = ()> + Send;

    /// The clock the store records events by and measures ages on; checks
    /// move it instead of sleeping.
    fn clock(&self) -> &ManualClock;
}

/// A clock for one backend, at a fixed start.
pub(crate) fn manual_clock() -> std::sync::Arc<ManualClock> {
    std::sync::Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)))
}

pub(crate) fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

/// An event of type `ty` whose data is `{"n": n}`.
pub(crate) fn event(ty: &str, n: u64) -> CloudEvent {
    CloudEvent::new("/test", ty)
        .with_json(&serde_json::json!({ "n": n }))
        .unwrap()
}

/// `count` events of type `ty`, numbered from `first`.
pub(crate) fn events(ty: &str, first: u64, count: u64) -> Vec<CloudEvent> {
    (first..first + count).map(|n| event(ty, n)).collect()
}

/// The `n` of an event made by [`event`].
pub(crate) fn n_of(e: &CloudEvent) -> u64 {
    e.json::<serde_json::Value>().unwrap()["n"]
        .as_u64()
        .unwrap()
}
