//! Bounded queues between emitters and the consumers that cannot run inside
//! `emit`: async handlers whose events wait their turn (each handler takes one
//! event at a time, in order) and streams.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use crate::{Event, Subscription};

/// What happens when a subscriber's buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Async emitters (`publish`) wait for room. A sync emitter (`emit`) cannot
    /// wait, so for it this acts as [`Overflow::Error`].
    #[default]
    Wait,
    /// Drop the oldest buffered event to make room, and count it.
    DropOldest,
    /// Refuse the event for this subscriber; the emit reports it.
    Error,
}

/// Tells an awaiting emitter when every handler has taken its turn.
#[derive(Debug)]
pub(crate) struct Completion {
    remaining: AtomicUsize,
    failed: AtomicUsize,
    notify: Notify,
}

impl Completion {
    pub(crate) fn new(handlers: usize) -> Arc<Completion> {
        Arc::new(Completion {
            remaining: AtomicUsize::new(handlers),
            failed: AtomicUsize::new(0),
            notify: Notify::new(),
        })
    }

    /// Waits until every ticket is done; returns how many handlers failed or never ran.
    pub(crate) async fn wait(&self) -> usize {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return self.failed.load(Ordering::Acquire);
            }
            notified.await;
        }
    }
}

/// One handler's share of a [`Completion`]. Dropped unhandled (its subscription
/// went away) it counts as failed.
#[derive(Debug)]
pub(crate) struct Ticket {
    completion: Arc<Completion>,
    outcome: Option<bool>,
}

impl Ticket {
    pub(crate) fn new(completion: &Arc<Completion>) -> Ticket {
        Ticket {
            completion: Arc::clone(completion),
            outcome: None,
        }
    }

    pub(crate) fn done(mut self, ok: bool) {
        self.outcome = Some(ok);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.outcome != Some(true) {
            self.completion.failed.fetch_add(1, Ordering::AcqRel);
        }
        if self.completion.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.completion.notify.notify_waiters();
        }
    }
}

/// An event on its way to a subscriber.
pub(crate) struct Item {
    pub(crate) event: Arc<dyn Event>,
    pub(crate) ticket: Option<Ticket>,
}

struct State {
    items: VecDeque<Item>,
    waker: Option<Waker>,
    closed: bool,
    /// For async handlers: the handler's unfinished future asked to be polled.
    slot_woken: bool,
}

/// The result of offering an item to a mailbox.
pub(crate) enum Offer {
    Accepted,
    /// Full, and the policy refuses or (for a sync emitter) cannot wait.
    Refused,
    /// Full under [`Overflow::Wait`]: an async emitter should wait and retry.
    Full(Item),
}

pub(crate) struct Mailbox {
    state: Mutex<State>,
    /// `state.items.len()`, readable without the lock.
    len: AtomicUsize,
    /// `state.closed`, readable without the lock.
    closed: AtomicBool,
    capacity: usize,
    overflow: Overflow,
    space: Notify,
    dropped: AtomicU64,
}

impl Mailbox {
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                waker: None,
                closed: false,
                slot_woken: false,
            }),
            len: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
            overflow,
            space: Notify::new(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Offers an item without waiting.
    pub(crate) fn offer(&self, item: Item) -> Offer {
        let waker;
        {
            let mut state = self.state.lock().expect("mailbox lock");
            if state.closed {
                // The subscription is going away; its events go with it.
                return Offer::Accepted;
            }
            if state.items.len() >= self.capacity {
                match self.overflow {
                    Overflow::DropOldest => {
                        state.items.pop_front();
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Overflow::Error => return Offer::Refused,
                    Overflow::Wait => return Offer::Full(item),
                }
            }
            state.items.push_back(item);
            self.len.store(state.items.len(), Ordering::Release);
            waker = state.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        Offer::Accepted
    }

    /// Offers an item, waiting for room under [`Overflow::Wait`].
    pub(crate) async fn offer_waiting(&self, mut item: Item) -> Offer {
        loop {
            let notified = self.space.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.offer(item) {
                Offer::Full(back) => item = back,
                other => return other,
            }
            notified.await;
        }
    }

    /// Moves up to `max` buffered items into `out`; `Ready(false)` once closed and
    /// empty.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Item>,
        max: usize,
    ) -> Poll<bool> {
        let mut state = self.state.lock().expect("mailbox lock");
        if state.items.is_empty() {
            if state.closed {
                return Poll::Ready(false);
            }
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = max.min(state.items.len());
        out.extend(state.items.drain(..n));
        self.len.store(state.items.len(), Ordering::Release);
        drop(state);
        self.space.notify_waiters();
        Poll::Ready(true)
    }

    /// Takes the next buffered item; `Ready(None)` once closed and empty.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut state = self.state.lock().expect("mailbox lock");
        let Some(item) = state.items.pop_front() else {
            if state.closed {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        self.len.store(state.items.len(), Ordering::Release);
        drop(state);
        self.space.notify_waiters();
        Poll::Ready(Some(item))
    }

    /// Whether nothing is buffered. Exact for a caller that is the only one taking
    /// items out (an async handler's runner holds its run lock for that).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the consumer's unfinished handler future as ready to be polled again
    /// and wakes the consumer.
    pub(crate) fn wake_slot(&self) {
        let waker = {
            let mut state = self.state.lock().expect("mailbox lock");
            state.slot_woken = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`wake_slot`](Self::wake_slot) was called since the last time this
    /// returned true; when not, the consumer is woken by the next call.
    pub(crate) fn take_slot_wake(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.state.lock().expect("mailbox lock");
        if std::mem::take(&mut state.slot_woken) {
            return true;
        }
        state.waker = Some(cx.waker().clone());
        false
    }

    /// Stops the mailbox: buffered events are dropped (their tickets count as not
    /// handled) and the consumer sees the end.
    pub(crate) fn close(&self) {
        let (items, waker) = {
            let mut state = self.state.lock().expect("mailbox lock");
            state.closed = true;
            self.closed.store(true, Ordering::Release);
            self.len.store(0, Ordering::Release);
            (std::mem::take(&mut state.items), state.waker.take())
        };
        drop(items);
        self.space.notify_waiters();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Events as a [`futures_core::Stream`], from [`Bus::stream`](crate::Bus::stream)
/// or [`Bus::stream_pattern`](crate::Bus::stream_pattern). The buffer is bounded;
/// what happens when it is full is the stream's [`Overflow`] policy. Dropping the
/// stream unsubscribes it.
pub struct EventStream<T: ?Sized> {
    mailbox: Arc<Mailbox>,
    buffer: VecDeque<Item>,
    convert: fn(Arc<dyn Event>) -> Arc<T>,
    _subscription: Subscription,
    _marker: PhantomData<fn() -> Arc<T>>,
}

impl<T: ?Sized> EventStream<T> {
    pub(crate) fn new(
        mailbox: Arc<Mailbox>,
        subscription: Subscription,
        convert: fn(Arc<dyn Event>) -> Arc<T>,
    ) -> Self {
        EventStream {
            mailbox,
            buffer: VecDeque::new(),
            convert,
            _subscription: subscription,
            _marker: PhantomData,
        }
    }

    /// Events dropped so far under [`Overflow::DropOldest`].
    pub fn dropped(&self) -> u64 {
        self.mailbox.dropped()
    }
}

impl<T: ?Sized> Unpin for EventStream<T> {}

impl<T: ?Sized> futures_core::Stream for EventStream<T> {
    type Item = Arc<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<T>>> {
        let this = &mut *self;
        if this.buffer.is_empty() {
            // One at a time, so the subscriber's bound is exactly its capacity.
            match this.mailbox.poll_take(cx, &mut this.buffer, 1) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => return Poll::Ready(None),
                Poll::Ready(true) => {}
            }
        }
        let item = this.buffer.pop_front().expect("filled above");
        Poll::Ready(Some((this.convert)(item.event)))
    }
}

impl<T: ?Sized> std::fmt::Debug for EventStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("buffered", &self.buffer.len())
            .finish()
    }
}
