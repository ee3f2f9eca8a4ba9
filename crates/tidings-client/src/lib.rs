//! A typed client of the Tidings HTTP API (`tidings serve`).
//!
//! Every call takes and returns the types of `tidings-api`, the same ones the
//! server reads and writes, over one HTTP/1.1 connection kept open between
//! calls (and opened again when the server closed it while idle). Calls on one
//! client run one at a time; make one client per concurrent worker. Event
//! streams (Server-Sent Events) open a connection of their own.
//!
//! The server's errors come back as [`ClientError::Server`], carrying the
//! API's `error_code`, the status and the message.
//!
//! ```no_run
//! use tidings_client::Client;
//! use tidings_api::{CreateTopic, TopicSettings};
//! use tidings_types::CloudEvent;
//!
//! # async fn run() -> Result<(), tidings_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! client
//!     .create_topic(&CreateTopic {
//!         name: "orders".into(),
//!         settings: TopicSettings { partitions: Some(3), ..Default::default() },
//!     })
//!     .await?;
//! let placed = CloudEvent::new("/shop", "order.placed").with_partitionkey("order-17");
//! let answer = client.publish("orders", &[placed]).await?;
//! assert!(!answer.events[0].duplicate);
//! # Ok(())
//! # }
//! ```
//!
//! The client never reaches into storage: all it knows is the API.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tidings_api::*;
use tidings_types::{CloudEvent, EventError, JSON_BATCH_MEDIA_TYPE};

mod conn;
mod sse;

pub use sse::EventStream;

/// How long a call may take, beyond the wait a long-poll asks for.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The largest answer a call reads.
pub const ANSWER_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not one the client can use.
    #[error("invalid server address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials that cannot be sent.
    #[error("{0}")]
    Credentials(String),
    /// No connection could be made.
    #[error("cannot reach the server at {server}: {cause}")]
    Connect {
        /// The server's address.
        server: String,
        /// Why (in the message; not a separate source, so it is said once).
        cause: std::io::Error,
    },
    /// The server answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The API's `error_code`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// An event stream ended with an error event.
    #[error("{message} ({code})")]
    Stream {
        /// The API's `error_code`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server answered something that is not the API's.
    #[error("{what}: the server answered HTTP {status}: {body}")]
    Unexpected {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The connection failed during the call.
    #[error("{what}: {cause}")]
    Http {
        /// The call.
        what: String,
        /// Why (in the message).
        cause: hyper::Error,
    },
    /// The call took longer than allowed.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// The call.
        what: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The answer is larger than [`ANSWER_BYTES_MAX`].
    #[error("{what}: the answer is larger than {ANSWER_BYTES_MAX} bytes")]
    TooLarge {
        /// The call.
        what: String,
    },
    /// The answer is not the JSON the API describes.
    #[error("{what}: the answer is not the JSON expected: {cause}")]
    Decode {
        /// The call.
        what: String,
        /// Why (in the message).
        cause: serde_json::Error,
    },
    /// An event to send is not a valid CloudEvent.
    #[error("cannot encode the event: {0}")]
    Event(#[from] EventError),
}

impl ClientError {
    /// The API's error code, when the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } | ClientError::Stream { code, .. } => {
                ErrorCode::parse(code)
            }
            _ => None,
        }
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> percent_encoding::PercentEncode<'_> {
    /// Everything but RFC 3986's unreserved characters.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// `path?query`, the query from a query type (nothing when it is empty).
fn with_query(path: String, query: &impl Serialize) -> String {
    let query = serde_urlencoded::to_string(query).expect("query types encode");
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// One request's body and content type.
struct Body {
    bytes: Bytes,
    content_type: Option<&'static str>,
    headers: Vec<(String, String)>,
}

impl Body {
    fn empty() -> Body {
        Body {
            bytes: Bytes::new(),
            content_type: None,
            headers: Vec::new(),
        }
    }

    fn json(value: &impl Serialize) -> Body {
        Body {
            bytes: Bytes::from(serde_json::to_vec(value).expect("API types encode")),
            content_type: Some("application/json"),
            headers: Vec::new(),
        }
    }
}

/// A client of one `tidings serve`.
pub struct Client {
    server: String,
    conn: conn::Conn,
    timeout: Duration,
    /// `Authorization` of every request, once logged in.
    authorization: Option<hyper::header::HeaderValue>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish()
    }
}

impl Client {
    /// A client of the server at `server`: `http://host[:port]`,
    /// `https://host[:port]` (TLS, checked against the system's roots;
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), or `host:port` for
    /// plain HTTP. Nothing is connected until the first call.
    pub fn new(server: &str) -> Result<Client, ClientError> {
        let trimmed = server.trim_end_matches('/');
        let invalid = |reason: &str| ClientError::Address {
            address: server.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, authority) = if let Some(rest) = trimmed.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = trimmed.strip_prefix("http://") {
            (false, rest)
        } else if trimmed.contains("://") {
            return Err(invalid("only http:// and https:// are supported"));
        } else if trimmed.contains(':') {
            (false, trimmed)
        } else {
            return Err(invalid(
                "expected http://host:port, https://host:port or host:port",
            ));
        };
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid("expected a host and port with no path"));
        }
        let host_part = if authority.starts_with('[') {
            authority
                .split_once(']')
                .map_or(authority, |(h, _)| h)
                .trim_start_matches('[')
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        if host_part.is_empty() {
            return Err(invalid("no host"));
        }
        let has_port = if authority.starts_with('[') {
            authority.contains("]:")
        } else {
            authority.contains(':')
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let tls = if tls {
            Some(conn::Tls::new(host_part).map_err(|reason| invalid(&reason))?)
        } else {
            None
        };
        Ok(Client {
            server: trimmed.to_owned(),
            conn: conn::Conn::new(trimmed.to_owned(), address, authority.to_owned(), tls),
            timeout: REQUEST_TIMEOUT,
            authorization: None,
        })
    }

    /// The client logging every request in as `user` with `password`
    /// (`Authorization: Basic`), for a server that has users.
    pub fn with_login(mut self, user: &str, password: &str) -> Client {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = hyper::header::HeaderValue::from_str(&format!("Basic {encoded}"))
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        self.authorization = Some(value);
        self
    }

    /// The client logging every request in with an API token
    /// (`Authorization: Bearer`, a token `tidings users token add` made).
    pub fn with_token(mut self, token: &str) -> Result<Client, ClientError> {
        let mut value = hyper::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| {
                ClientError::Credentials(
                    "the token holds characters an HTTP header cannot (a Tidings token is tdg_<id>_<secret>)"
                        .to_owned(),
                )
            })?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    /// The server's address, as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one request and reads the whole answer, giving it `extra` time
    /// beyond the timeout (a long-poll's wait). Error answers become
    /// [`ClientError::Server`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body,
        extra: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let what = format!("{method} {path}");
        let (status, bytes) = self.send(method, path, body, extra).await?;
        if status.is_client_error() || status.is_server_error() {
            return Err(server_error(&what, status, &bytes));
        }
        Ok((status, bytes))
    }

    /// [`call`](Self::call), with the answer as it came, whatever its status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        extra: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let what = format!("{method} {path}");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.conn.host());
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization.clone());
        }
        if let Some(ct) = body.content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        for (name, value) in &body.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(http_body_util::Full::new(body.bytes))
            .map_err(|e| ClientError::Unexpected {
                what: what.clone(),
                status: 0,
                body: e.to_string(),
            })?;
        let timeout = self.timeout + extra;
        let answer = tokio::time::timeout(timeout, self.conn.send(request, &what))
            .await
            .map_err(|_| ClientError::Timeout {
                what: what.clone(),
                timeout,
            })??;
        Ok(answer)
    }

    /// A call whose answer is JSON of type `T`.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
        extra: Duration,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.call(method.clone(), path, body, extra).await?;
        serde_json::from_slice(&bytes).map_err(|cause| ClientError::Decode {
            what: format!("{method} {path}"),
            cause,
        })
    }

    /// A call answered with no content.
    async fn empty(&self, method: Method, path: &str, body: Body) -> Result<(), ClientError> {
        self.call(method, path, body, Duration::ZERO).await?;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, Body::empty(), Duration::ZERO)
            .await
    }

    /// A call with a JSON body, answered with JSON.
    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.json(method, path, Body::json(body), Duration::ZERO)
            .await
    }

    /// Opens a Server-Sent Events stream of `path` on a connection of its own.
    async fn stream<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<EventStream<T>, ClientError> {
        self.stream_after(method, path, None).await
    }

    /// [`stream`](Self::stream), resumed after `last_event_id` when given.
    async fn stream_after<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream<T>, ClientError> {
        let what = format!("{method} {path}");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.conn.host())
            .header(ACCEPT, "text/event-stream");
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization.clone());
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|e| ClientError::Unexpected {
                what: what.clone(),
                status: 0,
                body: e.to_string(),
            })?;
        let response = self.conn.open_stream(request, &what).await?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let bytes = conn::read_body(response.into_body(), &what).await?;
            return Err(server_error(&what, status, &bytes));
        }
        Ok(EventStream::new(response.into_body(), what))
    }

    // Health and documents.

    /// `GET /healthz`: `ok`, or `draining` while the server shuts down.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let what = "GET /healthz";
        let (status, bytes) = self
            .send(Method::GET, "/healthz", Body::empty(), Duration::ZERO)
            .await?;
        // A draining server answers 503 with its health, not an error.
        if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(server_error(what, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|cause| ClientError::Decode {
            what: what.to_owned(),
            cause,
        })
    }

    /// `GET /v1/limits`: the request limits the server enforces.
    pub async fn limits(&self) -> Result<ServerLimits, ClientError> {
        self.get("/v1/limits").await
    }

    /// `GET /metrics`, in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (_, bytes) = self
            .call(Method::GET, "/metrics", Body::empty(), Duration::ZERO)
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    // Topics.

    /// `GET /v1/topics`.
    pub async fn list_topics(&self) -> Result<TopicList, ClientError> {
        self.get("/v1/topics").await
    }

    /// `POST /v1/topics`.
    pub async fn create_topic(&self, topic: &CreateTopic) -> Result<Topic, ClientError> {
        self.send_json(Method::POST, "/v1/topics", topic).await
    }

    /// `GET /v1/topics/{topic}`.
    pub async fn describe_topic(&self, topic: &str) -> Result<Topic, ClientError> {
        self.get(&format!("/v1/topics/{}", seg(topic))).await
    }

    /// `PATCH /v1/topics/{topic}`.
    pub async fn alter_topic(
        &self,
        topic: &str,
        settings: &TopicSettings,
    ) -> Result<Topic, ClientError> {
        let path = format!("/v1/topics/{}", seg(topic));
        self.send_json(Method::PATCH, &path, settings).await
    }

    /// `DELETE /v1/topics/{topic}`.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        let path = format!("/v1/topics/{}", seg(topic));
        self.empty(Method::DELETE, &path, Body::empty()).await
    }

    // The event catalog.

    /// `GET /v1/catalog`.
    pub async fn catalog(&self) -> Result<Catalog, ClientError> {
        self.get("/v1/catalog").await
    }

    /// `GET /v1/catalog/asyncapi`: the catalog as an AsyncAPI 3.0 document.
    pub async fn catalog_asyncapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/v1/catalog/asyncapi").await
    }

    // The schema registry (Confluent's API, under /registry).

    /// A GET of the registry answered with `T`, or `None` for a 404.
    async fn registry_get<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let what = format!("GET {path}");
        let (status, bytes) = self
            .send(Method::GET, path, Body::empty(), Duration::ZERO)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_client_error() || status.is_server_error() {
            return Err(server_error(&what, status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|cause| ClientError::Decode { what, cause })
    }

    /// `GET /registry/schemas/ids/{id}`; `None` when the registry holds no
    /// such schema.
    pub async fn registry_schema(&self, id: u32) -> Result<Option<SchemaById>, ClientError> {
        self.registry_get(&format!("{REGISTRY_PREFIX}/schemas/ids/{id}"))
            .await
    }

    /// `GET /registry/subjects/{subject}/versions/{version}` (`latest` or a
    /// number); `None` when the subject or the version does not exist.
    pub async fn registry_version(
        &self,
        subject: &str,
        version: &str,
    ) -> Result<Option<SubjectVersionBody>, ClientError> {
        self.registry_get(&format!(
            "{REGISTRY_PREFIX}/subjects/{}/versions/{}",
            seg(subject),
            seg(version)
        ))
        .await
    }

    /// `POST /registry/subjects/{subject}/versions`: registers a schema (or
    /// finds it registered); its id. An incompatible schema is refused with
    /// the reasons in the error's message.
    pub async fn register_schema(
        &self,
        subject: &str,
        schema: &SchemaRequest,
    ) -> Result<RegisteredId, ClientError> {
        let path = format!("{REGISTRY_PREFIX}/subjects/{}/versions", seg(subject));
        self.send_json(Method::POST, &path, schema).await
    }

    // Events.

    /// Publishes `events` as one batch (`application/cloudevents-batch+json`).
    pub async fn publish(
        &self,
        topic: &str,
        events: &[CloudEvent],
    ) -> Result<PublishAnswer, ClientError> {
        let body = Body {
            bytes: Bytes::from(CloudEvent::batch_to_json(events)?),
            content_type: Some(JSON_BATCH_MEDIA_TYPE),
            headers: Vec::new(),
        };
        self.publish_body(topic, body).await
    }

    /// Publishes events given in the CloudEvents JSON format as one batch, as
    /// they are: the server validates them. For tools that pass events through
    /// (a replay, a file of events).
    pub async fn publish_json(
        &self,
        topic: &str,
        events: &[serde_json::Value],
    ) -> Result<PublishAnswer, ClientError> {
        let body = Body {
            bytes: Bytes::from(serde_json::to_vec(events).expect("JSON values encode")),
            content_type: Some(JSON_BATCH_MEDIA_TYPE),
            headers: Vec::new(),
        };
        self.publish_body(topic, body).await
    }

    /// Publishes one event in binary mode: its attributes in `ce-*` headers,
    /// its data as the body.
    pub async fn publish_binary(
        &self,
        topic: &str,
        event: &CloudEvent,
    ) -> Result<PublishAnswer, ClientError> {
        let body = Body {
            bytes: event.data().cloned().unwrap_or_default(),
            content_type: None,
            headers: event.to_http_binary_headers()?,
        };
        self.publish_body(topic, body).await
    }

    /// Publishes a body already encoded in `media_type`: a JSON array of
    /// CloudEvents ([`JSON_BATCH_MEDIA_TYPE`]) or of [`PublishEntry`]s
    /// ([`RECORDS_MEDIA_TYPE`]), for tools that size their batches by bytes.
    pub async fn publish_encoded(
        &self,
        topic: &str,
        media_type: &'static str,
        body: Bytes,
    ) -> Result<PublishAnswer, ClientError> {
        let body = Body {
            bytes: body,
            content_type: Some(media_type),
            headers: Vec::new(),
        };
        self.publish_body(topic, body).await
    }

    /// Publishes CloudEvents and raw records together, in order
    /// ([`RECORDS_MEDIA_TYPE`]): what a read answered can be published again
    /// this way, raw records included.
    pub async fn publish_entries(
        &self,
        topic: &str,
        entries: &[PublishEntry],
    ) -> Result<PublishAnswer, ClientError> {
        let body = Bytes::from(serde_json::to_vec(entries).expect("API types encode"));
        self.publish_encoded(topic, RECORDS_MEDIA_TYPE, body).await
    }

    async fn publish_body(&self, topic: &str, body: Body) -> Result<PublishAnswer, ClientError> {
        let path = format!("/v1/topics/{}/events", seg(topic));
        self.json(Method::POST, &path, body, Duration::ZERO).await
    }

    /// `GET /v1/topics/{topic}/events`: events without a group.
    pub async fn read_events(
        &self,
        topic: &str,
        query: &ReadQuery,
    ) -> Result<ReadAnswer, ClientError> {
        self.get(&with_query(
            format!("/v1/topics/{}/events", seg(topic)),
            query,
        ))
        .await
    }

    /// A topic's events from a start position, followed as they are appended.
    pub async fn follow_events(
        &self,
        topic: &str,
        query: &ReadQuery,
    ) -> Result<EventStream<StoredEvent>, ClientError> {
        self.follow_events_after(topic, query, None).await
    }

    /// [`follow_events`](Self::follow_events) resumed where an earlier stream
    /// left off: `last_event_id` is its [`EventStream::last_event_id`] (or
    /// positions written the same way, `<partition>:<next offset>,...`).
    pub async fn follow_events_after(
        &self,
        topic: &str,
        query: &ReadQuery,
        last_event_id: Option<&str>,
    ) -> Result<EventStream<StoredEvent>, ClientError> {
        let path = with_query(format!("/v1/topics/{}/events", seg(topic)), query);
        self.stream_after(Method::GET, &path, last_event_id).await
    }

    // Stream groups.

    /// `GET /v1/groups`.
    pub async fn list_groups(&self) -> Result<GroupList, ClientError> {
        self.get("/v1/groups").await
    }

    /// `GET /v1/groups/{group}`.
    pub async fn describe_group(&self, group: &str) -> Result<Group, ClientError> {
        self.get(&format!("/v1/groups/{}", seg(group))).await
    }

    /// `POST /v1/groups/{group}/reset`.
    pub async fn reset_group(&self, group: &str, to: &str) -> Result<Group, ClientError> {
        let path = format!("/v1/groups/{}/reset", seg(group));
        let body = Body::json(&ResetRequest { to: to.to_owned() });
        self.json(Method::POST, &path, body, Duration::ZERO).await
    }

    /// `DELETE /v1/groups/{group}`: a group without members, and its offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let path = format!("/v1/groups/{}", seg(group));
        self.empty(Method::DELETE, &path, Body::empty()).await
    }

    /// `POST /v1/groups/{group}/members`: joins, creating the group on first join.
    pub async fn join_group(
        &self,
        group: &str,
        join: &JoinRequest,
    ) -> Result<JoinAnswer, ClientError> {
        let path = format!("/v1/groups/{}/members", seg(group));
        self.send_json(Method::POST, &path, join).await
    }

    /// `DELETE /v1/groups/{group}/members/{member}`.
    pub async fn leave_group(&self, group: &str, member: &str) -> Result<(), ClientError> {
        let path = format!("/v1/groups/{}/members/{}", seg(group), seg(member));
        self.empty(Method::DELETE, &path, Body::empty()).await
    }

    /// `GET /v1/groups/{group}/members/{member}/events`: the member's next
    /// events, waiting up to `wait_ms` when there are none.
    pub async fn poll(
        &self,
        group: &str,
        member: &str,
        query: &PollQuery,
    ) -> Result<PollAnswer, ClientError> {
        let path = with_query(
            format!("/v1/groups/{}/members/{}/events", seg(group), seg(member)),
            query,
        );
        let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
        self.json(Method::GET, &path, Body::empty(), wait).await
    }

    /// `POST /v1/groups/{group}/members/{member}/commit`.
    pub async fn commit(
        &self,
        group: &str,
        member: &str,
        commit: &CommitRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/groups/{}/members/{}/commit", seg(group), seg(member));
        self.empty(Method::POST, &path, Body::json(commit)).await
    }

    /// `POST /v1/groups/{group}/members/{member}/heartbeat`.
    pub async fn heartbeat(
        &self,
        group: &str,
        member: &str,
    ) -> Result<HeartbeatAnswer, ClientError> {
        let path = format!(
            "/v1/groups/{}/members/{}/heartbeat",
            seg(group),
            seg(member)
        );
        self.json(Method::POST, &path, Body::empty(), Duration::ZERO)
            .await
    }

    // Queue groups.

    /// `GET /v1/queues`.
    pub async fn list_queues(&self) -> Result<QueueList, ClientError> {
        self.get("/v1/queues").await
    }

    /// `POST /v1/queues`.
    pub async fn create_queue(&self, queue: &CreateQueue) -> Result<Queue, ClientError> {
        self.send_json(Method::POST, "/v1/queues", queue).await
    }

    /// `GET /v1/queues/{group}`.
    pub async fn describe_queue(&self, group: &str) -> Result<Queue, ClientError> {
        self.get(&format!("/v1/queues/{}", seg(group))).await
    }

    /// `DELETE /v1/queues/{group}`: the group, its dead letters and its retry
    /// topic; `force` deletes it even while deliveries are leased.
    pub async fn delete_queue(
        &self,
        group: &str,
        force: bool,
    ) -> Result<DeleteQueueAnswer, ClientError> {
        let query = DeleteQueueQuery {
            force: force.then_some(true),
        };
        let path = with_query(format!("/v1/queues/{}", seg(group)), &query);
        self.json(Method::DELETE, &path, Body::empty(), Duration::ZERO)
            .await
    }

    /// `POST /v1/queues/{group}/leases/{lease}/extend`: the lease runs out
    /// `timeout_ms` from now.
    pub async fn extend(
        &self,
        group: &str,
        lease: &str,
        timeout_ms: u64,
    ) -> Result<ExtendAnswer, ClientError> {
        let path = format!("/v1/queues/{}/leases/{}/extend", seg(group), seg(lease));
        self.send_json(Method::POST, &path, &ExtendRequest { timeout_ms })
            .await
    }

    /// `POST /v1/queues/{group}/leases/{lease}/release`: the event goes back
    /// unhandled, due at once, the delivery not counted as an attempt.
    pub async fn release(&self, group: &str, lease: &str) -> Result<(), ClientError> {
        let path = format!("/v1/queues/{}/leases/{}/release", seg(group), seg(lease));
        self.empty(Method::POST, &path, Body::empty()).await
    }

    /// `POST /v1/queues/{group}/receive`: due events under leases, waiting up
    /// to `wait_ms` when none is due.
    pub async fn receive(
        &self,
        group: &str,
        query: &ReceiveQuery,
    ) -> Result<ReceiveAnswer, ClientError> {
        let path = with_query(format!("/v1/queues/{}/receive", seg(group)), query);
        let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
        self.json(Method::POST, &path, Body::empty(), wait).await
    }

    /// `POST /v1/queues/{group}/leases/{lease}/ack`.
    pub async fn ack(&self, group: &str, lease: &str) -> Result<(), ClientError> {
        let path = format!("/v1/queues/{}/leases/{}/ack", seg(group), seg(lease));
        self.empty(Method::POST, &path, Body::empty()).await
    }

    /// `POST /v1/queues/{group}/acks`: many leases with one journal sync.
    pub async fn ack_many(
        &self,
        group: &str,
        leases: &[String],
    ) -> Result<AckBatchResponse, ClientError> {
        let path = format!("/v1/queues/{}/acks", seg(group));
        let body = Body::json(&AckBatchRequest {
            leases: leases.to_vec(),
        });
        self.json(Method::POST, &path, body, Duration::ZERO).await
    }

    /// `POST /v1/queues/{group}/leases/{lease}/nack`.
    pub async fn nack(
        &self,
        group: &str,
        lease: &str,
        nack: &NackRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/queues/{}/leases/{}/nack", seg(group), seg(lease));
        self.empty(Method::POST, &path, Body::json(nack)).await
    }

    /// `POST /v1/queues/{group}/leases/{lease}/reject`.
    pub async fn reject(
        &self,
        group: &str,
        lease: &str,
        reject: &RejectRequest,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/queues/{}/leases/{}/reject", seg(group), seg(lease));
        self.empty(Method::POST, &path, Body::json(reject)).await
    }

    /// `GET /v1/queues/{group}/dead-letters`.
    pub async fn dead_letters(
        &self,
        group: &str,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterList, ClientError> {
        self.get(&with_query(
            format!("/v1/queues/{}/dead-letters", seg(group)),
            query,
        ))
        .await
    }

    /// `GET /v1/queues/{group}/dead-letters/{offset}`.
    pub async fn dead_letter(&self, group: &str, offset: u64) -> Result<DeadLetter, ClientError> {
        self.get(&format!("/v1/queues/{}/dead-letters/{offset}", seg(group)))
            .await
    }

    /// `POST /v1/queues/{group}/dead-letters/redrive`.
    pub async fn redrive(
        &self,
        group: &str,
        redrive: &RedriveRequest,
    ) -> Result<RedriveAnswer, ClientError> {
        let path = format!("/v1/queues/{}/dead-letters/redrive", seg(group));
        self.send_json(Method::POST, &path, redrive).await
    }

    /// `DELETE /v1/queues/{group}/dead-letters`.
    pub async fn purge(&self, group: &str) -> Result<PurgeAnswer, ClientError> {
        let path = format!("/v1/queues/{}/dead-letters", seg(group));
        self.json(Method::DELETE, &path, Body::empty(), Duration::ZERO)
            .await
    }

    // Sagas.

    /// `GET /v1/sagas/{saga}/instances`: the saga's instances, most
    /// recently changed first.
    pub async fn saga_instances(
        &self,
        saga: &str,
        query: &tidings_api::SagaListQuery,
    ) -> Result<tidings_api::SagaInstanceList, ClientError> {
        self.get(&with_query(
            format!("/v1/sagas/{}/instances", seg(saga)),
            query,
        ))
        .await
    }

    /// `GET /v1/sagas/{saga}/instances/{key}`: one instance as it stands.
    pub async fn saga_instance(
        &self,
        saga: &str,
        key: &str,
    ) -> Result<tidings_api::SagaInstance, ClientError> {
        self.get(&format!("/v1/sagas/{}/instances/{}", seg(saga), seg(key)))
            .await
    }

    // The event store.

    /// `POST /v1/streams/{stream}/events`: appends `events` (in the CloudEvents
    /// JSON format, validated by the server) if the stream is at `expected`
    /// (`any`, `no_stream`, `stream_exists` or a version).
    pub async fn append_json(
        &self,
        stream: &str,
        expected: &str,
        events: &[serde_json::Value],
    ) -> Result<AppendAnswer, ClientError> {
        let path = with_query(
            format!("/v1/streams/{}/events", seg(stream)),
            &AppendQuery {
                expected_version: Some(expected.to_owned()),
            },
        );
        let body = Body {
            bytes: Bytes::from(serde_json::to_vec(events).expect("JSON values encode")),
            content_type: Some(JSON_BATCH_MEDIA_TYPE),
            headers: Vec::new(),
        };
        self.json(Method::POST, &path, body, Duration::ZERO).await
    }

    /// `GET /v1/streams/{stream}/events`.
    pub async fn read_stream(
        &self,
        stream: &str,
        query: &StreamQuery,
    ) -> Result<StreamReadAnswer, ClientError> {
        self.get(&with_query(
            format!("/v1/streams/{}/events", seg(stream)),
            query,
        ))
        .await
    }

    /// `GET /v1/streams/{stream}`.
    pub async fn describe_stream(&self, stream: &str) -> Result<Stream, ClientError> {
        self.get(&format!("/v1/streams/{}", seg(stream))).await
    }

    /// `DELETE /v1/streams/{stream}`: soft-deletes it if it is at `expected`.
    pub async fn delete_stream(&self, stream: &str, expected: &str) -> Result<(), ClientError> {
        let path = with_query(
            format!("/v1/streams/{}", seg(stream)),
            &AppendQuery {
                expected_version: Some(expected.to_owned()),
            },
        );
        self.empty(Method::DELETE, &path, Body::empty()).await
    }

    /// `GET /v1/store/events`: `$all` or a category.
    pub async fn read_all(&self, query: &AllQuery) -> Result<StoreReadAnswer, ClientError> {
        self.get(&with_query("/v1/store/events".to_owned(), query))
            .await
    }

    /// `$all` or a category from a position, caught up and then followed live.
    pub async fn subscribe(
        &self,
        query: &AllQuery,
    ) -> Result<EventStream<RecordedEvent>, ClientError> {
        let path = with_query("/v1/store/events".to_owned(), query);
        self.stream(Method::GET, &path).await
    }
}

/// An error answer as a [`ClientError`]: the API's error body when the server
/// sent one, else what it sent.
fn server_error(what: &str, status: StatusCode, bytes: &[u8]) -> ClientError {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return ClientError::Server {
            status: status.as_u16(),
            code: body.error_code,
            message: body.message,
        };
    }
    // The registry answers in Confluent's shape, with a numeric code.
    match serde_json::from_slice::<RegistryErrorBody>(bytes) {
        Ok(body) => ClientError::Server {
            status: status.as_u16(),
            code: body.error_code.to_string(),
            message: body.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            ClientError::Unexpected {
                what: what.to_owned(),
                status: status.as_u16(),
                body: text.trim().chars().take(512).collect(),
            }
        }
    }
}
