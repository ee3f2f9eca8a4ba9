//! Subscriptions: read a selection of the global order from a checkpoint, catch up,
//! then follow new events as they are appended.
//!
//! There is no separate live channel to switch to. A subscription always reads the
//! store from the position after the last event it handed out, and waits on the
//! store's head when it has caught up. Because both backends make the global order
//! visible as a prefix (position `p` readable means everything before it is), this
//! cannot skip an event or deliver one twice, however appends interleave.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::StoreError;
use crate::store::EventStore;
use crate::types::{Position, RecordedEvent, Selector};

/// Events read per round trip to the store.
pub const SUBSCRIPTION_BATCH_MAX: usize = 512;

/// How long one wait on the store lasts before reading again; bounds how long a
/// wake-up lost by the backend (a dropped PostgreSQL notification) can delay events.
const WAIT_SLICE: Duration = Duration::from_millis(500);

/// A subscription to `$all`, a category or one stream.
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    selector: Selector,
    name: Option<String>,
    /// Where the next read starts.
    read_from: Position,
    /// The position after the last event handed out.
    checkpoint: Position,
    buffer: VecDeque<RecordedEvent>,
}

impl<S: EventStore> Subscription<S> {
    /// A subscription to `selector` from `from` (the position after the last event
    /// already handled; [`Position::START`] for everything).
    pub fn new(store: S, selector: Selector, from: Position) -> Self {
        Subscription {
            store,
            selector,
            name: None,
            read_from: from,
            checkpoint: from,
            buffer: VecDeque::new(),
        }
    }

    /// A named subscription that starts from the checkpoint stored under `name`, or
    /// from the start when there is none. [`save_checkpoint`](Self::save_checkpoint)
    /// stores its progress.
    pub async fn named(store: S, name: &str, selector: Selector) -> Result<Self, StoreError> {
        let from = store
            .load_checkpoint(name)
            .await?
            .unwrap_or(Position::START);
        let mut sub = Subscription::new(store, selector, from);
        sub.name = Some(name.to_owned());
        Ok(sub)
    }

    /// Where a restarted subscription continues: after the last event handed out,
    /// or further when the subscription has read past events its selection skips.
    pub fn checkpoint(&self) -> Position {
        if self.buffer.is_empty() {
            self.read_from.max(self.checkpoint)
        } else {
            self.checkpoint
        }
    }

    /// Stores the checkpoint of a named subscription durably. For an unnamed one
    /// this does nothing.
    pub async fn save_checkpoint(&self) -> Result<(), StoreError> {
        match &self.name {
            Some(name) => self.store.save_checkpoint(name, self.checkpoint()).await,
            None => Ok(()),
        }
    }

    /// The next event, waiting for one to be appended when caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(e) = self.next_within(WAIT_SLICE).await? {
                return Ok(e);
            }
        }
    }

    /// The next event, or `None` when none arrives within `wait`.
    pub async fn next_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.checkpoint = e.position.next();
                return Ok(Some(e));
            }
            let slice = self
                .store
                .read_all(&self.selector, self.read_from, SUBSCRIPTION_BATCH_MAX)
                .await?;
            self.read_from = self.read_from.max(slice.next);
            if !slice.events.is_empty() {
                self.buffer.extend(slice.events);
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // The read covered everything before `read_from`, which was the head:
            // wait for an event at or after it.
            self.store
                .wait_beyond(self.read_from, left.min(WAIT_SLICE))
                .await?;
        }
    }

    /// Up to `max` events that are ready now, waiting up to `wait` for the first.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        let Some(first) = self.next_within(wait).await? else {
            return Ok(out);
        };
        out.push(first);
        while out.len() < max {
            match self.buffer.pop_front() {
                Some(e) => {
                    self.checkpoint = e.position.next();
                    out.push(e);
                }
                None => break,
            }
        }
        Ok(out)
    }
}
