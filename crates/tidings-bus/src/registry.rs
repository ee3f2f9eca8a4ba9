//! The subscription registry: an immutable snapshot of every subscriber, by
//! Rust type and by pattern, replaced whole at every change so that an emit
//! reads one snapshot from start to end.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::mailbox::Mailbox;
use crate::runner::Runner;
use crate::{BoxError, Event, HandlerError, Pattern, SubscriptionId};

pub(crate) type SyncFn = dyn Fn(&dyn Event) -> Result<(), BoxError> + Send + Sync;
pub(crate) type ErrorFn = dyn Fn(&HandlerError) + Send + Sync;

pub(crate) enum Kind {
    Sync(Box<SyncFn>),
    Handler(Arc<dyn Runner>),
    Stream(Arc<Mailbox>),
    Record(Arc<Mutex<Vec<Arc<dyn Event>>>>),
}

impl Kind {
    /// Whether the subscriber keeps the event beyond the emit, so it needs an `Arc`.
    pub(crate) fn keeps_event(&self) -> bool {
        !matches!(self, Kind::Sync(_))
    }

    /// Ends an async handler's task or a stream; their queued events are dropped.
    pub(crate) fn close(&self) {
        match self {
            Kind::Handler(runner) => runner.mailbox().close(),
            Kind::Stream(m) => m.close(),
            Kind::Sync(_) | Kind::Record(_) => {}
        }
    }
}

/// Who a subscription listens to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A Rust type, with its name for warnings.
    Type(TypeId, &'static str),
    Pattern(Pattern),
}

pub(crate) struct Subscriber {
    pub(crate) id: SubscriptionId,
    pub(crate) target: Target,
    pub(crate) kind: Kind,
    /// Set for `once` subscriptions when they have fired.
    pub(crate) once: Option<AtomicBool>,
    /// For typed sync handlers: the handler as an `Arc<TypedFn<E>>`, which an
    /// [`Emitter`] calls without going through `dyn Event`.
    pub(crate) typed: Option<Arc<dyn Any + Send + Sync>>,
}

/// A typed sync handler.
pub(crate) type TypedFn<E> = dyn Fn(&E) -> Result<(), BoxError> + Send + Sync;

/// Passes a `TypeId`'s own hash bits through: it is already a hash.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

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
pub(crate) struct TypedList {
    pub(crate) subscribers: Arc<[Arc<Subscriber>]>,
    pub(crate) keeps_event: bool,
}

/// An immutable snapshot of every subscription; an emit reads one snapshot.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    pub(crate) typed: HashMap<TypeId, TypedList, BuildHasherDefault<TypeIdHasher>>,
    pub(crate) patterns: Arc<[Arc<Subscriber>]>,
    /// Whether some pattern subscriber keeps events (needs them shared).
    pub(crate) patterns_keep_event: bool,
}

/// Calls `f` with every subscriber an emit reaches, in registration order: the
/// typed list and the matching pattern subscribers, both already in id order,
/// merged without allocating.
pub(crate) fn for_each_reached<'a>(
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

pub(crate) fn downcast<E: Event>(e: Arc<dyn Event>) -> Arc<E> {
    let any: Arc<dyn Any + Send + Sync> = e;
    any.downcast::<E>()
        .unwrap_or_else(|_| unreachable!("the registry routes by type"))
}
