//! Tidings' application toolkit: publish and handle CloudEvents with one API,
//! on the embedded engine (the default: no server, no network), on a
//! `tidings serve`, and on existing distributed engines: NATS JetStream,
//! PostgreSQL and Kafka (feature `kafka`).
//!
//! - [`Publisher`] publishes events and answers where each was stored.
//! - [`Subscriber`] opens a [`Subscription`]: deliveries of a topic to a
//!   group, in queue mode (each delivery leased and answered on its own) or
//!   stream mode (partitions assigned to members, read in order; served by
//!   the queue groups where a backend has no partitions to assign). A
//!   [`Delivery`] is answered once: `ack`, `nack(delay)`, `reject(reason)`
//!   take it by value, so a second answer does not compile.
//! - [`router::Router`] runs handlers per topic, group and event type with a
//!   fixed pipeline: circuit breaker, timeout, retries in process that keep
//!   the lease, redelivery by the backend, dead letters, correlation and
//!   causation on emitted events, per-key ordering, graceful shutdown.
//! - Each backend declares its [`Capabilities`]; what it lacks the toolkit
//!   emulates, and the declaration says how.
//!
//! Switching backend is one line: [`connect`] takes `embedded:<dir>` or the
//! URL of a server, a NATS or Kafka cluster, or a PostgreSQL database.
//!
//! ```
//! use std::sync::Arc;
//! use tidings::router::{HandlerError, Router};
//! use tidings::CloudEvent;
//!
//! #[derive(serde::Deserialize)]
//! struct OrderPlaced { order: String, total_cents: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tidings::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("embedded:{}", dir.path().display());
//! let backend = tidings::connect(&url).await?; // or "http://127.0.0.1:8080"
//! let publisher = tidings::Publisher::new(backend.clone());
//! let placed = CloudEvent::new("/shop", "order.placed")
//!     .with_partitionkey("o-17")
//!     .with_json(&serde_json::json!({ "order": "o-17", "total_cents": 4200 }))
//!     .unwrap();
//! publisher.publish("orders", placed).await?;
//!
//! // A service runs until SIGTERM; this example stops after one event.
//! let done = Arc::new(tokio::sync::Notify::new());
//! let finished = Arc::clone(&done);
//! let mut router = Router::new(backend);
//! router.route("orders", "billing").on("order.placed", move |ctx, order: OrderPlaced| {
//!     let finished = Arc::clone(&finished);
//!     async move {
//!         let charged = CloudEvent::new("/billing", "payment.completed")
//!             .with_partitionkey(order.order.as_str())
//!             .with_json(&serde_json::json!({ "cents": order.total_cents }))
//!             .map_err(HandlerError::dead_letter)?;
//!         ctx.emit("payments", charged); // correlationid and causationid set
//!         finished.notify_one();
//!         Ok::<(), HandlerError>(())
//!     }
//! });
//! let report = router.run(done.notified_owned()).await?;
//! assert_eq!(report.handled, 1);
//! # Ok(())
//! # }
//! ```
//!
//! The toolkit never depends on the server, HTTP or Kafka front-end crates:
//! it reaches the embedded engine through the broker, and a server through
//! `tidings-client`.

use std::sync::Arc;

pub mod backend;
pub mod bridge;
mod delivery;
pub mod embedded;
mod error;
pub mod inbox;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nats;
pub mod outbox;
pub mod postgres;
mod publisher;
pub mod router;
pub mod saga;
pub mod schemas;
pub mod server;
mod stream;
mod subscriber;

pub use backend::{Backend, Capabilities, Mode, Receipt, Start, SubscribeOptions, Support};
pub use delivery::Delivery;
pub use error::Error;
pub use publisher::{PublishHook, Publisher, DEFAULT_PARTITIONS};
pub use subscriber::{StopHandle, Subscriber, Subscription};
pub use tidings_types::CloudEvent;

/// Opens the backend `url` names:
/// - `embedded:<dir>`: the broker in this process, on the data directory
///   `<dir>` (created when missing);
/// - `http://host:port` or `https://...`: a `tidings serve`;
/// - `nats://host:port[,host:port...][?replicas=N][&timeout=S]`: NATS
///   JetStream (`timeout`: seconds a JetStream request or publish ack may
///   take, 5 unless said);
/// - `postgres://...` (or `postgresql://`): tables in a PostgreSQL database;
/// - `kafka://host:port[,host:port...][?property=value&...]`: a Kafka
///   cluster (feature `kafka`), librdkafka properties in the query.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>, Error> {
    if let Some(dir) = url.strip_prefix("embedded:") {
        if dir.is_empty() {
            return Err(Error::Config(
                "embedded: needs a data directory, as in embedded:./tidings-data".into(),
            ));
        }
        return Ok(Arc::new(embedded::Embedded::open(dir).await?));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Arc::new(server::Server::connect(url)?));
    }
    if url.starts_with("nats://") {
        return Ok(Arc::new(nats::Nats::connect(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::Postgres::connect(url).await?));
    }
    if url.starts_with("kafka://") {
        #[cfg(feature = "kafka")]
        return Ok(Arc::new(kafka::Kafka::connect(url).await?));
        #[cfg(not(feature = "kafka"))]
        return Err(Error::Config(format!(
            "{url:?}: this build has no Kafka backend; build tidings with the `kafka` feature"
        )));
    }
    Err(Error::Config(format!(
        "unknown backend {url:?}: expected embedded:<data dir>, http(s)://host:port, nats://host:port, postgres://... or kafka://host:port"
    )))
}

/// A seed for jitter: the clock's nanoseconds mixed with a per-process
/// counter, so two seeds taken at once differ.
pub(crate) fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
}

/// Jitter shared by the tasks of one source: a SplitMix64 stream behind a
/// lock.
pub(crate) struct Jitter(std::sync::Mutex<u64>);

impl Jitter {
    pub(crate) fn new() -> Jitter {
        Jitter(std::sync::Mutex::new(random_seed()))
    }

    /// The next pseudo-random value.
    pub(crate) fn next(&self) -> u64 {
        let mut x = self.0.lock().expect("jitter lock");
        *x = splitmix(*x);
        *x
    }
}

/// SplitMix64: the next pseudo-random value after `x` (jitter needs no
/// more).
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
