//! The [`Router`]: handlers per topic, group and event type, run with a fixed
//! pipeline of what the production checklists ask of consumer code.
//!
//! Every delivery goes through the same steps, in this order, whatever order
//! the route was configured in (Watermill's users lose messages when retry
//! and poison-queue middleware are registered the wrong way round):
//!
//! 1. **Dispatch** by event type to the route's handler (typed through
//!    serde, or the raw CloudEvent). An event type without a handler is
//!    acknowledged and counted as unhandled; a record that is no CloudEvent
//!    is dead-lettered.
//! 2. **Circuit breaker** (optional): after `failures` consecutive failures
//!    the route stops receiving for `open_for`, then lets one delivery
//!    through; failures while it is open give the delivery back unhandled,
//!    so they burn no delivery attempts.
//! 3. **Timeout** per try, and the handler run under a lease kept alive: the
//!    lease is extended while the handler runs and while a retry waits.
//!    [`Middleware`] (the router's, then the route's) runs around the handler
//!    inside the timeout, once per try: where an inbox, a schema check or
//!    tracing plugs in, handing what the handler needs (a transaction, a
//!    span) on through [`Context::insert`].
//! 4. **Retry in process** with exponential backoff and jitter, for errors
//!    classed [`ErrorClass::Retry`].
//! 5. **Redelivery by the backend**: after the last try in process, a nack
//!    (with the route's delay, or the group's backoff).
//! 6. **Dead letter** by the backend after `max_deliveries`, with the reason
//!    and the attempt count; at once for [`ErrorClass::DeadLetter`].
//!
//! A successful handler's emitted events are published (correlation and
//! causation set, see [`Context::emit`]; through the router's
//! [`PublishHook`](crate::PublishHook)s) before its event is acknowledged.
//!
//! Concurrency is bounded per route; with key ordering, one event per
//! `partitionkey` is handled at a time (the next one waits until the first is
//! acknowledged or dead-lettered, not merely retried), while other keys go on.
//!
//! [`Router::run`] stops receiving when its stop future resolves, lets the
//! handlers under way finish up to the shutdown timeout, gives back every
//! delivery not finished, and closes the subscriptions.

mod handler;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use futures_util::FutureExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use handler::{Classify, Context, ErrorClass, HandlerError, Middleware, Next, RoutePolicy};

use crate::backend::{
    Answer, Backend, Backoff, Incoming, Mode, Payload, Source, Start, SubscribeOptions, Ticket,
};
use crate::delivery::Settle;
use crate::subscriber::Subscriber;
use crate::{Delivery, Error, Publisher};
pub(crate) use handler::runs_by_topic;
use handler::DynHandler;

/// How long the router's receive waits before asking again.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// How long the router waits before receiving again after a transient
/// backend error.
const BACKEND_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Most deliveries that wait for their key, per unit of concurrency.
const WAITING_PER_SLOT: usize = 4;
/// Most acks sent to the backend together.
const ACK_BATCH_MAX: usize = 256;
/// Batches of acks under way at once.
const ACK_BATCHES_IN_FLIGHT: usize = 4;

/// An ack for the route's acker, and where its answer goes.
type AckRequest = (Ticket, tokio::sync::oneshot::Sender<Result<(), Error>>);

/// Sends the route's acks in batches: whatever is queued when a batch can go
/// goes in it, so a busy route shares its backend calls (one HTTP request,
/// one journal write) and an idle one waits for nothing. Up to
/// [`ACK_BATCHES_IN_FLIGHT`] batches are under way at once, so a backend's
/// own group commit still overlaps them.
async fn ack_loop(source: Arc<dyn Source>, mut requests: mpsc::Receiver<AckRequest>) {
    let in_flight = Arc::new(Semaphore::new(ACK_BATCHES_IN_FLIGHT));
    let mut batches = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let Some(first) = requests.recv().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < ACK_BATCH_MAX {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let source = Arc::clone(&source);
        batches.spawn(async move {
            let tickets: Vec<Ticket> = batch.iter().map(|(t, _)| t.clone()).collect();
            let results = source.ack_many(&tickets).await;
            for ((_, reply), result) in batch.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            drop(permit);
        });
        // Reap what finished, so the set does not grow.
        while batches.try_join_next().is_some() {}
    }
    while batches.join_next().await.is_some() {}
}

/// Retries in process: `tries` tries in all, waiting a jittered
/// `backoff` between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries per delivery, at least 1 (1: no retry in process).
    pub tries: u32,
    /// The wait between tries.
    pub backoff: Backoff,
}

impl Default for Retry {
    /// Three tries, 100 ms then 200 ms apart (jittered), at most 5 s.
    fn default() -> Self {
        Retry {
            tries: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                factor: 2,
                max: Duration::from_secs(5),
            },
        }
    }
}

/// A circuit breaker: after `failures` consecutive failures the route
/// pauses for `open_for`, then tries one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// How long it stays open.
    pub open_for: Duration,
}

/// What a run did, per route and in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Deliveries acknowledged after their handler succeeded.
    pub handled: u64,
    /// Tries that failed and were tried again in process.
    pub retried: u64,
    /// Deliveries handed back to the backend for redelivery.
    pub nacked: u64,
    /// Deliveries sent to the dead letters by the router.
    pub dead_lettered: u64,
    /// Deliveries acknowledged and dropped ([`ErrorClass::Drop`]).
    pub dropped: u64,
    /// Deliveries of event types without a handler, acknowledged.
    pub unhandled: u64,
    /// Deliveries given back unhandled (shutdown, open breaker).
    pub released: u64,
    /// Answers the backend refused (a lease that ran out meanwhile): the
    /// event goes to another attempt.
    pub answer_failures: u64,
}

#[derive(Default)]
struct Counters([AtomicU64; 8]);

impl Counters {
    fn add(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> Report {
        let get = |o: Outcome| self.0[o as usize].load(Ordering::Relaxed);
        Report {
            handled: get(Outcome::Handled),
            retried: get(Outcome::Retried),
            nacked: get(Outcome::Nacked),
            dead_lettered: get(Outcome::DeadLettered),
            dropped: get(Outcome::Dropped),
            unhandled: get(Outcome::Unhandled),
            released: get(Outcome::Released),
            answer_failures: get(Outcome::AnswerFailed),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Handled,
    Retried,
    Nacked,
    DeadLettered,
    Dropped,
    Unhandled,
    Released,
    AnswerFailed,
}

impl Outcome {
    /// Whether the event is done for the group (the next of its key may go).
    fn resolves(self) -> bool {
        matches!(
            self,
            Outcome::Handled | Outcome::DeadLettered | Outcome::Dropped | Outcome::Unhandled
        )
    }
}

/// One topic and group, its handlers and its policy.
pub struct Route {
    options: SubscribeOptions,
    handlers: HashMap<String, DynHandler>,
    fallback: Option<DynHandler>,
    concurrency: usize,
    retry: Retry,
    timeout: Option<Duration>,
    redelivery_delay: Option<Duration>,
    breaker: Option<Breaker>,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl Route {
    fn new(topic: &str, group: &str) -> Route {
        Route {
            options: SubscribeOptions::queue(topic, group),
            handlers: HashMap::new(),
            fallback: None,
            concurrency: 16,
            retry: Retry::default(),
            timeout: None,
            redelivery_delay: None,
            breaker: None,
            middleware: Vec::new(),
        }
    }

    /// Runs `middleware` around every try of this route's handlers, inside
    /// the router's middleware and the route's added before it (see
    /// [`Middleware`] for where in the pipeline).
    pub fn wrap(&mut self, middleware: impl Middleware) -> &mut Route {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Queue mode (the default) or stream mode.
    pub fn mode(&mut self, mode: Mode) -> &mut Route {
        self.options.mode = mode;
        self
    }

    /// Where a new group starts (the earliest event by default).
    pub fn start(&mut self, start: Start) -> &mut Route {
        self.options.start = start;
        self
    }

    /// The lease of one delivery (30 s by default); the router extends it
    /// while a handler runs or a retry waits.
    pub fn ack_timeout(&mut self, timeout: Duration) -> &mut Route {
        self.options.ack_timeout = timeout;
        self
    }

    /// Deliveries before the backend dead-letters an event (5 by default).
    pub fn max_deliveries(&mut self, n: u32) -> &mut Route {
        self.options.max_deliveries = n;
        self
    }

    /// The backend's backoff between deliveries.
    pub fn redelivery_backoff(&mut self, backoff: Backoff) -> &mut Route {
        self.options.backoff = backoff;
        self
    }

    /// Redeliver after this delay instead of the backend's backoff.
    pub fn redelivery_delay(&mut self, delay: Duration) -> &mut Route {
        self.redelivery_delay = Some(delay);
        self
    }

    /// One event per `partitionkey` at a time; other keys go on.
    pub fn key_ordering(&mut self) -> &mut Route {
        self.options.key_ordering = true;
        self
    }

    /// Deliveries handled at once (16 by default).
    pub fn concurrency(&mut self, n: usize) -> &mut Route {
        self.concurrency = n.max(1);
        self
    }

    /// Tries in process (three, 100 ms apart, by default).
    pub fn retry(&mut self, retry: Retry) -> &mut Route {
        self.retry = Retry {
            tries: retry.tries.max(1),
            ..retry
        };
        self
    }

    /// The longest one try may take; a try that takes longer fails (and is
    /// retried).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Route {
        self.timeout = Some(timeout);
        self
    }

    /// Pauses the route after consecutive failures.
    pub fn breaker(&mut self, breaker: Breaker) -> &mut Route {
        self.breaker = Some(breaker);
        self
    }

    /// Handles events of `event_type` (`*` for every type without a handler
    /// of its own) as `T`, decoded from their JSON data; data that does not
    /// decode is dead-lettered.
    pub fn on<T, F, Fut, E>(&mut self, event_type: &str, handler: F) -> &mut Route
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Context, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Classify,
    {
        self.register(event_type, handler::typed(handler))
    }

    /// Handles events of `event_type` (`*` for every type without a handler
    /// of its own) as CloudEvents: [`Context::event`].
    pub fn on_event<F, Fut, E>(&mut self, event_type: &str, handler: F) -> &mut Route
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Classify,
    {
        self.register(event_type, handler::raw(handler))
    }

    /// The policy middleware checks itself against.
    fn policy(&self) -> RoutePolicy {
        RoutePolicy {
            topic: self.options.topic.clone(),
            group: self.options.group.clone(),
            mode: self.options.mode,
            ack_timeout: self.options.ack_timeout,
            max_deliveries: self.options.max_deliveries,
            redelivery_wait_max: self.redelivery_delay.unwrap_or(self.options.backoff.max),
            tries: self.retry.tries,
            try_timeout: self.timeout,
            retry_wait_max: self.retry.backoff.max,
        }
    }

    fn register(&mut self, event_type: &str, handler: DynHandler) -> &mut Route {
        if event_type == "*" {
            self.fallback = Some(handler);
        } else {
            self.handlers.insert(event_type.to_owned(), handler);
        }
        self
    }
}

/// Handlers over one backend; see the module documentation.
pub struct Router {
    backend: Arc<dyn Backend>,
    routes: Vec<Route>,
    shutdown_timeout: Duration,
    partitions: u32,
    middleware: Vec<Arc<dyn Middleware>>,
    publish_hooks: Vec<Arc<dyn crate::PublishHook>>,
}

impl Router {
    /// A router on `backend`; its publisher publishes what handlers emit.
    pub fn new(backend: Arc<dyn Backend>) -> Router {
        Router {
            backend,
            routes: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            partitions: crate::DEFAULT_PARTITIONS,
            middleware: Vec::new(),
            publish_hooks: Vec::new(),
        }
    }

    /// Runs `middleware` around every try of every route's handlers, outside
    /// the routes' own and inside the router's added before it.
    pub fn wrap(mut self, middleware: impl Middleware) -> Router {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Runs `hook` on every batch of events the handlers emit, before it is
    /// published (see [`PublishHook`](crate::PublishHook)).
    pub fn publish_hook(mut self, hook: Arc<dyn crate::PublishHook>) -> Router {
        self.publish_hooks.push(hook);
        self
    }

    /// How long handlers under way get to finish once the run is told to
    /// stop (30 s by default).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Router {
        self.shutdown_timeout = timeout;
        self
    }

    /// Partitions of topics the router creates (for subscriptions and
    /// emitted events) when they do not exist.
    pub fn partitions(mut self, partitions: u32) -> Router {
        self.partitions = partitions;
        self
    }

    /// The route of `topic` and `group`, added on first use: register its
    /// handlers and set its policy on it.
    pub fn route(&mut self, topic: &str, group: &str) -> &mut Route {
        let at = self
            .routes
            .iter()
            .position(|r| r.options.topic == topic && r.options.group == group);
        let at = at.unwrap_or_else(|| {
            self.routes.push(Route::new(topic, group));
            self.routes.len() - 1
        });
        &mut self.routes[at]
    }

    /// Subscribes every route and handles deliveries until `stop` resolves,
    /// then shuts down as the module documentation says. Returns what was
    /// done; fails only when a subscription cannot be opened.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) -> Result<Report, Error> {
        let publisher = self.publish_hooks.into_iter().fold(
            Publisher::with_partitions(Arc::clone(&self.backend), self.partitions),
            Publisher::with_hook,
        );
        let subscriber = Subscriber::with_partitions(Arc::clone(&self.backend), self.partitions);
        // Every route is checked before any subscribes.
        for route in &self.routes {
            let policy = route.policy();
            for layer in self.middleware.iter().chain(&route.middleware) {
                layer.check(&policy).map_err(|e| {
                    Error::Config(format!(
                        "the route of topic {} and group {}: {e}",
                        policy.topic, policy.group
                    ))
                })?;
            }
        }
        let stopping = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let mut runs = JoinSet::new();
        for mut route in self.routes {
            let layers: Vec<Arc<dyn Middleware>> = self
                .middleware
                .iter()
                .chain(&route.middleware)
                .cloned()
                .collect();
            if !layers.is_empty() {
                for handler in route.handlers.values_mut().chain(route.fallback.as_mut()) {
                    *handler = handler::wrap(Arc::clone(handler), &layers);
                }
            }
            let sub = subscriber.subscribe(route.options.clone()).await?;
            let source = sub.source();
            let lease_extension = self
                .backend
                .capabilities(route.options.mode)
                .lease_extension
                .available();
            let run = RouteRun {
                route: Arc::new(route),
                source,
                publisher: publisher.clone(),
                counters: Arc::clone(&counters),
                stopping: stopping.clone(),
                shutdown_timeout: self.shutdown_timeout,
                lease_extension,
                breaker: Arc::new(Mutex::new(BreakerState::default())),
            };
            runs.spawn(run.run());
        }
        stop.await;
        stopping.cancel();
        while runs.join_next().await.is_some() {}
        Ok(counters.report())
    }
}

#[derive(Default)]
struct BreakerState {
    consecutive: u32,
    open_until: Option<Instant>,
    /// A delivery let through after the breaker was open, not yet finished.
    trial: bool,
}

/// One route, running.
struct RouteRun {
    route: Arc<Route>,
    source: Arc<dyn Source>,
    publisher: Publisher,
    counters: Arc<Counters>,
    stopping: CancellationToken,
    shutdown_timeout: Duration,
    lease_extension: bool,
    breaker: Arc<Mutex<BreakerState>>,
}

/// A delivery, with the slot it was received under (`None` once it waits
/// for its key: a waiting delivery takes no slot).
struct Taken {
    incoming: Incoming,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl RouteRun {
    async fn run(self) {
        let concurrency = self.route.concurrency;
        // A slot per delivery received and not waiting for its key: at most
        // `concurrency` are received ahead or handled at once.
        let slots = Arc::new(Semaphore::new(concurrency));
        let (tx, mut rx) = mpsc::channel::<Taken>(concurrency);
        let receiver = tokio::spawn(receive_loop(
            Arc::clone(&self.source),
            Arc::clone(&slots),
            tx,
            self.stopping.clone(),
            self.route.breaker.map(|b| (b, Arc::clone(&self.breaker))),
            concurrency,
        ));
        // Acks go in batches where the backend gains by it; otherwise each
        // is sent at once, with no channel on the way.
        let (acks, acker) = if self.source.batches_acks() {
            let (acks, ack_requests) = mpsc::channel::<AckRequest>(ACK_BATCH_MAX);
            let acker = tokio::spawn(ack_loop(Arc::clone(&self.source), ack_requests));
            (Some(acks), Some(acker))
        } else {
            (None, None)
        };
        let mut tasks: JoinSet<(Option<String>, Outcome)> = JoinSet::new();
        // Per key: the event that holds it (partition, offset), and the
        // deliveries waiting for it.
        let mut busy: HashMap<String, (u32, u64)> = HashMap::new();
        let mut waiting: HashMap<String, VecDeque<Taken>> = HashMap::new();
        let ordered = self.route.options.key_ordering;
        let waiting_max = concurrency * WAITING_PER_SLOT;
        let mut waiting_now = 0;
        loop {
            tokio::select! {
                taken = rx.recv(), if waiting_now < waiting_max => {
                    let Some(mut taken) = taken else { break };
                    let key = if ordered { key_of(&taken.incoming) } else { None };
                    if let Some(k) = &key {
                        let place = (taken.incoming.ticket.partition, taken.incoming.ticket.offset);
                        match busy.get(k) {
                            Some(holder) if *holder != place => {
                                taken.slot = None;
                                waiting.entry(k.clone()).or_default().push_back(taken);
                                waiting_now += 1;
                                continue;
                            }
                            _ => { busy.insert(k.clone(), place); }
                        }
                    }
                    self.start(&mut tasks, &slots, &acks, key, taken);
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok((key, outcome)) = done else { continue };
                    if let Some(k) = key {
                        if outcome.resolves() {
                            busy.remove(&k);
                            if let Some(next) = waiting.get_mut(&k).and_then(VecDeque::pop_front) {
                                waiting_now -= 1;
                                let place = (next.incoming.ticket.partition, next.incoming.ticket.offset);
                                busy.insert(k.clone(), place);
                                self.start(&mut tasks, &slots, &acks, Some(k.clone()), next);
                            }
                            if waiting.get(&k).is_some_and(VecDeque::is_empty) {
                                waiting.remove(&k);
                            }
                        }
                    }
                }
            }
        }
        // The receiver stopped (the run is stopping): give back what waits,
        // let what runs finish up to the deadline, give back the rest.
        let _ = receiver.await;
        while let Ok(taken) = rx.try_recv() {
            self.release(&taken.incoming).await;
        }
        for (_, queue) in waiting.drain() {
            for taken in queue {
                self.release(&taken.incoming).await;
            }
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        topic = %self.route.options.topic,
                        group = %self.route.options.group,
                        handlers = tasks.len(),
                        "handlers still running at the shutdown deadline; their deliveries are given back"
                    );
                    // Aborted tasks drop their deliveries, which releases them.
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        drop(acks);
        if let Some(acker) = acker {
            let _ = acker.await;
        }
        if let Err(e) = self.source.close().await {
            tracing::warn!(error = %e, group = %self.route.options.group, "closing the subscription");
        }
    }

    async fn release(&self, incoming: &Incoming) {
        if self
            .source
            .answer(&incoming.ticket, Answer::Release)
            .await
            .is_ok()
        {
            self.counters.add(Outcome::Released);
        }
    }

    fn start(
        &self,
        tasks: &mut JoinSet<(Option<String>, Outcome)>,
        slots: &Arc<Semaphore>,
        acks: &Option<mpsc::Sender<AckRequest>>,
        key: Option<String>,
        taken: Taken,
    ) {
        let work = Work {
            route: Arc::clone(&self.route),
            source: Arc::clone(&self.source),
            acks: acks.clone(),
            publisher: self.publisher.clone(),
            counters: Arc::clone(&self.counters),
            lease_extension: self.lease_extension,
            breaker: Arc::clone(&self.breaker),
        };
        let slots = Arc::clone(slots);
        let stopping = self.stopping.clone();
        tasks.spawn(async move {
            let Taken { incoming, slot } = taken;
            // A delivery that waited for its key waits for a slot too; at a
            // shutdown meanwhile it goes back unhandled.
            let _slot = match slot {
                Some(slot) => slot,
                None => {
                    let acquired = tokio::select! {
                        slot = slots.acquire_owned() => slot.ok(),
                        () = stopping.cancelled() => None,
                    };
                    match acquired {
                        Some(slot) => slot,
                        None => {
                            let released =
                                work.source.answer(&incoming.ticket, Answer::Release).await;
                            let outcome = if released.is_ok() {
                                Outcome::Released
                            } else {
                                Outcome::AnswerFailed
                            };
                            work.counters.add(outcome);
                            return (key, outcome);
                        }
                    }
                }
            };
            let delivery = Delivery::new(incoming, Arc::clone(&work.source));
            let outcome = work.process(delivery).await;
            work.counters.add(outcome);
            (key, outcome)
        });
    }
}

fn key_of(incoming: &Incoming) -> Option<String> {
    match &incoming.payload {
        Payload::Event(e) => e.partitionkey().map(str::to_owned),
        Payload::Raw(r) => r
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
    }
}

/// Receives while there is room, and hands deliveries to the run.
async fn receive_loop(
    source: Arc<dyn Source>,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Taken>,
    stopping: CancellationToken,
    breaker: Option<(Breaker, Arc<Mutex<BreakerState>>)>,
    prefetch_max: usize,
) {
    let stop_source = {
        let source = Arc::clone(&source);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            source.stop();
        })
    };
    loop {
        if stopping.is_cancelled() {
            break;
        }
        let mut max = prefetch_max;
        if let Some((_, state)) = &breaker {
            let (open_until, trial) = {
                let s = state.lock().expect("breaker lock");
                (s.open_until, s.trial)
            };
            if let Some(until) = open_until {
                if trial {
                    // One delivery is being tried; wait for its outcome.
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        () = stopping.cancelled() => break,
                    }
                    continue;
                }
                if Instant::now() < until {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = stopping.cancelled() => break,
                    }
                    continue;
                }
                state.lock().expect("breaker lock").trial = true;
                max = 1;
            }
        }
        let acquired = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p,
            () = stopping.cancelled() => break,
        };
        let Ok(first) = acquired else { break };
        let mut permits = vec![first];
        while permits.len() < max {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        match source.receive(permits.len(), RECEIVE_WAIT).await {
            Ok(got) => {
                for incoming in got {
                    let permit = permits.pop().expect("received at most as many as asked");
                    let taken = Taken {
                        incoming,
                        slot: Some(permit),
                    };
                    if let Err(mpsc::error::SendError(taken)) = tx.send(taken).await {
                        let _ = source.answer(&taken.incoming.ticket, Answer::Release).await;
                    }
                }
            }
            Err(e) => {
                if let Some((_, state)) = &breaker {
                    state.lock().expect("breaker lock").trial = false;
                }
                tracing::warn!(error = %e, "receiving failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(BACKEND_RETRY_DELAY) => {}
                    () = stopping.cancelled() => break,
                }
            }
        }
    }
    stop_source.abort();
}

/// What one delivery's task needs.
struct Work {
    route: Arc<Route>,
    source: Arc<dyn Source>,
    /// The route's acker, where the source batches acks.
    acks: Option<mpsc::Sender<AckRequest>>,
    publisher: Publisher,
    counters: Arc<Counters>,
    lease_extension: bool,
    breaker: Arc<Mutex<BreakerState>>,
}

impl Work {
    /// The pipeline of the module documentation, for one delivery, within
    /// its `process` span.
    async fn process(&self, delivery: Delivery) -> Outcome {
        let span = self.process_span(&delivery);
        self.process_in_span(delivery).instrument(span).await
    }

    /// `process {topic}`: a consumer span continuing the trace of the event
    /// (its `traceparent` is the parent: one delivery is processed at a
    /// time), with the handler's tries, the events it publishes and the
    /// answer under it.
    fn process_span(&self, delivery: &Delivery) -> tracing::Span {
        let options = &self.route.options;
        // The correlation id is a field: every log line of the handling
        // carries it.
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", options.topic),
            otel.kind = "consumer",
            correlationid = tracing::field::Empty,
        );
        use tidings_trace::Value;
        let partition = delivery.partition().to_string();
        let mut attributes = vec![
            (
                "messaging.system",
                Value::Str(self.publisher.backend().name()),
            ),
            ("messaging.operation.type", Value::Str("process")),
            ("messaging.operation.name", Value::Str("process")),
            ("messaging.destination.name", Value::Str(&options.topic)),
            ("messaging.consumer.group.name", Value::Str(&options.group)),
            ("messaging.destination.partition.id", Value::Str(&partition)),
            (
                "messaging.message.delivery_count",
                Value::Int(i64::from(delivery.attempt())),
            ),
        ];
        if let Payload::Event(event) = delivery.payload() {
            attributes.push(("messaging.message.id", Value::Str(event.id())));
            if let Some(id) = event.correlationid() {
                attributes.push(("messaging.message.conversation_id", Value::Str(id)));
                span.record("correlationid", id);
            }
            if let Some(parent) = event
                .traceparent()
                .and_then(tidings_trace::TraceParent::parse)
            {
                tidings_trace::continue_from(&span, &parent);
            }
        }
        tidings_trace::set_attributes(&span, &attributes);
        span
    }

    async fn process_in_span(&self, delivery: Delivery) -> Outcome {
        let (payload, settle) = delivery.into_parts();
        let Payload::Event(event) = payload else {
            return self
                .answer(
                    settle,
                    Answer::Reject {
                        reason:
                            "the record carries no CloudEvent, and the router handles CloudEvents",
                    },
                    Outcome::DeadLettered,
                )
                .await;
        };
        let handler = self
            .route
            .handlers
            .get(event.ty())
            .or(self.route.fallback.as_ref())
            .cloned();
        let Some(handler) = handler else {
            tracing::debug!(
                ty = event.ty(),
                id = event.id(),
                "no handler for this event type; acknowledged"
            );
            return self.answer(settle, Answer::Ack, Outcome::Unhandled).await;
        };
        let options = &self.route.options;
        let ctx = Context::new(
            event,
            &options.topic,
            &options.group,
            settle.attempt(),
            self.publisher.clone(),
        );
        let mut lease = Lease {
            deadline: Instant::now() + options.ack_timeout,
            ack_timeout: options.ack_timeout,
            extend: self.lease_extension,
        };
        let mut random = crate::random_seed();
        let mut last_error = String::new();
        for try_number in 1..=self.route.retry.tries {
            if try_number > 1 {
                self.counters.add(Outcome::Retried);
                random = crate::splitmix(random);
                let wait = self.route.retry.backoff.delay(try_number - 1, random);
                if !lease.extend && Instant::now() + wait >= lease.deadline {
                    // Waiting would outlive the lease: let the backend redeliver.
                    break;
                }
                lease.hold(&settle, tokio::time::sleep(wait)).await;
                ctx.next_try();
            }
            let attempt = run_try(handler.clone(), ctx.clone(), self.route.timeout);
            let result = lease.hold(&settle, attempt).await;
            let error = match result {
                Ok(()) => match self.publish_outputs(&ctx).await {
                    Ok(()) => {
                        self.breaker_success();
                        return self.ack(settle).await;
                    }
                    Err(e) => {
                        HandlerError::retry(format!("publishing the handler's events failed: {e}"))
                    }
                },
                Err(e) => e,
            };
            match error.class() {
                ErrorClass::DeadLetter => {
                    let reason = error.message();
                    return self
                        .answer(settle, Answer::Reject { reason }, Outcome::DeadLettered)
                        .await;
                }
                ErrorClass::Drop => {
                    tracing::info!(
                        ty = ctx.event().ty(),
                        id = ctx.event().id(),
                        reason = error.message(),
                        "the handler dropped the event; acknowledged"
                    );
                    return self.answer(settle, Answer::Ack, Outcome::Dropped).await;
                }
                ErrorClass::Retry => {
                    tracing::debug!(
                        ty = ctx.event().ty(),
                        id = ctx.event().id(),
                        try_number,
                        error = error.message(),
                        "the handler failed"
                    );
                    last_error = error.message().to_owned();
                    if self.breaker_failure() {
                        // The breaker is open: give the event back without
                        // spending one of its deliveries.
                        return self
                            .answer(settle, Answer::Release, Outcome::Released)
                            .await;
                    }
                }
            }
        }
        let reason = format!(
            "{last_error} (delivery {}, after {} tries in process)",
            settle.attempt(),
            ctx.try_number()
        );
        let answer = Answer::Nack {
            delay: self.route.redelivery_delay,
            reason: &reason,
        };
        self.answer(settle, answer, Outcome::Nacked).await
    }

    /// `{ack|nack|reject|release} {topic}`: a settle span for an answer.
    fn settle_span(&self, answer: &Answer<'_>) -> tracing::Span {
        let operation = match answer {
            Answer::Ack => "ack",
            Answer::Nack { .. } => "nack",
            Answer::Reject { .. } => "reject",
            Answer::Release => "release",
        };
        tidings_trace::settle_span(
            self.publisher.backend().name(),
            "client",
            operation,
            &self.route.options.topic,
            &self.route.options.group,
        )
    }

    /// Acks at once, or through the route's acker where there is one.
    async fn ack(&self, settle: Settle) -> Outcome {
        let Some(acks) = &self.acks else {
            return self.answer(settle, Answer::Ack, Outcome::Handled).await;
        };
        let span = self.settle_span(&Answer::Ack);
        let ticket = settle.into_ticket();
        let (reply, answered) = tokio::sync::oneshot::channel();
        let result = async {
            match acks.send((ticket.clone(), reply)).await {
                Ok(()) => answered.await.unwrap_or(Err(Error::Closed)),
                // The acker ended (never while the route runs): ack alone.
                Err(_) => self.source.answer(&ticket, Answer::Ack).await,
            }
        }
        .instrument(span)
        .await;
        match result {
            Ok(()) => Outcome::Handled,
            Err(e) => {
                tracing::warn!(
                    partition = ticket.partition,
                    offset = ticket.offset,
                    error = %e,
                    "the backend refused an ack; the event goes to another attempt"
                );
                Outcome::AnswerFailed
            }
        }
    }

    async fn answer(&self, settle: Settle, answer: Answer<'_>, outcome: Outcome) -> Outcome {
        let ticket = settle.ticket().clone();
        let span = self.settle_span(&answer);
        match settle.answer(answer).instrument(span).await {
            Ok(()) => outcome,
            Err(e) => {
                tracing::warn!(
                    partition = ticket.partition,
                    offset = ticket.offset,
                    error = %e,
                    "the backend refused an answer; the event goes to another attempt"
                );
                Outcome::AnswerFailed
            }
        }
    }

    async fn publish_outputs(&self, ctx: &Context) -> Result<(), Error> {
        for (topic, batch) in handler::runs_by_topic(ctx.take_outputs()) {
            self.publisher.publish_all(&topic, batch).await?;
        }
        Ok(())
    }

    fn breaker_success(&self) {
        if self.route.breaker.is_some() {
            let mut s = self.breaker.lock().expect("breaker lock");
            *s = BreakerState::default();
        }
    }

    /// Counts a failure; answers whether the breaker is open now.
    fn breaker_failure(&self) -> bool {
        let Some(b) = self.route.breaker else {
            return false;
        };
        let mut s = self.breaker.lock().expect("breaker lock");
        s.consecutive += 1;
        if s.trial || s.consecutive >= b.failures {
            if s.open_until.is_none_or(|until| until <= Instant::now()) || s.trial {
                tracing::warn!(
                    failures = s.consecutive,
                    open_for = ?b.open_for,
                    "circuit breaker open: the route pauses"
                );
            }
            s.open_until = Some(Instant::now() + b.open_for);
            s.trial = false;
            return true;
        }
        s.open_until.is_some_and(|until| until > Instant::now())
    }
}

/// Runs one try: the handler under the timeout, a panic caught as a failure.
async fn run_try(
    handler: DynHandler,
    ctx: Context,
    timeout: Option<Duration>,
) -> Result<(), HandlerError> {
    let fut = AssertUnwindSafe(handler(ctx)).catch_unwind();
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(HandlerError::retry(format!(
                    "the handler took longer than {t:?}"
                )))
            }
        },
        None => fut.await,
    };
    result.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(HandlerError::retry(format!("the handler panicked: {text}")))
    })
}

/// A delivery's lease, kept alive while its work goes on.
struct Lease {
    deadline: Instant,
    ack_timeout: Duration,
    extend: bool,
}

impl Lease {
    /// Runs `work`, extending the lease by a full ack timeout whenever less
    /// than a third of it is left.
    async fn hold<F: Future>(&mut self, settle: &Settle, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        loop {
            if !self.extend {
                return work.await;
            }
            let renew_at = self.deadline - self.ack_timeout / 3;
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep_until(renew_at) => {
                    match settle.extend(self.ack_timeout).await {
                        Ok(()) => self.deadline = Instant::now() + self.ack_timeout,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot extend a lease; the event may be delivered again");
                            // Stop trying; the work goes on.
                            self.extend = false;
                        }
                    }
                }
            }
        }
    }
}
