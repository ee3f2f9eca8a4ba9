//! The transactional outbox on PostgreSQL: events staged in the caller's own
//! transaction, so the business write and its events commit or roll back
//! together, and a [`Relay`] that publishes them to any backend.
//!
//! - [`stage`] inserts events into `tidings_outbox` through the caller's
//!   client or transaction (`tokio-postgres`). Each row records the
//!   transaction's id (`pg_current_xact_id()`) and a sequence number.
//! - The [`Relay`] reads rows in (transaction id, sequence) order, only those
//!   of transactions older than every transaction still in flight
//!   (`txid < pg_snapshot_xmin(pg_current_snapshot())`): a row committed late
//!   by a long transaction is never passed over, and the order is the same
//!   whichever moment the relay looks. It publishes them in that order (one
//!   batch per run of a topic), with the events' own `id`, then deletes them,
//!   at most [`RelayOptions::batch_max`] at a time. A relay that dies between
//!   the publish and the delete publishes the same events again: a backend
//!   with publish dedup stores them once (the broker's window, NATS's, the
//!   PostgreSQL backend's unique index); elsewhere (Kafka) consumers see a
//!   duplicate with the same `id`, which an inbox drops.
//! - One relay publishes at a time: each holds a session advisory lock while
//!   it works, so more relays (one per instance of a service) stand by and
//!   take over when the active one goes away.
//! - An event a backend refuses for good (too large for it, say) would stop
//!   everything behind it; it moves to `tidings_outbox_dead` with the reason,
//!   and the relay goes on. Failures that may pass (the backend unreachable)
//!   are tried again after [`RelayOptions::retry_delay`].
//! - The cost of the visibility rule: a writing transaction left open holds
//!   back every row staged after it began, whatever it touches. The relay's
//!   [`RelayStats`] say how far behind it is (rows pending, age of the
//!   oldest), so an alert can fire before users notice.
//!
//! ```no_run
//! # async fn service(
//! #     client: &mut tokio_postgres::Client,
//! #     backend: std::sync::Arc<dyn tidings::Backend>,
//! #     shutdown: impl std::future::Future<Output = ()>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use tidings::outbox::{self, Relay, RelayOptions};
//! use tidings::{CloudEvent, Publisher};
//!
//! // The order and its event commit together, or neither does.
//! let tx = client.transaction().await?;
//! tx.execute("INSERT INTO orders (id, cents) VALUES ($1, $2)", &[&"o-17", &4200i64])
//!     .await?;
//! let placed = CloudEvent::new("/shop", "order.placed").with_partitionkey("o-17");
//! outbox::stage(&tx, "orders", &[placed]).await?;
//! tx.commit().await?;
//!
//! // In the background of every instance: one publishes, the others stand by.
//! let url = "postgres://app@localhost/shop";
//! let relay = Relay::connect(url, Publisher::new(backend), RelayOptions::default()).await?;
//! relay.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```

pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tidings_types::CloudEvent;
use tokio_postgres::GenericClient;

use crate::postgres::{listen, migrate, pg_err, pool, pool_err, Migrations};
use crate::{Error, Publisher};

/// The outbox's migrations, in order.
pub(crate) const MIGRATIONS: Migrations = Migrations {
    table: "tidings_outbox_migrations",
    lock: 0x7469_6469_6e67_7303,
    steps: &[(1, include_str!("postgres/outbox.sql"))],
};

/// The channel a staging transaction notifies at its commit, which wakes
/// the relay.
const CHANNEL: &str = "tidings_outbox";

/// The advisory lock the active relay holds.
const RELAY_LOCK: i64 = 0x7469_6469_6e67_7304;

/// Most events [`stage`] takes at once: a business transaction stages a
/// handful; more belongs in a bulk load.
pub const STAGE_EVENTS_MAX: usize = 10_000;

/// Creates the outbox's tables in the database `client` is connected to,
/// unless they are there already. [`Relay::connect`] does it too; call it
/// where an application migrates its own schema.
pub async fn install(client: &mut tokio_postgres::Client) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(pg_err)?;
    migrate(&tx, &MIGRATIONS).await?;
    tx.commit().await.map_err(pg_err)
}

/// Stages `events` for `topic` through `client`, normally the transaction
/// that makes the business write they announce: they are published if and
/// when it commits, never if it rolls back. Each event is checked first
/// (CloudEvents rules, the topic's name), so a bad one fails the caller's
/// transaction rather than the relay. One without a trace context gets the
/// caller's current span's, when spans are recorded: the relay's publish
/// continues the trace of the work that staged it.
pub async fn stage<C: GenericClient>(
    client: &C,
    topic: &str,
    events: &[CloudEvent],
) -> Result<(), Error> {
    tidings_types::TopicName::new(topic).map_err(|e| Error::Config(e.to_string()))?;
    if events.len() > STAGE_EVENTS_MAX {
        return Err(Error::InvalidEvent(format!(
            "{} events staged at once; at most {STAGE_EVENTS_MAX}",
            events.len()
        )));
    }
    let mut keys = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    let here = tidings_trace::context_of(&tracing::Span::current());
    for e in events {
        e.validate()
            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        keys.push(e.partitionkey().map(str::to_owned));
        // One without a trace context continues the trace of the work
        // staging it (when spans are recorded; else its publish starts one).
        let stamped;
        let e = if here.is_some() && e.traceparent().is_none() {
            let mut copy = e.clone();
            tidings_trace::stamp(&mut copy, here.as_ref());
            stamped = copy;
            &stamped
        } else {
            e
        };
        let json = e
            .to_json()
            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        bodies.push(String::from_utf8(json).map_err(|e| Error::InvalidEvent(e.to_string()))?);
    }
    // Sent together (pipelined): the notification goes out at the commit,
    // and wakes the relay at once.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&topic, &keys, &bodies];
    let channel: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&CHANNEL];
    let insert = client.execute(
        "INSERT INTO tidings_outbox (topic, partitionkey, event)
         SELECT $1, k, e FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS s(k, e, n)
         ORDER BY n",
        &params,
    );
    let notify = client.execute("SELECT pg_notify($1, '')", &channel);
    tokio::try_join!(insert, notify).map_err(pg_err)?;
    Ok(())
}

/// How a [`Relay`] works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayOptions {
    /// Most rows read, published and deleted at a time.
    pub batch_max: usize,
    /// How long an idle relay waits before it looks again when no commit
    /// woke it (notifications are a shortcut; a lost one only delays).
    pub poll_interval: Duration,
    /// How long it waits after a failure that may pass.
    pub retry_delay: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            batch_max: 256,
            poll_interval: Duration::from_millis(100),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// How far a relay has got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Events published since the relay started.
    pub published: u64,
    /// Events moved to `tidings_outbox_dead`.
    pub dead: u64,
    /// Rows waiting at the last look (committed or not).
    pub pending: u64,
    /// Age of the oldest waiting row at the last look: the relay's lag.
    pub lag: Duration,
    /// Whether this relay holds the lock (the others stand by).
    pub active: bool,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Publishes what [`stage`] staged; see the module documentation.
pub struct Relay {
    pool: Pool,
    /// Woken by a staging transaction's commit.
    woken: Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
    publisher: Publisher,
    options: RelayOptions,
    stats: Arc<Mutex<RelayStats>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A staged row.
struct Row {
    seq: i64,
    topic: String,
    event: String,
}

impl Relay {
    /// A relay from the outbox of the database at `url` to `publisher`'s
    /// backend; creates the outbox's tables when missing.
    pub async fn connect(
        url: &str,
        publisher: Publisher,
        options: RelayOptions,
    ) -> Result<Relay, Error> {
        if options.batch_max == 0 {
            return Err(Error::Config(
                "an outbox relay's batch_max must be at least 1".into(),
            ));
        }
        // One connection: the session that holds the relay lock is always
        // the one the relay unlocks on.
        let (pool, config) = pool(url, 1)?;
        let mut client = pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        migrate(&tx, &MIGRATIONS).await?;
        tx.commit().await.map_err(pg_err)?;
        drop(client);
        let woken = Arc::new(tokio::sync::Notify::new());
        let permit = Arc::clone(&woken);
        // `notify_one` keeps a permit while the relay is busy, so a commit
        // during a batch is looked for right after it.
        let listener = tokio::spawn(listen(config, CHANNEL, move || permit.notify_one()));
        Ok(Relay {
            pool,
            woken,
            listener,
            publisher,
            options,
            stats: Arc::default(),
        })
    }

    /// Where it stands; cheap, for metrics.
    pub fn stats(&self) -> RelayStats {
        self.stats.lock().expect("relay stats").clone()
    }

    /// Runs until `shutdown` completes: takes the relay lock (standing by
    /// while another relay holds it), then publishes batches as rows become
    /// visible. Failures that may pass are tried again; one that cannot (the
    /// database refusing the outbox's own statements) ends it.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        loop {
            let round = async {
                let client = self.pool.get().await.map_err(pool_err)?;
                // The lock belongs to this connection's session: it goes
                // when the connection does (a crash included).
                let locked: bool = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK])
                    .await
                    .map_err(pg_err)?
                    .get(0);
                self.stats.lock().expect("relay stats").active = locked;
                if !locked {
                    self.look(&client).await?;
                    return Ok::<_, Error>(false);
                }
                let result = self.drain(&client).await;
                // All of it: a round cut short by a shutdown left its hold.
                let unlocked = client.execute("SELECT pg_advisory_unlock_all()", &[]).await;
                self.stats.lock().expect("relay stats").active = false;
                result?;
                unlocked.map_err(pg_err)?;
                Ok(true)
            };
            let (wait, wake) = tokio::select! {
                () = &mut shutdown => return self.step_down().await,
                result = round => match result {
                    Ok(_) => (self.options.poll_interval, true),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "the outbox relay failed; trying again");
                        self.stats.lock().expect("relay stats").last_error = Some(e.to_string());
                        (self.options.retry_delay, false)
                    }
                    Err(e) => return Err(e),
                },
            };
            tokio::select! {
                () = &mut shutdown => return self.step_down().await,
                () = tokio::time::sleep(wait) => {}
                () = self.woken.notified(), if wake => {}
            }
        }
    }

    /// Gives the relay lock up at a shutdown, so a standby takes over while
    /// this relay is kept but not run; a round the shutdown cut short held
    /// it on the pool's one connection. A failure here only delays the
    /// standby until the connection closes.
    async fn step_down(&self) -> Result<(), Error> {
        self.stats.lock().expect("relay stats").active = false;
        match self.pool.get().await {
            Ok(client) => {
                if let Err(e) = client.execute("SELECT pg_advisory_unlock_all()", &[]).await {
                    tracing::warn!(error = %e, "the outbox relay could not give its lock up");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the outbox relay could not give its lock up"),
        }
        Ok(())
    }

    /// Publishes every visible row, batch after batch, while this relay
    /// holds the lock on `client`'s session; answers how many.
    async fn drain(&self, client: &deadpool_postgres::Client) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let n = self.relay_batch(client).await?;
            total += n;
            if n < self.options.batch_max as u64 {
                self.look(client).await?;
                return Ok(total);
            }
        }
    }

    /// Publishes one batch of visible rows, in order, then deletes them;
    /// answers how many rows it took (published or dead).
    async fn relay_batch(&self, client: &deadpool_postgres::Client) -> Result<u64, Error> {
        let limit = i64::try_from(self.options.batch_max).unwrap_or(i64::MAX);
        let rows: Vec<Row> = client
            .query(
                "SELECT seq, topic, event FROM tidings_outbox
                 WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY txid, seq LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| Row {
                seq: r.get(0),
                topic: r.get(1),
                event: r.get(2),
            })
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let mut done: Vec<i64> = Vec::with_capacity(rows.len());
        let mut dead: Vec<(i64, String)> = Vec::new();
        // One publish per run of rows of the same topic, in order.
        let mut start = 0;
        while start < rows.len() {
            let topic = &rows[start].topic;
            let end = rows[start..]
                .iter()
                .position(|r| &r.topic != topic)
                .map_or(rows.len(), |n| start + n);
            let run = &rows[start..end];
            match self.publish_run(topic, run).await {
                Ok(()) => done.extend(run.iter().map(|r| r.seq)),
                Err(e) if e.is_transient() => {
                    // What went out before stays done; the rest waits.
                    self.finish(client, &done, &dead).await?;
                    return Err(e);
                }
                // Refused for good: find which, one by one.
                Err(_) => {
                    for row in run {
                        match self.publish_run(topic, std::slice::from_ref(row)).await {
                            Ok(()) => done.push(row.seq),
                            Err(e) if e.is_transient() => {
                                self.finish(client, &done, &dead).await?;
                                return Err(e);
                            }
                            Err(e) => {
                                tracing::error!(seq = row.seq, topic = %topic, error = %e, "the backend refused a staged event for good; it moves to tidings_outbox_dead");
                                dead.push((row.seq, e.to_string()));
                            }
                        }
                    }
                }
            }
            start = end;
        }
        self.finish(client, &done, &dead).await?;
        Ok(rows.len() as u64)
    }

    async fn publish_run(&self, topic: &str, rows: &[Row]) -> Result<(), Error> {
        let events = rows
            .iter()
            .map(|r| {
                CloudEvent::from_json(r.event.as_bytes())
                    .map_err(|e| Error::InvalidEvent(format!("outbox row {}: {e}", r.seq)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.publisher.publish_all(topic, events).await.map(drop)
    }

    /// Deletes what was published and moves what was refused, in one
    /// transaction.
    async fn finish(
        &self,
        client: &deadpool_postgres::Client,
        done: &[i64],
        dead: &[(i64, String)],
    ) -> Result<(), Error> {
        if done.is_empty() && dead.is_empty() {
            return Ok(());
        }
        let dead_seqs: Vec<i64> = dead.iter().map(|(s, _)| *s).collect();
        let reasons: Vec<&str> = dead.iter().map(|(_, r)| r.as_str()).collect();
        client
            .execute(
                "WITH moved AS (
                   DELETE FROM tidings_outbox o
                   USING unnest($2::bigint[], $3::text[]) AS d(seq, reason)
                   WHERE o.seq = d.seq
                   RETURNING o.seq, o.topic, o.partitionkey, o.event, o.staged_at, d.reason
                 ), kept AS (
                   INSERT INTO tidings_outbox_dead (seq, topic, partitionkey, event, staged_at, reason)
                   SELECT seq, topic, partitionkey, event, staged_at, reason FROM moved
                 )
                 DELETE FROM tidings_outbox WHERE seq = ANY($1)",
                &[&done, &dead_seqs, &reasons],
            )
            .await
            .map_err(pg_err)?;
        let mut stats = self.stats.lock().expect("relay stats");
        stats.published += done.len() as u64;
        stats.dead += dead.len() as u64;
        stats.last_error = None;
        Ok(())
    }

    /// Measures the lag.
    async fn look(&self, client: &deadpool_postgres::Client) -> Result<(), Error> {
        let row = client
            .query_one(
                "SELECT count(*),
                        coalesce(extract(epoch FROM now() - min(staged_at)) * 1000, 0)::bigint
                 FROM tidings_outbox",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let (pending, lag_ms): (i64, i64) = (row.get(0), row.get(1));
        let mut stats = self.stats.lock().expect("relay stats");
        stats.pending = u64::try_from(pending).unwrap_or(0);
        stats.lag = Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0));
        Ok(())
    }
}
