//! Server-Sent Events: the same reads as the long-polls, pushed as they come.
//!
//! A request that accepts `text/event-stream` on a topic's events, a group
//! member's events, a queue's receive or the event store's `$all` gets a
//! stream instead of one answer. Each message's `data` is the JSON the
//! long-poll would have put in its list, and its `id` says where the stream
//! is: for a topic, every partition's next offset (`<partition>:<offset>,...`),
//! so a client that reconnects with it as `Last-Event-ID` (as a browser's
//! `EventSource` does) goes on without a gap or a repeat; for the event store,
//! the global position, honoured the same way; for a member's and a queue's
//! stream, `<partition>:<offset>` of the event. One
//! pump serves every stream: it asks its [`Source`] for the next items, which
//! waits until there are some or the stream should end, and sends them. A
//! stream ends when its client goes away or the server drains. At most
//! `sse_connections_max` streams are open at once; one more is refused with
//! 429.
//!
//! A queue's deliveries are leased when they are read, before they reach the
//! client, at most `max_in_flight` unanswered at a time; when the stream ends,
//! the ones still held are given back, due at once and not counted as
//! attempts (as RabbitMQ requeues a closed channel's unacked messages). A
//! member's stream advances the member's positions the same way; only commits
//! are durable, so a restarted member starts from its last commit.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tidings_api::ErrorCode;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::stop::Stop;
use crate::{Api, ApiError};

/// Messages buffered per stream before the pump waits for the client. Small,
/// because a queue's deliveries are leased before they are buffered.
const STREAM_BUFFER_MESSAGES: usize = 16;
/// A comment line this often keeps idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a source's wait for items may run: the stream's stop ends it
/// sooner, so this only bounds how long any one wait is asked for.
pub(crate) const SOURCE_WAIT: Duration = Duration::from_secs(3600);

/// One message on its way to the client.
pub(crate) type Message = Result<Event, Infallible>;

/// Whether the request asks for an event stream.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// One message of a stream: its id and its JSON.
pub(crate) struct Item {
    id: String,
    data: String,
}

impl Item {
    /// An item of a partition (`id` = `<partition>:<offset>`).
    pub(crate) fn at_offset(
        partition: u32,
        offset: u64,
        json: &impl Serialize,
    ) -> Result<Item, ApiError> {
        Item::new(format!("{partition}:{offset}"), json)
    }

    /// An item with an id of its source's choosing.
    pub(crate) fn with_id(id: String, json: &impl Serialize) -> Result<Item, ApiError> {
        Item::new(id, json)
    }

    /// An item whose data is `text` as it is (the dashboard's HTML rows).
    pub(crate) fn text(id: String, text: String) -> Item {
        Item { id, data: text }
    }

    /// An item of the event store's global order (`id` = its position).
    pub(crate) fn at_position(position: u64, json: &impl Serialize) -> Result<Item, ApiError> {
        Item::new(position.to_string(), json)
    }

    fn new(id: String, json: &impl Serialize) -> Result<Item, ApiError> {
        let data = serde_json::to_string(json)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        Ok(Item { id, data })
    }
}

/// Where a stream's items come from.
pub(crate) trait Source: Send + 'static {
    /// The next items, waiting for some (up to [`SOURCE_WAIT`]) when there are
    /// none; nothing when `stop` resolves first.
    fn next(&mut self, stop: &Stop) -> impl Future<Output = Result<Vec<Item>, ApiError>> + Send;
}

struct Messages(mpsc::Receiver<Message>);

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Opens a stream of `source`'s items; refused with 429 when
/// `sse_connections_max` streams are open.
pub(crate) fn open(api: &Api, source: impl Source) -> Result<Response, ApiError> {
    let permit = Arc::clone(&api.inner.streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::TooManyStreams,
                format!(
                    "{} event streams are open, the limit",
                    api.limits().sse_connections_max
                ),
            )
        })?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    let stop = Stop::stream(api, tx.clone());
    tokio::spawn(pump(source, tx, stop, permit));
    Ok(Sse::new(Messages(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Sends `source`'s items until the stream should end; a failure reaches the
/// client as an `error` event with the API's error body, then the stream ends.
async fn pump(
    mut source: impl Source,
    tx: mpsc::Sender<Message>,
    stop: Stop,
    _permit: OwnedSemaphorePermit,
) {
    while !stop.stopped() {
        let items = match source.next(&stop).await {
            Ok(items) => items,
            Err(error) => {
                let body = serde_json::to_string(&error.body()).unwrap_or_default();
                let _ = tx
                    .send(Ok(Event::default().event("error").data(body)))
                    .await;
                return;
            }
        };
        for item in items {
            let message = Event::default().id(item.id).data(item.data);
            if stop.stopped() || tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }
}
