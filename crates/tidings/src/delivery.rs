//! [`Delivery`]: one event handed to a consumer, answered exactly once.
//!
//! The answers (`ack`, `nack`, `reject`, `release`) take the delivery by
//! value, so a second answer does not compile. A delivery dropped without an
//! answer is released: given back unhandled, due again at once, its delivery
//! not counted as an attempt (when a tokio runtime is there to send that;
//! otherwise its lease runs out, which counts as a failed attempt).

use std::sync::Arc;
use std::time::Duration;

use tidings_types::CloudEvent;

use crate::backend::{Answer, Incoming, Payload, Source, Ticket};
use crate::Error;

/// One event handed to a consumer under a lease.
///
/// Answered once: every answer takes the delivery, so the compiler refuses
/// a second.
///
/// ```
/// # async fn handle(delivery: tidings::Delivery) -> Result<(), tidings::Error> {
/// delivery.ack().await?;
/// # Ok(())
/// # }
/// ```
///
/// ```compile_fail,E0382
/// # async fn handle(delivery: tidings::Delivery) -> Result<(), tidings::Error> {
/// delivery.nack(None, "busy").await?;
/// delivery.ack().await?; // the delivery was moved into the nack
/// # Ok(())
/// # }
/// ```
#[must_use = "answer a delivery (ack, nack, reject or release); dropping one releases it"]
pub struct Delivery {
    payload: Payload,
    settle: Settle,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.settle.ticket.partition)
            .field("offset", &self.settle.ticket.offset)
            .field("attempt", &self.settle.attempt)
            .field("payload", &self.payload)
            .finish()
    }
}

impl Delivery {
    pub(crate) fn new(incoming: Incoming, source: Arc<dyn Source>) -> Delivery {
        Delivery {
            payload: incoming.payload,
            settle: Settle {
                ticket: incoming.ticket,
                attempt: incoming.attempt,
                timestamp_ms: incoming.timestamp_ms,
                source: Some(source),
            },
        }
    }

    /// The CloudEvent, or `None` for a record that carries none.
    pub fn event(&self) -> Option<&CloudEvent> {
        match &self.payload {
            Payload::Event(e) => Some(e),
            Payload::Raw(_) => None,
        }
    }

    /// What was delivered.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.settle.attempt
    }

    /// The event's partition.
    pub fn partition(&self) -> u32 {
        self.settle.ticket.partition
    }

    /// The event's offset.
    pub fn offset(&self) -> u64 {
        self.settle.ticket.offset
    }

    /// When the event was stored (ms since the epoch).
    pub fn timestamp_ms(&self) -> i64 {
        self.settle.timestamp_ms
    }

    /// Done: it is not delivered to this group again.
    pub async fn ack(self) -> Result<(), Error> {
        self.settle.answer(Answer::Ack).await
    }

    /// Failed: delivered again after `delay` (`None`: the group's backoff),
    /// or dead-lettered with `reason` once it has had its `max_deliveries`.
    pub async fn nack(self, delay: Option<Duration>, reason: &str) -> Result<(), Error> {
        self.settle.answer(Answer::Nack { delay, reason }).await
    }

    /// Dead-letters it now, with `reason`.
    pub async fn reject(self, reason: &str) -> Result<(), Error> {
        self.settle.answer(Answer::Reject { reason }).await
    }

    /// Gives it back unhandled: due again at once, the delivery not counted
    /// as an attempt.
    pub async fn release(self) -> Result<(), Error> {
        self.settle.answer(Answer::Release).await
    }

    /// Keeps the lease for `timeout` from now: a long job keeps its event.
    pub async fn extend(&self, timeout: Duration) -> Result<(), Error> {
        self.settle.extend(timeout).await
    }

    /// The event and the handle that answers it, apart: the router hands the
    /// event to handlers and keeps the answering to itself.
    pub(crate) fn into_parts(self) -> (Payload, Settle) {
        (self.payload, self.settle)
    }
}

/// What answers one delivery; released when dropped unanswered.
pub(crate) struct Settle {
    ticket: Ticket,
    attempt: u32,
    timestamp_ms: i64,
    /// `None` once answered.
    source: Option<Arc<dyn Source>>,
}

impl Settle {
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    pub(crate) async fn answer(mut self, answer: Answer<'_>) -> Result<(), Error> {
        let source = self.source.take().expect("a delivery is answered once");
        source.answer(&self.ticket, answer).await
    }

    /// The ticket, for someone else to answer with (the router's batched
    /// acks); dropping the handle then releases nothing.
    pub(crate) fn into_ticket(mut self) -> Ticket {
        self.source = None;
        self.ticket.clone()
    }

    pub(crate) async fn extend(&self, timeout: Duration) -> Result<(), Error> {
        let source = self.source.as_ref().expect("not yet answered");
        source.extend(&self.ticket, timeout).await
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        let Some(source) = self.source.take() else {
            return;
        };
        let ticket = self.ticket.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = source.answer(&ticket, Answer::Release).await {
                    tracing::debug!(
                        partition = ticket.partition,
                        offset = ticket.offset,
                        error = %e,
                        "a delivery dropped unanswered could not be released; its lease will run out"
                    );
                }
            });
        }
    }
}
