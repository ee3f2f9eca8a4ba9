//! The tables of the toolkit's sagas (`tidings::saga`) on PostgreSQL, and
//! how to read an instance from them: the toolkit writes them, and the
//! server (`GET /v1/sagas/...`) and tools read them through [`SagaReader`],
//! without running the saga.
//!
//! The layout is [`SCHEMA`]: `tidings_sagas` (one row per instance: status,
//! state as JSON, the compensations still to run, the flow's correlation, a
//! version), `tidings_saga_history` (one row per transition, keyed by the
//! version it made) and `tidings_saga_timeouts` (one row per pending
//! timeout).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::{Deserialize, Serialize};
use tokio_postgres::{GenericClient, NoTls};

use crate::StoreError;

/// The sagas' tables, version 1, for the toolkit's migrations.
pub const SCHEMA: &str = include_str!("sagas.sql");

/// Most instances [`list`] answers at once.
pub const LIST_LIMIT_MAX: usize = 1000;

fn corrupt(key: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        position: 0,
        reason: format!("saga instance {key}'s {what}: {e}"),
    }
}

/// A step to undo if the saga fails: a name and its data, handed to
/// [`Saga::compensate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compensation {
    /// What to undo.
    pub name: String,
    /// What it needs.
    pub data: serde_json::Value,
}

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Taking events.
    Running,
    /// Done; later events are ignored.
    Completed,
    /// Failed; its compensations are running, last first.
    Compensating,
    /// Failed, and every compensation ran.
    Compensated,
    /// A compensation failed for good: dead-lettered for an operator.
    Failed,
}

impl Status {
    /// The status as the tables store it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Compensating => "compensating",
            Status::Compensated => "compensated",
            Status::Failed => "failed",
        }
    }

    /// The status the tables store as `s`.
    pub fn parse(s: &str) -> Result<Status, StoreError> {
        Ok(match s {
            "running" => Status::Running,
            "completed" => Status::Completed,
            "compensating" => Status::Compensating,
            "compensated" => Status::Compensated,
            "failed" => Status::Failed,
            other => {
                return Err(StoreError::Corrupt {
                    position: 0,
                    reason: format!("a saga instance has the unknown status {other:?}"),
                })
            }
        })
    }

    /// Whether the instance takes no more events.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Compensated | Status::Failed
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga instance as it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The saga's name.
    pub saga: String,
    /// The instance's key.
    pub key: String,
    /// Where it stands.
    pub status: Status,
    /// Its state, as JSON.
    pub state: serde_json::Value,
    /// Transitions applied.
    pub version: i64,
    /// The correlation id of its flow.
    pub correlation: String,
    /// When it started and last changed, in milliseconds since the epoch.
    pub started_at_ms: i64,
    /// See `started_at_ms`.
    pub updated_at_ms: i64,
    /// Its transitions, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Its pending timeouts, soonest first.
    pub timeouts: Vec<PendingTimeout>,
    /// The compensations still to run if it fails (or running), in the
    /// order they were added.
    pub compensations: Vec<Compensation>,
}

/// One transition of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The instance's version after it.
    pub version: i64,
    /// What was applied: `event <type> <id>`, `timeout <name>`,
    /// `compensation <name>`.
    pub input: String,
    /// The status after it.
    pub status: Status,
    /// Why it failed, where it did.
    pub note: Option<String>,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
}

/// A timeout not fired yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTimeout {
    /// Its name.
    pub name: String,
    /// When it is due, in milliseconds since the epoch.
    pub due_at_ms: i64,
}

/// Instance `key` of saga `saga`, read through `client` from the sagas'
/// tables (for tools that do not run the saga).
pub async fn inspect<C: GenericClient>(
    client: &C,
    saga: &str,
    key: &str,
) -> Result<Option<Instance>, StoreError> {
    let ms = |column: &str| format!("(EXTRACT(EPOCH FROM {column}) * 1000)::int8");
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT status, state, compensations, correlation, version, {}, {}
                 FROM tidings_sagas WHERE saga = $1 AND key = $2",
                ms("started_at"),
                ms("updated_at")
            ),
            &[&saga, &key],
        )
        .await?
    else {
        return Ok(None);
    };
    let bad = |what: &str, e: serde_json::Error| corrupt(key, what, e);
    let state: String = row.get(1);
    let compensations: String = row.get(2);
    let history = client
        .query(
            &format!(
                "SELECT version, input, status, note, {} FROM tidings_saga_history
                 WHERE saga = $1 AND key = $2 ORDER BY version",
                ms("at")
            ),
            &[&saga, &key],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(HistoryEntry {
                version: r.get(0),
                input: r.get(1),
                status: Status::parse(r.get(2))?,
                note: r.get(3),
                at_ms: r.get(4),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let timeouts = client
        .query(
            &format!(
                "SELECT name, {} FROM tidings_saga_timeouts
                 WHERE saga = $1 AND key = $2 ORDER BY due_at",
                ms("due_at")
            ),
            &[&saga, &key],
        )
        .await?
        .iter()
        .map(|r| PendingTimeout {
            name: r.get(0),
            due_at_ms: r.get(1),
        })
        .collect();
    Ok(Some(Instance {
        saga: saga.to_owned(),
        key: key.to_owned(),
        status: Status::parse(row.get(0))?,
        state: serde_json::from_str(&state).map_err(|e| bad("state", e))?,
        version: row.get(4),
        correlation: row.get(3),
        started_at_ms: row.get(5),
        updated_at_ms: row.get(6),
        history,
        timeouts,
        compensations: serde_json::from_str(&compensations).map_err(|e| bad("compensations", e))?,
    }))
}

/// An instance as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSummary {
    /// The instance's key.
    pub key: String,
    /// Where it stands.
    pub status: Status,
    /// Transitions applied.
    pub version: i64,
    /// When it last changed, in milliseconds since the epoch.
    pub updated_at_ms: i64,
}

/// Instances of saga `saga`, with `status` if given, most recently changed
/// first, at most `limit` (and [`LIST_LIMIT_MAX`]).
pub async fn list<C: GenericClient>(
    client: &C,
    saga: &str,
    status: Option<Status>,
    limit: usize,
) -> Result<Vec<InstanceSummary>, StoreError> {
    let limit = i64::try_from(limit.min(LIST_LIMIT_MAX)).unwrap_or(0);
    let status = status.map(Status::as_str);
    client
        .query(
            "SELECT key, status, version, (EXTRACT(EPOCH FROM updated_at) * 1000)::int8
             FROM tidings_sagas
             WHERE saga = $1 AND ($2::text IS NULL OR status = $2)
             ORDER BY updated_at DESC, key LIMIT $3",
            &[&saga, &status, &limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(InstanceSummary {
                key: r.get(0),
                status: Status::parse(r.get(1))?,
                version: r.get(2),
                updated_at_ms: r.get(3),
            })
        })
        .collect()
}

/// Reads the sagas' tables of one database, for a server or a tool.
#[derive(Clone)]
pub struct SagaReader {
    pool: Pool,
}

impl std::fmt::Debug for SagaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaReader").finish_non_exhaustive()
    }
}

impl SagaReader {
    /// A reader of the database at `url` (a `postgresql://` URL or a
    /// key=value string); connects on first use, at most `connections` at
    /// once.
    pub fn new(url: &str, connections: usize) -> Result<SagaReader, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(SagaReader { pool })
    }

    /// Instance `key` of saga `saga`; see [`inspect`].
    pub async fn instance(&self, saga: &str, key: &str) -> Result<Option<Instance>, StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        inspect(&**client, saga, key).await
    }

    /// Instances of saga `saga`; see [`list`].
    pub async fn list(
        &self,
        saga: &str,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<InstanceSummary>, StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        list(&**client, saga, status, limit).await
    }
}
