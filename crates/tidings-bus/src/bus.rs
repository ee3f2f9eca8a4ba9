//! [`Bus`]: subscribing, emitting and publishing.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::handler::call_sync;
use crate::inner::Inner;
use crate::mailbox::{Completion, Item, Mailbox, Offer, Ticket};
use crate::registry::{
    downcast, for_each_reached, Kind, Registry, Subscriber, Target, TypedFn, TypedList,
};
use crate::runner::{queued, HandlerRunner, Runner};
use crate::{
    AsyncStart, AwaitMode, BusConfig, BusStats, EmitError, Emitter, Event, EventStream, Handled,
    HandlerError, HandlerResult, Pattern, Recorder, StreamConfig, SubscribeError, Subscription,
    SubscriptionId,
};

/// The event bus. Clones share the same subscriptions.
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
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
