//! Handlers, their errors, and the context they run in.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tidings_types::CloudEvent;

use crate::backend::BoxFuture;
use crate::Publisher;

/// What the router does with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again: in process with backoff, then through the backend's
    /// redelivery, then to the dead letters after `max_deliveries`.
    Retry,
    /// Dead-letter now: trying again cannot help (a malformed event, a
    /// rule broken for good).
    DeadLetter,
    /// Acknowledge and drop: the event needs no handling after all (logged
    /// and counted, never silent).
    Drop,
}

/// How an error type tells the router what to do. The default is
/// [`ErrorClass::Retry`]; implement [`class`](Classify::class) to pick per
/// variant.
///
/// ```
/// use tidings::router::{Classify, ErrorClass};
///
/// #[derive(Debug)]
/// enum PaymentError { CardDeclined, GatewayDown }
///
/// impl std::fmt::Display for PaymentError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str(match self {
///             PaymentError::CardDeclined => "card declined",
///             PaymentError::GatewayDown => "payment gateway unreachable",
///         })
///     }
/// }
///
/// impl Classify for PaymentError {
///     fn class(&self) -> ErrorClass {
///         match self {
///             // A declined card is an answer, not a failure to retry.
///             PaymentError::CardDeclined => ErrorClass::Drop,
///             PaymentError::GatewayDown => ErrorClass::Retry,
///         }
///     }
/// }
/// assert_eq!(PaymentError::GatewayDown.class(), ErrorClass::Retry);
/// ```
pub trait Classify: fmt::Display + Send + 'static {
    /// What the router does with this error.
    fn class(&self) -> ErrorClass {
        ErrorClass::Retry
    }
}

/// A handler's failure: its class and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    class: ErrorClass,
    message: String,
}

impl HandlerError {
    /// A failure worth trying again.
    pub fn retry(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            class: ErrorClass::Retry,
            message: message.to_string(),
        }
    }

    /// A failure that sends the event to the dead letters now.
    pub fn dead_letter(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            class: ErrorClass::DeadLetter,
            message: message.to_string(),
        }
    }

    /// The event is acknowledged and dropped.
    pub fn drop_event(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            class: ErrorClass::Drop,
            message: message.to_string(),
        }
    }

    /// Its class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn classified(e: impl Classify) -> HandlerError {
        HandlerError {
            class: e.class(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

/// A toolkit error as a handler's: classified by [`Classify`].
impl From<crate::Error> for HandlerError {
    fn from(e: crate::Error) -> HandlerError {
        HandlerError::classified(e)
    }
}

impl Classify for HandlerError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

impl Classify for Box<dyn std::error::Error + Send + Sync> {}
impl Classify for std::io::Error {}
impl Classify for String {}
/// A database error: tried again (a transaction that failed on a conflict
/// or a lost connection succeeds on the next try; one that cannot ends in
/// the dead letters after the route's deliveries).
impl Classify for tokio_postgres::Error {}
impl Classify for &'static str {}
impl Classify for crate::Error {
    fn class(&self) -> ErrorClass {
        match self {
            crate::Error::InvalidEvent(_) => ErrorClass::DeadLetter,
            _ => ErrorClass::Retry,
        }
    }
}

/// Data that does not decode into the handler's type will not decode on
/// the next attempt either.
impl Classify for serde_json::Error {
    fn class(&self) -> ErrorClass {
        ErrorClass::DeadLetter
    }
}

/// A handler as the router stores it.
pub(crate) type DynHandler =
    Arc<dyn Fn(Context) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// Code around every try of a route's handlers: where the inbox (skip an
/// event handled before), a schema check (dead-letter an event that does not
/// match) and tracing (a span per try) plug in. It runs at one fixed place
/// of the router's pipeline, whatever the order of configuration: after
/// dispatch, the breaker and the retry loop decided to try, inside the
/// try's timeout and panic guard, around the handler. An error it answers is
/// classified like a handler's (retry, dead letter, drop); an `Ok` without
/// calling [`Next::run`] acknowledges the event without the handler.
///
/// Several middleware nest: the router's, in the order added, outside the
/// route's, in the order added. A closure `Fn(Context, Next) -> impl Future`
/// is middleware.
pub trait Middleware: Send + Sync + 'static {
    /// Handles one try; `next.run(ctx)` goes on to the inner middleware and
    /// the handler.
    fn call(&self, ctx: Context, next: Next) -> BoxFuture<'static, Result<(), HandlerError>>;

    /// Checks, before the router subscribes, that this middleware can work
    /// under a route's policy (an inbox must remember an event for as long
    /// as it can be delivered again); an error stops [`Router::run`] with
    /// it, naming the route. Accepts every route by default.
    ///
    /// [`Router::run`]: crate::router::Router::run
    fn check(&self, route: &RoutePolicy) -> Result<(), String> {
        let _ = route;
        Ok(())
    }
}

/// A route's policy, as [`Middleware::check`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutePolicy {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// Queue or stream.
    pub mode: crate::Mode,
    /// The lease of one delivery.
    pub ack_timeout: Duration,
    /// Deliveries before the backend dead-letters an event.
    pub max_deliveries: u32,
    /// The longest wait between two deliveries (the route's redelivery
    /// delay, or its backoff's bound).
    pub redelivery_wait_max: Duration,
    /// Tries in process per delivery.
    pub tries: u32,
    /// The longest one try may take, if bounded.
    pub try_timeout: Option<Duration>,
    /// The longest wait between two tries in process.
    pub retry_wait_max: Duration,
}

impl RoutePolicy {
    /// How long after an event was handled the backend may still deliver
    /// it again under this policy, the process staying up: the delivery
    /// that handled it lost its acknowledgement (a crash, a connection
    /// cut), and each delivery after it, up to `max_deliveries`, takes at
    /// most a lease, its tries and the wait before the next. A try without
    /// a timeout counts as one lease (the router keeps extending the lease
    /// while it runs, so its length is the handler's). Time a stopped
    /// consumer stays down, and replays, come on top.
    pub fn redelivery_horizon(&self) -> Duration {
        let try_bound = match self.try_timeout {
            Some(t) => t.saturating_mul(self.tries).saturating_add(
                self.retry_wait_max
                    .saturating_mul(self.tries.saturating_sub(1)),
            ),
            None => self.ack_timeout,
        };
        let per_delivery = self
            .ack_timeout
            .saturating_add(try_bound)
            .saturating_add(self.redelivery_wait_max);
        per_delivery.saturating_mul(self.max_deliveries.saturating_sub(1).max(1))
    }
}

impl<F, Fut> Middleware for F
where
    F: Fn(Context, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, ctx: Context, next: Next) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(self(ctx, next))
    }
}

/// What comes after a [`Middleware`]: the inner middleware, then the
/// handler.
#[derive(Clone)]
pub struct Next(DynHandler);

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Next")
    }
}

impl Next {
    /// Runs the rest of the try.
    pub fn run(self, ctx: Context) -> BoxFuture<'static, Result<(), HandlerError>> {
        (self.0)(ctx)
    }
}

/// `handler` inside `layers`, the first outermost.
pub(crate) fn wrap(handler: DynHandler, layers: &[Arc<dyn Middleware>]) -> DynHandler {
    layers.iter().rev().fold(handler, |inner, layer| {
        let layer = Arc::clone(layer);
        Arc::new(move |ctx: Context| layer.call(ctx, Next(Arc::clone(&inner))))
    })
}

/// Wraps a handler of raw CloudEvents.
pub(crate) fn raw<F, Fut, E>(handler: F) -> DynHandler
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Classify,
{
    Arc::new(move |ctx| {
        let fut = handler(ctx);
        Box::pin(async move { fut.await.map_err(HandlerError::classified) })
    })
}

/// Wraps a handler of `T`, decoded from the event's JSON data.
pub(crate) fn typed<T, F, Fut, E>(handler: F) -> DynHandler
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Context, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Classify,
{
    Arc::new(move |ctx: Context| {
        let decoded = ctx.event().json::<T>().map_err(|e| {
            HandlerError::dead_letter(format!(
                "the data of {} event {} does not decode as {}: {e}",
                ctx.event().ty(),
                ctx.event().id(),
                std::any::type_name::<T>()
            ))
        });
        match decoded {
            Ok(value) => {
                let fut = handler(ctx, value);
                Box::pin(async move { fut.await.map_err(HandlerError::classified) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    })
}

/// What a handler sees: the event, its attempt, and where its own events
/// go.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    event: CloudEvent,
    topic: String,
    group: String,
    delivery_attempt: u32,
    try_number: Mutex<u32>,
    outputs: Mutex<Vec<(String, CloudEvent)>>,
    publisher: Publisher,
    /// What middleware hands on to the handler, one value per type.
    values: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("topic", &self.inner.topic)
            .field("group", &self.inner.group)
            .field("event", &self.inner.event.id())
            .finish()
    }
}

impl Context {
    pub(crate) fn new(
        event: CloudEvent,
        topic: &str,
        group: &str,
        delivery_attempt: u32,
        publisher: Publisher,
    ) -> Context {
        Context {
            inner: Arc::new(Inner {
                event,
                topic: topic.to_owned(),
                group: group.to_owned(),
                delivery_attempt,
                try_number: Mutex::new(1),
                outputs: Mutex::new(Vec::new()),
                publisher,
                values: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The event being handled.
    pub fn event(&self) -> &CloudEvent {
        &self.inner.event
    }

    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The group handling it.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// Which delivery of the event this is, from 1 (the backend's count).
    pub fn delivery_attempt(&self) -> u32 {
        self.inner.delivery_attempt
    }

    /// Which try within this delivery, from 1 (the in-process retries).
    pub fn try_number(&self) -> u32 {
        *self.inner.try_number.lock().expect("context lock")
    }

    /// Emits `event` to `topic` as a reaction to the event being handled. It
    /// is published only if the handler succeeds, before the handled event is
    /// acknowledged, with the handled event's correlation (`correlationid`,
    /// or its id when it started the flow) and its id as `causationid`. Its
    /// id is derived from the handled event, the group and the order of
    /// emission, so a redelivered event emits the same ids again, and a
    /// backend with publish dedup stores each once.
    pub fn emit(&self, topic: &str, event: CloudEvent) {
        let mut outputs = self.inner.outputs.lock().expect("context lock");
        let cause = &self.inner.event;
        let id = derived_id(&self.inner.group, cause, outputs.len());
        outputs.push((topic.to_owned(), event.caused_by(cause).with_id(id)));
    }

    /// Hands `value` on to what runs inside (the next middleware, the
    /// handler): an inbox's transaction, a span. One value per type; a new
    /// one replaces the last. Values live as long as the delivery, across
    /// its tries.
    pub fn insert<T: Any + Send + Sync>(&self, value: T) {
        let mut values = self.inner.values.lock().expect("context lock");
        values.retain(|v| !v.is::<T>());
        values.push(Arc::new(value));
    }

    /// The value of type `T` middleware inserted, if any.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let values = self.inner.values.lock().expect("context lock");
        values
            .iter()
            .find_map(|v| Arc::clone(v).downcast::<T>().ok())
    }

    /// Takes the value of type `T` out, if any (middleware that inserted a
    /// value for one try and is done with it).
    pub fn remove<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let mut values = self.inner.values.lock().expect("context lock");
        let at = values.iter().position(|v| v.is::<T>())?;
        values.remove(at).downcast::<T>().ok()
    }

    /// A publisher for events that go out whatever the handler's outcome
    /// (no correlation is added).
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// Starts the next try: what the last one emitted is discarded.
    pub(crate) fn next_try(&self) {
        self.inner.outputs.lock().expect("context lock").clear();
        *self.inner.try_number.lock().expect("context lock") += 1;
    }

    pub(crate) fn take_outputs(&self) -> Vec<(String, CloudEvent)> {
        std::mem::take(&mut *self.inner.outputs.lock().expect("context lock"))
    }
}

/// Emitted events in emission order, one batch per run of the same topic.
pub(crate) fn runs_by_topic(outputs: Vec<(String, CloudEvent)>) -> Vec<(String, Vec<CloudEvent>)> {
    let mut runs: Vec<(String, Vec<CloudEvent>)> = Vec::new();
    for (topic, event) in outputs {
        match runs.last_mut() {
            Some((t, batch)) if *t == topic => batch.push(event),
            _ => runs.push((topic, vec![event])),
        }
    }
    runs
}

/// A UUID (version 8, RFC 9562's custom layout) from SHA-256 of the group,
/// the cause's source and id, and the output's index.
fn derived_id(group: &str, cause: &CloudEvent, index: usize) -> String {
    let mut hash = Sha256::new();
    for part in [group, cause.source(), cause.id()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.update((index as u64).to_be_bytes());
    let digest = hash.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_differ_by_every_input() {
        let cause = CloudEvent::new("/shop", "order.placed").with_id("o-1");
        let a = derived_id("billing", &cause, 0);
        assert_eq!(a, derived_id("billing", &cause, 0));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert_ne!(a, derived_id("billing", &cause, 1));
        assert_ne!(a, derived_id("shipping", &cause, 0));
        let other = CloudEvent::new("/shop", "order.placed").with_id("o-2");
        assert_ne!(a, derived_id("billing", &other, 0));
        // Lengths are part of the hash: ("ab", "c") is not ("a", "bc").
        let c1 = CloudEvent::new("ab", "t").with_id("c");
        let c2 = CloudEvent::new("a", "t").with_id("bc");
        assert_ne!(derived_id("g", &c1, 0), derived_id("g", &c2, 0));
    }
}
