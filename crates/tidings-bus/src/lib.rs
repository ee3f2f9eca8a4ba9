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
//! Modules: `bus` ([`Bus`]: subscribing, emitting, publishing), `emitter`
//! ([`Emitter`]), `registry` (the immutable subscription snapshot and who an emit
//! reaches), `inner` (what clones share: registry, error handler, counters; and
//! [`Subscription`]), `runner` and `mailbox` (async handlers and their bounded
//! queues), `config`, `error`, `handler`, `pattern`, `envelope`, `recorder`.
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

use std::any::Any;

use tidings_types::CloudEvent;

mod bus;
mod config;
mod emitter;
mod envelope;
mod error;
mod handler;
mod inner;
mod mailbox;
mod pattern;
mod recorder;
mod registry;
mod runner;

pub use bus::Bus;
pub use config::{AsyncStart, AwaitMode, BusConfig, BusStats, Handled, StreamConfig};
pub use emitter::Emitter;
pub use envelope::Envelope;
pub use error::{EmitError, SubscribeError};
pub use handler::{BoxError, HandlerError, HandlerErrorKind, HandlerResult, SubscriptionId};
pub use inner::Subscription;
pub use mailbox::{EventStream, Overflow};
pub use pattern::{Pattern, PatternError, PATTERN_BYTES_MAX};
pub use recorder::Recorder;

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
