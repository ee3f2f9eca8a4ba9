//! The event-store interface both backends implement.

use std::future::Future;
use std::time::Duration;

use tidings_types::CloudEvent;

use crate::error::{AppendError, StoreError};
use crate::types::{
    AllSlice, Appended, ExpectedVersion, Position, ReadStream, Selector, Snapshot, StreamAppend,
    StreamInfo, StreamMetadata, StreamName, StreamSlice, StreamVersion, APPEND_EVENTS_MAX,
};

/// An event store: streams of events with expected-version appends, one global
/// order, stream metadata, snapshots and named checkpoints.
///
/// Every method is atomic. Reads see only appends that are durable and acknowledged,
/// and the global order is visible as a prefix: once position `p` can be read, every
/// event before `p` can be too. That is what lets [`crate::Subscription`] switch from
/// catching up to live without a gap.
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one or more streams atomically: either every stream's
    /// expected version holds and all events are written, or nothing is.
    ///
    /// Repeating an append whose events are all stored already — the same ids in
    /// the same streams, each stream's at consecutive versions, in the same order —
    /// writes nothing and answers where they are, whatever the expected versions
    /// say. An append that mixes stored and new ids, or reuses an id elsewhere, is
    /// refused with [`AppendError::DuplicateEventId`].
    fn append(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<Vec<Appended>, AppendError>> + Send;

    /// Appends events to one stream; see [`append`](Self::append).
    fn append_to(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<CloudEvent>,
    ) -> impl Future<Output = Result<Appended, AppendError>> + Send {
        let append = StreamAppend::new(stream.clone(), expected, events);
        async move {
            let mut done = self.append(vec![append]).await?;
            Ok(done.remove(0))
        }
    }

    /// Reads events of one stream. A stream with no events reads as empty.
    fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> impl Future<Output = Result<StreamSlice, StoreError>> + Send;

    /// Reads the global order from `from` on, all of it or one category, up to
    /// `limit` events.
    fn read_all(
        &self,
        selector: &Selector,
        from: Position,
        limit: usize,
    ) -> impl Future<Output = Result<AllSlice, StoreError>> + Send;

    /// The position the next appended event will get at the earliest: every event
    /// before it is readable.
    fn head(&self) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// Waits until the head moves past `after`, or `timeout` passes. Returns the head.
    fn wait_beyond(
        &self,
        after: Position,
        timeout: Duration,
    ) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// What the store knows of a stream.
    fn stream_info(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<StreamInfo, StoreError>> + Send;

    /// Sets a stream's read limits.
    fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Soft-deletes a stream if `expected` holds: its events no longer read as part
    /// of the stream (they stay in `$all`), and a later append starts it again,
    /// continuing its version numbers.
    fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> impl Future<Output = Result<(), AppendError>> + Send;

    /// Stores a snapshot, replacing the stream's previous one.
    fn save_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stream's latest snapshot, if any.
    fn load_snapshot(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Where the event with id `id` is stored in the global order, if an
    /// append stored it (ids are unique in the store): how a consumer asks
    /// whether it recorded something before, without reading a stream.
    fn locate_event(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Durably stores the checkpoint of a named subscription.
    fn save_checkpoint(
        &self,
        name: &str,
        position: Position,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored checkpoint of a named subscription.
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;
}

/// Checks an append before any backend looks at it: events present, within the
/// limit, valid, no stream or event id twice.
pub(crate) fn check_append(appends: &[StreamAppend]) -> Result<(), AppendError> {
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    if total == 0 || appends.iter().any(|a| a.events.is_empty()) {
        return Err(AppendError::NoEvents);
    }
    if total > APPEND_EVENTS_MAX {
        return Err(AppendError::TooManyEvents(total));
    }
    let mut streams = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for a in appends {
        if !streams.insert(&a.stream) {
            return Err(AppendError::RepeatedStream(a.stream.clone()));
        }
        for (index, e) in a.events.iter().enumerate() {
            e.validate().map_err(|source| AppendError::InvalidEvent {
                stream: a.stream.clone(),
                index,
                source,
            })?;
            if !ids.insert(e.id()) {
                return Err(AppendError::RepeatedEventId(e.id().to_owned()));
            }
        }
    }
    Ok(())
}

/// The answer to an append whose event ids were all stored before, when one earlier
/// append of the same shape stored them: the same streams in the same order, each
/// stream's events at consecutive versions, all at consecutive positions. `locate`
/// tells where an id sits in a stream: `(version, position)`, or `None` when the id
/// is not in that stream.
pub(crate) fn repeated_append(
    appends: &[StreamAppend],
    mut locate: impl FnMut(&StreamName, &str) -> Option<(u64, u64)>,
) -> Option<Vec<Appended>> {
    let mut out = Vec::with_capacity(appends.len());
    let mut expected_position: Option<u64> = None;
    for a in appends {
        let mut first = None;
        let mut last = (0, 0);
        for e in &a.events {
            let (version, position) = locate(&a.stream, e.id())?;
            match first {
                None => {
                    if expected_position.is_some_and(|p| p != position) {
                        return None;
                    }
                    first = Some((version, position));
                }
                Some(_) if (version, position) != (last.0 + 1, last.1 + 1) => return None,
                Some(_) => {}
            }
            last = (version, position);
        }
        let first = first?;
        expected_position = Some(last.1 + 1);
        out.push(Appended {
            stream: a.stream.clone(),
            first_version: StreamVersion(first.0),
            last_version: StreamVersion(last.0),
            first_position: Position(first.1),
            last_position: Position(last.1),
        });
    }
    Some(out)
}

/// The outcome of a metadata write made with [`ExpectedVersion::Any`], which has no
/// expectation to fail: only the backend can.
pub(crate) fn metadata_written(result: Result<(), AppendError>) -> Result<(), StoreError> {
    match result {
        Ok(()) => Ok(()),
        Err(AppendError::Store(e)) => Err(e),
        Err(e) => Err(StoreError::Failed(e.to_string())),
    }
}
