//! [`Emitter`]: a typed emitting handle with the subscription lookup cached.

use std::any::TypeId;
use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::handler::call_sync;
use crate::registry::{Subscriber, TypedFn};
use crate::{Bus, EmitError, Event};

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
    pub(crate) bus: Bus,
    pub(crate) cache: RefCell<Option<(u64, FastList<E>)>>,
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
