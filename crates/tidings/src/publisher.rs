//! [`Publisher`]: publishes CloudEvents to topics of any backend, creating a
//! topic the first time it is used.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

use tidings_types::CloudEvent;

use crate::backend::{Backend, BoxFuture, Receipt};
use crate::Error;

/// Partitions of a topic the toolkit creates on first use, unless told
/// otherwise.
pub const DEFAULT_PARTITIONS: u32 = 3;

/// Publishes events; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Publisher {
    backend: Arc<dyn Backend>,
    topics: Arc<Topics>,
    hooks: Arc<[Arc<dyn PublishHook>]>,
}

/// Code that sees every batch a [`Publisher`] is about to publish: where a
/// schema check refuses events and trace context is stamped on them. Hooks
/// run in the order they were added, before the topic is created and before
/// anything is sent; an error refuses the whole batch, so nothing of it is
/// stored.
pub trait PublishHook: Send + Sync + 'static {
    /// Checks, and may change, `events` before they are published to
    /// `topic`.
    fn before_publish<'a>(
        &'a self,
        topic: &'a str,
        events: &'a mut [CloudEvent],
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// The topics a handle has made sure of, and how it creates new ones.
pub(crate) struct Topics {
    partitions: u32,
    known: Mutex<HashSet<String>>,
}

impl Topics {
    pub(crate) fn new(partitions: u32) -> Topics {
        Topics {
            partitions,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Creates `topic` on `backend` unless this handle did already.
    pub(crate) async fn ensure(&self, backend: &dyn Backend, topic: &str) -> Result<(), Error> {
        if self.known.lock().expect("topics lock").contains(topic) {
            return Ok(());
        }
        backend.ensure_topic(topic, self.partitions).await?;
        self.known
            .lock()
            .expect("topics lock")
            .insert(topic.to_owned());
        Ok(())
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Publisher {
    /// A publisher on `backend`; topics it publishes to are created with
    /// [`DEFAULT_PARTITIONS`] partitions when they do not exist.
    pub fn new(backend: Arc<dyn Backend>) -> Publisher {
        Publisher::with_partitions(backend, DEFAULT_PARTITIONS)
    }

    /// A publisher that creates missing topics with `partitions` partitions.
    pub fn with_partitions(backend: Arc<dyn Backend>, partitions: u32) -> Publisher {
        Publisher {
            backend,
            topics: Arc::new(Topics::new(partitions)),
            hooks: Arc::new([]),
        }
    }

    /// The same publisher with `hook` run on every batch after the hooks it
    /// already has.
    pub fn with_hook(mut self, hook: Arc<dyn PublishHook>) -> Publisher {
        let mut hooks = self.hooks.to_vec();
        hooks.push(hook);
        self.hooks = hooks.into();
        self
    }

    /// The backend it publishes to.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Publishes one event; answers where it was stored.
    pub async fn publish(&self, topic: &str, event: CloudEvent) -> Result<Receipt, Error> {
        let mut receipts = self.publish_all(topic, vec![event]).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::backend(self.backend.name(), "the backend answered no receipt"))
    }

    /// Publishes events in order, as one batch where the backend has
    /// batches; answers where each was stored, in the same order. Not atomic:
    /// on an error, some events may be stored (publish them again: backends
    /// with publish dedup store each once).
    pub async fn publish_all(
        &self,
        topic: &str,
        mut events: Vec<CloudEvent>,
    ) -> Result<Vec<Receipt>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        for hook in self.hooks.iter() {
            hook.before_publish(topic, &mut events).await?;
        }
        self.topics.ensure(&*self.backend, topic).await?;
        let n = events.len();
        // Under a span that is recorded (a handler's `process` span, an
        // application's own), the events' own contexts become links.
        let continued = tidings_trace::context_of(&tracing::Span::current()).is_some();
        let span = {
            let mut refs: Vec<&mut CloudEvent> = events.iter_mut().collect();
            tidings_trace::publish_span(topic, &mut refs, continued)
        };
        tidings_trace::set_attributes(
            &span,
            &[(
                "messaging.system",
                tidings_trace::Value::Str(self.backend.name()),
            )],
        );
        let receipts = self.backend.publish(topic, events).instrument(span).await?;
        if receipts.len() != n {
            return Err(Error::backend(
                self.backend.name(),
                format!("{n} events published but {} receipts", receipts.len()),
            ));
        }
        Ok(receipts)
    }
}
