//! The HTTP/JSON API of `tidings serve`.
//!
//! [`router`] builds the axum application over a shared [`Broker`] and the
//! embedded event store, route by route from [`tidings_api::ROUTES`]: the route
//! table, the JSON shapes and the error codes are `tidings-api`'s, so the
//! server, the client and the OpenAPI document cannot drift apart.
//!
//! Modules, from the bottom: `error` ([`ApiError`]: every failure as
//! `{"error_code", "message"}` with its status), `body` (bodies read under the
//! size limit), `extract` (path and query extractors that refuse with the API's
//! JSON error), `wire` (the broker's and the store's values as the API's JSON
//! shapes; events decoded per the CloudEvents HTTP binding; start positions and
//! waits parsed), `stop` (what ends a waiting request early) and `sse` (one
//! pump for every Server-Sent Events stream). Above them, one module of
//! handlers per resource: `topics`, `events`, `groups`, `queues`, `streams`,
//! `metrics`. Handlers use the modules below them and never each other. The
//! web dashboard, `ui`, is served under `/ui` the same way: its pages use the
//! modules below, never the handlers.
//!
//! The API holds no state of its own beyond counters: topics, offsets and groups
//! belong to the broker. It never binds a socket or reads configuration; the
//! server does both and hands it [`Limits`] and the shutdown token. Once the
//! token is cancelled, new requests get 503, waiting requests and streams end,
//! and answers to work already handed out are still taken.
//!
//! Limits are enforced before allocation: a body is refused from its
//! `Content-Length` and read through a cap, so an oversized request costs at most
//! the cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts as _, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tidings_api::{Draining, ErrorCode, Health, Method, Operation, Route, ROUTES};
use tidings_broker::Broker;
use tidings_store::EmbeddedStore;
use tidings_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod access;
mod body;
mod catalog;
mod cors;
mod error;
mod events;
mod extract;
mod groups;
mod login;
mod metrics;
mod queues;
mod registry;
mod sagas;
mod sse;
mod stop;
mod streams;
mod topics;
mod ui;
mod wire;

pub use cors::Cors;
pub use error::ApiError;
pub use login::Certified;
pub use ui::{UiContext, UiSettings, HISTORY_SAMPLE_EVERY};

/// Bounds on what one request may ask for: settings of `tidings serve`, each a
/// flag, a `TIDINGS_*` environment variable and a key of the configuration
/// file's `[limits]` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes; larger ones get 413 before they are read.
    #[arg(
        id = "limits.body_bytes_max",
        value_name = "BYTES",
        long = "body-bytes-max",
        env = "TIDINGS_BODY_BYTES_MAX",
        default_value_t = Limits::default().body_bytes_max
    )]
    pub body_bytes_max: usize,
    /// Most events in one batched publish.
    #[arg(
        id = "limits.batch_events_max",
        value_name = "EVENTS",
        long = "batch-events-max",
        env = "TIDINGS_BATCH_EVENTS_MAX",
        default_value_t = Limits::default().batch_events_max
    )]
    pub batch_events_max: usize,
    /// Most events one read answers with.
    #[arg(
        id = "limits.read_events_max",
        value_name = "EVENTS",
        long = "read-events-max",
        env = "TIDINGS_READ_EVENTS_MAX",
        default_value_t = Limits::default().read_events_max
    )]
    pub read_events_max: usize,
    /// Longest a long-poll may wait for events, in milliseconds.
    #[arg(
        id = "limits.long_poll_wait_max_ms",
        value_name = "MS",
        long = "long-poll-wait-max-ms",
        env = "TIDINGS_LONG_POLL_WAIT_MAX_MS",
        default_value_t = Limits::default().long_poll_wait_max_ms
    )]
    pub long_poll_wait_max_ms: u64,
    /// Most Server-Sent Events streams open at once.
    #[arg(
        id = "limits.sse_connections_max",
        value_name = "STREAMS",
        long = "sse-connections-max",
        env = "TIDINGS_SSE_CONNECTIONS_MAX",
        default_value_t = Limits::default().sse_connections_max
    )]
    pub sse_connections_max: usize,
    /// Most HTTP connections open at once; more are closed as they come, so
    /// a flood of connections cannot exhaust the server.
    #[arg(
        id = "limits.connections_max",
        value_name = "CONNECTIONS",
        long = "http-connections-max",
        env = "TIDINGS_HTTP_CONNECTIONS_MAX",
        default_value_t = Limits::default().connections_max
    )]
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// How long a client may take to send a request's head, in
    /// milliseconds, counted from when the server waits for it (a new
    /// connection, or one kept alive after an answer): a slow or idle client
    /// is closed then.
    #[arg(
        id = "limits.header_timeout_ms",
        value_name = "MS",
        long = "http-header-timeout-ms",
        env = "TIDINGS_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = Limits::default().header_timeout_ms
    )]
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
}

fn default_connections_max() -> usize {
    Limits::default().connections_max
}

fn default_header_timeout_ms() -> u64 {
    Limits::default().header_timeout_ms
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 4 * 1024 * 1024,
            batch_events_max: 1_000,
            read_events_max: 1_000,
            long_poll_wait_max_ms: 30_000,
            sse_connections_max: 256,
            connections_max: 4096,
            header_timeout_ms: 30_000,
        }
    }
}

impl Limits {
    /// Longest a long-poll may wait.
    pub fn long_poll_wait_max(&self) -> Duration {
        Duration::from_millis(self.long_poll_wait_max_ms)
    }

    /// How long a request's head may take to arrive.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// Checks that every limit lets some request through; the error names the
    /// setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("body_bytes_max", self.body_bytes_max as u64),
            ("batch_events_max", self.batch_events_max as u64),
            ("read_events_max", self.read_events_max as u64),
            ("long_poll_wait_max_ms", self.long_poll_wait_max_ms),
            ("sse_connections_max", self.sse_connections_max as u64),
            ("connections_max", self.connections_max as u64),
            ("header_timeout_ms", self.header_timeout_ms),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(format!("{name} must be at least 1")),
            None => Ok(()),
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
    shutdown: CancellationToken,
    /// One permit per open Server-Sent Events stream.
    streams: Arc<tokio::sync::Semaphore>,
    /// The origins browsers may call from.
    cors: Cors,
    /// Requests being answered now, streams included.
    in_flight: std::sync::atomic::AtomicUsize,
    /// The database of the toolkit's sagas, if the server reads one.
    sagas: Option<tidings_store::sagas::SagaReader>,
    /// The schema registry, served under `/registry` when present.
    registry: Option<Arc<tidings_schema::Registry>>,
    /// The users requests log in as, when the server has any.
    gate: Option<Arc<tidings_auth::Gate>>,
    /// The web dashboard's settings and what it shows of the server.
    ui: UiContext,
    /// The figures the dashboard's trends are drawn from.
    history: ui::History,
    /// The changes made from the dashboard.
    audit: ui::AuditLog,
}

impl Api {
    /// The API over `broker` and the event `store`. When `shutdown` is
    /// cancelled the API drains: new requests get 503 and `/healthz` reports
    /// the server as draining; waiting requests and event streams end; requests
    /// under way finish, and answers to work already handed out (acks, nacks,
    /// rejects, commits, heartbeats, leaving) are still taken.
    pub fn new(
        broker: Arc<Broker>,
        store: EmbeddedStore,
        limits: Limits,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Api {
        Api {
            inner: Arc::new(Inner {
                broker,
                store,
                limits,
                metrics,
                shutdown,
                streams: Arc::new(tokio::sync::Semaphore::new(limits.sse_connections_max)),
                cors: Cors::default(),
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                sagas: None,
                registry: None,
                gate: None,
                ui: UiContext::default(),
                history: ui::History::default(),
                audit: ui::AuditLog::new(None),
            }),
        }
    }

    /// The API answering cross-origin requests as `cors` allows (off by
    /// default). Called before the API is shared.
    pub fn with_cors(mut self, cors: Cors) -> Api {
        Arc::get_mut(&mut self.inner)
            .expect("with_cors is called before the API is shared")
            .cors = cors;
        self
    }

    /// The API answering `GET /v1/sagas/...` from the sagas' database
    /// `reader` reads. Called before the API is shared.
    pub fn with_sagas(mut self, reader: tidings_store::sagas::SagaReader) -> Api {
        Arc::get_mut(&mut self.inner)
            .expect("with_sagas is called before the API is shared")
            .sagas = Some(reader);
        self
    }

    /// The API serving the schema `registry` under
    /// [`tidings_api::REGISTRY_PREFIX`]. Called before the API is shared.
    pub fn with_registry(mut self, registry: Arc<tidings_schema::Registry>) -> Api {
        Arc::get_mut(&mut self.inner)
            .expect("with_registry is called before the API is shared")
            .registry = Some(registry);
        self
    }

    /// The API logging requests in through `gate` once it has users.
    /// Called before the API is shared.
    pub fn with_gate(mut self, gate: Arc<tidings_auth::Gate>) -> Api {
        Arc::get_mut(&mut self.inner)
            .expect("with_gate is called before the API is shared")
            .gate = Some(gate);
        self
    }

    /// The API serving the web dashboard under `/ui` as `ui` says (off
    /// unless called). Called before the API is shared.
    pub fn with_ui(mut self, ui: UiContext) -> Api {
        let inner =
            Arc::get_mut(&mut self.inner).expect("with_ui is called before the API is shared");
        inner.audit = ui::AuditLog::new(ui.data_dir.clone());
        inner.ui = ui;
        self
    }

    /// Samples the figures the dashboard draws its trends from; the server
    /// calls it every [`HISTORY_SAMPLE_EVERY`].
    pub async fn sample_history(&self) {
        self.inner.history.sample(&self.inner.broker).await;
    }

    fn registry(&self) -> Option<&Arc<tidings_schema::Registry>> {
        self.inner.registry.as_ref()
    }

    fn sagas(&self) -> Option<&tidings_store::sagas::SagaReader> {
        self.inner.sagas.as_ref()
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

    fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    fn draining(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Requests being answered now (a draining server waits for them).
    pub fn requests_in_flight(&self) -> usize {
        self.inner
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs storage work that blocks (file IO, fsync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("a storage task failed: {e}")))?
}

/// The application: every route of [`ROUTES`], the JSON fallback for unknown
/// paths, and the per-request middleware (request id, log span, metrics,
/// draining).
pub fn router(api: Api) -> Router {
    let routes = ROUTES.iter().fold(Router::new(), |router, route| {
        router.route(route.path, handler(route))
    });
    let routes = if api.registry().is_some() {
        routes.nest(tidings_api::REGISTRY_PREFIX, registry::routes())
    } else {
        routes
    };
    let routes = if api.inner.ui.settings.enabled {
        routes.nest("/ui", ui::routes())
    } else {
        routes
    };
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(api.clone(), around_request))
        .with_state(api)
}

/// The handler of one route. The match is exhaustive, and every operation is
/// in the table once (a test of `tidings-api` checks), so every route has
/// exactly its handler.
fn handler(route: &Route) -> MethodRouter<Api> {
    let method = match route.method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    };
    match route.operation {
        Operation::Health => on(method, healthz),
        Operation::Metrics => on(method, metrics::render),
        Operation::OpenApi => on(method, openapi),
        Operation::GetLimits => on(method, limits),
        Operation::ListTopics => on(method, topics::list),
        Operation::CreateTopic => on(method, topics::create),
        Operation::DescribeTopic => on(method, topics::describe),
        Operation::AlterTopic => on(method, topics::alter),
        Operation::DeleteTopic => on(method, topics::delete),
        Operation::ReadEvents => on(method, events::read),
        Operation::PublishEvents => on(method, events::publish),
        Operation::DescribeStream => on(method, streams::describe),
        Operation::DeleteStream => on(method, streams::delete),
        Operation::ReadStream => on(method, streams::read_stream),
        Operation::AppendToStream => on(method, streams::append),
        Operation::ReadAll => on(method, streams::read_all),
        Operation::ListGroups => on(method, groups::list),
        Operation::DescribeGroup => on(method, groups::describe),
        Operation::DeleteGroup => on(method, groups::delete),
        Operation::ResetGroup => on(method, groups::reset),
        Operation::JoinGroup => on(method, groups::join),
        Operation::LeaveGroup => on(method, groups::leave),
        Operation::PollGroup => on(method, groups::poll),
        Operation::CommitOffsets => on(method, groups::commit),
        Operation::HeartbeatMember => on(method, groups::heartbeat),
        Operation::ListQueues => on(method, queues::list),
        Operation::CreateQueue => on(method, queues::create),
        Operation::DescribeQueue => on(method, queues::describe),
        Operation::DeleteQueue => on(method, queues::delete),
        Operation::ReceiveDeliveries => on(method, queues::receive),
        Operation::AckLeases => on(method, queues::ack_batch),
        Operation::AckLease => on(method, queues::ack),
        Operation::NackLease => on(method, queues::nack),
        Operation::RejectLease => on(method, queues::reject),
        Operation::ExtendLease => on(method, queues::extend),
        Operation::ReleaseLease => on(method, queues::release),
        Operation::ListDeadLetters => on(method, queues::dead_letters),
        Operation::PurgeDeadLetters => on(method, queues::purge),
        Operation::RedriveDeadLetters => on(method, queues::redrive),
        Operation::GetDeadLetter => on(method, queues::dead_letter),
        Operation::ListSagaInstances => on(method, sagas::list),
        Operation::DescribeSagaInstance => on(method, sagas::describe),
        Operation::GetCatalog => on(method, catalog::get),
        Operation::GetCatalogAsyncApi => on(method, catalog::asyncapi),
    }
}

async fn healthz(State(api): State<Api>) -> Response {
    if api.draining() {
        let body = Health {
            status: "draining".into(),
        };
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(body),
        )
            .into_response();
    }
    axum::Json(Health {
        status: "ok".into(),
    })
    .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        tidings_api::OPENAPI_JSON,
    )
        .into_response()
}

/// `GET /v1/limits`: what a client must keep its requests under.
async fn limits(State(api): State<Api>) -> axum::Json<tidings_api::ServerLimits> {
    let l = api.limits();
    axum::Json(tidings_api::ServerLimits {
        body_bytes_max: l.body_bytes_max as u64,
        batch_events_max: l.batch_events_max as u64,
        read_events_max: l.read_events_max as u64,
        long_poll_wait_max_ms: l.long_poll_wait_max_ms,
    })
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Consuming a group reads its topics: a request that consumes (Read on a
/// stream group's or queue group's name) also needs Read on the topics the
/// group consumes, as a Kafka Fetch does, however the group came to exist.
async fn consumed_topics_readable(
    api: &Api,
    access: &access::Access,
    need: access::Need,
    route: &str,
    group: &str,
) -> Result<(), ApiError> {
    use tidings_auth::acl::{Operation, ResourceType};
    if need != access::Need::Named(ResourceType::Group, Operation::Read) || !access.restricted() {
        return Ok(());
    }
    // An unknown group is the handler's to answer.
    let topics = if route.starts_with("/v1/queues/") {
        api.broker()
            .queue_topic(group)
            .await
            .map(|t| vec![t])
            .unwrap_or_default()
    } else {
        api.broker().group_topics(group).unwrap_or_default()
    };
    for topic in topics {
        access.require(ResourceType::Topic, topic.as_str(), Operation::Read)?;
    }
    Ok(())
}

/// The route of the table a request to `route` (its template) by `method`
/// matched, if any.
fn route_of(method: &axum::http::Method, route: &str) -> Option<&'static Route> {
    // axum answers HEAD with the GET handler: it is that route.
    let method = if method == axum::http::Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|r| r.path == route && r.method.as_str() == method)
}

/// What a draining server does with a request to `route`; paths outside the
/// table are refused like new work.
fn draining_rule(route: Option<&Route>) -> Draining {
    route.map_or(Draining::Refused, |r| r.draining)
}

/// One request counted in [`Api::requests_in_flight`] while it lives.
struct InFlight(Api);

impl InFlight {
    fn enter(api: &Api) -> InFlight {
        api.inner
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(api.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .inner
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Longest `x-request-id` taken from a client; a longer or unprintable one is
/// replaced by our own.
const REQUEST_ID_BYTES_MAX: usize = 64;

/// The caller's trace context: a valid W3C `traceparent` header.
pub(crate) fn caller_context(headers: &HeaderMap) -> Option<tidings_trace::TraceParent> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(tidings_trace::TraceParent::parse)
}

/// Gives every request an id (the client's `x-request-id` when it sends a usable
/// one), a log span carrying it, a line when it ends, and request metrics; while
/// the server drains, refuses new work with 503.
async fn around_request(State(api): State<Api>, request: Request, next: Next) -> Response {
    cors::around(&api, request, async |request| {
        handle(&api, request, next).await
    })
    .await
}

/// [`around_request`] within CORS.
async fn handle(api: &Api, request: Request, next: Next) -> Response {
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
    let matched = route_of(&method, &route);
    let rule = draining_rule(matched);
    // A server span `{method} {route}` continuing the caller's trace; probes
    // and scrapes, every few seconds, make none (their span is below info).
    let span = if rule == Draining::Probe {
        tracing::debug_span!(
            "request",
            id = %id,
            method = %method,
            path = %request.uri().path(),
            principal = tracing::field::Empty,
            correlationid = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            id = %id,
            method = %method,
            path = %request.uri().path(),
            principal = tracing::field::Empty,
            correlationid = tracing::field::Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
        )
    };
    if let Some(caller) = caller_context(request.headers()) {
        tidings_trace::continue_from(&span, &caller);
    }
    tidings_trace::set_attributes(
        &span,
        &[
            (
                "http.request.method",
                tidings_trace::Value::Str(method.as_str()),
            ),
            ("http.route", tidings_trace::Value::Str(&route)),
        ],
    );
    let started = Instant::now();
    // Counted until the answer is made (a stream's body goes on after).
    let counted = InFlight::enter(api);
    let mut response = if api.draining() && rule == Draining::Refused {
        ApiError::shutting_down().into_response()
    } else {
        let operation = matched.map(|r| r.operation);
        let login = login::principal(
            api.inner.gate.as_ref(),
            operation,
            request.headers(),
            request.extensions().get::<login::Certified>(),
        )
        .instrument(span.clone())
        .await;
        match login {
            Ok(principal) => {
                span.record("principal", tracing::field::display(&principal));
                let need = match matched {
                    Some(r) => access::need(r.operation),
                    None if request
                        .uri()
                        .path()
                        .starts_with(tidings_api::REGISTRY_PREFIX) =>
                    {
                        access::registry_need(&method)
                    }
                    None => access::Need::Nothing,
                };
                let host = request
                    .extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip());
                let access = access::Access::new(principal, host, api.inner.gate.clone());
                let (mut parts, body) = request.into_parts();
                let named = match need {
                    access::Need::Named(..) => {
                        axum::extract::RawPathParams::from_request_parts(&mut parts, &())
                            .await
                            .ok()
                            .and_then(|p| p.iter().next().map(|(_, v)| v.to_owned()))
                    }
                    _ => None,
                };
                let mut checked = access.check(need, named.as_deref());
                if let (Ok(()), access::Need::Named(_, _), Some(group)) =
                    (&checked, need, named.as_deref())
                {
                    checked = consumed_topics_readable(api, &access, need, &route, group).await;
                }
                match checked {
                    Ok(()) => {
                        parts.extensions.insert(access);
                        let request = Request::from_parts(parts, body);
                        next.run(request).instrument(span.clone()).await
                    }
                    Err(refused) => span.in_scope(|| refused.into_response()),
                }
            }
            Err(refusal) => refusal,
        }
    };
    drop(counted);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let elapsed_ms = elapsed.as_secs_f64() * 1e3;
    span.in_scope(|| {
        // Scrapes and probes come every few seconds; their lines would drown the rest.
        if rule == Draining::Probe && status < 500 {
            tracing::debug!(status, elapsed_ms, "request done");
        } else {
            tracing::info!(status, elapsed_ms, "request done");
        }
    });
    tidings_trace::set_attributes(
        &span,
        &[(
            "http.response.status_code",
            tidings_trace::Value::Int(i64::from(status)),
        )],
    );
    tidings_telemetry::http::request_done(method.as_str(), &route, status, elapsed);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
