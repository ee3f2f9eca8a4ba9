//! The HTTP API of `tidings serve`, as data: what every request and answer
//! looks like on the wire, the error codes, and the one route table.
//!
//! The server (`tidings-http`) builds its router, its draining rules and its
//! OpenAPI check from [`ROUTES`], and reads and writes the types here; the
//! client (`tidings-client`) writes and reads the same types. A field renamed
//! here is renamed on both sides, and the OpenAPI document
//! ([`OPENAPI_JSON`]) is held to the same table and shapes by this crate's
//! tests.
//!
//! This crate does no IO: it knows no socket, no HTTP library, no storage.
//! Field order follows the answers' order on the wire; JSON objects carry no
//! meaning in their order, but keeping it keeps answers byte for byte what
//! they were.
//!
//! ```
//! use tidings_api::{ErrorCode, Operation, ROUTES};
//! use tidings_types::ErrorKind;
//!
//! let publish = ROUTES.iter().find(|r| r.operation == Operation::PublishEvents).unwrap();
//! assert_eq!(publish.path, "/v1/topics/{topic}/events");
//! assert_eq!(ErrorCode::of(ErrorKind::UnknownTopic).as_str(), "unknown_topic");
//! assert_eq!(ErrorCode::of(ErrorKind::UnknownTopic).status(), 404);
//! ```

mod catalog;
mod error;
mod events;
mod groups;
mod queues;
mod registry;
mod routes;
mod sagas;
mod store;
mod topics;

pub use catalog::{
    asyncapi, catalog_id, eventcatalog, Catalog, CatalogConsumer, CatalogEvent, CatalogSchema,
    CatalogTopic, Drift,
};
pub use error::{ErrorBody, ErrorCode};
pub use events::{
    PublishAnswer, PublishEntry, PublishedEvent, RawHeader, RawRecord, ReadAnswer, ReadQuery,
    StoredEvent, RECORDS_MEDIA_TYPE,
};
pub use groups::{
    CommitRequest, Group, GroupList, GroupMember, HeartbeatAnswer, JoinAnswer, JoinRequest,
    PartitionLag, PollAnswer, PollQuery, ResetRequest,
};
pub use queues::{
    AckBatchRequest, AckBatchResponse, AckFailure, CreateQueue, DeadLetter, DeadLetterList,
    DeadLetterQuery, DeleteQueueAnswer, DeleteQueueQuery, Delivery, ExtendAnswer, ExtendRequest,
    NackRequest, PurgeAnswer, Queue, QueueConfig, QueueCounters, QueueList, QueuePartition,
    ReceiveAnswer, ReceiveQuery, RedriveAnswer, RedriveRequest, RejectRequest,
    ACK_BATCH_LEASES_MAX, RECEIVE_MAX,
};
pub use registry::{
    CompatibilityAnswer, ConfigAnswer, ConfigRequest, Incompatibility, ModeAnswer, RegisteredId,
    RegistryErrorBody, SchemaById, SchemaReference, SchemaRequest, SubjectVersionBody,
    SubjectVersionRef, REGISTRY_MEDIA_TYPE, REGISTRY_PREFIX,
};
pub use routes::{Draining, Method, Operation, Route, ROUTES};
pub use sagas::{
    SagaCompensation, SagaInstance, SagaInstanceList, SagaInstanceSummary, SagaListQuery,
    SagaTimeout, SagaTransition, SAGA_LIST_MAX,
};
pub use store::{
    AllQuery, AppendAnswer, AppendQuery, RecordedEvent, StoreReadAnswer, Stream, StreamMetadata,
    StreamQuery, StreamReadAnswer, EXPECTED_VERSION_HEADER,
};
pub use topics::{CreateTopic, PartitionState, Topic, TopicConfig, TopicList, TopicSettings};

/// The OpenAPI 3.1 document of the API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `GET /healthz`: `ok`, or `draining` (with status 503) while the server
/// shuts down.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// `ok` or `draining`.
    pub status: String,
}

/// `GET /v1/limits`: the request limits the server enforces, so a client can
/// size its requests under them rather than learn them from a refusal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerLimits {
    /// Largest request body in bytes; a larger one is answered 413.
    pub body_bytes_max: u64,
    /// Most events (or records) in one batched publish.
    pub batch_events_max: u64,
    /// Most events one read or poll answers with.
    pub read_events_max: u64,
    /// Longest a long-poll may wait, in milliseconds.
    pub long_poll_wait_max_ms: u64,
}

/// Absent (`None`), `null` (`Some(None)`) or a value (`Some(Some(v))`): how a
/// request tells "leave as it is" from "turn off".
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
