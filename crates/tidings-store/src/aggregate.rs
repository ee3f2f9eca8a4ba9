//! Aggregates: state rebuilt by folding a stream's events, commands decided against
//! that state, and a repository that loads, decides, appends with the expected
//! version and retries when another writer got there first.
//!
//! An aggregate's events are a serde enum, adjacently tagged with `type` and
//! `data`; each variant's name is the CloudEvents type:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tidings_store::aggregate::{Aggregate, Repository, RepositoryConfig};
//! use tidings_store::{EmbeddedOptions, EmbeddedStore};
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! enum OrderEvent {
//!     #[serde(rename = "order.placed")]
//!     Placed { total: u64 },
//!     #[serde(rename = "order.cancelled")]
//!     Cancelled,
//! }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Order { total: u64, cancelled: bool }
//!
//! enum Command { Place(u64), Cancel }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("the order is cancelled")]
//! struct Cancelled;
//!
//! impl Aggregate for Order {
//!     const CATEGORY: &'static str = "order";
//!     type Event = OrderEvent;
//!     type Command = Command;
//!     type Error = Cancelled;
//!
//!     fn apply(&mut self, event: &OrderEvent) {
//!         match event {
//!             OrderEvent::Placed { total } => self.total = *total,
//!             OrderEvent::Cancelled => self.cancelled = true,
//!         }
//!     }
//!
//!     fn decide(&self, command: &Command) -> Result<Vec<OrderEvent>, Cancelled> {
//!         match command {
//!             _ if self.cancelled => Err(Cancelled),
//!             Command::Place(total) => Ok(vec![OrderEvent::Placed { total: *total }]),
//!             Command::Cancel => Ok(vec![OrderEvent::Cancelled]),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
//! let orders = Repository::<_, Order>::new(store, RepositoryConfig::new("/shop"));
//! orders.execute("17", &Command::Place(42)).await?;
//! orders.execute("17", &Command::Cancel).await?;
//! assert!(orders.execute("17", &Command::Place(1)).await.is_err());
//! assert!(orders.load("17").await?.state.cancelled);
//! # Ok(())
//! # }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tidings_types::CloudEvent;

use crate::error::{AppendError, StoreError};
use crate::store::EventStore;
use crate::types::{
    ExpectedVersion, NameError, ReadStream, RecordedEvent, Snapshot, StreamName, StreamVersion,
    READ_LIMIT_MAX,
};
use crate::upcast::Upcasters;

/// State rebuilt from events, and the rules that turn commands into new events.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stream category: the aggregate with id `17` lives in `<CATEGORY>-17`.
    const CATEGORY: &'static str;
    /// The shape of the state in snapshots. Change it when the state's shape
    /// changes: snapshots of another shape are ignored and the state is folded from
    /// the events.
    const SNAPSHOT_VERSION: u32 = 1;
    /// The aggregate's events: a serde enum tagged `type`, content `data`.
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// What callers ask of the aggregate.
    type Command: Sync;
    /// Why a command is refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds one event into the state. Must not fail: the event happened.
    fn apply(&mut self, event: &Self::Event);

    /// Decides which events a command causes, given the current state.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// How a repository writes and retries.
#[derive(Clone, Debug)]
pub struct RepositoryConfig {
    /// The `source` attribute of the events the repository writes.
    pub source: String,
    /// Save a snapshot each time the stream's length passes a multiple of this;
    /// `None` never snapshots.
    pub snapshot_every: Option<u64>,
    /// How often a command is tried when other writers keep winning.
    pub attempts_max: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub retry_delay: Duration,
}

impl RepositoryConfig {
    /// Defaults for events from `source`: a snapshot every 100 events, 5 attempts.
    pub fn new(source: &str) -> Self {
        RepositoryConfig {
            source: source.to_owned(),
            snapshot_every: Some(100),
            attempts_max: 5,
            retry_delay: Duration::from_millis(2),
        }
    }
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error("command refused: {0}")]
    Rejected(#[source] E),
    /// Other writers changed the stream on every attempt.
    #[error("stream {stream} changed under each of {attempts} attempts")]
    Conflict {
        /// The stream.
        stream: StreamName,
        /// Attempts made.
        attempts: u32,
    },
    /// The aggregate id does not make a valid stream name.
    #[error("aggregate id: {0}")]
    Id(#[from] NameError),
    /// A stored event does not decode into the aggregate's events.
    #[error("event at position {position} of stream {stream}: {reason}")]
    Decode {
        /// The stream.
        stream: StreamName,
        /// The event's position.
        position: u64,
        /// What went wrong.
        reason: String,
    },
    /// The store failed to read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store refused the append for a reason other than a conflict.
    #[error(transparent)]
    Append(AppendError),
}

/// An aggregate as loaded.
#[derive(Debug)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream's version; `None` for a new aggregate.
    pub version: Option<StreamVersion>,
    /// The version of the snapshot the load started from, if one was used.
    pub snapshot: Option<StreamVersion>,
    /// Events folded on top of the snapshot (or from the start).
    pub events_folded: u64,
}

/// What a command did.
#[derive(Debug)]
pub struct Executed<A> {
    /// The state after the new events.
    pub state: A,
    /// The stream's version afterwards.
    pub version: Option<StreamVersion>,
    /// How many events were written.
    pub events_written: usize,
    /// Attempts it took.
    pub attempts: u32,
}

/// Loads, decides and saves aggregates of type `A` in store `S`.
#[derive(Debug)]
pub struct Repository<S, A> {
    store: S,
    config: RepositoryConfig,
    upcasters: Upcasters,
    aggregate: PhantomData<fn() -> A>,
}

impl<S: EventStore, A: Aggregate> Repository<S, A> {
    /// A repository over `store`.
    pub fn new(store: S, config: RepositoryConfig) -> Self {
        Repository {
            store,
            config,
            upcasters: Upcasters::new(),
            aggregate: PhantomData,
        }
    }

    /// The same repository, upcasting events as it reads them.
    pub fn with_upcasters(self, upcasters: Upcasters) -> Self {
        Repository { upcasters, ..self }
    }

    /// The stream of the aggregate with `id`.
    pub fn stream(id: &str) -> Result<StreamName, NameError> {
        StreamName::new(&format!("{}-{id}", A::CATEGORY))
    }

    /// Loads the aggregate with `id`: its snapshot if one of the current shape
    /// exists, then the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let stream = Self::stream(id)?;
        self.load_stream(&stream).await
    }

    async fn load_stream(
        &self,
        stream: &StreamName,
    ) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let mut loaded = Loaded {
            state: A::default(),
            version: None,
            snapshot: None,
            events_folded: 0,
        };
        if let Some(snapshot) = self.store.load_snapshot(stream).await? {
            // A snapshot newer than the stream's visible events (the stream was
            // soft-deleted since) describes events that no longer count.
            let current = self.store.stream_info(stream).await?.version;
            let usable = current.is_some_and(|v| v >= snapshot.version);
            if usable && snapshot.schema_version == A::SNAPSHOT_VERSION {
                match serde_json::from_slice(&snapshot.state) {
                    Ok(state) => {
                        loaded.state = state;
                        loaded.version = Some(snapshot.version);
                        loaded.snapshot = Some(snapshot.version);
                    }
                    Err(e) => {
                        tracing::warn!(%stream, error = %e, "ignoring a snapshot that does not decode")
                    }
                }
            }
        }
        let mut from = loaded.version.map_or(StreamVersion(0), StreamVersion::next);
        loop {
            let slice = self
                .store
                .read_stream(stream, ReadStream::forward(from).limit(READ_LIMIT_MAX))
                .await?;
            let n = slice.events.len();
            for recorded in slice.events {
                let version = recorded.version;
                let event = self.decode(stream, recorded)?;
                loaded.state.apply(&event);
                loaded.version = Some(version);
                loaded.events_folded += 1;
                from = version.next();
            }
            if n < READ_LIMIT_MAX {
                return Ok(loaded);
            }
        }
    }

    fn decode(
        &self,
        stream: &StreamName,
        recorded: RecordedEvent,
    ) -> Result<A::Event, RepositoryError<A::Error>> {
        let position = recorded.position.0;
        let error = |reason: String| RepositoryError::Decode {
            stream: stream.clone(),
            position,
            reason,
        };
        let event = self
            .upcasters
            .upcast(recorded.event)
            .map_err(|e| error(e.to_string()))?;
        let data: serde_json::Value = match event.data() {
            Some(_) => event.json().map_err(|e| error(e.to_string()))?,
            None => serde_json::Value::Null,
        };
        let tagged = serde_json::json!({ "type": event.ty(), "data": data });
        serde_json::from_value(tagged).map_err(|e| error(e.to_string()))
    }

    fn encode(&self, event: &A::Event) -> Result<CloudEvent, String> {
        let value = serde_json::to_value(event).map_err(|e| e.to_string())?;
        let ty = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or("aggregate events must be serde enums tagged with `type`")?;
        let cloud = CloudEvent::new(self.config.source.clone(), ty);
        match value.get("data") {
            None | Some(serde_json::Value::Null) => Ok(cloud),
            Some(data) => cloud.with_json(data).map_err(|e| e.to_string()),
        }
    }

    /// Carries out `command` on the aggregate with `id`: load, decide, append with
    /// the loaded version expected; on a conflict, load again and retry as the
    /// configuration allows.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let stream = Self::stream(id)?;
        let mut delay = self.config.retry_delay;
        let attempts_max = self.config.attempts_max.max(1);
        for attempt in 1..=attempts_max {
            let Loaded {
                mut state, version, ..
            } = self.load_stream(&stream).await?;
            let events = state.decide(command).map_err(RepositoryError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    events_written: 0,
                    attempts: attempt,
                });
            }
            let cloud = events
                .iter()
                .map(|e| self.encode(e))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| RepositoryError::Decode {
                    stream: stream.clone(),
                    position: 0,
                    reason,
                })?;
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            match self.store.append_to(&stream, expected, cloud).await {
                Ok(done) => {
                    for e in &events {
                        state.apply(e);
                    }
                    self.maybe_snapshot(&stream, &state, version, done.last_version)
                        .await;
                    return Ok(Executed {
                        state,
                        version: Some(done.last_version),
                        events_written: events.len(),
                        attempts: attempt,
                    });
                }
                Err(AppendError::WrongExpectedVersion { .. }) if attempt < attempts_max => {
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                Err(AppendError::WrongExpectedVersion { .. }) => break,
                Err(e) => return Err(RepositoryError::Append(e)),
            }
        }
        Err(RepositoryError::Conflict {
            stream,
            attempts: attempts_max,
        })
    }

    async fn maybe_snapshot(
        &self,
        stream: &StreamName,
        state: &A,
        before: Option<StreamVersion>,
        after: StreamVersion,
    ) {
        let Some(every) = self.config.snapshot_every.filter(|&n| n > 0) else {
            return;
        };
        let len_before = before.map_or(0, |v| v.0 + 1);
        let len_after = after.0 + 1;
        if len_before / every == len_after / every {
            return;
        }
        let state = match serde_json::to_vec(state) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(%stream, error = %e, "aggregate state does not serialize; no snapshot");
                return;
            }
        };
        let snapshot = Snapshot {
            stream: stream.clone(),
            version: after,
            schema_version: A::SNAPSHOT_VERSION,
            state: state.into(),
        };
        // A snapshot only saves time; failing to store one fails nothing.
        if let Err(e) = self.store.save_snapshot(snapshot).await {
            tracing::warn!(%stream, error = %e, "could not store a snapshot");
        }
    }
}
