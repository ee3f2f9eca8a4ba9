//! Sagas (process managers) on PostgreSQL: a typed state machine per saga,
//! one instance per correlation key, run on the router with an
//! [inbox](crate::inbox) and the [outbox](crate::outbox).
//!
//! - **Correlation.** [`Saga::correlate`] names the instance an event
//!   belongs to, and whether the event may start it. A start event inserts
//!   the instance if it is not there (`ON CONFLICT DO NOTHING`: of two start
//!   events at once, one creates it and the other waits, then joins it).
//! - **One input at a time per instance.** Every input (an event, a
//!   timeout, a compensation) is applied in a transaction that holds the
//!   instance's row (`FOR UPDATE`); inputs of other instances go on.
//! - **Exactly once.** An event's transition, the new state, its history
//!   row, the timeouts it schedules or cancels, the events it sends (staged
//!   in the outbox, published by a [`Relay`](crate::outbox::Relay)) and the
//!   inbox's record of the event commit together; a delivery of the same
//!   event again finds the record and changes nothing.
//! - **Timeouts** are rows with a due time. The runner's driver applies a
//!   due one as [`Saga::on_timeout`] in the transaction that deletes it, so
//!   it fires once, whatever the backend (Kafka has no delayed delivery);
//!   cancelling deletes it, and a timeout cancelled or rescheduled by a
//!   transition that got the row first does not fire.
//! - **Compensation**, routing-slip style: a transition adds a
//!   [`Compensation`] for each step done ([`Step::compensate_with`]); when
//!   one fails ([`Step::fail`]) the driver runs them last first, each in a
//!   transaction of its own with [`Saga::compensate`], tried again with
//!   backoff; a compensation that fails for good ends the instance `failed`
//!   and sends a dead letter (`<saga>.saga.dlq`, with the saga's id in the
//!   `sagaid` attribute) for an operator.
//! - **Inspection**: [`SagaRunner::instance`] (or [`inspect`] on any
//!   client) answers an instance's state, status, history, pending timeouts
//!   and compensations left.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use tidings::router::HandlerError;
//! use tidings::saga::{Compensation, Correlation, Saga, Step};
//! use tidings::CloudEvent;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Checkout { paid: bool }
//!
//! struct CheckoutSaga;
//!
//! impl Saga for CheckoutSaga {
//!     type State = Checkout;
//!
//!     fn name(&self) -> &str { "checkout" }
//!
//!     fn correlate(&self, event: &CloudEvent) -> Option<Correlation> {
//!         let order = event.partitionkey()?.to_owned();
//!         match event.ty() {
//!             "order.placed" => Some(Correlation::start(order)),
//!             "payment.succeeded" | "payment.failed" => Some(Correlation::join(order)),
//!             _ => None,
//!         }
//!     }
//!
//!     async fn on_event(&self, state: &mut Checkout, event: &CloudEvent, step: &mut Step) -> Result<(), HandlerError> {
//!         let order = event.partitionkey().unwrap_or_default().to_owned();
//!         match event.ty() {
//!             "order.placed" => {
//!                 step.send("stock", CloudEvent::new("/checkout", "stock.reserve").with_partitionkey(&order));
//!                 step.compensate_with("release-stock", serde_json::json!({ "order": order }));
//!                 step.send("payments", CloudEvent::new("/checkout", "payment.requested").with_partitionkey(&order));
//!                 step.schedule("payment-deadline", Duration::from_secs(600));
//!             }
//!             "payment.succeeded" => { state.paid = true; step.complete(); }
//!             _ => step.fail("the payment failed"),
//!         }
//!         Ok(())
//!     }
//!
//!     async fn on_timeout(&self, _state: &mut Checkout, _timeout: &str, step: &mut Step) -> Result<(), HandlerError> {
//!         step.fail("no payment in time");
//!         Ok(())
//!     }
//!
//!     async fn compensate(&self, compensation: &Compensation, step: &mut Step) -> Result<(), HandlerError> {
//!         let order = compensation.data["order"].as_str().unwrap_or_default();
//!         step.send("stock", CloudEvent::new("/checkout", "stock.release").with_partitionkey(order));
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Run it with [`SagaRunner::connect`] and [`SagaRunner::attach`] on a
//! route per topic it reads.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tidings_types::CloudEvent;
use tokio_postgres::GenericClient;

use crate::inbox::{Inbox, InboxOptions, InboxTx};
use crate::postgres::{listen, migrate, pg_err, pool, pool_err, Migrations};
use crate::router::{Context, ErrorClass, HandlerError, Retry, Route};
use crate::Error;

pub use tidings_store::sagas::{
    Compensation, HistoryEntry, Instance, InstanceSummary, PendingTimeout, Status,
};

/// The sagas' migrations, in order.
const MIGRATIONS: Migrations = Migrations {
    table: "tidings_saga_migrations",
    lock: 0x7469_6469_6e67_7306,
    steps: &[(1, tidings_store::sagas::SCHEMA)],
};

/// The channel a transition notifies when it schedules a timeout or starts
/// compensating, which wakes the drivers.
const CHANNEL: &str = "tidings_sagas";

/// Which instance an event belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correlation {
    /// The instance's key (an order id, say).
    pub key: String,
    /// Whether the event creates the instance when it is not there.
    pub starts: bool,
}

impl Correlation {
    /// The instance `key`, created by this event if it is not there.
    pub fn start(key: impl Into<String>) -> Correlation {
        Correlation {
            key: key.into(),
            starts: true,
        }
    }

    /// The instance `key`, which must exist: an event for an instance not
    /// started yet (it came before its start event) is tried again.
    pub fn join(key: impl Into<String>) -> Correlation {
        Correlation {
            key: key.into(),
            starts: false,
        }
    }
}

/// How a transition ends the saga.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Complete,
    Fail(String),
}

/// What a transition does besides changing the state: events to send,
/// timeouts to schedule or cancel, compensations to remember, and whether
/// the saga ends.
#[derive(Debug, Default)]
pub struct Step {
    sends: Vec<(String, CloudEvent)>,
    schedules: Vec<(String, Duration)>,
    cancels: Vec<String>,
    compensations: Vec<Compensation>,
    end: Option<End>,
}

impl Step {
    /// Sends `event` to `topic` if the transition commits (through the
    /// outbox), in the flow's correlation.
    pub fn send(&mut self, topic: &str, event: CloudEvent) {
        self.sends.push((topic.to_owned(), event));
    }

    /// Applies [`Saga::on_timeout`] with `name` after `after`, unless
    /// cancelled first; replaces a pending timeout of the same name.
    pub fn schedule(&mut self, name: &str, after: Duration) {
        self.cancels.retain(|c| c != name);
        self.schedules.push((name.to_owned(), after));
    }

    /// Cancels the pending timeout `name`, if any.
    pub fn cancel(&mut self, name: &str) {
        self.schedules.retain(|(n, _)| n != name);
        self.cancels.push(name.to_owned());
    }

    /// Remembers a compensation for the step this transition did; it runs
    /// if the saga fails later, after the ones added after it.
    pub fn compensate_with(&mut self, name: &str, data: serde_json::Value) {
        self.compensations.push(Compensation {
            name: name.to_owned(),
            data,
        });
    }

    /// Ends the saga as completed: pending timeouts are cancelled, later
    /// events ignored.
    pub fn complete(&mut self) {
        self.end = Some(End::Complete);
    }

    /// Ends the saga as failed, for `reason`: pending timeouts are
    /// cancelled, and its compensations run, last first.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.end = Some(End::Fail(reason.into()));
    }
}

/// A saga: its state, how events find their instance, and its transitions.
/// Transitions are `async` and may fail like handlers: the error's class
/// decides (tried again, or dead-lettered), and nothing of the transition
/// is kept.
pub trait Saga: Send + Sync + 'static {
    /// An instance's state, stored as JSON; a new instance starts from
    /// `Default`.
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// The saga's name, unique in the database; its dead letters go to
    /// `<name>.saga.dlq`.
    fn name(&self) -> &str;

    /// The instance `event` belongs to; `None`: not for this saga
    /// (acknowledged and ignored).
    fn correlate(&self, event: &CloudEvent) -> Option<Correlation>;

    /// Applies `event` to a running instance.
    fn on_event(
        &self,
        state: &mut Self::State,
        event: &CloudEvent,
        step: &mut Step,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies the due timeout `timeout` to a running instance. Does
    /// nothing by default.
    fn on_timeout(
        &self,
        state: &mut Self::State,
        timeout: &str,
        step: &mut Step,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (state, timeout, step);
        async { Ok(()) }
    }

    /// Runs `compensation` of a failed instance; only the step's sends
    /// count. Should be idempotent: a crash after its effect and before its
    /// commit runs it again. Fails by default: a saga that adds
    /// compensations implements it.
    fn compensate(
        &self,
        compensation: &Compensation,
        step: &mut Step,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = step;
        let error = HandlerError::dead_letter(format!(
            "the saga does not implement compensate, and compensation {:?} was added",
            compensation.name
        ));
        async move { Err(error) }
    }
}

/// How a [`SagaRunner`] works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SagaOptions {
    /// The inbox of the routes the runner is attached to.
    pub inbox: InboxOptions,
    /// How often the driver looks for due timeouts and compensations when
    /// nothing woke it (a transition that schedules or fails wakes it).
    pub poll_interval: Duration,
    /// Most timeouts fired, or instances compensated, per look.
    pub batch_max: usize,
    /// Tries of one compensation before the instance is dead-lettered.
    pub compensation_retry: Retry,
}

impl Default for SagaOptions {
    fn default() -> Self {
        SagaOptions {
            inbox: InboxOptions::default(),
            poll_interval: Duration::from_secs(1),
            batch_max: 64,
            compensation_retry: Retry {
                tries: 5,
                ..Retry::default()
            },
        }
    }
}

/// Runs a [`Saga`]: its transitions on the routes it is attached to, its
/// timeouts and compensations in a driver task of its own. Instances of
/// the service may each run one; they share the work.
pub struct SagaRunner<S: Saga> {
    shared: Arc<Shared<S>>,
    driver: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
}

impl<S: Saga> Drop for SagaRunner<S> {
    fn drop(&mut self) {
        self.driver.abort();
        self.listener.abort();
    }
}

impl<S: Saga> std::fmt::Debug for SagaRunner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &self.shared.saga.name())
            .finish_non_exhaustive()
    }
}

struct Shared<S: Saga> {
    saga: S,
    pool: Pool,
    inbox: Inbox,
    options: SagaOptions,
    woken: tokio::sync::Notify,
}

impl<S: Saga> SagaRunner<S> {
    /// A runner of `saga` on the database at `url`: creates the sagas',
    /// the inbox's and the outbox's tables when missing, and starts the
    /// driver.
    pub async fn connect(url: &str, saga: S, options: SagaOptions) -> Result<SagaRunner<S>, Error> {
        let name = saga.name().to_owned();
        if name.is_empty() {
            return Err(Error::Config("a saga needs a name".into()));
        }
        tidings_types::TopicName::new(&dead_letter_topic(&name)).map_err(|e| {
            Error::Config(format!(
                "saga name {name:?} does not make a topic name for its dead letters: {e}"
            ))
        })?;
        if options.batch_max == 0 || options.poll_interval.is_zero() {
            return Err(Error::Config(
                "a saga runner's batch_max and poll_interval must be above zero".into(),
            ));
        }
        let inbox = Inbox::connect(url, options.inbox).await?;
        let (pool, config) = pool(url, 2)?;
        {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg_err)?;
            migrate(&tx, &MIGRATIONS).await?;
            tx.commit().await.map_err(pg_err)?;
        }
        let shared = Arc::new(Shared {
            saga,
            pool,
            inbox,
            options,
            woken: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&shared);
        let listener = tokio::spawn(listen(config, CHANNEL, move || {
            if let Some(shared) = weak.upgrade() {
                shared.woken.notify_one();
            }
        }));
        let driver = tokio::spawn(drive(Arc::downgrade(&shared)));
        Ok(SagaRunner {
            shared,
            driver,
            listener,
        })
    }

    /// Handles `route`'s events as this saga's inputs: wraps the route in
    /// the runner's inbox and registers the saga for every event type.
    pub fn attach(&self, route: &mut Route) {
        let shared = Arc::clone(&self.shared);
        route
            .wrap(self.shared.inbox.clone())
            .on_event("*", move |ctx: Context| {
                let shared = Arc::clone(&shared);
                async move { shared.handle(ctx).await }
            });
    }

    /// The inbox the runner's routes share.
    pub fn inbox(&self) -> &Inbox {
        &self.shared.inbox
    }

    /// Instance `key`, as it stands.
    pub async fn instance(&self, key: &str) -> Result<Option<Instance>, Error> {
        let client = self.shared.pool.get().await.map_err(pool_err)?;
        inspect(&**client, self.shared.saga.name(), key).await
    }

    /// Instance `key`'s state, typed.
    pub async fn state(&self, key: &str) -> Result<Option<(Status, S::State)>, Error> {
        let Some(instance) = self.instance(key).await? else {
            return Ok(None);
        };
        let state = serde_json::from_value(instance.state)
            .map_err(|e| Error::backend("postgres", format!("saga instance {key}'s state: {e}")))?;
        Ok(Some((instance.status, state)))
    }
}

/// The dead-letter topic of saga `name`.
pub fn dead_letter_topic(name: &str) -> String {
    format!("{name}.saga.dlq")
}

/// An instance's row, locked.
struct Row {
    status: Status,
    state: String,
    compensations: Vec<Compensation>,
    correlation: String,
    version: i64,
}

/// What a transition changes, for [`Shared::save`].
struct Change<'a> {
    key: &'a str,
    version: i64,
    status: Status,
    state: String,
    compensations: &'a [Compensation],
    input: String,
    note: Option<String>,
}

impl<S: Saga> Shared<S> {
    fn name(&self) -> &str {
        self.saga.name()
    }

    /// An event's transition, inside the inbox's transaction.
    async fn handle(&self, ctx: Context) -> Result<(), HandlerError> {
        let Some(correlation) = self.saga.correlate(ctx.event()) else {
            return Ok(());
        };
        let tx = InboxTx::of(&ctx)?;
        let db: &tokio_postgres::Client = &tx;
        let key = correlation.key.as_str();
        let event = ctx.event();
        if correlation.starts {
            let started = db
                .execute(
                    "INSERT INTO tidings_sagas (saga, key, status, state, correlation)
                     VALUES ($1, $2, 'running', $3, $4) ON CONFLICT DO NOTHING",
                    &[
                        &self.name(),
                        &key,
                        &to_json(&S::State::default())?,
                        &event.correlationid().unwrap_or(event.id()),
                    ],
                )
                .await
                .map_err(retry)?;
            if started == 1 {
                tracing::debug!(saga = self.name(), key, "saga instance started");
            }
        }
        let Some(row) = self
            .lock(db, key, false)
            .await
            .map_err(HandlerError::from)?
        else {
            return Err(HandlerError::retry(format!(
                "saga {} has no instance {key} yet for {} event {}: tried again until its start event came",
                self.name(),
                event.ty(),
                event.id()
            )));
        };
        if row.status != Status::Running {
            tracing::debug!(
                saga = self.name(),
                key,
                status = %row.status,
                ty = event.ty(),
                "the instance takes no more events; ignored"
            );
            return Ok(());
        }
        let mut state: S::State = from_json(&row.state, key)?;
        let mut step = Step::default();
        self.saga.on_event(&mut state, event, &mut step).await?;
        let input = format!("event {} {}", event.ty(), event.id());
        // What the transition sends goes out with the handled event's
        // correlation, staged by the inbox in this transaction.
        for (topic, e) in std::mem::take(&mut step.sends) {
            ctx.emit(&topic, e);
        }
        self.transition(db, key, row, state, step, input)
            .await
            .map_err(HandlerError::from)
    }

    /// Saves a transition's outcome on a locked instance.
    async fn transition<C: GenericClient + Sync>(
        &self,
        db: &C,
        key: &str,
        row: Row,
        state: S::State,
        step: Step,
        input: String,
    ) -> Result<(), Error> {
        let mut compensations = row.compensations;
        compensations.extend(step.compensations);
        let (status, note) = match step.end {
            None => (Status::Running, None),
            Some(End::Complete) => (Status::Completed, None),
            Some(End::Fail(reason)) if compensations.is_empty() => {
                (Status::Compensated, Some(reason))
            }
            Some(End::Fail(reason)) => (Status::Compensating, Some(reason)),
        };
        if status == Status::Running {
            if !step.cancels.is_empty() {
                db.execute(
                    "DELETE FROM tidings_saga_timeouts WHERE saga = $1 AND key = $2 AND name = ANY($3)",
                    &[&self.name(), &key, &step.cancels],
                )
                .await
                .map_err(pg_err)?;
            }
            for (name, after) in &step.schedules {
                db.execute(
                    "INSERT INTO tidings_saga_timeouts (saga, key, name, due_at)
                     VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                     ON CONFLICT (saga, key, name) DO UPDATE SET due_at = EXCLUDED.due_at",
                    &[&self.name(), &key, name, &after.as_secs_f64()],
                )
                .await
                .map_err(pg_err)?;
            }
        } else {
            db.execute(
                "DELETE FROM tidings_saga_timeouts WHERE saga = $1 AND key = $2",
                &[&self.name(), &key],
            )
            .await
            .map_err(pg_err)?;
        }
        if !step.schedules.is_empty() || status == Status::Compensating {
            db.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await
                .map_err(pg_err)?;
        }
        self.save(
            db,
            Change {
                key,
                version: row.version,
                status,
                state: to_json(&state)?,
                compensations: &compensations,
                input,
                note,
            },
        )
        .await
    }

    /// Writes an instance's new row and its history entry.
    async fn save<C: GenericClient + Sync>(&self, db: &C, change: Change<'_>) -> Result<(), Error> {
        let version = change.version + 1;
        let compensations = to_json(&change.compensations)?;
        let (name, status) = (self.name(), change.status.as_str());
        let update_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &name,
            &change.key,
            &status,
            &change.state,
            &compensations,
            &version,
        ];
        let history_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &name,
            &change.key,
            &version,
            &change.input,
            &status,
            &change.note,
        ];
        // Sent together (pipelined).
        let update = db.execute(
            "UPDATE tidings_sagas SET status = $3, state = $4, compensations = $5,
                 version = $6, updated_at = now()
             WHERE saga = $1 AND key = $2",
            &update_params,
        );
        let history = db.execute(
            "INSERT INTO tidings_saga_history (saga, key, version, input, status, note)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &history_params,
        );
        tokio::try_join!(update, history).map_err(pg_err)?;
        Ok(())
    }

    /// Instance `key`'s row, locked by this transaction; with `skip`, `None`
    /// also when another transaction holds it.
    async fn lock<C: GenericClient + Sync>(
        &self,
        db: &C,
        key: &str,
        skip: bool,
    ) -> Result<Option<Row>, Error> {
        let sql = if skip {
            "SELECT status, state, compensations, correlation, version FROM tidings_sagas
             WHERE saga = $1 AND key = $2 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT status, state, compensations, correlation, version FROM tidings_sagas
             WHERE saga = $1 AND key = $2 FOR UPDATE"
        };
        let Some(row) = db
            .query_opt(sql, &[&self.name(), &key])
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let compensations: String = row.get(2);
        Ok(Some(Row {
            status: Status::parse(row.get(0)).map_err(store_err)?,
            state: row.get(1),
            compensations: serde_json::from_str(&compensations).map_err(|e| {
                Error::backend(
                    "postgres",
                    format!("saga instance {key}'s compensations: {e}"),
                )
            })?,
            correlation: row.get(3),
            version: row.get(4),
        }))
    }

    /// Stages `sends` in the outbox, in the instance's correlation.
    async fn stage<C: GenericClient + Sync>(
        db: &C,
        sends: Vec<(String, CloudEvent)>,
        correlation: &str,
    ) -> Result<(), Error> {
        let sends = sends
            .into_iter()
            .map(|(t, e)| (t, e.with_correlationid(correlation)))
            .collect();
        for (topic, batch) in crate::router::runs_by_topic(sends) {
            crate::outbox::stage(db, &topic, &batch).await?;
        }
        Ok(())
    }

    /// Fires up to `batch_max` due timeouts; answers how many it looked at.
    async fn fire_timeouts(&self) -> Result<usize, Error> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let limit = i64::try_from(self.options.batch_max).unwrap_or(i64::MAX);
        let due: Vec<(String, String)> = client
            .query(
                "SELECT key, name FROM tidings_saga_timeouts
                 WHERE saga = $1 AND due_at <= now() ORDER BY due_at LIMIT $2",
                &[&self.name(), &limit],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (key, name) in &due {
            let tx = client.transaction().await.map_err(pg_err)?;
            // The instance first, as a transition takes it: no lock cycle.
            let Some(row) = self.lock(&*tx, key, true).await? else {
                continue;
            };
            let fired = tx
                .execute(
                    "DELETE FROM tidings_saga_timeouts
                     WHERE saga = $1 AND key = $2 AND name = $3 AND due_at <= now()",
                    &[&self.name(), key, name],
                )
                .await
                .map_err(pg_err)?;
            if fired == 0 || row.status != Status::Running {
                // Cancelled or moved meanwhile, or the instance has ended.
                tx.commit().await.map_err(pg_err)?;
                continue;
            }
            let mut state: S::State = from_json(&row.state, key).map_err(into_error)?;
            let mut step = Step::default();
            let input = format!("timeout {name}");
            match self.saga.on_timeout(&mut state, name, &mut step).await {
                Ok(()) => {
                    let correlation = row.correlation.clone();
                    Self::stage(&*tx, std::mem::take(&mut step.sends), &correlation).await?;
                    self.transition(&*tx, key, row, state, step, input).await?;
                }
                Err(e) if e.class() == ErrorClass::Retry => {
                    tracing::warn!(saga = self.name(), key, timeout = %name, error = %e, "a saga timeout failed; it fires again");
                    continue;
                }
                Err(e) => {
                    self.dead_letter(&*tx, key, row, &input, e.message())
                        .await?;
                }
            }
            tx.commit().await.map_err(pg_err)?;
        }
        Ok(due.len())
    }

    /// Runs the compensations of up to `batch_max` compensating instances;
    /// answers how many instances it looked at.
    async fn compensate(&self) -> Result<usize, Error> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let limit = i64::try_from(self.options.batch_max).unwrap_or(i64::MAX);
        let keys: Vec<String> = client
            .query(
                "SELECT key FROM tidings_sagas WHERE saga = $1 AND status = 'compensating'
                 ORDER BY updated_at LIMIT $2",
                &[&self.name(), &limit],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for key in &keys {
            let mut try_number = 1;
            loop {
                let tx = client.transaction().await.map_err(pg_err)?;
                let Some(mut row) = self.lock(&*tx, key, true).await? else {
                    break;
                };
                if row.status != Status::Compensating {
                    break;
                }
                let Some(compensation) = row.compensations.last().cloned() else {
                    let state = std::mem::take(&mut row.state);
                    self.save(
                        &*tx,
                        Change {
                            key,
                            version: row.version,
                            status: Status::Compensated,
                            state,
                            compensations: &[],
                            input: "compensation done".into(),
                            note: None,
                        },
                    )
                    .await?;
                    tx.commit().await.map_err(pg_err)?;
                    break;
                };
                let input = format!("compensation {}", compensation.name);
                let mut step = Step::default();
                match self.saga.compensate(&compensation, &mut step).await {
                    Ok(()) => {
                        Self::stage(&*tx, step.sends, &row.correlation).await?;
                        row.compensations.pop();
                        let status = if row.compensations.is_empty() {
                            Status::Compensated
                        } else {
                            Status::Compensating
                        };
                        let state = std::mem::take(&mut row.state);
                        self.save(
                            &*tx,
                            Change {
                                key,
                                version: row.version,
                                status,
                                state,
                                compensations: &row.compensations,
                                input,
                                note: None,
                            },
                        )
                        .await?;
                        tx.commit().await.map_err(pg_err)?;
                        try_number = 1;
                        if status == Status::Compensated {
                            break;
                        }
                    }
                    Err(e)
                        if e.class() == ErrorClass::Retry
                            && try_number < self.options.compensation_retry.tries =>
                    {
                        drop(tx);
                        let wait = self
                            .options
                            .compensation_retry
                            .backoff
                            .delay(try_number, crate::random_seed());
                        tracing::warn!(saga = self.name(), key, compensation = %compensation.name, error = %e, try_number, "a compensation failed; trying again");
                        tokio::time::sleep(wait).await;
                        try_number += 1;
                    }
                    Err(e) => {
                        self.dead_letter(&*tx, key, row, &input, e.message())
                            .await?;
                        tx.commit().await.map_err(pg_err)?;
                        break;
                    }
                }
            }
        }
        Ok(keys.len())
    }

    /// Ends a locked instance `failed` and stages its dead letter.
    async fn dead_letter<C: GenericClient + Sync>(
        &self,
        db: &C,
        key: &str,
        row: Row,
        input: &str,
        reason: &str,
    ) -> Result<(), Error> {
        tracing::error!(
            saga = self.name(),
            key,
            input,
            reason,
            "a saga instance failed for good; dead-lettered"
        );
        db.execute(
            "DELETE FROM tidings_saga_timeouts WHERE saga = $1 AND key = $2",
            &[&self.name(), &key],
        )
        .await
        .map_err(pg_err)?;
        let letter = CloudEvent::new(
            format!("/tidings/sagas/{}", self.name()),
            "tidings.saga.failed",
        )
        .with_partitionkey(key)
        .with_extension("sagaid", format!("{}/{key}", self.name()))
        .map_err(|e| Error::InvalidEvent(e.to_string()))?
        .with_json(&serde_json::json!({
            "saga": self.name(),
            "key": key,
            "input": input,
            "reason": reason,
            "compensations_left": row.compensations,
            "state": serde_json::from_str::<serde_json::Value>(&row.state).unwrap_or_default(),
        }))
        .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        let topic = dead_letter_topic(self.name());
        Self::stage(db, vec![(topic, letter)], &row.correlation).await?;
        self.save(
            db,
            Change {
                key,
                version: row.version,
                status: Status::Failed,
                state: row.state.clone(),
                compensations: &row.compensations,
                input: input.to_owned(),
                note: Some(reason.to_owned()),
            },
        )
        .await
    }

    /// How long until the next timeout is due, if one is within `max`.
    async fn next_due(&self, max: Duration) -> Result<Duration, Error> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let seconds: Option<f64> = client
            .query_one(
                "SELECT EXTRACT(EPOCH FROM min(due_at) - now())::float8
                 FROM tidings_saga_timeouts WHERE saga = $1",
                &[&self.name()],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        Ok(match seconds {
            Some(s) if s <= 0.0 => Duration::ZERO,
            Some(s) => Duration::from_secs_f64(s).min(max),
            None => max,
        })
    }
}

/// The driver: fires due timeouts and runs compensations until the runner
/// goes.
async fn drive<S: Saga>(shared: Weak<Shared<S>>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let round = async {
            let fired = s.fire_timeouts().await?;
            let compensated = s.compensate().await?;
            let busy = fired == s.options.batch_max || compensated == s.options.batch_max;
            let wait = if busy {
                Duration::ZERO
            } else {
                s.next_due(s.options.poll_interval).await?
            };
            Ok::<_, Error>(wait)
        };
        let wait = match round.await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(saga = s.name(), error = %e, "the saga driver failed; trying again");
                s.options.poll_interval
            }
        };
        let woken = async {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = s.woken.notified() => {}
            }
        };
        woken.await;
    }
}

fn retry(e: tokio_postgres::Error) -> HandlerError {
    HandlerError::retry(pg_err(e))
}

fn into_error(e: HandlerError) -> Error {
    Error::backend("postgres", e)
}

/// A saga's state or compensations as JSON; a failure is for good (the
/// event is dead-lettered).
fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value)
        .map_err(|e| Error::InvalidEvent(format!("a saga's state does not encode as JSON: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str, key: &str) -> Result<T, HandlerError> {
    serde_json::from_str(text).map_err(|e| {
        HandlerError::dead_letter(format!(
            "saga instance {key}'s stored state does not decode: {e}"
        ))
    })
}

/// The toolkit's error for a failure reading the sagas' tables.
fn store_err(e: tidings_store::StoreError) -> Error {
    match e {
        tidings_store::StoreError::Postgres(e) => pg_err(e),
        tidings_store::StoreError::Pool(m) => Error::transient("postgres", m),
        other => Error::backend("postgres", other),
    }
}

/// Instance `key` of saga `saga`, read through `client` from the sagas'
/// tables (for tools that do not run the saga).
pub async fn inspect<C: GenericClient>(
    client: &C,
    saga: &str,
    key: &str,
) -> Result<Option<Instance>, Error> {
    tidings_store::sagas::inspect(client, saga, key)
        .await
        .map_err(store_err)
}

/// Instances of saga `saga` read through `client`, with `status` if given,
/// most recently changed first, at most `limit`.
pub async fn list<C: GenericClient>(
    client: &C,
    saga: &str,
    status: Option<Status>,
    limit: usize,
) -> Result<Vec<InstanceSummary>, Error> {
    tidings_store::sagas::list(client, saga, status, limit)
        .await
        .map_err(store_err)
}
