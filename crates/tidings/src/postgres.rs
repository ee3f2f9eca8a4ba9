//! The PostgreSQL backend: topics and queue groups in tables of a database
//! many teams already run (`postgres://...`).
//!
//! - **Topics** are partitions of events (`tidings_toolkit_events`). A
//!   publish takes its offsets from its partitions' counter rows inside its
//!   transaction (locked in partition order), so offsets are gap-free in
//!   commit order and a reader never skips an event committed late (see
//!   `schema.sql`). Keyed events go to Kafka's murmur2 partition of their key,
//!   unkeyed ones round-robin. An event (source, id) is stored once per topic:
//!   a repeat answers the first copy's place.
//! - **Queue groups** keep per partition a cursor (the next offset not yet
//!   taken in) and a row per pending event (attempts, due time, lease). A
//!   receive takes new events in (at most [`PENDING_MAX`] pending per group),
//!   then leases due rows with `FOR UPDATE SKIP LOCKED`, so any number of
//!   consumers in any number of processes share a group. With key ordering a
//!   row waits while an earlier row of its key in its partition is pending.
//!   An ack deletes the row; a nack makes it due later; after
//!   `max_deliveries` (a lease that ran out counts) or at a reject, the event
//!   is published to `<topic>.<group>.dlq` with the `dlq*` extensions and
//!   the row deleted, in one transaction.
//! - `LISTEN/NOTIFY` only wakes waiting receivers; they poll every
//!   [`POLL_INTERVAL`] too, so a lost notification only delays.
//!
//! Times (leases, due times) are the database's clock, so consumers on
//! machines with different clocks agree. Stream mode is served by the same
//! queue groups (they share partitions rather than assign them; deliveries
//! are answered one by one in either mode), with the same capabilities.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tidings_broker::partitioner::partition_for_key;
use tidings_types::CloudEvent;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Answer, Backend, BoxFuture, Capabilities, Incoming, Mode, Payload, Receipt, Source, Start,
    SubscribeOptions, Ticket,
};
use crate::stream::{dead_letter_extensions, DeadLetterInfo};
use crate::Error;

const NAME: &str = "postgres";

/// The backend's migrations.
const MIGRATIONS: Migrations = Migrations {
    table: "tidings_toolkit_migrations",
    lock: 0x7469_6469_6e67_7302,
    steps: &[(1, include_str!("postgres/schema.sql"))],
};
/// The channel publishes notify on (the payload is the topic).
const CHANNEL: &str = "tidings_toolkit_events";
/// How often a waiting receive looks again without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most events pending (taken in, not acked or dead-lettered) per group: a
/// backlog beyond it waits in the topic.
pub const PENDING_MAX: i64 = 10_000;
/// Most events taken into a group per partition at one receive.
const TAKE_IN_MAX: i64 = 512;
/// Connections in the pool.
const POOL_SIZE_MAX: usize = 16;

/// Topics and queue groups in a PostgreSQL database.
pub struct Postgres {
    pool: Pool,
    /// Partition counts of topics this backend has seen.
    partitions: Mutex<HashMap<String, u32>>,
    round_robin: AtomicU32,
    woken: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

/// The toolkit's error for a database error. What may succeed when tried
/// again is transient: a broken connection, and the SQLSTATE classes of
/// connection exceptions (08), insufficient resources (53), operator
/// intervention (57: a server shutting down, a backend terminated) and
/// transaction rollbacks (40: serialization failures, deadlocks).
pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    let transient = match e.code() {
        None => true,
        Some(code) => ["08", "40", "53", "57"]
            .iter()
            .any(|class| code.code().starts_with(class)),
    };
    // The message of a server error is in its source; say it.
    let message = match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    if transient || e.is_closed() {
        Error::transient(NAME, message)
    } else {
        Error::backend(NAME, message)
    }
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::transient(NAME, e)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A schema's migrations: applied in order, each once, under an advisory
/// lock, in the caller's transaction, and recorded in `table`.
pub(crate) struct Migrations {
    pub(crate) table: &'static str,
    pub(crate) lock: i64,
    pub(crate) steps: &'static [(i32, &'static str)],
}

/// A pool of at most `size` connections to the database at `url`, and its
/// configuration.
pub(crate) fn pool(url: &str, size: usize) -> Result<(Pool, tokio_postgres::Config), Error> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Config(format!("{url}: {e}")))?;
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok((pool, config))
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://...` or key=value),
    /// creates the toolkit's tables when they are missing, and starts
    /// listening for publishes.
    pub async fn connect(url: &str) -> Result<Postgres, Error> {
        let (pool, config) = pool(url, POOL_SIZE_MAX)?;
        {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg_err)?;
            migrate(&tx, &MIGRATIONS).await?;
            tx.commit().await.map_err(pg_err)?;
        }
        let woken = Arc::new(Notify::new());
        let waiters = Arc::clone(&woken);
        let listener = tokio::spawn(listen(config, CHANNEL, move || waiters.notify_waiters()));
        Ok(Postgres {
            pool,
            partitions: Mutex::new(HashMap::new()),
            round_robin: AtomicU32::new(0),
            woken,
            listener,
        })
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, Error> {
        if let Some(n) = self.partitions.lock().expect("partitions lock").get(topic) {
            return Ok(*n);
        }
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one(
                "SELECT count(*)::integer FROM tidings_toolkit_partitions WHERE topic = $1",
                &[&topic],
            )
            .await
            .map_err(pg_err)?;
        let n: i32 = row.get(0);
        if n == 0 {
            return Err(Error::UnknownTopic(topic.to_owned()));
        }
        let n = u32::try_from(n).unwrap_or(1);
        self.partitions
            .lock()
            .expect("partitions lock")
            .insert(topic.to_owned(), n);
        Ok(n)
    }

    /// Publishes inside `tx`; the caller commits.
    async fn publish_in(
        &self,
        tx: &impl GenericClient,
        topic: &str,
        events: &[CloudEvent],
    ) -> Result<Vec<Receipt>, Error> {
        let partitions = self.partition_count(topic).await?;
        let mut receipts: Vec<Option<Receipt>> = vec![None; events.len()];
        // New events by partition, in order: (index, json).
        let mut new: BTreeMap<u32, Vec<(usize, String)>> = BTreeMap::new();
        // (index, index of its first copy in this batch).
        let mut copies: Vec<(usize, usize)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let existing = tx
                .query_opt(
                    "SELECT partition, \"offset\" FROM tidings_toolkit_events
                     WHERE topic = $1 AND source = $2 AND id = $3",
                    &[&topic, &e.source(), &e.id()],
                )
                .await
                .map_err(pg_err)?;
            if let Some(row) = existing {
                receipts[i] = Some(receipt(row.get(0), row.get(1), true));
                continue;
            }
            // The same event twice in one batch is stored once too.
            let earlier = events[..i]
                .iter()
                .position(|o| o.source() == e.source() && o.id() == e.id());
            if let Some(j) = earlier {
                copies.push((i, j));
                continue;
            }
            let partition = match e.partitionkey() {
                Some(k) => partition_for_key(k.as_bytes(), partitions),
                None => self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions,
            };
            let json = String::from_utf8(
                e.to_json()
                    .map_err(|e| Error::InvalidEvent(e.to_string()))?,
            )
            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
            new.entry(partition).or_default().push((i, json));
        }
        for (partition, batch) in new {
            let p = i32::try_from(partition).unwrap_or(i32::MAX);
            let n = i64::try_from(batch.len()).unwrap_or(i64::MAX);
            let row = tx
                .query_one(
                    "UPDATE tidings_toolkit_partitions SET next_offset = next_offset + $3
                     WHERE topic = $1 AND partition = $2 RETURNING next_offset",
                    &[&topic, &p, &n],
                )
                .await
                .map_err(pg_err)?;
            let base = row.get::<_, i64>(0) - n;
            for (k, (i, json)) in batch.into_iter().enumerate() {
                let offset = base + i64::try_from(k).unwrap_or(0);
                let e = &events[i];
                tx.execute(
                    "INSERT INTO tidings_toolkit_events
                       (topic, partition, \"offset\", source, id, key, stored_at_ms, event)
                     VALUES ($1, $2, $3, $4, $5, $6, tidings_toolkit_now_ms(), $7)",
                    &[
                        &topic,
                        &p,
                        &offset,
                        &e.source(),
                        &e.id(),
                        &e.partitionkey(),
                        &json,
                    ],
                )
                .await
                .map_err(pg_err)?;
                receipts[i] = Some(receipt(p, offset, false));
            }
        }
        for (i, j) in copies {
            receipts[i] = receipts[j].map(|r| Receipt {
                duplicate: true,
                ..r
            });
        }
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &topic])
            .await
            .map_err(pg_err)?;
        // Each event has its receipt by now: a new one, or its first copy's.
        Ok(receipts
            .into_iter()
            .map(|r| r.expect("every event placed"))
            .collect())
    }

    async fn ensure_in(
        &self,
        tx: &impl GenericClient,
        topic: &str,
        partitions: u32,
    ) -> Result<(), Error> {
        let n = i32::try_from(partitions).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO tidings_toolkit_partitions (topic, partition)
             SELECT $1, p FROM generate_series(0, $2 - 1) AS p
             WHERE NOT EXISTS (SELECT 1 FROM tidings_toolkit_partitions WHERE topic = $1)
             ON CONFLICT DO NOTHING",
            &[&topic, &n],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}

fn receipt(partition: i32, offset: i64, duplicate: bool) -> Receipt {
    Receipt {
        partition: u32::try_from(partition).unwrap_or(0),
        offset: u64::try_from(offset).unwrap_or(0),
        duplicate,
    }
}

/// Applies the `migrations` not applied yet, inside `tx`; see
/// [`Migrations`].
pub(crate) async fn migrate(
    tx: &tokio_postgres::Transaction<'_>,
    migrations: &Migrations,
) -> Result<(), Error> {
    let Migrations { table, lock, steps } = migrations;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[lock])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(pg_err)?;
    let applied: Vec<i32> = tx
        .query(&format!("SELECT version FROM {table}"), &[])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in *steps {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(pg_err)?;
        tx.execute(
            &format!("INSERT INTO {table} (version) VALUES ($1)"),
            &[version],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(
            table,
            version,
            "applied a PostgreSQL migration of the toolkit"
        );
    }
    Ok(())
}

/// Keeps a connection listening for publishes and wakes waiting receivers.
/// Reconnects after a failure; receivers poll meanwhile.
pub(crate) async fn listen(
    config: tokio_postgres::Config,
    channel: &'static str,
    on_notification: impl Fn() + Clone + Send + 'static,
) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let woken = on_notification.clone();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => woken(),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the toolkit's PostgreSQL listener failed");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
                    tracing::warn!(error = %e, "the toolkit could not LISTEN");
                    driver.abort();
                } else {
                    let _ = driver.await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "the toolkit's listener could not connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Backend for Postgres {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Both modes are the same queue groups.
    fn capabilities(&self, _mode: Mode) -> Capabilities {
        Capabilities::NATIVE
    }

    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            tidings_types::TopicName::new(topic).map_err(|e| Error::Config(e.to_string()))?;
            let client = self.pool.get().await.map_err(pool_err)?;
            self.ensure_in(&client, topic, partitions.max(1)).await
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: Vec<CloudEvent>,
    ) -> BoxFuture<'a, Result<Vec<Receipt>, Error>> {
        Box::pin(async move {
            for e in &events {
                e.validate()
                    .map_err(|e| Error::InvalidEvent(e.to_string()))?;
            }
            let mut tries = 0;
            loop {
                tries += 1;
                let mut client = self.pool.get().await.map_err(pool_err)?;
                let tx = client.transaction().await.map_err(pg_err)?;
                let result = match self.publish_in(&tx, topic, &events).await {
                    Ok(receipts) => tx.commit().await.map_err(pg_err).map(|()| receipts),
                    Err(e) => Err(e),
                };
                match result {
                    // Another publish stored one of these events after we
                    // looked: look again (it is a duplicate now).
                    Err(Error::Backend { message, .. })
                        if tries < 3 && message.contains("tidings_toolkit_events_identity") => {}
                    other => return other,
                }
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        options: &'a SubscribeOptions,
    ) -> BoxFuture<'a, Result<Arc<dyn Source>, Error>> {
        Box::pin(async move {
            let partitions = self.partition_count(&options.topic).await?;
            let mut client = self.pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let created = tx
                .execute(
                    "INSERT INTO tidings_toolkit_queues
                       (name, topic, ack_timeout_ms, max_deliveries, backoff_initial_ms,
                        backoff_factor, backoff_max_ms, key_ordering)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &options.group,
                        &options.topic,
                        &ms(options.ack_timeout),
                        &i32::try_from(options.max_deliveries).unwrap_or(i32::MAX),
                        &ms(options.backoff.initial),
                        &i32::try_from(options.backoff.factor).unwrap_or(10),
                        &ms(options.backoff.max),
                        &options.key_ordering,
                    ],
                )
                .await
                .map_err(pg_err)?;
            if created == 1 {
                let p_max = i32::try_from(partitions).unwrap_or(i32::MAX);
                for p in 0..p_max {
                    let start: i64 = match options.start {
                        Start::Earliest => 0,
                        Start::Latest => tx
                            .query_one(
                                "SELECT next_offset FROM tidings_toolkit_partitions
                                 WHERE topic = $1 AND partition = $2",
                                &[&options.topic, &p],
                            )
                            .await
                            .map_err(pg_err)?
                            .get(0),
                        Start::Offset(offset) => tx
                            .query_one(
                                "SELECT least($3, next_offset) FROM tidings_toolkit_partitions
                                 WHERE topic = $1 AND partition = $2",
                                &[
                                    &options.topic,
                                    &p,
                                    &i64::try_from(offset).unwrap_or(i64::MAX),
                                ],
                            )
                            .await
                            .map_err(pg_err)?
                            .get(0),
                        Start::Time(at) => tx
                            .query_one(
                                "SELECT coalesce(
                                   (SELECT min(\"offset\") FROM tidings_toolkit_events
                                    WHERE topic = $1 AND partition = $2 AND stored_at_ms >= $3),
                                   (SELECT next_offset FROM tidings_toolkit_partitions
                                    WHERE topic = $1 AND partition = $2))",
                                &[&options.topic, &p, &at],
                            )
                            .await
                            .map_err(pg_err)?
                            .get(0),
                    };
                    tx.execute(
                        "INSERT INTO tidings_toolkit_cursors (queue, partition, next_offset)
                         VALUES ($1, $2, $3)",
                        &[&options.group, &p, &start],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
            let row = tx
                .query_one(
                    "SELECT topic, ack_timeout_ms, max_deliveries, backoff_initial_ms,
                            backoff_factor, backoff_max_ms, key_ordering
                     FROM tidings_toolkit_queues WHERE name = $1",
                    &[&options.group],
                )
                .await
                .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            let topic: String = row.get(0);
            if topic != options.topic {
                return Err(crate::embedded::group_elsewhere(
                    &options.group,
                    &topic,
                    &options.topic,
                ));
            }
            let config = QueueConfig {
                ack_timeout_ms: row.get(1),
                max_deliveries: row.get(2),
                backoff: crate::backend::Backoff {
                    initial: Duration::from_millis(
                        u64::try_from(row.get::<_, i64>(3)).unwrap_or(1),
                    ),
                    factor: u32::try_from(row.get::<_, i32>(4)).unwrap_or(2),
                    max: Duration::from_millis(u64::try_from(row.get::<_, i64>(5)).unwrap_or(1)),
                },
                key_ordering: row.get(6),
            };
            let source: Arc<dyn Source> = Arc::new(QueueSource {
                backend: BackendRef {
                    pool: self.pool.clone(),
                    woken: Arc::clone(&self.woken),
                },
                dead_letters: self.dead_letter_topic(&options.topic, &options.group),
                topic,
                group: options.group.clone(),
                config,
                stop: CancellationToken::new(),
                random: crate::Jitter::new(),
            });
            Ok(source)
        })
    }
}

/// What a group was created with.
struct QueueConfig {
    ack_timeout_ms: i64,
    max_deliveries: i32,
    backoff: crate::backend::Backoff,
    key_ordering: bool,
}

/// What a source needs of its backend.
struct BackendRef {
    pool: Pool,
    woken: Arc<Notify>,
}

/// One consumer of a queue group.
struct QueueSource {
    backend: BackendRef,
    topic: String,
    group: String,
    dead_letters: String,
    config: QueueConfig,
    stop: CancellationToken,
    random: crate::Jitter,
}

impl QueueSource {
    /// Dead-letters rows whose last lease ran out on their last attempt.
    async fn expire(&self) -> Result<(), Error> {
        let mut client = self.backend.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let rows = tx
            .query(
                "SELECT partition, \"offset\", attempts FROM tidings_toolkit_pending
                 WHERE queue = $1 AND lease IS NOT NULL
                   AND lease_until_ms < tidings_toolkit_now_ms() AND attempts >= $2
                 FOR UPDATE SKIP LOCKED",
                &[&self.group, &self.config.max_deliveries],
            )
            .await
            .map_err(pg_err)?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            let (p, o, attempts): (i32, i64, i32) = (row.get(0), row.get(1), row.get(2));
            self.dead_letter_in(&tx, p, o, attempts, "lease expired")
                .await?;
        }
        tx.commit().await.map_err(pg_err)
    }

    /// Takes new events of the topic into the group's pending rows.
    async fn take_in(&self) -> Result<(), Error> {
        let client = self.backend.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "WITH cur AS (
                   SELECT c.partition, c.next_offset FROM tidings_toolkit_cursors c
                   WHERE c.queue = $1
                     AND (SELECT count(*) FROM tidings_toolkit_pending WHERE queue = $1) < $3
                   FOR UPDATE SKIP LOCKED),
                 new AS (
                   SELECT e.partition, e.\"offset\", e.key FROM cur CROSS JOIN LATERAL (
                     SELECT partition, \"offset\", key FROM tidings_toolkit_events
                     WHERE topic = $2 AND partition = cur.partition AND \"offset\" >= cur.next_offset
                     ORDER BY \"offset\" LIMIT $4) e),
                 ins AS (
                   INSERT INTO tidings_toolkit_pending (queue, partition, \"offset\", key)
                   SELECT $1, partition, \"offset\", key FROM new ON CONFLICT DO NOTHING)
                 UPDATE tidings_toolkit_cursors c SET next_offset = m.next
                 FROM (SELECT partition, max(\"offset\") + 1 AS next FROM new GROUP BY partition) m
                 WHERE c.queue = $1 AND c.partition = m.partition",
                &[&self.group, &self.topic, &PENDING_MAX, &TAKE_IN_MAX],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    /// Leases up to `max` due rows.
    async fn lease(&self, max: usize) -> Result<Vec<Incoming>, Error> {
        let client = self.backend.pool.get().await.map_err(pool_err)?;
        let lease = i64::try_from(self.random.next() >> 1).unwrap_or(1);
        let max = i64::try_from(max).unwrap_or(1);
        let rows = client
            .query(
                "WITH due AS (
                   SELECT p.partition, p.\"offset\" FROM tidings_toolkit_pending p
                   WHERE p.queue = $1 AND p.due_at_ms <= tidings_toolkit_now_ms()
                     AND (p.lease IS NULL OR p.lease_until_ms < tidings_toolkit_now_ms())
                     AND (NOT $4 OR p.key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM tidings_toolkit_pending q
                       WHERE q.queue = p.queue AND q.partition = p.partition
                         AND q.key = p.key AND q.\"offset\" < p.\"offset\"))
                   ORDER BY p.partition, p.\"offset\"
                   LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE tidings_toolkit_pending p
                 SET attempts = p.attempts + 1, lease = $3,
                     lease_until_ms = tidings_toolkit_now_ms() + $5
                 FROM due, tidings_toolkit_events e
                 WHERE p.queue = $1 AND p.partition = due.partition AND p.\"offset\" = due.\"offset\"
                   AND e.topic = $6 AND e.partition = p.partition AND e.\"offset\" = p.\"offset\"
                 RETURNING p.partition, p.\"offset\", p.attempts, e.stored_at_ms, e.event",
                &[
                    &self.group,
                    &max,
                    &lease,
                    &self.config.key_ordering,
                    &self.config.ack_timeout_ms,
                    &self.topic,
                ],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let json: &str = row.get(4);
            let event = CloudEvent::from_json(json.as_bytes())
                .map_err(|e| Error::backend(NAME, format!("a stored event does not read: {e}")))?;
            out.push(Incoming {
                ticket: Ticket {
                    partition: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
                    offset: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                    lease: u64::try_from(lease).unwrap_or(0),
                    reply: None,
                },
                attempt: u32::try_from(row.get::<_, i32>(2)).unwrap_or(1),
                timestamp_ms: row.get(3),
                payload: Payload::Event(event),
            });
        }
        out.sort_by_key(|i| (i.ticket.partition, i.ticket.offset));
        Ok(out)
    }

    /// Publishes the event at (partition, offset) to the dead letters and
    /// deletes its row, inside `tx`.
    async fn dead_letter_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        partition: i32,
        offset: i64,
        attempts: i32,
        error: &str,
    ) -> Result<(), Error> {
        let row = tx
            .query_one(
                "SELECT event FROM tidings_toolkit_events
                 WHERE topic = $1 AND partition = $2 AND \"offset\" = $3",
                &[&self.topic, &partition, &offset],
            )
            .await
            .map_err(pg_err)?;
        let json: &str = row.get(0);
        let mut event = CloudEvent::from_json(json.as_bytes())
            .map_err(|e| Error::backend(NAME, format!("a stored event does not read: {e}")))?;
        let info = DeadLetterInfo {
            topic: &self.topic,
            partition: u32::try_from(partition).unwrap_or(0),
            offset: u64::try_from(offset).unwrap_or(0),
            attempts: u32::try_from(attempts).unwrap_or(0),
            error,
        };
        for (name, value) in dead_letter_extensions(&info) {
            event = event
                .with_extension(name, value)
                .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        }
        ensure_dead_letters(tx, &self.dead_letters).await?;
        append_dead_letter(tx, &self.dead_letters, &event).await?;
        tx.execute(
            "DELETE FROM tidings_toolkit_pending WHERE queue = $1 AND partition = $2 AND \"offset\" = $3",
            &[&self.group, &partition, &offset],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// The attempts of the row `ticket` holds under its lease, locked in
    /// `tx`; a lease that ran out or was answered is an error.
    async fn held(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        ticket: &Ticket,
    ) -> Result<i32, Error> {
        let (p, o, lease) = place(ticket);
        let row = tx
            .query_opt(
                "SELECT attempts FROM tidings_toolkit_pending
                 WHERE queue = $1 AND partition = $2 AND \"offset\" = $3 AND lease = $4
                   AND lease_until_ms >= tidings_toolkit_now_ms()
                 FOR UPDATE",
                &[&self.group, &p, &o, &lease],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| r.get(0))
            .ok_or_else(|| Error::LeaseExpired(format!("{p}.{o}.{lease}")))
    }
}

/// Creates a dead-letter topic (one partition) inside `tx` if it is missing.
async fn ensure_dead_letters(
    tx: &deadpool_postgres::Transaction<'_>,
    topic: &str,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO tidings_toolkit_partitions (topic, partition) VALUES ($1, 0)
         ON CONFLICT DO NOTHING",
        &[&topic],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Appends one event to partition 0 of a dead-letter topic inside `tx`,
/// unless the topic has it already (dead-lettered before a redrive).
async fn append_dead_letter(
    tx: &deadpool_postgres::Transaction<'_>,
    topic: &str,
    event: &CloudEvent,
) -> Result<(), Error> {
    let json = String::from_utf8(
        event
            .to_json()
            .map_err(|e| Error::InvalidEvent(e.to_string()))?,
    )
    .map_err(|e| Error::InvalidEvent(e.to_string()))?;
    let known = tx
        .query_opt(
            "SELECT 1 FROM tidings_toolkit_events WHERE topic = $1 AND source = $2 AND id = $3",
            &[&topic, &event.source(), &event.id()],
        )
        .await
        .map_err(pg_err)?;
    if known.is_some() {
        return Ok(());
    }
    let row = tx
        .query_one(
            "UPDATE tidings_toolkit_partitions SET next_offset = next_offset + 1
             WHERE topic = $1 AND partition = 0 RETURNING next_offset - 1",
            &[&topic],
        )
        .await
        .map_err(pg_err)?;
    let offset: i64 = row.get(0);
    tx.execute(
        "INSERT INTO tidings_toolkit_events
           (topic, partition, \"offset\", source, id, key, stored_at_ms, event)
         VALUES ($1, 0, $2, $3, $4, $5, tidings_toolkit_now_ms(), $6)",
        &[
            &topic,
            &offset,
            &event.source(),
            &event.id(),
            &event.partitionkey(),
            &json,
        ],
    )
    .await
    .map_err(pg_err)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &topic])
        .await
        .map_err(pg_err)?;
    Ok(())
}

fn place(ticket: &Ticket) -> (i32, i64, i64) {
    (
        i32::try_from(ticket.partition).unwrap_or(i32::MAX),
        i64::try_from(ticket.offset).unwrap_or(i64::MAX),
        i64::try_from(ticket.lease).unwrap_or(i64::MAX),
    )
}

impl Source for QueueSource {
    fn receive(&self, max: usize, wait: Duration) -> BoxFuture<'_, Result<Vec<Incoming>, Error>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if self.stop.is_cancelled() {
                    return Ok(Vec::new());
                }
                // Subscribed before looking, so a publish landing after the
                // look still wakes us.
                let woken = self.backend.woken.notified();
                let mut woken = std::pin::pin!(woken);
                woken.as_mut().enable();
                self.expire().await?;
                self.take_in().await?;
                let got = self.lease(max.max(1)).await?;
                let now = tokio::time::Instant::now();
                if !got.is_empty() || now >= deadline {
                    return Ok(got);
                }
                let tick = (now + POLL_INTERVAL).min(deadline);
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep_until(tick) => {}
                    () = self.stop.cancelled() => return Ok(Vec::new()),
                }
            }
        })
    }

    fn answer<'a>(
        &'a self,
        ticket: &'a Ticket,
        answer: Answer<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let (p, o, lease) = place(ticket);
            let mut client = self.backend.pool.get().await.map_err(pool_err)?;
            if answer == Answer::Ack {
                let deleted = client
                    .execute(
                        "DELETE FROM tidings_toolkit_pending
                         WHERE queue = $1 AND partition = $2 AND \"offset\" = $3 AND lease = $4
                           AND lease_until_ms >= tidings_toolkit_now_ms()",
                        &[&self.group, &p, &o, &lease],
                    )
                    .await
                    .map_err(pg_err)?;
                return if deleted == 1 {
                    Ok(())
                } else {
                    Err(Error::LeaseExpired(format!("{p}.{o}.{lease}")))
                };
            }
            let tx = client.transaction().await.map_err(pg_err)?;
            let attempts = self.held(&tx, ticket).await?;
            match answer {
                Answer::Ack => unreachable!("answered above"),
                Answer::Reject { reason } => {
                    self.dead_letter_in(&tx, p, o, attempts, reason).await?
                }
                Answer::Nack { reason, .. } if attempts >= self.config.max_deliveries => {
                    self.dead_letter_in(&tx, p, o, attempts, reason).await?;
                }
                Answer::Nack { delay, reason } => {
                    let retry = u32::try_from(attempts).unwrap_or(1);
                    let delay = delay
                        .unwrap_or_else(|| self.config.backoff.delay(retry, self.random.next()));
                    tx.execute(
                        "UPDATE tidings_toolkit_pending
                         SET lease = NULL, lease_until_ms = NULL, last_error = $4,
                             due_at_ms = tidings_toolkit_now_ms() + $5
                         WHERE queue = $1 AND partition = $2 AND \"offset\" = $3",
                        &[&self.group, &p, &o, &reason, &ms(delay)],
                    )
                    .await
                    .map_err(pg_err)?;
                }
                Answer::Release => {
                    tx.execute(
                        "UPDATE tidings_toolkit_pending
                         SET lease = NULL, lease_until_ms = NULL, attempts = attempts - 1, due_at_ms = 0
                         WHERE queue = $1 AND partition = $2 AND \"offset\" = $3",
                        &[&self.group, &p, &o],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
            tx.commit().await.map_err(pg_err)?;
            self.backend.woken.notify_waiters();
            Ok(())
        })
    }

    fn extend<'a>(
        &'a self,
        ticket: &'a Ticket,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let (p, o, lease) = place(ticket);
            let client = self.backend.pool.get().await.map_err(pool_err)?;
            let n = client
                .execute(
                    "UPDATE tidings_toolkit_pending SET lease_until_ms = tidings_toolkit_now_ms() + $5
                     WHERE queue = $1 AND partition = $2 AND \"offset\" = $3 AND lease = $4
                       AND lease_until_ms >= tidings_toolkit_now_ms()",
                    &[&self.group, &p, &o, &lease, &ms(timeout)],
                )
                .await
                .map_err(pg_err)?;
            if n == 1 {
                Ok(())
            } else {
                Err(Error::LeaseExpired(format!("{p}.{o}.{lease}")))
            }
        })
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.stop.cancel();
        Box::pin(async { Ok(()) })
    }
}
