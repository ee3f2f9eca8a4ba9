//! The inbox on the event store: an idempotent consumer for event-sourced
//! handlers, on the embedded store and on PostgreSQL's alike.
//!
//! The [`StoreInbox`] middleware records each event it lets through as an
//! event of its own in the stream `tidings.inbox-<group>`, with an id
//! derived from the group and the event's source and id, appended in the
//! same atomic append as the handler's writes ([`StoreUnit::append`]) and
//! the events it emitted (staged in the [store outbox](crate::outbox::store),
//! so a [`StoreOutbox`](crate::outbox::store::StoreOutbox) must forward
//! them). Before the handler runs, the inbox looks the record's id up
//! ([`EventStore::locate_event`]): an event recorded before is acknowledged
//! without the handler. Two deliveries that both pass the look-up before
//! either commits both run the handler, and the second's append is refused
//! by the store (the record's id is stored once): nothing of it is written,
//! and it is acknowledged as a duplicate (or, while the first append is not
//! yet durable, tried again, to find the record then). So the handler's writes to the
//! store and what it emits happen once; its effects outside the store
//! happen at least once.
//!
//! The store deletes nothing: records are kept for good, and no route can
//! outlive them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tidings_store::{AppendError, EventStore, ExpectedVersion, StreamName};
use tidings_types::CloudEvent;

use crate::backend::BoxFuture;
use crate::outbox::store::StoreTx;
use crate::router::{Context, HandlerError, Middleware, Next};
use crate::Error;

/// The category of the inbox's record streams.
pub const INBOX_CATEGORY: &str = "tidings.inbox";

/// What a store inbox has done since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreInboxStats {
    /// Events whose handler's append was written.
    pub handled: u64,
    /// Deliveries of events recorded before, acknowledged without their
    /// writes.
    pub duplicates: u64,
}

/// The idempotent-consumer middleware on an event store; see the module
/// documentation. Clones share the counts.
pub struct StoreInbox<S: EventStore> {
    inner: Arc<Inner<S>>,
}

impl<S: EventStore> Clone for StoreInbox<S> {
    fn clone(&self) -> Self {
        StoreInbox {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: EventStore> std::fmt::Debug for StoreInbox<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreInbox").finish_non_exhaustive()
    }
}

struct Inner<S> {
    store: Arc<S>,
    handled: AtomicU64,
    duplicates: AtomicU64,
}

impl<S: EventStore> StoreInbox<S> {
    /// An inbox recording in `store`.
    pub fn new(store: Arc<S>) -> StoreInbox<S> {
        StoreInbox {
            inner: Arc::new(Inner {
                store,
                handled: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
            }),
        }
    }

    /// What it has done; cheap, for metrics.
    pub fn stats(&self) -> StoreInboxStats {
        StoreInboxStats {
            handled: self.inner.handled.load(Ordering::Relaxed),
            duplicates: self.inner.duplicates.load(Ordering::Relaxed),
        }
    }

    fn duplicate(&self, ctx: &Context) -> Result<(), HandlerError> {
        self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            topic = ctx.topic(),
            group = ctx.group(),
            id = ctx.event().id(),
            "recorded before; acknowledged without the handler's writes"
        );
        Ok(())
    }

    async fn handle(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
        let store = &self.inner.store;
        let failed = |e: tidings_store::StoreError| {
            HandlerError::retry(format!("the inbox could not read the event store: {e}"))
        };
        let record = record(ctx.group(), ctx.event());
        let record_id = record.id().to_owned();
        if store
            .locate_event(&record_id)
            .await
            .map_err(failed)?
            .is_some()
        {
            return self.duplicate(&ctx);
        }
        let stream = record_stream(ctx.group())?;
        ctx.insert(StoreUnit::<S> {
            tx: Mutex::new(Some(StoreTx::new(Arc::clone(store)))),
        });
        let unit = ctx.get::<StoreUnit<S>>().expect("inserted just now");
        // The unit leaves the context when the try ends or is dropped.
        let lent = Lent::<S>(ctx.clone(), std::marker::PhantomData);
        let result = next.run(ctx.clone()).await;
        drop(lent);
        result?;
        let Some(mut tx) = unit.tx.lock().expect("unit lock").take() else {
            return Err(HandlerError::retry("the handler's unit of work was taken"));
        };
        tx.append(stream, ExpectedVersion::Any, vec![record]);
        for (topic, batch) in crate::router::runs_by_topic(ctx.take_outputs()) {
            tx.stage(&topic, batch)?;
        }
        match tx.commit().await {
            Ok(_) => {
                self.inner.handled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Another delivery of the event committed first (or one of the
            // handler's own ids was stored before): which, the record says.
            Err(AppendError::DuplicateEventId { id }) => {
                match store.locate_event(&record_id).await.map_err(failed)? {
                    Some(_) => self.duplicate(&ctx),
                    // The other delivery's append may not be durable yet (the
                    // store refuses an id as soon as an append in flight
                    // holds it); the next try looks again. An id of the
                    // handler's own that is stored for good keeps failing,
                    // until the dead letters.
                    None => Err(HandlerError::retry(format!(
                        "event id {id:?} of this append is stored (or being stored) by another append"
                    ))),
                }
            }
            Err(e @ AppendError::WrongExpectedVersion { .. }) => Err(HandlerError::retry(e)),
            Err(AppendError::Store(e)) => Err(failed(e)),
            // Refused for what it holds: an invalid event, too many, a
            // stream twice; trying again writes the same.
            Err(e) => Err(HandlerError::dead_letter(format!(
                "the handler's append was refused: {e}"
            ))),
        }
    }
}

impl<S: EventStore> Middleware for StoreInbox<S> {
    fn call(&self, ctx: Context, next: Next) -> BoxFuture<'static, Result<(), HandlerError>> {
        let inbox = self.clone();
        Box::pin(async move { inbox.handle(ctx, next).await })
    }
}

/// The handler's unit of work under a [`StoreInbox`]: its appends, written
/// with the inbox's record when it succeeds.
pub struct StoreUnit<S: EventStore> {
    tx: Mutex<Option<StoreTx<S>>>,
}

impl<S: EventStore> std::fmt::Debug for StoreUnit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUnit").finish_non_exhaustive()
    }
}

impl<S: EventStore> StoreUnit<S> {
    /// The unit of the handler's try, from its context; an error when no
    /// store inbox of this store's type runs around the handler.
    pub fn of(ctx: &Context) -> Result<Arc<StoreUnit<S>>, HandlerError> {
        ctx.get::<StoreUnit<S>>().ok_or_else(|| {
            HandlerError::retry(format!(
                "no store inbox runs around the handler of topic {} and group {}: wrap the route in a StoreInbox",
                ctx.topic(),
                ctx.group()
            ))
        })
    }

    /// Appends `events` to `stream` with the inbox's record, if `expected`
    /// holds then.
    pub fn append(&self, stream: StreamName, expected: ExpectedVersion, events: Vec<CloudEvent>) {
        if let Some(tx) = self.tx.lock().expect("unit lock").as_mut() {
            tx.append(stream, expected, events);
        }
    }

    /// Stages `events` for `topic`, written with the inbox's record (the
    /// store outbox's forwarder publishes them).
    pub fn stage(
        &self,
        topic: &str,
        events: impl IntoIterator<Item = CloudEvent>,
    ) -> Result<(), Error> {
        if let Some(tx) = self.tx.lock().expect("unit lock").as_mut() {
            tx.stage(topic, events)?;
        }
        Ok(())
    }
}

/// Takes the [`StoreUnit`] back out of a context when dropped.
struct Lent<S: EventStore>(Context, std::marker::PhantomData<S>);

impl<S: EventStore> Drop for Lent<S> {
    fn drop(&mut self) {
        self.0.remove::<StoreUnit<S>>();
    }
}

/// The record stream of `group`.
fn record_stream(group: &str) -> Result<StreamName, HandlerError> {
    StreamName::new(&format!("{INBOX_CATEGORY}-{group}")).map_err(|e| {
        HandlerError::dead_letter(format!("group {group} makes no inbox stream name: {e}"))
    })
}

/// The record of `event` handled by `group`: its id is derived from both,
/// lengths included, so no two (group, source, id) share one.
fn record(group: &str, event: &CloudEvent) -> CloudEvent {
    let mut hash = Sha256::new();
    for part in [group, event.source(), event.id()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    CloudEvent::new("/tidings/inbox", "tidings.inbox.handled")
        .with_id(format!("inbox-{hex}"))
        .with_json(&serde_json::json!({
            "group": group,
            "source": event.source(),
            "id": event.id(),
            "type": event.ty(),
        }))
        .expect("a JSON object encodes")
}
