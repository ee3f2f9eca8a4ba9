//! Tidings' event store, for event sourcing and CQRS.
//!
//! A *stream* holds the ordered events of one entity (`order-123`); its *category*
//! is the part of the name before the first `-` (`order`). Every event also has a
//! *position* in one global order, `$all`. Appends name the version they expect the
//! stream to be at ([`ExpectedVersion`]) and fail with a typed conflict carrying the
//! actual version when it is not; repeating an append with the same event ids is
//! idempotent; one append can write several streams atomically.
//!
//! On top of the [`EventStore`] interface sit [`Subscription`]s (catch up from a
//! checkpoint, then follow live, never skipping or repeating an event),
//! [`aggregate`]s with a repository that retries on conflict and keeps snapshots,
//! [`projection`]s that feed read models, and [`upcast`]ers that bring old event
//! shapes up to date as they are read.
//!
//! Two backends implement the interface and pass one conformance suite:
//! [`EmbeddedStore`] on the Tidings log, and [`PgStore`] on PostgreSQL.
//!
//! The store knows nothing of HTTP or Kafka; the server exposes it.
//!
//! ```
//! use tidings_store::{EmbeddedOptions, EmbeddedStore, EventStore, ExpectedVersion,
//!     ReadStream, StreamName, StreamVersion, AppendError};
//! use tidings_types::CloudEvent;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
//! let order = StreamName::new("order-17")?;
//!
//! let placed = CloudEvent::new("/shop", "order.placed").with_json(&serde_json::json!({"total": 42}))?;
//! let done = store.append_to(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(done.last_version, StreamVersion(0));
//!
//! // A second writer that read the stream before the first append loses the race.
//! let paid = CloudEvent::new("/payments", "payment.completed");
//! let conflict = store.append_to(&order, ExpectedVersion::NoStream, vec![paid]).await;
//! assert!(matches!(conflict, Err(AppendError::WrongExpectedVersion { actual: Some(StreamVersion(0)), .. })));
//!
//! let events = store.read_stream(&order, ReadStream::forward(StreamVersion(0))).await?.events;
//! assert_eq!(events[0].event.ty(), "order.placed");
//! # Ok(())
//! # }
//! ```

pub mod aggregate;
mod embedded;
mod error;
mod postgres;
pub mod projection;
pub mod sagas;
mod store;
mod subscription;
mod types;
pub mod upcast;

pub use embedded::{EmbeddedOptions, EmbeddedStore, OpenError};
pub use error::{AppendError, StoreError};
pub use postgres::{AppendStats, PgOptions, PgStore};
pub use store::EventStore;
pub use subscription::{Subscription, SUBSCRIPTION_BATCH_MAX};
/// The options of the log under the embedded store (its clock, its sync).
pub use tidings_log::LogOptions;
pub use types::{
    AllSlice, Appended, Direction, ExpectedVersion, NameError, Position, ReadStream, RecordedEvent,
    Selector, Snapshot, StreamAppend, StreamInfo, StreamMetadata, StreamName, StreamSlice,
    StreamVersion, APPEND_EVENTS_MAX, READ_LIMIT_MAX, STREAM_NAME_BYTES_MAX,
};
