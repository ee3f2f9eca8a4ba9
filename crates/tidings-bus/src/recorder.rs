//! Recording what a bus emitted, for application tests: the bus as a test seam.

use std::any::Any;
use std::sync::{Arc, Mutex};

use crate::{Event, Subscription};

/// Captures every event emitted on a bus from its creation until it is dropped,
/// synchronously, in emit order.
///
/// ```
/// use tidings_bus::{Bus, Event};
///
/// struct PaymentFailed { order: u32 }
/// impl Event for PaymentFailed {
///     fn event_type(&self) -> &str { "payment.failed" }
/// }
///
/// let bus = Bus::new();
/// let recorder = bus.recorder();
/// bus.emit(PaymentFailed { order: 7 }).unwrap();
/// assert_eq!(recorder.count("payment.failed"), 1);
/// assert_eq!(recorder.of::<PaymentFailed>()[0].order, 7);
/// ```
pub struct Recorder {
    events: Arc<Mutex<Vec<Arc<dyn Event>>>>,
    _subscription: Subscription,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("types", &self.types())
            .finish()
    }
}

impl Recorder {
    pub(crate) fn new(
        events: Arc<Mutex<Vec<Arc<dyn Event>>>>,
        subscription: Subscription,
    ) -> Recorder {
        Recorder {
            events,
            _subscription: subscription,
        }
    }

    fn snapshot(&self) -> Vec<Arc<dyn Event>> {
        self.events.lock().expect("recorder lock").clone()
    }

    /// Every recorded event, in emit order.
    pub fn all(&self) -> Vec<Arc<dyn Event>> {
        self.snapshot()
    }

    /// The event types recorded, in emit order.
    pub fn types(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .map(|e| e.event_type().to_owned())
            .collect()
    }

    /// How many events of `event_type` were recorded.
    pub fn count(&self, event_type: &str) -> usize {
        self.snapshot()
            .iter()
            .filter(|e| e.event_type() == event_type)
            .count()
    }

    /// The recorded events of Rust type `E`, in emit order.
    pub fn of<E: Event>(&self) -> Vec<Arc<E>> {
        self.snapshot()
            .into_iter()
            .filter_map(|e| {
                let any: Arc<dyn Any + Send + Sync> = e;
                any.downcast::<E>().ok()
            })
            .collect()
    }

    /// Forgets what was recorded so far.
    pub fn clear(&self) {
        self.events.lock().expect("recorder lock").clear();
    }
}
