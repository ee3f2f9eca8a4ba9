//! Tidings' in-process event bus: Node's EventEmitter, done right in Rust.
//!
//! Subscribe by Rust type ([`Bus::on`]) or by event type pattern
//! ([`Bus::on_pattern`]: `order.*`, `*`); emit any value that implements
//! [`Event`], including a [`CloudEvent`].
//!
//! - **Sync handlers** run in registration order before [`Bus::emit`] returns. The
//!   handler list is fixed when an emit starts: subscribing or unsubscribing during
//!   an emit does not change who that emit reaches, as in Node.
//! - **Async handlers** ([`Bus::on_async`]) each get a task and a bounded queue, and
//!   handle their events one at a time, in order. An idle handler starts on an
//!   event inside the emit, as a JavaScript async function starts inside its call,
//!   and its task carries on from its first pending await ([`AsyncStart`]).
//!   [`Bus::emit`] and [`Bus::publish`] return once the event is handed over;
//!   [`Bus::publish_and_wait`] returns once every async handler has handled it,
//!   concurrently or one after another as [`BusConfig::await_mode`] says.
//! - **Nothing fails silently.** A handler that returns an error or panics never
//!   takes down the emitter or the other handlers: the error goes to the handler set
//!   with [`Bus::on_error`], or else is logged through `tracing` at error level and
//!   counted in [`BusStats`].
//! - **Streams** ([`Bus::stream`]) deliver events as a `futures_core::Stream` with a
//!   bounded buffer and an explicit [`Overflow`] policy, like Node's `events.on()`.
//! - Subscriptions end when their [`Subscription`] handle is dropped or
//!   [`Subscription::unsubscribe`]d; [`Bus::once`] handlers run at most once.
//! - Past [`BusConfig::max_listeners`] listeners for one type, the bus warns once
//!   per type, as Node does about likely leaks.
//! - A [`Recorder`] captures what was emitted, for application tests.
//!
//! The bus never touches disk; it is `Send + Sync` and cheap to clone.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use tidings_bus::{Bus, Event};
//!
//! struct OrderPlaced { total: u64 }
//! impl Event for OrderPlaced {
//!     fn event_type(&self) -> &str { "order.placed" }
//! }
//!
//! let bus = Bus::new();
//! let revenue = Arc::new(AtomicU64::new(0));
//! let sum = revenue.clone();
//! let _sub = bus.on(move |e: &OrderPlaced| { sum.fetch_add(e.total, Ordering::Relaxed); });
//! let audit = bus.recorder();
//!
//! bus.emit(OrderPlaced { total: 5 }).unwrap();
//! bus.emit(OrderPlaced { total: 7 }).unwrap();
//! assert_eq!(revenue.load(Ordering::Relaxed), 12);
//! assert_eq!(audit.types(), ["order.placed", "order.placed"]);
//! ```

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use tidings_types::CloudEvent;

mod envelope;
mod handler;
mod mailbox;
mod pattern;
mod recorder;
mod runner;

pub use envelope::Envelope;
pub use handler::{BoxError, HandlerError, HandlerErrorKind, HandlerResult, SubscriptionId};
pub use mailbox::{EventStream, Overflow};
pub use pattern::{Pattern, PatternError, PATTERN_BYTES_MAX};
pub use recorder::Recorder;

use handler::call_sync;
use mailbox::{Completion, Item, Mailbox, Offer, Ticket};
use runner::{queued, HandlerRunner, Runner};

/// Anything the bus can carry. The event type names it for pattern subscriptions
/// and in errors, namespaced `domain.action` (`order.placed`).
pub trait Event: Any + Send + Sync {
    /// The event's type.
    fn event_type(&self) -> &str;

    /// The event's id, if it has one (a CloudEvent does); shown in errors.
    fn event_id(&self) -> Option<&str> {
        None
    }
}

impl Event for CloudEvent {
    fn event_type(&self) -> &str {
        self.ty()
    }

    fn event_id(&self) -> Option<&str> {
        Some(self.id())
    }
}

/// How [`Bus::publish_and_wait`] runs the async handlers of one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AwaitMode {
    /// All handlers at once; returns when the last one is done.
    #[default]
    Concurrent,
    /// One handler after another, in registration order.
    Sequential,
}

/// Where an async handler starts on an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AsyncStart {
    /// Inside the emit, as JavaScript starts an async function, when the emit runs
    /// on a tokio task and the handler is idle with nothing queued: the handler runs
    /// until it finishes or waits on something not yet ready, and its own task
    /// carries on from there. Otherwise (the handler is busy with an earlier event,
    /// or the emitting thread is not a tokio task) the event is queued for the
    /// handler's task. Either way one handler takes its events one at a time, in
    /// emit order, and `emit` does not wait for anything the handler awaits.
    #[default]
    InEmit,
    /// Always on the handler's own task: an emit only queues the event, and never
    /// runs handler code.
    OnTask,
}

/// Bus-wide settings.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Warn (once per event type) when more listeners than this are subscribed to
    /// one type; 0 disables the warning. Node's default is 10.
    pub max_listeners: usize,
    /// How [`Bus::publish_and_wait`] runs async handlers.
    pub await_mode: AwaitMode,
    /// Events queued per async handler.
    pub handler_queue_capacity: usize,
    /// What a full async-handler queue does.
    pub handler_queue_overflow: Overflow,
    /// Where async handlers start on an event.
    pub async_start: AsyncStart,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_listeners: 10,
            await_mode: AwaitMode::Concurrent,
            handler_queue_capacity: 1024,
            handler_queue_overflow: Overflow::Wait,
            async_start: AsyncStart::InEmit,
        }
    }
}

/// Buffer size and overflow policy of one stream subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Events buffered before the overflow policy applies.
    pub capacity: usize,
    /// What happens when the buffer is full.
    pub overflow: Overflow,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            capacity: 1024,
            overflow: Overflow::Wait,
        }
    }
}

/// Counters of what went wrong, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Handlers that returned an error.
    pub handler_failures: u64,
    /// Handlers that panicked.
    pub handler_panics: u64,
    /// Handler errors that no error handler took, and so went to the log.
    pub errors_logged: u64,
    /// Events refused by a full subscriber buffer.
    pub overflow_refused: u64,
    /// Listener-count warnings given.
    pub listener_warnings: u64,
}

/// An emit reached every subscriber but some whose buffers were full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// Subscribers that refused the event because their buffer was full.
    #[error("event {event_type} was refused by {} subscriber(s) with full buffers: {subscriptions:?}", subscriptions.len())]
    Overflow {
        /// The event's type.
        event_type: String,
        /// The subscriptions that did not get it.
        subscriptions: Vec<SubscriptionId>,
    },
}

/// A subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// Async handlers need a tokio runtime to run on.
    #[error("async handlers need a tokio runtime; subscribe from inside one")]
    NoRuntime,
}

/// What [`Bus::publish_and_wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handled {
    /// Async handlers that the event was given to.
    pub handlers: usize,
    /// Of those, handlers that failed, panicked, or were unsubscribed first.
    pub failed: usize,
}

type SyncFn = dyn Fn(&dyn Event) -> Result<(), BoxError> + Send + Sync;
type ErrorFn = dyn Fn(&HandlerError) + Send + Sync;

enum Kind {
    Sync(Box<SyncFn>),
    Handler(Arc<dyn Runner>),
    Stream(Arc<Mailbox>),
    Record(Arc<Mutex<Vec<Arc<dyn Event>>>>),
}

impl Kind {
    /// Whether the subscriber keeps the event beyond the emit, so it needs an `Arc`.
    fn keeps_event(&self) -> bool {
        !matches!(self, Kind::Sync(_))
    }

    /// Ends an async handler's task or a stream; their queued events are dropped.
    fn close(&self) {
        match self {
            Kind::Handler(runner) => runner.mailbox().close(),
            Kind::Stream(m) => m.close(),
            Kind::Sync(_) | Kind::Record(_) => {}
        }
    }
}

/// Who a subscription listens to.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A Rust type, with its name for warnings.
    Type(TypeId, &'static str),
    Pattern(Pattern),
}

struct Subscriber {
    id: SubscriptionId,
    target: Target,
    kind: Kind,
    /// Set for `once` subscriptions when they have fired.
    once: Option<AtomicBool>,
    /// For typed sync handlers: the handler as an `Arc<TypedFn<E>>`, which an
    /// [`Emitter`] calls without going through `dyn Event`.
    typed: Option<Arc<dyn Any + Send + Sync>>,
}

/// A typed sync handler.
type TypedFn<E> = dyn Fn(&E) -> Result<(), BoxError> + Send + Sync;

/// Passes a `TypeId`'s own hash bits through: it is already a hash.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

#[derive(Clone, Default)]
struct TypedList {
    subscribers: Arc<[Arc<Subscriber>]>,
    keeps_event: bool,
}

/// An immutable snapshot of every subscription; an emit reads one snapshot.
#[derive(Clone, Default)]
struct Registry {
    typed: HashMap<TypeId, TypedList, BuildHasherDefault<TypeIdHasher>>,
    patterns: Arc<[Arc<Subscriber>]>,
    /// Whether some pattern subscriber keeps events (needs them shared).
    patterns_keep_event: bool,
}

struct Inner {
    config: BusConfig,
    registry: ArcSwap<Registry>,
    /// Bumped after every change to `registry`; [`Emitter`]s compare it.
    generation: AtomicU64,
    /// Serializes changes to the registry.
    changes: Mutex<()>,
    next_id: AtomicU64,
    error_handler: ArcSwap<Option<Box<ErrorFn>>>,
    warned: Mutex<HashSet<String>>,
    handler_failures: AtomicU64,
    handler_panics: AtomicU64,
    errors_logged: AtomicU64,
    overflow_refused: AtomicU64,
    listener_warnings: AtomicU64,
}

/// The event bus. Clones share the same subscriptions.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.inner.registry.load();
        let typed: usize = registry.typed.values().map(|l| l.subscribers.len()).sum();
        f.debug_struct("Bus")
            .field("subscriptions", &(typed + registry.patterns.len()))
            .finish()
    }
}

/// A live subscription. Dropping it unsubscribes; so does
/// [`unsubscribe`](Self::unsubscribe). [`detach`](Self::detach) keeps it for the
/// life of the bus.
#[must_use = "dropping a Subscription unsubscribes it"]
pub struct Subscription {
    bus: Weak<Inner>,
    id: SubscriptionId,
    active: bool,
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
    fn store(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current registry snapshot.
    fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(&self.registry.load())
    }

    fn add(self: &Arc<Self>, target: Target, kind: Kind, once: bool) -> Subscription {
        self.add_typed(self.new_id(), target, kind, once, None)
    }

    fn new_id(&self) -> SubscriptionId {
        SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn add_typed(
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

    fn remove(&self, id: SubscriptionId) {
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

    fn check_listener_count(&self, target: &Target, count: usize) {
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

    fn report(&self, event: &dyn Event, subscription: SubscriptionId, kind: HandlerErrorKind) {
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

/// Calls `f` with every subscriber an emit reaches, in registration order: the
/// typed list and the matching pattern subscribers, both already in id order,
/// merged without allocating.
fn for_each_reached<'a>(
    registry: &'a Registry,
    typed: Option<&'a TypedList>,
    event_type: &str,
    mut f: impl FnMut(&'a Arc<Subscriber>),
) {
    let typed = typed.map_or(&[][..], |l| &l.subscribers[..]);
    if registry.patterns.is_empty() {
        typed.iter().for_each(f);
        return;
    }
    let mut patterns = registry
        .patterns
        .iter()
        .filter(|s| matches!(&s.target, Target::Pattern(p) if p.matches(event_type)))
        .peekable();
    let mut typed = typed.iter().peekable();
    loop {
        let next = match (typed.peek(), patterns.peek()) {
            (Some(t), Some(p)) if t.id < p.id => typed.next(),
            (Some(_), Some(_)) | (None, Some(_)) => patterns.next(),
            (Some(_), None) => typed.next(),
            (None, None) => return,
        };
        f(next.expect("peeked"));
    }
}

/// Where one emit's hand-overs stand.
#[derive(Default)]
struct Dispatch {
    /// Offers that found a full `Wait` buffer; an async emitter waits on them.
    waiting: Vec<(Arc<Mailbox>, Item, SubscriptionId)>,
    /// Subscribers that refused the event.
    refused: Vec<SubscriptionId>,
    /// The event, kept when something above needs it for an error.
    event: Option<Arc<dyn Event>>,
}

impl Bus {
    /// A bus with the default configuration.
    pub fn new() -> Bus {
        Bus::with_config(BusConfig::default())
    }

    /// A bus with `config`.
    pub fn with_config(config: BusConfig) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                config,
                registry: ArcSwap::from_pointee(Registry::default()),
                generation: AtomicU64::new(0),
                changes: Mutex::new(()),
                next_id: AtomicU64::new(1),
                error_handler: ArcSwap::from_pointee(None),
                warned: Mutex::new(HashSet::new()),
                handler_failures: AtomicU64::new(0),
                handler_panics: AtomicU64::new(0),
                errors_logged: AtomicU64::new(0),
                overflow_refused: AtomicU64::new(0),
                listener_warnings: AtomicU64::new(0),
            }),
        }
    }

    /// Sends handler errors and panics to `handler` instead of the log.
    pub fn on_error(&self, handler: impl Fn(&HandlerError) + Send + Sync + 'static) {
        self.inner
            .error_handler
            .store(Arc::new(Some(Box::new(handler))));
    }

    /// Counters of failures, refusals and warnings so far.
    pub fn stats(&self) -> BusStats {
        let i = &self.inner;
        BusStats {
            handler_failures: i.handler_failures.load(Ordering::Relaxed),
            handler_panics: i.handler_panics.load(Ordering::Relaxed),
            errors_logged: i.errors_logged.load(Ordering::Relaxed),
            overflow_refused: i.overflow_refused.load(Ordering::Relaxed),
            listener_warnings: i.listener_warnings.load(Ordering::Relaxed),
        }
    }

    /// Number of subscriptions that an event of Rust type `E` and event type
    /// `event_type` would reach.
    pub fn listener_count<E: Event>(&self, event_type: &str) -> usize {
        self.inner.with_registry(|registry| {
            let typed = registry.typed.get(&TypeId::of::<E>());
            let mut count = 0;
            for_each_reached(registry, typed, event_type, |_| count += 1);
            count
        })
    }

    fn typed_target<E: Event>() -> Target {
        Target::Type(TypeId::of::<E>(), std::any::type_name::<E>())
    }

    fn typed_sync<E, R>(
        handler: impl Fn(&E) -> R + Send + Sync + 'static,
    ) -> (Kind, Arc<dyn Any + Send + Sync>)
    where
        E: Event,
        R: HandlerResult,
    {
        let typed: Arc<TypedFn<E>> = Arc::new(move |e: &E| handler(e).into_result());
        let erased = Arc::clone(&typed);
        let kind = Kind::Sync(Box::new(move |e: &dyn Event| {
            let any: &dyn Any = e;
            erased(
                any.downcast_ref::<E>()
                    .expect("the registry routes by type"),
            )
        }));
        (kind, Arc::new(typed))
    }

    /// Calls `handler` with every event of type `E`, synchronously, in
    /// registration order, before `emit` returns.
    pub fn on<E, R>(&self, handler: impl Fn(&E) -> R + Send + Sync + 'static) -> Subscription
    where
        E: Event,
        R: HandlerResult,
    {
        self.add_typed_sync(handler, false)
    }

    /// Like [`on`](Self::on), but for the first event only.
    pub fn once<E, R>(&self, handler: impl Fn(&E) -> R + Send + Sync + 'static) -> Subscription
    where
        E: Event,
        R: HandlerResult,
    {
        self.add_typed_sync(handler, true)
    }

    fn add_typed_sync<E, R>(
        &self,
        handler: impl Fn(&E) -> R + Send + Sync + 'static,
        once: bool,
    ) -> Subscription
    where
        E: Event,
        R: HandlerResult,
    {
        let (kind, typed) = Self::typed_sync(handler);
        let id = self.inner.new_id();
        self.inner
            .add_typed(id, Self::typed_target::<E>(), kind, once, Some(typed))
    }

    /// Calls `handler` synchronously with every event whose type matches `pattern`.
    pub fn on_pattern<R>(
        &self,
        pattern: &str,
        handler: impl Fn(&dyn Event) -> R + Send + Sync + 'static,
    ) -> Result<Subscription, SubscribeError>
    where
        R: HandlerResult,
    {
        let target = Target::Pattern(Pattern::new(pattern)?);
        let kind = Kind::Sync(Box::new(move |e: &dyn Event| handler(e).into_result()));
        Ok(self.inner.add(target, kind, false))
    }

    fn spawn_handler<T, F, Fut>(
        &self,
        target: Target,
        convert: fn(Arc<dyn Event>) -> Arc<T>,
        handler: F,
    ) -> Result<Subscription, SubscribeError>
    where
        T: ?Sized + Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult,
    {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SubscribeError::NoRuntime)?;
        let config = &self.inner.config;
        let mailbox = Mailbox::new(config.handler_queue_capacity, config.handler_queue_overflow);
        let id = self.inner.new_id();
        let runner = HandlerRunner::new(id, Arc::downgrade(&self.inner), mailbox, handler, convert);
        let subscription =
            self.inner
                .add_typed(id, target, Kind::Handler(runner.clone()), false, None);
        runtime.spawn(runner.serve());
        Ok(subscription)
    }

    /// Runs `handler` for every event of type `E`, one event at a time, in emit
    /// order: started inside the emit or on the handler's own task, as
    /// [`BusConfig::async_start`] says. Must be called inside a tokio runtime.
    pub fn on_async<E, F, Fut>(&self, handler: F) -> Result<Subscription, SubscribeError>
    where
        E: Event,
        F: Fn(Arc<E>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult,
    {
        self.spawn_handler(Self::typed_target::<E>(), downcast::<E>, handler)
    }

    /// Like [`on_async`](Self::on_async), for every event whose type matches `pattern`.
    pub fn on_pattern_async<F, Fut>(
        &self,
        pattern: &str,
        handler: F,
    ) -> Result<Subscription, SubscribeError>
    where
        F: Fn(Arc<dyn Event>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult,
    {
        let target = Target::Pattern(Pattern::new(pattern)?);
        self.spawn_handler(target, |e| e, handler)
    }

    /// Events of type `E` as a stream.
    pub fn stream<E: Event>(&self, config: StreamConfig) -> EventStream<E> {
        let mailbox = Mailbox::new(config.capacity, config.overflow);
        let subscription = self.inner.add(
            Self::typed_target::<E>(),
            Kind::Stream(Arc::clone(&mailbox)),
            false,
        );
        EventStream::new(mailbox, subscription, downcast::<E>)
    }

    /// Events whose type matches `pattern` as a stream.
    pub fn stream_pattern(
        &self,
        pattern: &str,
        config: StreamConfig,
    ) -> Result<EventStream<dyn Event>, SubscribeError> {
        let target = Target::Pattern(Pattern::new(pattern)?);
        let mailbox = Mailbox::new(config.capacity, config.overflow);
        let subscription = self
            .inner
            .add(target, Kind::Stream(Arc::clone(&mailbox)), false);
        Ok(EventStream::new(mailbox, subscription, |e| e))
    }

    /// Starts recording every event emitted from now on, for tests.
    pub fn recorder(&self) -> Recorder {
        let events = Arc::new(Mutex::new(Vec::new()));
        let target = Target::Pattern(Pattern::new("*").expect("a valid pattern"));
        let subscription = self
            .inner
            .add(target, Kind::Record(Arc::clone(&events)), false);
        Recorder::new(events, subscription)
    }

    /// A handle for emitting events of type `E` fast: it keeps its own view of the
    /// subscriptions and only rereads them when they changed. Give each producer
    /// its own (it is `Send` but not `Sync`).
    pub fn emitter<E: Event>(&self) -> Emitter<E> {
        Emitter {
            bus: self.clone(),
            cache: RefCell::new(None),
        }
    }

    /// Emits `event`: runs the sync handlers it reaches, in registration order, and
    /// hands it to async handlers and streams. A subscriber whose buffer is full gets
    /// its [`Overflow`] policy; `Wait` cannot wait here and refuses, as `Error` does.
    /// The error lists the subscribers that refused; every other one got the event.
    pub fn emit<E: Event>(&self, event: E) -> Result<(), EmitError> {
        let registry = self.inner.registry.load();
        let typed = registry.typed.get(&TypeId::of::<E>());
        if registry.patterns.is_empty() {
            let Some(list) = typed else { return Ok(()) };
            if !list.keeps_event {
                // The common case: only sync handlers of this type. No allocation.
                for sub in list.subscribers.iter() {
                    self.run_sync(sub, &event);
                }
                return Ok(());
            }
        }
        let mut d = self.dispatch(&registry, typed, event);
        drop(registry);
        for (_, _, id) in std::mem::take(&mut d.waiting) {
            self.inner.overflow_refused.fetch_add(1, Ordering::Relaxed);
            d.refused.push(id);
        }
        d.result()
    }

    /// Like [`emit`](Self::emit), but waits for room in buffers whose policy is
    /// [`Overflow::Wait`]. Returns once every subscriber has the event.
    pub async fn publish<E: Event>(&self, event: E) -> Result<(), EmitError> {
        let d = self.inner.with_registry(|registry| {
            let typed = registry.typed.get(&TypeId::of::<E>());
            self.dispatch(registry, typed, event)
        });
        self.finish(d).await
    }

    /// Like [`publish`](Self::publish), then waits until every async handler the
    /// event reached has handled it: all at once or one after another, as
    /// [`BusConfig::await_mode`] says. Handler failures still go to the error
    /// handler; the answer counts them.
    pub async fn publish_and_wait<E: Event>(&self, event: E) -> Result<Handled, EmitError> {
        let event: Arc<dyn Event> = Arc::new(event);
        let (handlers, d) = self.inner.with_registry(|registry| {
            let typed = registry.typed.get(&TypeId::of::<E>());
            let mut handlers = Vec::new();
            let mut d = Dispatch {
                event: Some(Arc::clone(&event)),
                ..Dispatch::default()
            };
            for_each_reached(registry, typed, event.event_type(), |sub| match &sub.kind {
                Kind::Handler(runner) => handlers.push((Arc::clone(runner), sub.id)),
                _ => self.deliver(sub, &event, &mut d),
            });
            (handlers, d)
        });
        let failed = match self.inner.config.await_mode {
            AwaitMode::Concurrent => {
                let completion = Completion::new(handlers.len());
                let mut d = d;
                for (runner, id) in &handlers {
                    let ticket = Ticket::new(&completion);
                    self.hand_over(&**runner, *id, &event, Some(ticket), &mut d);
                }
                self.finish(d).await?;
                completion.wait().await
            }
            AwaitMode::Sequential => {
                self.finish(d).await?;
                let mut failed = 0;
                for (runner, id) in &handlers {
                    let completion = Completion::new(1);
                    let mut one = Dispatch {
                        event: Some(Arc::clone(&event)),
                        ..Dispatch::default()
                    };
                    let ticket = Ticket::new(&completion);
                    self.hand_over(&**runner, *id, &event, Some(ticket), &mut one);
                    self.finish(one).await?;
                    failed += completion.wait().await;
                }
                failed
            }
        };
        Ok(Handled {
            handlers: handlers.len(),
            failed,
        })
    }

    /// Delivers `event` to every subscriber it reaches, in registration order.
    fn dispatch<E: Event>(
        &self,
        registry: &Registry,
        typed: Option<&TypedList>,
        event: E,
    ) -> Dispatch {
        let keeps = typed.is_some_and(|l| l.keeps_event) || registry.patterns_keep_event;
        if !keeps {
            for_each_reached(registry, typed, event.event_type(), |sub| {
                self.run_sync(sub, &event)
            });
            return Dispatch::default();
        }
        let shared: Arc<dyn Event> = Arc::new(event);
        let mut d = Dispatch::default();
        for_each_reached(registry, typed, shared.event_type(), |sub| {
            self.deliver(sub, &shared, &mut d)
        });
        if !d.waiting.is_empty() || !d.refused.is_empty() {
            d.event = Some(shared);
        }
        d
    }

    fn deliver(&self, sub: &Subscriber, event: &Arc<dyn Event>, d: &mut Dispatch) {
        match &sub.kind {
            Kind::Sync(_) => self.run_sync(sub, &**event),
            Kind::Handler(runner) => self.hand_over(&**runner, sub.id, event, None, d),
            Kind::Stream(m) => self.offer(m, sub.id, queued(event, None), d),
            Kind::Record(events) => events
                .lock()
                .expect("recorder lock")
                .push(Arc::clone(event)),
        }
    }

    /// Gives `event` to an async handler: started here when
    /// [`BusConfig::async_start`] allows and the handler is free, else queued.
    fn hand_over(
        &self,
        runner: &dyn Runner,
        id: SubscriptionId,
        event: &Arc<dyn Event>,
        ticket: Option<Ticket>,
        d: &mut Dispatch,
    ) {
        // Handler code may need the runtime (timers, IO, spawning), so it starts
        // here only on a task, where the runtime is at hand.
        let in_emit =
            self.inner.config.async_start == AsyncStart::InEmit && tokio::task::try_id().is_some();
        let ticket = if in_emit {
            match runner.try_start(event, ticket) {
                Ok(()) => return,
                Err(ticket) => ticket,
            }
        } else {
            ticket
        };
        self.offer(runner.mailbox(), id, queued(event, ticket), d);
    }

    fn offer(&self, mailbox: &Arc<Mailbox>, id: SubscriptionId, item: Item, d: &mut Dispatch) {
        match mailbox.offer(item) {
            Offer::Accepted => {}
            Offer::Full(item) => d.waiting.push((Arc::clone(mailbox), item, id)),
            Offer::Refused => {
                self.inner.overflow_refused.fetch_add(1, Ordering::Relaxed);
                d.refused.push(id);
            }
        }
    }

    fn run_sync(&self, sub: &Subscriber, event: &dyn Event) {
        let Kind::Sync(f) = &sub.kind else { return };
        if let Some(fired) = &sub.once {
            if fired.swap(true, Ordering::AcqRel) {
                return;
            }
            self.inner.remove(sub.id);
        }
        if let Err(kind) = call_sync(|| f(event)) {
            self.inner.report(event, sub.id, kind);
        }
    }

    /// Waits for room where the policy is `Wait`, then reports refusals.
    async fn finish(&self, mut d: Dispatch) -> Result<(), EmitError> {
        for (mailbox, item, id) in std::mem::take(&mut d.waiting) {
            if let Offer::Refused | Offer::Full(_) = mailbox.offer_waiting(item).await {
                self.inner.overflow_refused.fetch_add(1, Ordering::Relaxed);
                d.refused.push(id);
            }
        }
        d.result()
    }
}

impl Dispatch {
    fn result(mut self) -> Result<(), EmitError> {
        if self.refused.is_empty() {
            return Ok(());
        }
        self.refused.sort_unstable();
        let event_type = self
            .event
            .as_ref()
            .map_or_else(String::new, |e| e.event_type().to_owned());
        Err(EmitError::Overflow {
            event_type,
            subscriptions: self.refused,
        })
    }
}

/// The typed sync handlers an [`Emitter`] calls directly, valid for one registry
/// generation; `None` when the slow path is needed (pattern subscriptions, or
/// subscribers that are not typed sync handlers).
type FastList<E> = Option<Vec<(Arc<Subscriber>, Arc<TypedFn<E>>)>>;

/// Emits events of one type on a bus, with the subscription lookup cached. From
/// [`Bus::emitter`].
///
/// While the subscriptions stay the same, an emit costs one atomic load plus the
/// handler calls. The cache is checked against the bus's generation on every emit,
/// so subscribing and unsubscribing take effect exactly as with [`Bus::emit`]; an
/// unsubscribed handler's closure is released at this emitter's next emit.
pub struct Emitter<E: Event> {
    bus: Bus,
    cache: RefCell<Option<(u64, FastList<E>)>>,
}

impl<E: Event> Emitter<E> {
    /// Emits `event`, as [`Bus::emit`] does.
    pub fn emit(&self, event: E) -> Result<(), EmitError> {
        let generation = self.bus.inner.generation.load(Ordering::Acquire);
        // A handler that emits through this same emitter finds the cache in use
        // and takes the ordinary path.
        let Ok(mut cache) = self.cache.try_borrow_mut() else {
            return self.bus.emit(event);
        };
        if cache.as_ref().is_none_or(|(g, _)| *g != generation) {
            *cache = Some((generation, self.fast_list()));
        }
        let Some((_, Some(list))) = cache.as_ref() else {
            drop(cache);
            return self.bus.emit(event);
        };
        for (sub, handler) in list {
            if let Some(fired) = &sub.once {
                if fired.swap(true, Ordering::AcqRel) {
                    continue;
                }
                self.bus.inner.remove(sub.id);
            }
            if let Err(kind) = call_sync(|| handler(&event)) {
                self.bus.inner.report(&event, sub.id, kind);
            }
        }
        Ok(())
    }

    fn fast_list(&self) -> FastList<E> {
        let registry = self.bus.inner.registry.load();
        if !registry.patterns.is_empty() {
            return None;
        }
        let Some(list) = registry.typed.get(&TypeId::of::<E>()) else {
            return Some(Vec::new());
        };
        list.subscribers
            .iter()
            .map(|sub| {
                let typed = sub.typed.as_ref()?.downcast_ref::<Arc<TypedFn<E>>>()?;
                Some((Arc::clone(sub), Arc::clone(typed)))
            })
            .collect()
    }
}

impl<E: Event> std::fmt::Debug for Emitter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Emitter<{}>", std::any::type_name::<E>())
    }
}

fn downcast<E: Event>(e: Arc<dyn Event>) -> Arc<E> {
    let any: Arc<dyn Any + Send + Sync> = e;
    any.downcast::<E>()
        .unwrap_or_else(|_| unreachable!("the registry routes by type"))
}
