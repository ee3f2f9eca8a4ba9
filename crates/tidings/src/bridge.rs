//! The in-process bus (`tidings-bus`, the guides' EventEmitter stage) and
//! durable topics, bridged both ways, so handlers written for the bus move
//! to durable delivery unchanged.
//!
//! - [`forward`]: CloudEvents emitted on a bus whose type matches a pattern
//!   are published to a topic, in emit order, each tried three times. The
//!   emitter is not told whether the publish succeeded (a bus emit returns
//!   before its async handlers run); a publish that fails every try goes to
//!   the bus's error handler, never silence. Code that needs to know an event
//!   is stored publishes with a [`Publisher`] instead.
//! - [`Route::to_bus`](crate::router::Route::to_bus): a route whose events
//!   are emitted on a bus, acknowledged once every async handler they reached
//!   has handled them, and retried (then redelivered, then dead-lettered) when
//!   one failed.

use std::sync::Arc;
use std::time::Duration;

use tidings_bus::{Bus, Pattern, Subscription};
use tidings_types::CloudEvent;

use crate::router::{HandlerError, Route};
use crate::{Error, Publisher};

/// Tries of one forwarded publish.
const FORWARD_TRIES: u32 = 3;
/// The wait between them.
const FORWARD_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Publishes to `topic` every CloudEvent emitted on `bus` whose type matches
/// `pattern` (`*` for all, `order.*`), while the subscription is held. Must
/// be called inside a tokio runtime.
pub fn forward(
    bus: &Bus,
    pattern: &str,
    publisher: Publisher,
    topic: &str,
) -> Result<Subscription, Error> {
    let pattern = Pattern::new(pattern).map_err(|e| Error::Config(e.to_string()))?;
    let topic: Arc<str> = Arc::from(topic);
    bus.on_async::<CloudEvent, _, _>(move |event: Arc<CloudEvent>| {
        let (publisher, topic) = (publisher.clone(), Arc::clone(&topic));
        let matches = pattern.matches(event.ty());
        async move {
            if !matches {
                return Ok(());
            }
            let mut tries = 0;
            loop {
                tries += 1;
                match publisher.publish(&topic, (*event).clone()).await {
                    Ok(_) => return Ok(()),
                    Err(e) if tries < FORWARD_TRIES && e.is_transient() => {
                        tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                    }
                    Err(e) => {
                        return Err(format!(
                            "forwarding {} event {} to topic {topic} failed: {e}",
                            event.ty(),
                            event.id()
                        ))
                    }
                }
            }
        }
    })
    .map_err(|e| Error::Config(e.to_string()))
}

impl Route {
    /// Emits every event of this route on `bus`, for the bus's handlers to
    /// handle: the event is acknowledged once every async handler it reached
    /// has handled it, and retried when one failed.
    pub fn to_bus(&mut self, bus: Bus) -> &mut Route {
        self.on_event("*", move |ctx| {
            let bus = bus.clone();
            let event = ctx.event().clone();
            async move {
                let handled = bus
                    .publish_and_wait(event)
                    .await
                    .map_err(|e| HandlerError::retry(format!("the bus refused the event: {e}")))?;
                if handled.failed > 0 {
                    return Err(HandlerError::retry(format!(
                        "{} of {} bus handlers failed",
                        handled.failed, handled.handlers
                    )));
                }
                Ok(())
            }
        })
    }
}
