//! The HTTP/JSON API of `tidings serve`.
//!
//! [`router`] builds the axum application over a shared [`Broker`]: CloudEvents
//! publish per the HTTP binding (binary, structured and batched modes), reads
//! without a group, topic administration, `/healthz`, `/metrics` (Prometheus text
//! format), the event store (append with an expected version, read a stream, read
//! `$all` or a category, subscribe) and `/openapi.json`, the checked-in OpenAPI document that describes
//! every route. Every error is JSON `{"error_code", "message"}` ([`ApiError`]).
//!
//! The API holds no state of its own beyond counters: topics, offsets and groups
//! belong to the broker. It never binds a socket or reads configuration; the
//! server does both and hands it [`Limits`].
//!
//! Limits are enforced before allocation: a body is refused from its
//! `Content-Length` and read through a cap, so an oversized request costs at most
//! the cap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tidings_broker::Broker;
use tidings_store::EmbeddedStore;
use tidings_telemetry::Metrics;
use tracing::Instrument;

mod body;
mod error;
mod events;
mod groups;
mod metrics;
mod queues;
mod sse;
mod streams;
mod topics;

pub use error::ApiError;

/// The OpenAPI 3.1 document of this API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Bounds on what one request may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; larger ones get 413 before they are read.
    pub body_bytes_max: usize,
    /// Most events in one batched publish.
    pub batch_events_max: usize,
    /// Most events one read answers with.
    pub read_events_max: usize,
    /// Longest a long-poll waits for events.
    pub long_poll_wait_max: Duration,
    /// Most Server-Sent Events streams open at once.
    pub sse_connections_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 4 * 1024 * 1024,
            batch_events_max: 1_000,
            read_events_max: 1_000,
            long_poll_wait_max: Duration::from_secs(30),
            sse_connections_max: 256,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Arc<Broker>,
    store: EmbeddedStore,
    limits: Limits,
    metrics: Metrics,
    draining: AtomicBool,
    /// One permit per open Server-Sent Events stream.
    streams: Arc<tokio::sync::Semaphore>,
}

impl Api {
    /// The API over `broker` and the event `store`.
    pub fn new(broker: Arc<Broker>, store: EmbeddedStore, limits: Limits, metrics: Metrics) -> Api {
        Api {
            inner: Arc::new(Inner {
                broker,
                store,
                limits,
                metrics,
                draining: AtomicBool::new(false),
                streams: Arc::new(tokio::sync::Semaphore::new(limits.sse_connections_max)),
            }),
        }
    }

    /// From now on, new requests get 503 and `/healthz` reports the server as
    /// draining; requests under way finish, and answers to work already handed
    /// out (acks, nacks, rejects, commits, heartbeats, leaving) are still taken.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    fn broker(&self) -> &Arc<Broker> {
        &self.inner.broker
    }

    fn store(&self) -> &EmbeddedStore {
        &self.inner.store
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

/// Runs storage work that blocks (file IO, fsync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("a storage task failed: {e}"),
        )
    })?
}

/// The application: every route, the JSON fallback for unknown paths, and the
/// per-request middleware (request id, log span, metrics, draining).
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi))
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/v1/topics/{topic}",
            get(topics::describe)
                .patch(topics::alter)
                .delete(topics::delete),
        )
        .route(
            "/v1/topics/{topic}/events",
            get(events::read).post(events::publish),
        )
        .route(
            "/v1/streams/{stream}",
            get(streams::describe).delete(streams::delete),
        )
        .route(
            "/v1/streams/{stream}/events",
            get(streams::read_stream).post(streams::append),
        )
        .route("/v1/store/events", get(streams::read_all))
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}", get(groups::describe))
        .route("/v1/groups/{group}/reset", post(groups::reset))
        .route("/v1/groups/{group}/members", post(groups::join))
        .route("/v1/groups/{group}/members/{member}", delete(groups::leave))
        .route(
            "/v1/groups/{group}/members/{member}/events",
            get(groups::poll),
        )
        .route(
            "/v1/groups/{group}/members/{member}/commit",
            post(groups::commit),
        )
        .route(
            "/v1/groups/{group}/members/{member}/heartbeat",
            post(groups::heartbeat),
        )
        .route("/v1/queues", get(queues::list).post(queues::create))
        .route("/v1/queues/{group}", get(queues::describe))
        .route("/v1/queues/{group}/receive", post(queues::receive))
        .route("/v1/queues/{group}/acks", post(queues::ack_batch))
        .route("/v1/queues/{group}/leases/{lease}/ack", post(queues::ack))
        .route("/v1/queues/{group}/leases/{lease}/nack", post(queues::nack))
        .route(
            "/v1/queues/{group}/leases/{lease}/reject",
            post(queues::reject),
        )
        .route(
            "/v1/queues/{group}/dead-letters",
            get(queues::dead_letters).delete(queues::purge),
        )
        .route(
            "/v1/queues/{group}/dead-letters/redrive",
            post(queues::redrive),
        )
        .route(
            "/v1/queues/{group}/dead-letters/{offset}",
            get(queues::dead_letter),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(api.clone(), around_request))
        .with_state(api)
}

async fn healthz(State(api): State<Api>) -> Response {
    if api.draining() {
        let body = serde_json::json!({"status": "draining"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The parameters of a path (`{topic}`, `{group}`, ...). Unlike axum's `Path`,
/// a segment that cannot be decoded is refused with the API's JSON error.
pub(crate) struct PathJson<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for PathJson<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<PathJson<T>, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
        Ok(PathJson(value))
    }
}

/// The query string of a request. Unlike axum's `Query`, one that does not
/// parse (an unknown parameter, a value of the wrong type) is refused with the
/// API's JSON error.
pub(crate) struct QueryJson<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for QueryJson<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<QueryJson<T>, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
        Ok(QueryJson(value))
    }
}

/// Requests that finish work already handed out, which a draining server still
/// takes: answers to leases (the shutdown waits for them), commits, heartbeats
/// and leaving a group.
fn finishes_work(method: &axum::http::Method, route: &str) -> bool {
    matches!(
        route,
        "/v1/queues/{group}/acks"
            | "/v1/queues/{group}/leases/{lease}/ack"
            | "/v1/queues/{group}/leases/{lease}/nack"
            | "/v1/queues/{group}/leases/{lease}/reject"
            | "/v1/groups/{group}/members/{member}/commit"
            | "/v1/groups/{group}/members/{member}/heartbeat"
    ) || (method == axum::http::Method::DELETE && route == "/v1/groups/{group}/members/{member}")
}

/// Longest `x-request-id` taken from a client; a longer or unprintable one is
/// replaced by our own.
const REQUEST_ID_BYTES_MAX: usize = 64;

/// Gives every request an id (the client's `x-request-id` when it sends a usable
/// one), a log span carrying it, a line when it ends, and request metrics.
async fn around_request(State(api): State<Api>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= REQUEST_ID_BYTES_MAX)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %method,
        path = %request.uri().path(),
        correlationid = tracing::field::Empty,
    );
    let exempt = matches!(route.as_str(), "/healthz" | "/metrics");
    let started = Instant::now();
    let mut response = if api.draining() && !exempt && !finishes_work(&method, &route) {
        ApiError::shutting_down().into_response()
    } else {
        next.run(request).instrument(span.clone()).await
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let elapsed_ms = elapsed.as_secs_f64() * 1e3;
    span.in_scope(|| {
        // Scrapes and probes come every few seconds; their lines would drown the rest.
        if exempt && status < 500 {
            tracing::debug!(status, elapsed_ms, "request done");
        } else {
            tracing::info!(status, elapsed_ms, "request done");
        }
    });
    tidings_telemetry::http::request_done(method.as_str(), &route, status, elapsed);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
