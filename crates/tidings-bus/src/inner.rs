//! What every clone of a bus shares: the registry, the error handler and the
//! counters; and [`Subscription`], whose drop takes its subscriber out.

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use crate::handler::call_sync;
use crate::registry::{ErrorFn, Kind, Registry, Subscriber, Target};
use crate::{BusConfig, Event, HandlerError, HandlerErrorKind, SubscriptionId};

pub(crate) struct Inner {
    pub(crate) config: BusConfig,
    pub(crate) registry: ArcSwap<Registry>,
    /// Bumped after every change to `registry`; [`Emitter`]s compare it.
    pub(crate) generation: AtomicU64,
    /// Serializes changes to the registry.
    pub(crate) changes: Mutex<()>,
    pub(crate) next_id: AtomicU64,
    pub(crate) error_handler: ArcSwap<Option<Box<ErrorFn>>>,
    pub(crate) warned: Mutex<HashSet<String>>,
    pub(crate) handler_failures: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) errors_logged: AtomicU64,
    pub(crate) overflow_refused: AtomicU64,
    pub(crate) listener_warnings: AtomicU64,
}

/// A live subscription. Dropping it unsubscribes; so does
/// [`unsubscribe`](Self::unsubscribe). [`detach`](Self::detach) keeps it for the
/// life of the bus.
#[must_use = "dropping a Subscription unsubscribes it"]
pub struct Subscription {
    pub(crate) bus: Weak<Inner>,
    pub(crate) id: SubscriptionId,
    pub(crate) active: bool,
}

impl Subscription {
    /// The subscription's id, as errors name it.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Ends the subscription now.
    pub fn unsubscribe(mut self) {
        self.end();
    }

    /// Keeps the subscription until the bus is dropped.
    pub fn detach(mut self) {
        self.active = false;
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.active) {
            if let Some(inner) = self.bus.upgrade() {
                inner.remove(self.id);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.end();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscription({})", self.id)
    }
}

impl Inner {
    /// Publishes a new registry. Called with `changes` held.
    pub(crate) fn store(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current registry snapshot.
    pub(crate) fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(&self.registry.load())
    }

    pub(crate) fn add(self: &Arc<Self>, target: Target, kind: Kind, once: bool) -> Subscription {
        self.add_typed(self.new_id(), target, kind, once, None)
    }

    pub(crate) fn new_id(&self) -> SubscriptionId {
        SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn add_typed(
        self: &Arc<Self>,
        id: SubscriptionId,
        target: Target,
        kind: Kind,
        once: bool,
        typed: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Subscription {
        let sub = Arc::new(Subscriber {
            id,
            target,
            kind,
            once: once.then(AtomicBool::default),
            typed,
        });
        let count = {
            let _guard = self.changes.lock().expect("registry lock");
            let mut registry = Registry::clone(&self.registry.load());
            let count = match &sub.target {
                Target::Type(type_id, _) => {
                    let list = registry.typed.entry(*type_id).or_default();
                    let mut subs = list.subscribers.to_vec();
                    subs.push(Arc::clone(&sub));
                    list.keeps_event = subs.iter().any(|s| s.kind.keeps_event());
                    list.subscribers = subs.into();
                    list.subscribers.len()
                }
                Target::Pattern(p) => {
                    let mut subs = registry.patterns.to_vec();
                    subs.push(Arc::clone(&sub));
                    registry.patterns = subs.into();
                    registry.patterns_keep_event =
                        registry.patterns.iter().any(|s| s.kind.keeps_event());
                    registry
                        .patterns
                        .iter()
                        .filter(|s| s.target == Target::Pattern(p.clone()))
                        .count()
                }
            };
            self.store(registry);
            count
        };
        self.check_listener_count(&sub.target, count);
        Subscription {
            bus: Arc::downgrade(self),
            id,
            active: true,
        }
    }

    pub(crate) fn remove(&self, id: SubscriptionId) {
        let removed = {
            let _guard = self.changes.lock().expect("registry lock");
            let mut registry = Registry::clone(&self.registry.load());
            let mut removed = None;
            for list in registry.typed.values_mut() {
                if let Some(pos) = list.subscribers.iter().position(|s| s.id == id) {
                    let mut subs = list.subscribers.to_vec();
                    removed = Some(subs.remove(pos));
                    list.keeps_event = subs.iter().any(|s| s.kind.keeps_event());
                    list.subscribers = subs.into();
                }
            }
            if let Some(pos) = registry.patterns.iter().position(|s| s.id == id) {
                let mut subs = registry.patterns.to_vec();
                removed = Some(subs.remove(pos));
                registry.patterns = subs.into();
                registry.patterns_keep_event =
                    registry.patterns.iter().any(|s| s.kind.keeps_event());
            }
            registry.typed.retain(|_, l| !l.subscribers.is_empty());
            self.store(registry);
            removed
        };
        if let Some(sub) = removed {
            sub.kind.close();
        }
    }

    pub(crate) fn check_listener_count(&self, target: &Target, count: usize) {
        let max = self.config.max_listeners;
        if max == 0 || count <= max {
            return;
        }
        let name = match target {
            Target::Type(_, name) => (*name).to_owned(),
            Target::Pattern(p) => format!("pattern {p}"),
        };
        if self
            .warned
            .lock()
            .expect("warned lock")
            .insert(name.clone())
        {
            self.listener_warnings.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                listeners = count,
                max_listeners = max,
                target = %name,
                "possible subscription leak: more listeners than max_listeners for one event type"
            );
        }
    }

    pub(crate) fn report(
        &self,
        event: &dyn Event,
        subscription: SubscriptionId,
        kind: HandlerErrorKind,
    ) {
        match &kind {
            HandlerErrorKind::Failed(_) => self.handler_failures.fetch_add(1, Ordering::Relaxed),
            HandlerErrorKind::Panicked(_) => self.handler_panics.fetch_add(1, Ordering::Relaxed),
        };
        let error = HandlerError {
            event_type: event.event_type().to_owned(),
            event_id: event.event_id().map(str::to_owned),
            subscription,
            kind,
        };
        let handler = self.error_handler.load();
        if let Some(handle) = handler.as_ref() {
            // An error handler that panics must not take the emitter down either.
            if call_sync(|| {
                handle(&error);
                Ok(())
            })
            .is_ok()
            {
                return;
            }
        }
        self.errors_logged.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            event_type = %error.event_type,
            event_id = error.event_id.as_deref().unwrap_or(""),
            subscription = %subscription,
            "{error}"
        );
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends every async handler task and stream.
        let registry = self.registry.load();
        let typed = registry.typed.values().flat_map(|l| l.subscribers.iter());
        for sub in typed.chain(registry.patterns.iter()) {
            sub.kind.close();
        }
    }
}
