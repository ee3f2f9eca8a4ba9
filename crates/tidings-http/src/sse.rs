//! Server-Sent Events: the same reads as the long-polls, pushed as they come.
//!
//! A request that accepts `text/event-stream` on a topic's events, a group
//! member's events or a queue's receive gets a stream instead of one answer.
//! Each message's `data` is the JSON the long-poll would have put in its list,
//! and its `id` is `<partition>:<offset>`. A task per stream reads in slices of
//! [`LONG_POLL_SLICE`] and ends when the client goes away or the server
//! drains. At most `sse_connections_max` streams are open at once; one more is
//! refused with 429.
//!
//! A queue's deliveries are leased when they are read, before they reach the
//! client: a client that goes away leaves the leases in its buffer to expire,
//! and they count as failed attempts, as a consumer that crashed would. A
//! member's stream advances the member's positions the same way; only commits
//! are durable, so a restarted member starts from its last commit.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::groups::LONG_POLL_SLICE;
use crate::{Api, ApiError};

/// Messages buffered per stream before the reader waits for the client. Small,
/// because a queue's deliveries are leased before they are buffered.
const STREAM_BUFFER_MESSAGES: usize = 16;
/// A comment line this often keeps idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether the request asks for an event stream.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// One message of a stream.
pub(crate) fn message(json: &Value) -> Event {
    let mut event = Event::default().data(json.to_string());
    if let (Some(p), Some(o)) = (json["partition"].as_u64(), json["offset"].as_u64()) {
        event = event.id(format!("{p}:{o}"));
    } else if let Some(position) = json["position"].as_u64() {
        event = event.id(position.to_string());
    }
    event
}

/// Where a stream's producer puts messages; `send` fails once the client left.
pub(crate) struct Sink {
    tx: mpsc::Sender<Result<Event, Infallible>>,
    api: Api,
    _permit: OwnedSemaphorePermit,
}

impl Sink {
    /// False when the client has gone away or the server drains: stop producing.
    pub(crate) async fn send(&self, json: &Value) -> bool {
        !self.api.draining() && self.tx.send(Ok(message(json))).await.is_ok()
    }

    /// Whether the producer should go on.
    pub(crate) fn open(&self) -> bool {
        !self.api.draining() && !self.tx.is_closed()
    }

    /// Reports an error to the client as an `error` event, then ends the stream.
    pub(crate) async fn fail(&self, error: ApiError) {
        let json = serde_json::json!({"error_code": error.code(), "message": error.message()});
        let _ = self
            .tx
            .send(Ok(Event::default().event("error").data(json.to_string())))
            .await;
    }
}

struct Messages(mpsc::Receiver<Result<Event, Infallible>>);

impl futures_core::Stream for Messages {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Opens a stream whose messages `produce` sends; refused with 429 when
/// `sse_connections_max` streams are open.
pub(crate) fn open<F, Fut>(api: &Api, produce: F) -> Result<Response, ApiError>
where
    F: FnOnce(Sink) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permit = Arc::clone(&api.inner.streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "{} event streams are open, the limit",
                    api.limits().sse_connections_max
                ),
            )
        })?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    let sink = Sink {
        tx,
        api: api.clone(),
        _permit: permit,
    };
    tokio::spawn(produce(sink));
    Ok(Sse::new(Messages(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// How long each read of a stream waits before checking the client is still there.
pub(crate) const SLICE: Duration = LONG_POLL_SLICE;
