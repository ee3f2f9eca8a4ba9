//! Projections: read models fed by a subscription.
//!
//! A [`Projection`] keeps its checkpoint with its model and stores both in one step,
//! so a crash never leaves a model that has applied events its checkpoint does not
//! cover (or the reverse). A [`Projector`] reads events from the model's checkpoint
//! on, hands them over in batches, and can rebuild the model from zero.
//! [`PgProjection`] does this for models kept in the same PostgreSQL database as
//! the store: the model's rows and the checkpoint commit in one transaction.

use std::future::Future;
use std::time::Duration;

use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::store::EventStore;
use crate::subscription::{Subscription, SUBSCRIPTION_BATCH_MAX};
use crate::types::{Position, RecordedEvent, Selector};
use crate::upcast::Upcasters;

/// A projection's own failure.
pub type ProjectionError = Box<dyn std::error::Error + Send + Sync>;

/// A read model with its checkpoint.
pub trait Projection: Send {
    /// The position after the last event the model has applied.
    fn checkpoint(&mut self) -> impl Future<Output = Result<Position, ProjectionError>> + Send;

    /// Applies `events` (in global order) and stores `checkpoint` with the model,
    /// atomically.
    fn apply(
        &mut self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Empties the model and sets its checkpoint back to the start.
    fn reset(&mut self) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// Feeds a projection from a store.
#[derive(Debug)]
pub struct Projector<S, P> {
    store: S,
    selector: Selector,
    projection: P,
    upcasters: Upcasters,
}

impl<S: EventStore + Clone, P: Projection> Projector<S, P> {
    /// Feeds `projection` with the events `selector` chooses.
    pub fn new(store: S, selector: Selector, projection: P) -> Self {
        Projector {
            store,
            selector,
            projection,
            upcasters: Upcasters::new(),
        }
    }

    /// The same projector, upcasting events before the projection sees them.
    pub fn with_upcasters(self, upcasters: Upcasters) -> Self {
        Projector { upcasters, ..self }
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, mutably.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// Applies every event up to the store's head when called; returns the
    /// checkpoint reached.
    pub async fn catch_up(&mut self) -> Result<Position, ProjectionError> {
        let head = self.store.head().await?;
        let from = self.projection.checkpoint().await?;
        let mut sub = Subscription::new(self.store.clone(), self.selector.clone(), from);
        while sub.checkpoint() < head {
            let batch = sub
                .next_batch(SUBSCRIPTION_BATCH_MAX, Duration::ZERO)
                .await?;
            if batch.is_empty() {
                break;
            }
            self.apply(batch, sub.checkpoint()).await?;
        }
        Ok(sub.checkpoint().max(from))
    }

    /// Follows the store, applying events as they arrive, until `stop` resolves.
    pub async fn run(
        &mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<Position, ProjectionError> {
        let from = self.projection.checkpoint().await?;
        let mut sub = Subscription::new(self.store.clone(), self.selector.clone(), from);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(sub.checkpoint()),
                batch = sub.next_batch(SUBSCRIPTION_BATCH_MAX, Duration::from_millis(500)) => {
                    let batch = batch?;
                    if !batch.is_empty() {
                        self.apply(batch, sub.checkpoint()).await?;
                    }
                }
            }
        }
    }

    /// Empties the model and applies every event again from the start.
    pub async fn rebuild(&mut self) -> Result<Position, ProjectionError> {
        self.projection.reset().await?;
        self.catch_up().await
    }

    async fn apply(
        &mut self,
        batch: Vec<RecordedEvent>,
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let batch = if self.upcasters.is_empty() {
            batch
        } else {
            batch
                .into_iter()
                .map(|mut e| {
                    e.event = self.upcasters.upcast(e.event)?;
                    Ok(e)
                })
                .collect::<Result<_, ProjectionError>>()?
        };
        self.projection.apply(&batch, checkpoint).await
    }
}

/// A read model kept in the store's PostgreSQL database. Its rows and its
/// checkpoint (in `tidings_checkpoints`, under [`name`](Self::name)) commit in one
/// transaction.
pub trait PgProjection: Send + Sync {
    /// The checkpoint's name.
    fn name(&self) -> &str;

    /// Applies one event inside `tx`.
    fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Empties the model inside `tx`.
    fn reset(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// Runs a [`PgProjection`] as a [`Projection`].
#[derive(Debug)]
pub struct PgReadModel<P> {
    store: PgStore,
    model: P,
}

impl<P: PgProjection> PgReadModel<P> {
    /// `model`, kept in `store`'s database.
    pub fn new(store: PgStore, model: P) -> Self {
        PgReadModel { store, model }
    }

    /// The model.
    pub fn model(&self) -> &P {
        &self.model
    }
}

impl<P: PgProjection> Projection for PgReadModel<P> {
    async fn checkpoint(&mut self) -> Result<Position, ProjectionError> {
        Ok(self
            .store
            .load_checkpoint(self.model.name())
            .await?
            .unwrap_or(Position::START))
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let mut client = self.store.connection().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        for e in events {
            self.model.apply(&tx, e).await?;
        }
        save_checkpoint(&tx, self.model.name(), checkpoint).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        let mut client = self.store.connection().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        self.model.reset(&tx).await?;
        save_checkpoint(&tx, self.model.name(), Position::START).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

async fn save_checkpoint(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    position: Position,
) -> Result<(), StoreError> {
    let position = i64::try_from(position.0).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO tidings_checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
        &[&name, &position],
    )
    .await?;
    Ok(())
}
