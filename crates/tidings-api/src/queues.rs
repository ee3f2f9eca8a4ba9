//! Queue-mode groups: deliveries under leases, their answers, dead letters.

use serde::{Deserialize, Serialize};

use crate::StoredEvent;

/// Most deliveries one receive hands out.
pub const RECEIVE_MAX: usize = 1_000;
/// Most leases one batch ack answers.
pub const ACK_BATCH_LEASES_MAX: usize = RECEIVE_MAX;

/// How a queue group delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// How long a delivery is leased.
    pub ack_timeout_ms: u64,
    /// Growth of the backoff per attempt.
    pub backoff_factor: u32,
    /// Delay before the first retry.
    pub backoff_initial_ms: u64,
    /// Longest delay between attempts.
    pub backoff_max_ms: u64,
    /// At most one event per key in flight.
    pub key_ordering: bool,
    /// Attempts before an event is dead-lettered.
    pub max_deliveries: u32,
}

/// One partition of a queue group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePartition {
    /// Every offset below it is acked or dead-lettered.
    pub ack_floor: u64,
    /// The partition's high-watermark.
    pub high_watermark: u64,
    /// Events leased right now.
    pub in_flight: u64,
    /// Events not yet acked or dead-lettered.
    pub lag: u64,
    /// The partition.
    pub partition: u32,
    /// Events waiting for a retry.
    pub retrying: u64,
}

/// What a queue group has done since the server started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Acks.
    pub acked: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Deliveries, first attempts and retries.
    pub delivered: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Nacks.
    pub nacked: u64,
    /// Deliveries that were retries.
    pub redelivered: u64,
    /// Dead letters redriven to the group.
    pub redriven: u64,
    /// Deliveries given back unhandled by a stopping consumer.
    pub released: u64,
}

/// A queue group: `GET /v1/queues/{group}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// The group.
    pub name: String,
    /// The topic it consumes.
    pub topic: String,
    /// The topic its dead letters go to.
    pub dead_letter_topic: String,
    /// How it delivers.
    pub config: QueueConfig,
    /// Per partition.
    pub partitions: Vec<QueuePartition>,
    /// The sum of the partitions' lag.
    pub lag: u64,
    /// Events leased right now, over every partition and the redriven.
    pub in_flight: u64,
    /// Dead letters redriven to the group and not yet acked or dead-lettered
    /// again.
    pub redriven: u64,
    /// Dead letters not yet redriven or purged.
    pub dead_letters: u64,
    /// Since the server started.
    pub counters: QueueCounters,
}

/// `GET /v1/queues`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueList {
    /// Every queue group, by name.
    pub queues: Vec<Queue>,
}

/// `POST /v1/queues`: a queue group on a topic; absent settings take their
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    /// The group's name.
    pub name: String,
    /// The topic it consumes.
    pub topic: String,
    /// Lease length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_timeout_ms: Option<u64>,
    /// Attempts before an event is dead-lettered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// Delay before the first retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_initial_ms: Option<u64>,
    /// Growth of the backoff per attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_factor: Option<u32>,
    /// Longest delay between attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// At most one event per key in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ordering: Option<bool>,
    /// Where delivery starts in each partition: `earliest` (the default),
    /// `latest` (only events published from now on) or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl CreateQueue {
    /// A queue group named `name` on `topic`, every setting the server's
    /// default.
    pub fn new(name: impl Into<String>, topic: impl Into<String>) -> CreateQueue {
        CreateQueue {
            name: name.into(),
            topic: topic.into(),
            ack_timeout_ms: None,
            max_deliveries: None,
            backoff_initial_ms: None,
            backoff_factor: None,
            backoff_max_ms: None,
            key_ordering: None,
            from: None,
        }
    }
}

/// The query of `POST /v1/queues/{group}/receive`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveQuery {
    /// Most deliveries, 1 to [`RECEIVE_MAX`] (1 by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
    /// How long to wait when nothing is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// A stream (`Accept: text/event-stream`) holds at most this many
    /// deliveries unanswered (100 by default): it sends more as they are
    /// answered, and gives back the ones still held when it closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// An event handed to a consumer under a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Answer with this lease.
    pub lease: String,
    /// The event.
    #[serde(flatten)]
    pub entry: StoredEvent,
}

/// The answer to a receive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveAnswer {
    /// The deliveries, oldest first per partition.
    pub deliveries: Vec<Delivery>,
}

/// `POST /v1/queues/{group}/acks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBatchRequest {
    /// 1 to [`ACK_BATCH_LEASES_MAX`] leases of the group.
    pub leases: Vec<String>,
}

/// A lease a batch ack could not ack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckFailure {
    /// Why, as an error code.
    pub error_code: String,
    /// The lease.
    pub lease: String,
    /// Why, for people.
    pub message: String,
}

/// The answer to a batch ack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBatchResponse {
    /// How many leases were acked.
    pub acked: usize,
    /// The others, each with its error.
    pub failed: Vec<AckFailure>,
}

/// `POST /v1/queues/{group}/leases/{lease}/nack`; both optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// Retry after this long instead of the group's backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// What went wrong, kept with the event (`nacked` if absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/queues/{group}/leases/{lease}/extend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// The lease runs out this long from now (1 ms to one hour).
    pub timeout_ms: u64,
}

/// The answer to a lease extension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendAnswer {
    /// When the lease now runs out, in milliseconds since the Unix epoch.
    pub deadline_ms: i64,
    /// The lease.
    pub lease: String,
}

/// The query of `DELETE /v1/queues/{group}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQueueQuery {
    /// Delete even while deliveries are leased (their answers then fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// The answer to `DELETE /v1/queues/{group}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteQueueAnswer {
    /// Dead letters not yet redriven or purged, deleted with the group.
    pub dead_letters_dropped: u64,
}

/// `POST /v1/queues/{group}/leases/{lease}/reject`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Why, kept with the dead letter (`rejected` if absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The query of `GET /v1/queues/{group}/dead-letters`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// First offset in the dead-letter topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Most dead letters to answer with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A dead letter: the event, where it came from and why it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// Its offset in the source topic.
    pub source_offset: u64,
    /// Its partition in the source topic.
    pub source_partition: u32,
    /// The event, as stored in the dead-letter topic.
    #[serde(flatten)]
    pub entry: StoredEvent,
}

/// `GET /v1/queues/{group}/dead-letters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// The dead letters not yet redriven or purged.
    pub dead_letters: Vec<DeadLetter>,
}

/// `POST /v1/queues/{group}/dead-letters/redrive`; all optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// At most this many (all, if absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
    /// Publish them to this topic, for every consumer of it. Without it they
    /// are delivered again to this group only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only the dead letters whose error is exactly this; the others stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a redrive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveAnswer {
    /// How many dead letters were sent again.
    pub redriven: usize,
}

/// The answer to `DELETE /v1/queues/{group}/dead-letters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAnswer {
    /// How many dead letters were dropped.
    pub purged: u64,
}
