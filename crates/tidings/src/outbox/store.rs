//! The outbox on the event store: an event-sourced write and the events it
//! announces in one atomic append, on the embedded store (the embedded
//! engine's default) and on PostgreSQL alike, with the same code.
//!
//! A [`StoreTx`] gathers the appends of the state change (the aggregate's
//! events, each stream with its expected version) and the events staged for
//! topics; [`StoreTx::commit`] writes them in one multi-stream append of
//! the [`EventStore`]: either the expected versions hold and everything is
//! written, or nothing is. The staged events go to streams named
//! `tidings.outbox-<topic>` (the category `tidings.outbox`, a stream per
//! topic).
//!
//! The [`StoreOutbox`] forwards them: a task reads the category from its
//! checkpoint (the store's named checkpoint `tidings.outbox.forwarder`), in
//! the global order, publishes each run of one topic with the events' own
//! ids, then saves the checkpoint. A crash between the publish and the
//! checkpoint publishes the same events again: a backend with publish dedup
//! stores them once, elsewhere an inbox drops them. An event a backend
//! refuses for good is appended to `tidings.outboxdead-<topic>` with the
//! reason, and the forwarder goes on. The store keeps what it forwarded
//! (an event store deletes nothing): the outbox streams are the record of
//! what was announced.
//!
//! One forwarder per store: the embedded store is one process's (its lock
//! says so); on PostgreSQL, forwarders in several instances publish each
//! event as often as there are of them.
//!
//! ```no_run
//! # async fn order(
//! #     outbox: &tidings::outbox::store::StoreOutbox<tidings_store::EmbeddedStore>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use tidings::CloudEvent;
//! use tidings_store::{ExpectedVersion, StreamName};
//!
//! // The order's first event and its announcement: both written, or neither.
//! let mut tx = outbox.transaction();
//! let placed = CloudEvent::new("/shop", "order.placed").with_partitionkey("o-17");
//! tx.append(StreamName::new("order-o-17")?, ExpectedVersion::NoStream, vec![placed.clone()]);
//! tx.stage("orders", vec![placed.with_id("o-17-placed")])?;
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_store::{
    Appended, EventStore, ExpectedVersion, Position, Selector, StreamAppend, StreamName,
};
use tidings_types::CloudEvent;

use crate::{Error, Publisher};

/// The category of the outbox's streams.
pub const OUTBOX_CATEGORY: &str = "tidings.outbox";
/// The category of the streams of events refused for good.
pub const DEAD_CATEGORY: &str = "tidings.outboxdead";
/// The forwarder's checkpoint.
const CHECKPOINT: &str = "tidings.outbox.forwarder";

/// The outbox stream of `topic`.
pub fn outbox_stream(topic: &str) -> Result<StreamName, Error> {
    tidings_types::TopicName::new(topic).map_err(|e| Error::Config(e.to_string()))?;
    StreamName::new(&format!("{OUTBOX_CATEGORY}-{topic}"))
        .map_err(|e| Error::Config(format!("topic {topic}: {e}")))
}

/// How the forwarder works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwarderOptions {
    /// Most events read and published at a time.
    pub batch_max: usize,
    /// How long it waits for the store's head to move before looking again.
    pub poll_interval: Duration,
    /// How long it waits after a failure that may pass.
    pub retry_delay: Duration,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        ForwarderOptions {
            batch_max: 256,
            poll_interval: Duration::from_secs(1),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// How far the forwarder has got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Events published since it started.
    pub forwarded: u64,
    /// Events refused for good, moved to `tidings.outboxdead-<topic>`.
    pub dead: u64,
    /// Where it has got: events of the outbox before this position are
    /// published.
    pub checkpoint: u64,
    /// The store's head at its last look: `head - checkpoint` bounds what
    /// waits (the other categories' events count too).
    pub head: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The outbox on an event store, and its forwarder; see the module
/// documentation.
pub struct StoreOutbox<S: EventStore> {
    store: Arc<S>,
    stats: Arc<Mutex<ForwarderStats>>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl<S: EventStore> Drop for StoreOutbox<S> {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl<S: EventStore> std::fmt::Debug for StoreOutbox<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOutbox").finish_non_exhaustive()
    }
}

impl<S: EventStore> StoreOutbox<S> {
    /// The outbox of `store`, forwarding to `publisher`'s backend from where
    /// the last forwarder of this store got.
    pub fn start(
        store: Arc<S>,
        publisher: Publisher,
        options: ForwarderOptions,
    ) -> Result<StoreOutbox<S>, Error> {
        if options.batch_max == 0 {
            return Err(Error::Config(
                "an outbox forwarder's batch_max must be at least 1".into(),
            ));
        }
        let stats = Arc::new(Mutex::new(ForwarderStats::default()));
        let forwarder = tokio::spawn(forward(
            Arc::clone(&store),
            publisher,
            options,
            Arc::clone(&stats),
        ));
        Ok(StoreOutbox {
            store,
            stats,
            forwarder,
        })
    }

    /// A new unit of work: appends and staged events, written together at
    /// [`StoreTx::commit`].
    pub fn transaction(&self) -> StoreTx<S> {
        StoreTx::new(Arc::clone(&self.store))
    }

    /// Where the forwarder stands; cheap, for metrics.
    pub fn stats(&self) -> ForwarderStats {
        self.stats.lock().expect("forwarder stats").clone()
    }
}

/// Appends and staged events, written in one atomic append.
pub struct StoreTx<S: EventStore> {
    store: Arc<S>,
    appends: Vec<StreamAppend>,
    /// Staged events per topic.
    staged: BTreeMap<String, Vec<CloudEvent>>,
    /// Topics in the order first staged.
    order: Vec<String>,
}

impl<S: EventStore> std::fmt::Debug for StoreTx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx")
            .field("appends", &self.appends.len())
            .field("topics", &self.order)
            .finish()
    }
}

impl<S: EventStore> StoreTx<S> {
    /// An empty unit of work on `store` (what [`StoreOutbox::transaction`]
    /// answers; staged events go out through the store's forwarder).
    pub fn new(store: Arc<S>) -> StoreTx<S> {
        StoreTx {
            store,
            appends: Vec::new(),
            staged: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// Appends `events` to `stream` at the commit, if `expected` holds then.
    pub fn append(
        &mut self,
        stream: StreamName,
        expected: ExpectedVersion,
        events: Vec<CloudEvent>,
    ) -> &mut Self {
        self.appends
            .push(StreamAppend::new(stream, expected, events));
        self
    }

    /// Stages `events` for `topic`: published after the commit, never if it
    /// fails. Events keep their ids (the forwarder publishes them as they
    /// are, so a publish repeated is recognised); one without a trace
    /// context gets the caller's current span's, when spans are recorded.
    pub fn stage(
        &mut self,
        topic: &str,
        events: impl IntoIterator<Item = CloudEvent>,
    ) -> Result<&mut Self, Error> {
        outbox_stream(topic)?;
        if !self.staged.contains_key(topic) {
            self.order.push(topic.to_owned());
        }
        // Each continues the trace of the work staging it.
        let here = tidings_trace::context_of(&tracing::Span::current());
        self.staged
            .entry(topic.to_owned())
            .or_default()
            .extend(events.into_iter().map(|mut e| {
                tidings_trace::stamp(&mut e, here.as_ref());
                e
            }));
        Ok(self)
    }

    /// Writes everything in one append of the store: the appends with their
    /// expected versions and the staged events, or nothing (a stream not at
    /// its expected version, an invalid event). Answers where the appends
    /// went, in the order given (the staged events' streams after them).
    pub async fn commit(self) -> Result<Vec<Appended>, tidings_store::AppendError> {
        let StoreTx {
            store,
            mut appends,
            mut staged,
            order,
        } = self;
        for topic in order {
            let events = staged.remove(&topic).unwrap_or_default();
            if events.is_empty() {
                continue;
            }
            let stream = outbox_stream(&topic).expect("checked at stage");
            appends.push(StreamAppend::new(stream, ExpectedVersion::Any, events));
        }
        store.append(appends).await
    }
}

/// The topic of an outbox stream's events.
fn topic_of(stream: &StreamName) -> Option<&str> {
    stream
        .as_str()
        .strip_prefix(OUTBOX_CATEGORY)
        .and_then(|rest| rest.strip_prefix('-'))
}

/// The forwarder: publishes the outbox's events in the global order, from
/// the stored checkpoint on, until aborted.
async fn forward<S: EventStore>(
    store: Arc<S>,
    publisher: Publisher,
    options: ForwarderOptions,
    stats: Arc<Mutex<ForwarderStats>>,
) {
    let selector = Selector::Category(OUTBOX_CATEGORY.to_owned());
    let mut from = loop {
        match store.load_checkpoint(CHECKPOINT).await {
            Ok(p) => break p.unwrap_or(Position(0)),
            Err(e) => {
                fail(&stats, &e);
                tokio::time::sleep(options.retry_delay).await;
            }
        }
    };
    stats.lock().expect("forwarder stats").checkpoint = from.0;
    loop {
        let step = async {
            let slice = store
                .read_all(&selector, from, options.batch_max)
                .await
                .map_err(|e| Error::transient("event store", e))?;
            if slice.events.is_empty() {
                if slice.next != from {
                    // Nothing of the outbox up to here: move on past it.
                    store
                        .save_checkpoint(CHECKPOINT, slice.next)
                        .await
                        .map_err(|e| Error::transient("event store", e))?;
                    return Ok::<_, Error>(slice.next);
                }
                let head = store
                    .wait_beyond(from, options.poll_interval)
                    .await
                    .map_err(|e| Error::transient("event store", e))?;
                stats.lock().expect("forwarder stats").head = head.0;
                return Ok(from);
            }
            // One publish per run of events of the same topic, in order.
            let mut start = 0;
            let events = &slice.events;
            while start < events.len() {
                let stream = &events[start].stream;
                let end = events[start..]
                    .iter()
                    .position(|e| &e.stream != stream)
                    .map_or(events.len(), |n| start + n);
                let run: Vec<CloudEvent> =
                    events[start..end].iter().map(|e| e.event.clone()).collect();
                if let Some(topic) = topic_of(stream) {
                    publish_run(&*store, &publisher, topic, run, &stats).await?;
                }
                start = end;
            }
            store
                .save_checkpoint(CHECKPOINT, slice.next)
                .await
                .map_err(|e| Error::transient("event store", e))?;
            Ok(slice.next)
        };
        match step.await {
            Ok(next) => {
                from = next;
                let mut s = stats.lock().expect("forwarder stats");
                s.checkpoint = next.0;
                s.head = s.head.max(next.0);
                s.last_error = None;
            }
            Err(e) => {
                fail(&stats, &e);
                tokio::time::sleep(options.retry_delay).await;
            }
        }
    }
}

fn fail(stats: &Mutex<ForwarderStats>, e: &dyn std::fmt::Display) {
    tracing::warn!(error = %e, "the outbox forwarder failed; trying again");
    stats.lock().expect("forwarder stats").last_error = Some(e.to_string());
}

/// Publishes one run; an event refused for good goes to the dead stream of
/// its topic with the reason, and the rest goes on. A failure that may pass
/// is answered, so the run is tried again from the checkpoint.
async fn publish_run<S: EventStore>(
    store: &S,
    publisher: &Publisher,
    topic: &str,
    run: Vec<CloudEvent>,
    stats: &Mutex<ForwarderStats>,
) -> Result<(), Error> {
    let n = run.len() as u64;
    match publisher.publish_all(topic, run.clone()).await {
        Ok(_) => {
            stats.lock().expect("forwarder stats").forwarded += n;
            return Ok(());
        }
        Err(e) if e.is_transient() => return Err(e),
        Err(_) => {}
    }
    // Refused for good: find which, one by one.
    for event in run {
        match publisher.publish(topic, event.clone()).await {
            Ok(_) => stats.lock().expect("forwarder stats").forwarded += 1,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::error!(topic, id = event.id(), error = %e, "the backend refused an outbox event for good; it moves to the outbox's dead stream");
                let dead = StreamName::new(&format!("{DEAD_CATEGORY}-{topic}"))
                    .map_err(|e| Error::Config(e.to_string()))?;
                // An id of its own (the store holds each id once), derived,
                // so moving it again after a crash repeats the append.
                let (id, reason) = (event.id().to_owned(), e.to_string());
                let letter = event
                    .with_id(format!("dead-{id}"))
                    .with_extension("originalid", id)
                    .and_then(|letter| letter.with_extension("dlqerror", reason))
                    .map_err(|e| Error::InvalidEvent(e.to_string()))?;
                store
                    .append_to(&dead, ExpectedVersion::Any, vec![letter])
                    .await
                    .map_err(|e| Error::transient("event store", e))?;
                stats.lock().expect("forwarder stats").dead += 1;
            }
        }
    }
    Ok(())
}
