//! The PostgreSQL backend.
//!
//! The global order is gap-free in commit order: an append locks the one row of
//! `tidings_head` first, takes its positions from it and writes it back inside the
//! same transaction, so no other append can take a position until it commits (see
//! `schema.sql`). A reader therefore never sees position `p` before every position
//! under it. `LISTEN/NOTIFY` only wakes readers, which then read from their own
//! checkpoint; a lost notification delays them by at most a poll interval and never
//! loses an event.
//!
//! A store's appends commit in groups (`group`): one writer task writes every
//! append waiting for it in one transaction, under one head lock and one WAL
//! flush, so concurrent writers share the flushes that the head lock would
//! otherwise give one at a time.
//!
//! The schema is created by migrations that run when the store connects, under an
//! advisory lock so that several processes may start at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tidings_types::{Clock, CloudEvent, SystemClock, TimestampMs};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls, Row};

mod group;

pub use group::AppendStats;

use crate::error::{AppendError, StoreError};
use crate::store::{check_append, metadata_written, repeated_append, EventStore};
use crate::types::{
    read_range, within_age, AllSlice, Appended, Direction, ExpectedVersion, Position, ReadStream,
    RecordedEvent, Selector, Snapshot, StreamAppend, StreamInfo, StreamMetadata, StreamName,
    StreamSlice, StreamState, StreamVersion, READ_LIMIT_MAX,
};

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("postgres/schema.sql"))];

/// Key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7469_6469_6e67_7301;

/// The notification channel appends signal on.
const CHANNEL: &str = "tidings_events";

/// How often a waiting reader checks the head without a notification.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How a PostgreSQL store connects.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections the store keeps, not counting its listener.
    pub pool_size_max: usize,
    /// How long to wait for a pooled connection.
    pub connect_timeout: Duration,
    /// The clock events are recorded by, and stream ages measured on.
    pub clock: Arc<dyn Clock>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size_max: 16,
            connect_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The PostgreSQL event store. Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    clock: Arc<dyn Clock>,
    head: watch::Receiver<u64>,
    listener: tokio::task::JoinHandle<()>,
    /// The appends' queue to the writer, which stops when this is dropped.
    appender: tokio::sync::mpsc::Sender<group::Job>,
    counters: Arc<group::Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl PgStore {
    /// Connects to the database at `url` (a `postgresql://` URL or a key=value
    /// string), runs the migrations it lacks, and starts listening for appends.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(options.connect_timeout);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size_max.max(1))
            .wait_timeout(Some(options.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pool_err)?;
        migrate(&pool).await?;
        let head = {
            let client = pool.get().await.map_err(pool_err)?;
            let row = client
                .query_one("SELECT next FROM tidings_head WHERE id = 0", &[])
                .await?;
            to_u64(row.get(0))
        };
        let (tx, rx) = watch::channel(head);
        let listener = tokio::spawn(listen(config, tx));
        let (appender, jobs) = tokio::sync::mpsc::channel(group::QUEUE_DEPTH);
        let (writer_pool, writer_clock) = (pool.clone(), Arc::clone(&options.clock));
        let counters = Arc::new(group::Counters::default());
        tokio::spawn(group::writer(
            pool.clone(),
            Arc::clone(&options.clock),
            Arc::clone(&counters),
            jobs,
            move |appends| {
                let (pool, clock) = (writer_pool.clone(), Arc::clone(&writer_clock));
                async move { append_alone(&pool, clock.as_ref(), &appends).await }
            },
        ));
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                clock: options.clock,
                head: rx,
                listener,
                appender,
                counters,
            }),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_err)
    }

    async fn state(
        client: &impl deadpool_postgres::GenericClient,
        stream: &StreamName,
        lock: bool,
    ) -> Result<StreamState, StoreError> {
        let sql = if lock {
            "SELECT last_version, truncate_before, max_count, max_age_ms FROM tidings_streams WHERE stream = $1 FOR UPDATE"
        } else {
            "SELECT last_version, truncate_before, max_count, max_age_ms FROM tidings_streams WHERE stream = $1"
        };
        let row = client.query_opt(sql, &[&stream.as_str()]).await?;
        Ok(row.map(|r| state_of(&r)).unwrap_or_default())
    }

    async fn write_state(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        change: impl FnOnce(&mut StreamState) -> bool,
    ) -> Result<(), AppendError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        tx.execute("SELECT next FROM tidings_head WHERE id = 0 FOR UPDATE", &[])
            .await
            .map_err(StoreError::from)?;
        let mut state = Self::state(&tx, stream, true).await?;
        if !expected.admits(state.visible()) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: state.visible(),
            });
        }
        if !change(&mut state) {
            return Ok(());
        }
        let max_count = state.metadata.max_count.map(to_i64);
        let max_age = state
            .metadata
            .max_age
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        tx.execute(
            "INSERT INTO tidings_streams (stream, truncate_before, max_count, max_age_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (stream) DO UPDATE SET truncate_before = EXCLUDED.truncate_before,
                 max_count = EXCLUDED.max_count, max_age_ms = EXCLUDED.max_age_ms",
            &[
                &stream.as_str(),
                &to_i64(state.truncate_before),
                &max_count,
                &max_age,
            ],
        )
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

async fn try_append(
    pool: &Pool,
    clock: &dyn Clock,
    appends: &[StreamAppend],
) -> Result<Vec<Appended>, AppendError> {
    let now = clock.now();
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    // Every writer locks the head row first: it orders positions by commit
    // and rules out deadlocks between writers.
    let head: i64 = tx
        .query_one("SELECT next FROM tidings_head WHERE id = 0 FOR UPDATE", &[])
        .await
        .map_err(StoreError::from)?
        .get(0);
    let ids: Vec<&str> = appends
        .iter()
        .flat_map(|a| a.events.iter().map(CloudEvent::id))
        .collect();
    let found = tx
        .query(
            "SELECT event_id, stream, version, position FROM tidings_events WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(StoreError::from)?;
    if !found.is_empty() {
        let stored: HashMap<String, (String, i64, i64)> = found
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let locate = |stream: &StreamName, id: &str| {
            let (s, version, position) = stored.get(id)?;
            (s == stream.as_str()).then(|| (to_u64(*version), to_u64(*position)))
        };
        let repeat = (found.len() == ids.len())
            .then(|| repeated_append(appends, locate))
            .flatten();
        return repeat.ok_or_else(|| AppendError::DuplicateEventId {
            id: found[0].get(0),
        });
    }
    let mut position = to_u64(head);
    let mut done = Vec::with_capacity(appends.len());
    let mut cols = Columns::default();
    for a in appends {
        let state = PgStore::state(&tx, &a.stream, true).await?;
        let written = plan_stream(a, state, position, now.0, &mut cols)?;
        tx.execute(
            "INSERT INTO tidings_streams (stream, last_version) VALUES ($1, $2)
             ON CONFLICT (stream) DO UPDATE SET last_version = EXCLUDED.last_version",
            &[&a.stream.as_str(), &to_i64(written.last_version.0)],
        )
        .await
        .map_err(StoreError::from)?;
        position = written.last_position.0 + 1;
        done.push(written);
    }
    insert_events(&tx, &cols).await?;
    let next = to_i64(position);
    tx.execute("UPDATE tidings_head SET next = $1 WHERE id = 0", &[&next])
        .await
        .map_err(StoreError::from)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])
        .await
        .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(done)
}

/// One append call by itself, in its own transaction; repeated once when the
/// connection broke before the answer or another writer stored one of its ids
/// meanwhile.
async fn append_alone(
    pool: &Pool,
    clock: &dyn Clock,
    appends: &[StreamAppend],
) -> Result<Vec<Appended>, AppendError> {
    match try_append(pool, clock, appends).await {
        // A connection that broke before the answer: the commit may or may not
        // have happened. Event ids make a repeat safe: it either writes the
        // events or answers what the first attempt wrote.
        Err(AppendError::Store(StoreError::Postgres(e))) if e.is_closed() => {
            tracing::warn!(error = %e, "event store connection broke during an append; repeating it");
            try_append(pool, clock, appends).await
        }
        Err(AppendError::Store(StoreError::Postgres(e)))
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
        {
            // Another append stored one of these ids after we looked: look again.
            try_append(pool, clock, appends).await
        }
        other => other,
    }
}

/// Checks `a` against its stream's `state` and adds its events to `cols`,
/// at positions from `position` on, recorded at `recorded_ms`: what it will
/// have written once `cols` is inserted.
fn plan_stream<'a>(
    a: &'a StreamAppend,
    state: StreamState,
    position: u64,
    recorded_ms: i64,
    cols: &mut Columns<'a>,
) -> Result<Appended, AppendError> {
    if !a.expected.admits(state.visible()) {
        return Err(AppendError::WrongExpectedVersion {
            stream: a.stream.clone(),
            expected: a.expected,
            actual: state.visible(),
        });
    }
    let first_version = state.next_version();
    for (i, e) in a.events.iter().enumerate() {
        let json = e.to_json().map_err(|source| AppendError::InvalidEvent {
            stream: a.stream.clone(),
            index: i,
            source,
        })?;
        cols.position.push(to_i64(position + i as u64));
        cols.stream.push(a.stream.as_str());
        cols.version.push(to_i64(first_version + i as u64));
        cols.category.push(a.stream.category());
        cols.id.push(e.id());
        cols.ty.push(e.ty());
        cols.recorded.push(recorded_ms);
        cols.event.push(json);
    }
    let n = a.events.len() as u64;
    Ok(Appended {
        stream: a.stream.clone(),
        first_version: StreamVersion(first_version),
        last_version: StreamVersion(first_version + n - 1),
        first_position: Position(position),
        last_position: Position(position + n - 1),
    })
}

/// Inserts the rows of `cols`.
async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    cols: &Columns<'_>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tidings_events
             (position, stream, version, category, event_id, event_type, recorded_ms, event)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                              $5::text[], $6::text[], $7::bigint[], $8::bytea[])",
        &[
            &cols.position,
            &cols.stream,
            &cols.version,
            &cols.category,
            &cols.id,
            &cols.ty,
            &cols.recorded,
            &cols.event,
        ],
    )
    .await?;
    Ok(())
}

/// The columns of one multi-row insert.
#[derive(Default)]
struct Columns<'a> {
    position: Vec<i64>,
    stream: Vec<&'a str>,
    version: Vec<i64>,
    category: Vec<&'a str>,
    id: Vec<&'a str>,
    ty: Vec<&'a str>,
    recorded: Vec<i64>,
    event: Vec<Vec<u8>>,
}

impl<'a> Columns<'a> {
    fn extend(&mut self, rows: Columns<'a>) {
        self.position.extend(rows.position);
        self.stream.extend(rows.stream);
        self.version.extend(rows.version);
        self.category.extend(rows.category);
        self.id.extend(rows.id);
        self.ty.extend(rows.ty);
        self.recorded.extend(rows.recorded);
        self.event.extend(rows.event);
    }
}

fn state_of(row: &Row) -> StreamState {
    state_from(row, 0)
}

/// A stream's state from the columns `last_version, truncate_before,
/// max_count, max_age_ms` of `row`, from `at` on.
fn state_from(row: &Row, at: usize) -> StreamState {
    StreamState {
        last: row.get::<_, Option<i64>>(at).map(to_u64),
        truncate_before: to_u64(row.get(at + 1)),
        metadata: StreamMetadata {
            max_count: row.get::<_, Option<i64>>(at + 2).map(to_u64),
            max_age: row
                .get::<_, Option<i64>>(at + 3)
                .map(|ms| Duration::from_millis(to_u64(ms))),
        },
    }
}

/// Decodes an event row: `position, stream, version, recorded_ms, event` from
/// column `at` on.
fn event_of(row: &Row, at: usize) -> Result<RecordedEvent, StoreError> {
    let position = to_u64(row.get(at));
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let stream: &str = row.get(at + 1);
    let bytes: &[u8] = row.get(at + 4);
    Ok(RecordedEvent {
        stream: StreamName::stored(stream).map_err(|e| corrupt(e.to_string()))?,
        version: StreamVersion(to_u64(row.get(at + 2))),
        position: Position(position),
        recorded: TimestampMs(row.get(at + 3)),
        event: CloudEvent::from_json(bytes).map_err(|e| corrupt(e.to_string()))?,
    })
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tidings_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM tidings_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO tidings_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "applied event store migration");
    }
    tx.commit().await?;
    Ok(())
}

/// Keeps a connection listening for appends and publishes the head they announce.
/// Reconnects after a failure; readers poll meanwhile.
async fn listen(config: tokio_postgres::Config, head: watch::Sender<u64>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let head = head.clone();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if let Ok(next) = n.payload().parse::<u64>() {
                                    head.send_if_modified(|h| {
                                        let newer = next > *h;
                                        if newer {
                                            *h = next;
                                        }
                                        newer
                                    });
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "event store listener connection failed");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "event store could not LISTEN");
                    driver.abort();
                } else {
                    let _ = driver.await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "event store listener could not connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl EventStore for PgStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<Appended>, AppendError> {
        check_append(&appends)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone =
            || AppendError::Store(StoreError::Pool("the store's append writer stopped".into()));
        self.inner
            .appender
            .send(group::Job { appends, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        read: ReadStream,
    ) -> Result<StreamSlice, StoreError> {
        let client = self.client().await?;
        let state = Self::state(&client, stream, false).await?;
        let Some((a, b)) = read_range(&state, read) else {
            return Ok(StreamSlice {
                events: Vec::new(),
                version: state.visible(),
            });
        };
        let sql = match read.direction {
            Direction::Forward => {
                "SELECT position, stream, version, recorded_ms, event FROM tidings_events
                 WHERE stream = $1 AND version BETWEEN $2 AND $3 ORDER BY version"
            }
            Direction::Backward => {
                "SELECT position, stream, version, recorded_ms, event FROM tidings_events
                 WHERE stream = $1 AND version BETWEEN $2 AND $3 ORDER BY version DESC"
            }
        };
        let rows = client
            .query(
                sql,
                &[&stream.as_str(), &to_i64(a.min(b)), &to_i64(a.max(b))],
            )
            .await?;
        let now = self.inner.clock.now();
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let e = event_of(row, 0)?;
            if within_age(&state.metadata, e.recorded, now) {
                events.push(e);
            }
        }
        Ok(StreamSlice {
            events,
            version: state.visible(),
        })
    }

    async fn read_all(
        &self,
        selector: &Selector,
        from: Position,
        limit: usize,
    ) -> Result<AllSlice, StoreError> {
        let limit = to_i64(limit.clamp(1, READ_LIMIT_MAX) as u64);
        let client = self.client().await?;
        // One statement, one snapshot: the head and the rows agree.
        let (filter, key) = match selector {
            Selector::All => ("TRUE", ""),
            Selector::Category(c) => ("category = $3", c.as_str()),
            Selector::Stream(s) => ("stream = $3", s.as_str()),
        };
        let sql = format!(
            "SELECT h.next, e.position, e.stream, e.version, e.recorded_ms, e.event
             FROM tidings_head h LEFT JOIN LATERAL (
                 SELECT position, stream, version, recorded_ms, event FROM tidings_events
                 WHERE position >= $1 AND {filter} ORDER BY position LIMIT $2
             ) e ON TRUE WHERE h.id = 0"
        );
        let from_i = to_i64(from.0);
        let rows = if key.is_empty() {
            client.query(&sql, &[&from_i, &limit]).await?
        } else {
            client.query(&sql, &[&from_i, &limit, &key]).await?
        };
        let head = rows.first().map_or(from.0, |r| to_u64(r.get(0)));
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.get::<_, Option<i64>>(1).is_some() {
                events.push(event_of(row, 1)?);
            }
        }
        let next = match events.last() {
            Some(e) if events.len() as i64 == limit => e.position.next(),
            _ => Position(head.max(from.0)),
        };
        Ok(AllSlice { events, next })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT next FROM tidings_head WHERE id = 0", &[])
            .await?;
        Ok(Position(to_u64(row.get(0))))
    }

    async fn wait_beyond(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<Position, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.head.clone();
        loop {
            rx.borrow_and_update();
            let head = self.head().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if head > after || left.is_zero() {
                return Ok(head);
            }
            let _ = tokio::time::timeout(left.min(POLL_INTERVAL), rx.changed()).await;
        }
    }

    async fn stream_info(&self, stream: &StreamName) -> Result<StreamInfo, StoreError> {
        let client = self.client().await?;
        Ok(Self::state(&client, stream, false).await?.info())
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), StoreError> {
        let result = self
            .write_state(stream, ExpectedVersion::Any, |state| {
                state.metadata = metadata;
                true
            })
            .await;
        metadata_written(result)
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> Result<(), AppendError> {
        self.write_state(stream, expected, StreamState::soft_delete)
            .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let client = self.client().await?;
        let schema_version = i32::try_from(snapshot.schema_version).unwrap_or(i32::MAX);
        client
            .execute(
                "INSERT INTO tidings_snapshots (stream, version, schema_version, state)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version,
                     schema_version = EXCLUDED.schema_version, state = EXCLUDED.state",
                &[
                    &snapshot.stream.as_str(),
                    &to_i64(snapshot.version.0),
                    &schema_version,
                    &snapshot.state.as_ref(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, schema_version, state FROM tidings_snapshots WHERE stream = $1",
                &[&stream.as_str()],
            )
            .await?;
        Ok(row.map(|r| Snapshot {
            stream: stream.clone(),
            version: StreamVersion(to_u64(r.get(0))),
            schema_version: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
            state: bytes::Bytes::from(r.get::<_, Vec<u8>>(2)),
        }))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tidings_checkpoints (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
                &[&name, &to_i64(position.0)],
            )
            .await?;
        Ok(())
    }

    async fn locate_event(&self, id: &str) -> Result<Option<Position>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position FROM tidings_events WHERE event_id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| Position(to_u64(r.get(0)))))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position FROM tidings_checkpoints WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| Position(to_u64(r.get(0)))))
    }
}

impl PgStore {
    /// How the store's appends have committed: in groups or alone.
    pub fn append_stats(&self) -> AppendStats {
        self.inner.counters.stats()
    }

    /// A pooled connection, for projections that keep their read model in the same
    /// database and commit it with their checkpoint.
    pub async fn connection(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.client().await
    }
}
