//! [`Subscriber`] and [`Subscription`]: deliveries of one topic to one group,
//! in queue or stream mode, on any backend.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::{
    Answer, Backend, BoxFuture, Incoming, Payload, Source, SubscribeOptions, Ticket,
};
use crate::publisher::{Topics, DEFAULT_PARTITIONS};
use crate::{Delivery, Error};

/// How long a subscription's receive waits for events before it asks again.
const RECEIVE_WAIT: Duration = Duration::from_secs(5);

/// Opens subscriptions on one backend; topics that do not exist are created
/// with [`DEFAULT_PARTITIONS`] partitions (or as set).
#[derive(Clone)]
pub struct Subscriber {
    backend: Arc<dyn Backend>,
    topics: Arc<Topics>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Subscriber {
    /// A subscriber on `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Subscriber {
        Subscriber::with_partitions(backend, DEFAULT_PARTITIONS)
    }

    /// A subscriber that creates missing topics with `partitions` partitions.
    pub fn with_partitions(backend: Arc<dyn Backend>, partitions: u32) -> Subscriber {
        Subscriber {
            backend,
            topics: Arc::new(Topics::new(partitions)),
        }
    }

    /// Subscribes; the group is created with `options` on first use (an
    /// existing group keeps the options it was created with).
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        self.topics.ensure(&*self.backend, &options.topic).await?;
        let source = self.backend.subscribe(&options).await?;
        let source: Arc<dyn Source> = Arc::new(Traced {
            inner: source,
            system: self.backend.name(),
            topic: options.topic.clone(),
            group: options.group.clone(),
        });
        Ok(Subscription {
            source,
            buffer: VecDeque::new(),
            prefetch: 16,
            stopped: CancellationToken::new(),
        })
    }
}

/// One subscription: [`next`](Self::next) hands out deliveries until it is
/// stopped.
pub struct Subscription {
    source: Arc<dyn Source>,
    buffer: VecDeque<Incoming>,
    prefetch: usize,
    stopped: CancellationToken,
}

/// Stops a [`Subscription`] from another task: its `next` answers `None`.
#[derive(Clone)]
pub struct StopHandle {
    source: Arc<dyn Source>,
    stopped: CancellationToken,
}

impl StopHandle {
    /// Stops the subscription.
    pub fn stop(&self) {
        self.stopped.cancel();
        self.source.stop();
    }
}

impl Subscription {
    /// At most this many deliveries are received ahead of
    /// [`next`](Self::next) (16 by default); each is leased meanwhile.
    pub fn with_prefetch(mut self, prefetch: usize) -> Subscription {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Its source, for the router, which answers deliveries itself.
    pub(crate) fn source(&self) -> Arc<dyn Source> {
        Arc::clone(&self.source)
    }

    /// What stops this subscription from another task.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            source: Arc::clone(&self.source),
            stopped: self.stopped.clone(),
        }
    }

    /// The next delivery, waiting for one; `None` once stopped.
    pub async fn next(&mut self) -> Result<Option<Delivery>, Error> {
        loop {
            if self.stopped.is_cancelled() {
                return Ok(None);
            }
            if let Some(incoming) = self.buffer.pop_front() {
                return Ok(Some(Delivery::new(incoming, Arc::clone(&self.source))));
            }
            let got = self.source.receive(self.prefetch, RECEIVE_WAIT).await?;
            self.buffer.extend(got);
        }
    }

    /// Up to `max` deliveries that are due now or within `wait`; empty when
    /// none came (or once stopped).
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, Error> {
        if self.stopped.is_cancelled() {
            return Ok(Vec::new());
        }
        if self.buffer.is_empty() {
            let got = self.source.receive(max.max(1), wait).await?;
            self.buffer.extend(got);
        }
        let n = self.buffer.len().min(max);
        Ok(self
            .buffer
            .drain(..n)
            .map(|i| Delivery::new(i, Arc::clone(&self.source)))
            .collect())
    }

    /// Stops, releases what was received but not handed out, and closes the
    /// subscription: a stream member commits what was acked and leaves its
    /// group. A partition the group already gave to another member is not
    /// committed and is no failure (the new owner delivers its unacked
    /// events again); any other failure to commit is, after the member left.
    pub async fn close(mut self) -> Result<(), Error> {
        self.stopped.cancel();
        self.source.stop();
        for incoming in self.buffer.drain(..) {
            let _ = self
                .source
                .answer(&incoming.ticket, crate::backend::Answer::Release)
                .await;
        }
        self.source.close().await
    }
}

impl Drop for Subscription {
    /// Deliveries received ahead and never handed out are released.
    fn drop(&mut self) {
        for incoming in self.buffer.drain(..) {
            drop(Delivery::new(incoming, Arc::clone(&self.source)));
        }
    }
}

/// A source whose receives that hand something out are `receive {topic}`
/// consumer spans, linked to the context of each delivery (a batch has no
/// single parent; the router's `process` span continues each one). Empty
/// receives, an idle subscriber's every second, make none.
struct Traced {
    inner: Arc<dyn Source>,
    system: &'static str,
    topic: String,
    group: String,
}

/// The trace context a delivery carries: its event's `traceparent`, or a
/// plain record's `traceparent` header (a Kafka client's instrumentation).
fn trace_context(incoming: &Incoming) -> Option<tidings_trace::TraceParent> {
    match &incoming.payload {
        Payload::Event(event) => event
            .traceparent()
            .and_then(tidings_trace::TraceParent::parse),
        Payload::Raw(record) => tidings_trace::TraceParent::from_record_headers(
            record
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_deref())),
        ),
    }
}

impl Source for Traced {
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>> {
        Box::pin(async move {
            let got = self.inner.receive(max, wait).await?;
            if !got.is_empty() {
                let span = tidings_trace::receive_span(self.system, &self.topic, &self.group);
                tidings_trace::link_events(&span, got.iter().map(trace_context));
            }
            Ok(got)
        })
    }

    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.answer(ticket, answer)
    }

    fn ack_many<'a>(&'a self, tickets: &'a [Ticket]) -> BoxFuture<'a, Vec<Result<(), Error>>> {
        self.inner.ack_many(tickets)
    }

    fn batches_acks(&self) -> bool {
        self.inner.batches_acks()
    }

    fn extend<'a>(
        &'a self,
        ticket: &'a Ticket,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.extend(ticket, timeout)
    }

    fn stop(&self) {
        self.inner.stop();
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.close()
    }
}
