//! Saga instances, as `GET /v1/sagas/...` answers them: read from the
//! database of the toolkit's sagas the server was pointed at.

use serde::{Deserialize, Serialize};

/// `GET /v1/sagas/{saga}/instances/{key}`: one instance as it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaInstance {
    /// The saga's name.
    pub saga: String,
    /// The instance's key.
    pub key: String,
    /// `running`, `completed`, `compensating`, `compensated` or `failed`.
    pub status: String,
    /// The saga's state, as the saga stores it.
    pub state: serde_json::Value,
    /// Transitions applied.
    pub version: i64,
    /// The correlation id of the flow that started it.
    pub correlation: String,
    /// When it started, in milliseconds since the epoch.
    pub started_ms: i64,
    /// When it last changed, in milliseconds since the epoch.
    pub updated_ms: i64,
    /// Its transitions, oldest first.
    pub history: Vec<SagaTransition>,
    /// Its pending timeouts, soonest first.
    pub timeouts: Vec<SagaTimeout>,
    /// The compensations it would run (or is running) if it fails, in the
    /// order they were added; they run last first.
    pub compensations: Vec<SagaCompensation>,
}

/// One transition of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaTransition {
    /// The instance's version after it.
    pub version: i64,
    /// What was applied: `event <type> <id>`, `timeout <name>` or
    /// `compensation <name>`.
    pub input: String,
    /// The status after it.
    pub status: String,
    /// Why the saga failed, where it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
}

/// A timeout not fired yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaTimeout {
    /// Its name.
    pub name: String,
    /// When it is due, in milliseconds since the epoch.
    pub due_ms: i64,
}

/// A step to undo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaCompensation {
    /// What to undo.
    pub name: String,
    /// What it needs.
    pub data: serde_json::Value,
}

/// `GET /v1/sagas/{saga}/instances`: instances, most recently changed
/// first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaInstanceList {
    /// The saga's name.
    pub saga: String,
    /// The instances.
    pub instances: Vec<SagaInstanceSummary>,
}

/// An instance in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaInstanceSummary {
    /// The instance's key.
    pub key: String,
    /// Its status.
    pub status: String,
    /// Transitions applied.
    pub version: i64,
    /// When it last changed, in milliseconds since the epoch.
    pub updated_ms: i64,
}

/// The query of `GET /v1/sagas/{saga}/instances`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaListQuery {
    /// Only instances with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// At most this many ([`SAGA_LIST_MAX`] and 100 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Most instances one listing answers.
pub const SAGA_LIST_MAX: usize = 1000;
