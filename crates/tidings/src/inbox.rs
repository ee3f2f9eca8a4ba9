//! The inbox on PostgreSQL: an idempotent consumer, as [`Middleware`].
//!
//! Around every try of a route's handler the [`Inbox`] opens a transaction,
//! records the event (`(group, source, id)` in `tidings_inbox`: the
//! group's, whichever topic brought it, a retry topic or a redrive) in it, and hands it to the handler as an [`InboxTx`], for the handler's own
//! writes. The handler's success commits all of it together: the effects,
//! the record, and the events the handler emitted, which go into the
//! [outbox](crate::outbox) in that same transaction. Its failure rolls all
//! of it back. So:
//!
//! - an event delivered again after its handler's transaction committed (the
//!   acknowledgement lost to a crash, a cut connection, an expired lease)
//!   finds its record, and is acknowledged without running the handler;
//! - two deliveries of one event at once (a lease that ran out while the
//!   first still ran) are serialised by the record's key: the second waits
//!   for the first's transaction, then runs only if it rolled back;
//! - what the handler emitted is published by the outbox's
//!   [`Relay`](crate::outbox::Relay) even if the process dies right after
//!   the commit: **a route with an inbox needs a relay running**, from the
//!   same database to the backend its emitted events are for.
//!
//! Records are kept for [`InboxOptions::retention`] (7 days by default, as
//! long as Kafka keeps a topic's records by default) and deleted afterwards
//! in bounded batches by a task of the inbox's own, off the handlers' path.
//! [`Router::run`](crate::router::Router::run) refuses a route whose policy
//! can deliver an event again later than that
//! ([`RoutePolicy::redelivery_horizon`]): an inbox that forgot too early
//! would let the effect happen twice.
//!
//! ```no_run
//! # async fn service(
//! #     backend: std::sync::Arc<dyn tidings::Backend>,
//! #     shutdown: impl std::future::Future<Output = ()> + Send,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use tidings::inbox::{Inbox, InboxOptions, InboxTx};
//! use tidings::router::{Context, Router};
//!
//! let inbox = Inbox::connect("postgres://app@localhost/billing", InboxOptions::default()).await?;
//! let mut router = Router::new(backend);
//! router
//!     .route("orders", "billing")
//!     .wrap(inbox.clone())
//!     .on_event("order.placed", |ctx: Context| async move {
//!         // Charged once per order, however often the event comes.
//!         let tx = InboxTx::of(&ctx)?;
//!         tx.execute("INSERT INTO charges (order_id) VALUES ($1)", &[&ctx.event().id()])
//!             .await?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     });
//! router.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```

pub mod store;

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::backend::BoxFuture;
use crate::postgres::{migrate, pg_err, pool, pool_err, Migrations};
use crate::router::{Context, HandlerError, Middleware, Next, RoutePolicy};
use crate::Error;

/// The inbox's migrations, in order.
const MIGRATIONS: Migrations = Migrations {
    table: "tidings_inbox_migrations",
    lock: 0x7469_6469_6e67_7305,
    steps: &[(1, include_str!("postgres/inbox.sql"))],
};

/// How long a cleanup pass rests between two batches, so it never holds the
/// table's index hot for long.
const CLEANUP_PAUSE: Duration = Duration::from_millis(10);

/// How an [`Inbox`] works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxOptions {
    /// How long a handled event is remembered. At least the longest a route
    /// can deliver an event again ([`RoutePolicy::redelivery_horizon`]), plus
    /// however long a consumer may stay down, plus any replay window.
    pub retention: Duration,
    /// Connections to PostgreSQL: one per handler running at once (a
    /// handler's transaction holds one while it runs), plus one for the
    /// cleanup.
    pub connections: usize,
    /// How often the cleanup looks for records past their retention.
    pub cleanup_interval: Duration,
    /// Most records deleted by one statement of the cleanup.
    pub cleanup_batch_max: usize,
}

impl Default for InboxOptions {
    fn default() -> Self {
        InboxOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            connections: 17,
            cleanup_interval: Duration::from_secs(60),
            cleanup_batch_max: 1000,
        }
    }
}

/// What an inbox has done since it was connected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Events whose handler's transaction committed.
    pub handled: u64,
    /// Deliveries of events handled before, acknowledged without the handler.
    pub duplicates: u64,
    /// Records deleted past their retention.
    pub cleaned: u64,
    /// The last cleanup's failure, if it failed.
    pub last_cleanup_error: Option<String>,
}

/// The idempotent-consumer middleware; see the module documentation. Clones
/// share the pool, the cleanup and the counts.
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    options: InboxOptions,
    handled: AtomicU64,
    duplicates: AtomicU64,
    cleaned: Arc<AtomicU64>,
    last_cleanup_error: Arc<Mutex<Option<String>>>,
    cleaner: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cleaner.abort();
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox in the database at `url`; creates its table and the
    /// outbox's when missing, and starts the cleanup.
    pub async fn connect(url: &str, options: InboxOptions) -> Result<Inbox, Error> {
        if options.retention.is_zero() {
            return Err(Error::Config(
                "an inbox's retention must be above zero".into(),
            ));
        }
        if options.connections < 2 {
            return Err(Error::Config(
                "an inbox needs at least 2 connections: one for a handler, one for the cleanup"
                    .into(),
            ));
        }
        if options.cleanup_batch_max == 0 || options.cleanup_interval.is_zero() {
            return Err(Error::Config(
                "an inbox's cleanup_batch_max and cleanup_interval must be above zero".into(),
            ));
        }
        let (pool, _) = pool(url, options.connections)?;
        {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg_err)?;
            migrate(&tx, &MIGRATIONS).await?;
            migrate(&tx, &crate::outbox::MIGRATIONS).await?;
            tx.commit().await.map_err(pg_err)?;
        }
        let cleaned = Arc::new(AtomicU64::new(0));
        let last_cleanup_error = Arc::new(Mutex::new(None));
        let cleaner = tokio::spawn(clean_forever(
            pool.clone(),
            options,
            Arc::clone(&cleaned),
            Arc::clone(&last_cleanup_error),
        ));
        Ok(Inbox {
            inner: Arc::new(Inner {
                pool,
                options,
                handled: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                cleaned,
                last_cleanup_error,
                cleaner,
            }),
        })
    }

    /// What it has done; cheap, for metrics.
    pub fn stats(&self) -> InboxStats {
        InboxStats {
            handled: self.inner.handled.load(Ordering::Relaxed),
            duplicates: self.inner.duplicates.load(Ordering::Relaxed),
            cleaned: self.inner.cleaned.load(Ordering::Relaxed),
            last_cleanup_error: self
                .inner
                .last_cleanup_error
                .lock()
                .expect("inbox stats")
                .clone(),
        }
    }

    /// Deletes the records past their retention now, in bounded batches
    /// (the inbox's own task does it every
    /// [`cleanup_interval`](InboxOptions::cleanup_interval)); answers how
    /// many.
    pub async fn clean(&self) -> Result<u64, Error> {
        let n = clean(&self.inner.pool, &self.inner.options).await?;
        self.inner.cleaned.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    async fn handle(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
        let unreachable = |e: Error| HandlerError::retry(format!("the inbox failed: {e}"));
        let client = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| unreachable(pool_err(e)))?;
        // From here on, a transaction left open (an error, the try's timeout
        // dropping this future) takes its connection out of the pool.
        let tx = InboxTx {
            client: Some(client),
            open: AtomicBool::new(true),
        };
        tx.batch_execute("BEGIN")
            .await
            .map_err(|e| unreachable(pg_err(e)))?;
        let event = ctx.event();
        // A record of the same event in a transaction still in flight makes
        // this wait for its outcome.
        let recorded = tx
            .execute(
                "INSERT INTO tidings_inbox (consumer_group, source, id)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&ctx.group(), &event.source(), &event.id()],
            )
            .await
            .map_err(|e| unreachable(pg_err(e)))?;
        if recorded == 0 {
            tx.end("ROLLBACK").await.map_err(unreachable)?;
            self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                topic = ctx.topic(),
                group = ctx.group(),
                id = event.id(),
                "handled before; acknowledged without the handler"
            );
            return Ok(());
        }
        ctx.insert(tx);
        let tx = ctx.get::<InboxTx>().expect("inserted just now");
        // The context outlives the try: the transaction leaves it when the
        // try ends, by its end or by being dropped (its timeout), so a
        // transaction cut short is not kept open into the next try.
        let lent = Lent(ctx.clone());
        let result = next.run(ctx.clone()).await;
        drop(lent);
        match result {
            Ok(()) => {
                for (topic, batch) in crate::router::runs_by_topic(ctx.take_outputs()) {
                    crate::outbox::stage(&**tx, &topic, &batch)
                        .await
                        .map_err(|e| HandlerError::classified(format_stage_error(&topic, e)))?;
                }
                tx.end("COMMIT").await.map_err(|e| {
                    HandlerError::retry(format!(
                        "the inbox could not commit the handler's transaction (the next try finds out whether it did): {e}"
                    ))
                })?;
                self.inner.handled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // A rollback that fails leaves the transaction open: its
                // connection is closed when the last handle goes, which
                // rolls it back all the same.
                let _ = tx.end("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

/// Takes the [`InboxTx`] back out of a context when dropped.
struct Lent(Context);

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.remove::<InboxTx>();
    }
}

/// The error of staging a handler's emitted events, naming the topic.
fn format_stage_error(topic: &str, e: Error) -> Error {
    match e {
        Error::InvalidEvent(m) => Error::InvalidEvent(format!("an event emitted to {topic}: {m}")),
        other => other,
    }
}

impl Middleware for Inbox {
    fn call(&self, ctx: Context, next: Next) -> BoxFuture<'static, Result<(), HandlerError>> {
        let inbox = self.clone();
        Box::pin(async move { inbox.handle(ctx, next).await })
    }

    fn check(&self, route: &RoutePolicy) -> Result<(), String> {
        let horizon = route.redelivery_horizon();
        let retention = self.inner.options.retention;
        if retention < horizon {
            return Err(format!(
                "the inbox remembers a handled event for {}, but this route can deliver one again up to {} after it was handled ({} deliveries, each up to a lease of {}, its tries and a wait of {}): an event delivered again after the inbox forgot it would be handled twice; raise InboxOptions::retention, or lower the route's max_deliveries, ack_timeout or redelivery waits",
                seconds(retention),
                seconds(horizon),
                route.max_deliveries,
                seconds(route.ack_timeout),
                seconds(route.redelivery_wait_max),
            ));
        }
        Ok(())
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The transaction the [`Inbox`] opened for a try of the handler: run the
/// handler's writes through it (it derefs to a `tokio_postgres::Client`
/// inside the transaction, so `tx.execute(..)` and
/// [`outbox::stage(&*tx, ..)`](crate::outbox::stage) take part in it). The
/// inbox commits it when the handler succeeds and rolls it back when it
/// fails; a handler must not end it itself.
pub struct InboxTx {
    client: Option<deadpool_postgres::Object>,
    open: AtomicBool,
}

impl InboxTx {
    /// The transaction of the handler's try, from its context; an error
    /// when no inbox runs around the handler (a route not wrapped in one).
    pub fn of(ctx: &Context) -> Result<Arc<InboxTx>, HandlerError> {
        ctx.get::<InboxTx>().ok_or_else(|| {
            HandlerError::retry(format!(
                "no inbox runs around the handler of topic {} and group {}: wrap the route in an Inbox",
                ctx.topic(),
                ctx.group()
            ))
        })
    }

    /// Ends the transaction with `statement` (COMMIT or ROLLBACK); the
    /// connection goes back to the pool clean.
    async fn end(&self, statement: &str) -> Result<(), Error> {
        self.batch_execute(statement).await.map_err(pg_err)?;
        self.open.store(false, Ordering::Release);
        Ok(())
    }
}

impl Deref for InboxTx {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("the connection is there until drop")
    }
}

impl std::fmt::Debug for InboxTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxTx")
            .field("open", &self.open.load(Ordering::Acquire))
            .finish()
    }
}

impl Drop for InboxTx {
    fn drop(&mut self) {
        if self.open.load(Ordering::Acquire) {
            if let Some(client) = self.client.take() {
                // Out of the pool and closed: the server rolls the
                // transaction back, and no later user finds it open.
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }
}

/// Deletes the records past their retention, a batch at a time, until a
/// batch comes back short. `SKIP LOCKED`: rows another instance's cleanup
/// is deleting are left to it.
async fn clean(pool: &Pool, options: &InboxOptions) -> Result<u64, Error> {
    let client = pool.get().await.map_err(pool_err)?;
    let retention = options.retention.as_secs_f64();
    let batch_max = i64::try_from(options.cleanup_batch_max).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM tidings_inbox WHERE (consumer_group, source, id) IN (
                     SELECT consumer_group, source, id FROM tidings_inbox
                     WHERE handled_at < now() - make_interval(secs => $1)
                     ORDER BY handled_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&retention, &batch_max],
            )
            .await
            .map_err(pg_err)?;
        total += n;
        if n < options.cleanup_batch_max as u64 {
            return Ok(total);
        }
        tokio::time::sleep(CLEANUP_PAUSE).await;
    }
}

async fn clean_forever(
    pool: Pool,
    options: InboxOptions,
    cleaned: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    loop {
        tokio::time::sleep(options.cleanup_interval).await;
        let result = clean(&pool, &options).await;
        let mut last = last_error.lock().expect("inbox stats");
        match result {
            Ok(n) => {
                cleaned.fetch_add(n, Ordering::Relaxed);
                *last = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the inbox cleanup failed; trying again later");
                *last = Some(e.to_string());
            }
        }
    }
}
