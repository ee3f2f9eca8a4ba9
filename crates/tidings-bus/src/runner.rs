//! Running one async handler: one event at a time, in emit order, started inside
//! `emit` when it can be (as JavaScript starts an async function) and otherwise
//! from its queue, by the handler's task.
//!
//! The handler's unfinished future lives in a pinned slot that is reused from one
//! event to the next, so starting a handler allocates nothing. Whoever holds the
//! run lock may start or poll it: an emitter that finds the handler idle with
//! nothing queued, or the handler's task. An event is always either queued or in
//! the slot, and only the lock holder moves it from one to the other, so a handler
//! sees one emitter's events in the order they were emitted.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, TryLockError, Weak};
use std::task::{Context, Poll, Wake, Waker};

use crate::handler::{panic_message, HandlerErrorKind, HandlerResult};
use crate::inner::Inner;
use crate::mailbox::{Item, Mailbox, Ticket};
use crate::{Event, SubscriptionId};

/// An async handler as the bus sees it, whatever its event and future types.
pub(crate) trait Runner: Send + Sync {
    /// The handler's queue.
    fn mailbox(&self) -> &Arc<Mailbox>;

    /// Starts the handler on `event` here and now, if it is idle and nothing is
    /// queued for it; it runs until it finishes or waits on something, and its task
    /// takes it from there. Gives the ticket back when the event must be queued.
    fn try_start(
        &self,
        event: &Arc<dyn Event>,
        ticket: Option<Ticket>,
    ) -> Result<(), Option<Ticket>>;
}

/// The event a started handler is working on, kept while its future is pending.
struct Running<Fut> {
    future: Pin<Box<Option<Fut>>>,
    event: Option<Arc<dyn Event>>,
    ticket: Option<Ticket>,
}

impl<Fut> Running<Fut> {
    fn busy(&self) -> bool {
        self.future.as_ref().get_ref().is_some()
    }
}

pub(crate) struct HandlerRunner<T: ?Sized, F, Fut> {
    id: SubscriptionId,
    bus: Weak<Inner>,
    mailbox: Arc<Mailbox>,
    handler: F,
    convert: fn(Arc<dyn Event>) -> Arc<T>,
    running: Mutex<Running<Fut>>,
    /// Given to the handler's future in every poll; wakes the handler's task.
    waker: Waker,
}

/// Wakes a handler's task to poll its unfinished future.
struct SlotWaker(Arc<Mailbox>);

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.0.wake_slot();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake_slot();
    }
}

impl<T, F, Fut> HandlerRunner<T, F, Fut>
where
    T: ?Sized + Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    pub(crate) fn new(
        id: SubscriptionId,
        bus: Weak<Inner>,
        mailbox: Arc<Mailbox>,
        handler: F,
        convert: fn(Arc<dyn Event>) -> Arc<T>,
    ) -> Arc<Self> {
        let waker = Waker::from(Arc::new(SlotWaker(Arc::clone(&mailbox))));
        Arc::new(HandlerRunner {
            id,
            bus,
            mailbox,
            handler,
            convert,
            running: Mutex::new(Running {
                future: Box::pin(None),
                event: None,
                ticket: None,
            }),
            waker,
        })
    }

    /// The handler's task: runs queued events and finishes started ones, until the
    /// subscription ends.
    pub(crate) async fn serve(self: Arc<Self>) {
        std::future::poll_fn(|cx| self.work(cx)).await;
    }

    fn work(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut running = match self.running.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // An emitter is starting the handler on an event right now. Rather
                // than block this runtime thread while it does, come back after
                // the other tasks here have had their turn.
                Err(TryLockError::WouldBlock) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            };
            if running.busy() {
                if !self.mailbox.take_slot_wake(cx) {
                    return Poll::Pending;
                }
                self.poll_running(&mut running, None);
                continue;
            }
            let Some(item) = std::task::ready!(self.mailbox.poll_pop(cx)) else {
                return Poll::Ready(());
            };
            self.start(&mut running, &item.event, item.ticket);
        }
    }

    /// Starts the handler on `event` in the idle slot and polls it once.
    fn start(&self, running: &mut Running<Fut>, event: &Arc<dyn Event>, ticket: Option<Ticket>) {
        let typed = (self.convert)(Arc::clone(event));
        match catch_unwind(AssertUnwindSafe(|| (self.handler)(typed))) {
            Ok(future) => running.future.set(Some(future)),
            Err(panic) => {
                let kind = HandlerErrorKind::Panicked(panic_message(&*panic));
                return self.finish(&**event, ticket, Err(kind));
            }
        }
        self.poll_running(running, Some((event, ticket)));
    }

    /// Polls the future in the slot. `started` is the event and ticket of a future
    /// polled for the first time; a pending one keeps them until it finishes.
    fn poll_running(
        &self,
        running: &mut Running<Fut>,
        started: Option<(&Arc<dyn Event>, Option<Ticket>)>,
    ) {
        let mut cx = Context::from_waker(&self.waker);
        let future = running.future.as_mut().as_pin_mut().expect("a busy slot");
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(&mut cx))) {
            Ok(Poll::Pending) => {
                if let Some((event, ticket)) = started {
                    running.event = Some(Arc::clone(event));
                    running.ticket = ticket;
                }
                return;
            }
            Ok(Poll::Ready(out)) => out.into_result().map_err(HandlerErrorKind::Failed),
            Err(panic) => Err(HandlerErrorKind::Panicked(panic_message(&*panic))),
        };
        running.future.set(None);
        match started {
            Some((event, ticket)) => self.finish(&**event, ticket, outcome),
            None => {
                let event = running
                    .event
                    .take()
                    .expect("a pending handler keeps its event");
                self.finish(&*event, running.ticket.take(), outcome);
            }
        }
    }

    fn finish(
        &self,
        event: &dyn Event,
        ticket: Option<Ticket>,
        outcome: Result<(), HandlerErrorKind>,
    ) {
        let ok = outcome.is_ok();
        if let Err(kind) = outcome {
            match self.bus.upgrade() {
                Some(inner) => inner.report(event, self.id, kind),
                None => {
                    tracing::error!(subscription = %self.id, "handler failed after the bus was dropped")
                }
            }
        }
        if let Some(ticket) = ticket {
            ticket.done(ok);
        }
    }
}

impl<T, F, Fut> Runner for HandlerRunner<T, F, Fut>
where
    T: ?Sized + Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    fn try_start(
        &self,
        event: &Arc<dyn Event>,
        ticket: Option<Ticket>,
    ) -> Result<(), Option<Ticket>> {
        if !self.mailbox.is_empty() || self.mailbox.is_closed() {
            return Err(ticket);
        }
        // Handler panics are caught inside the lock, so none poisons it; should it be
        // poisoned anyway, the state it guards is still consistent.
        let mut running = match self.running.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // Its task, or another emitter, is running it right now.
            Err(TryLockError::WouldBlock) => return Err(ticket),
        };
        // Checked again under the lock: only the lock holder takes events from the
        // queue, so an empty queue now means no earlier event is waiting.
        if running.busy() || !self.mailbox.is_empty() {
            return Err(ticket);
        }
        self.start(&mut running, event, ticket);
        Ok(())
    }
}

/// An event for a handler's queue.
pub(crate) fn queued(event: &Arc<dyn Event>, ticket: Option<Ticket>) -> Item {
    Item {
        event: Arc::clone(event),
        ticket,
    }
}
