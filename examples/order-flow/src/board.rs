//! The read model: every order's state and the flow's counts, folded from
//! the store's global order by a projection. It lives in memory and is
//! rebuilt from the start of the store when the process starts (a read
//! model is disposable; the events are the truth).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tidings_store::projection::{Projection, ProjectionError};
use tidings_store::{Position, RecordedEvent};

use crate::model::{self, Facts};

/// One order as the read model sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OrderView {
    /// `placed`, then `confirmed`, `cancelled` or `rejected`.
    pub status: &'static str,
    /// When the store recorded it placed (ms since the epoch).
    pub placed_ms: i64,
    /// When it recorded its outcome.
    pub ended_ms: Option<i64>,
    /// The payment service's facts.
    pub payments: u32,
    /// Stock reserved for it.
    pub reserved: u32,
    /// Reservations released (the saga's compensation).
    pub released: u32,
    /// Reservations voided before anything was reserved.
    pub voided: u32,
    /// Notifications sent.
    pub notifications: u32,
    /// Times analytics counted it.
    pub counted: u32,
}

impl OrderView {
    /// Whether it ended and every service has done what the outcome asks
    /// of it: then nothing more is to come for it.
    pub fn settled(&self) -> bool {
        let stock = (self.reserved, self.released, self.voided);
        let (payments, stock_ok) = match self.status {
            "confirmed" => (1, stock == (1, 0, 0)),
            "cancelled" => (1, stock == (1, 1, 0) || stock == (0, 0, 1)),
            "rejected" => (0, stock == (1, 1, 0) || stock == (0, 0, 1)),
            _ => return false,
        };
        self.payments == payments && stock_ok && self.notifications == 1 && self.counted == 2
    }
}

/// The flow's counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Orders placed.
    pub placed: u64,
    /// Orders paid.
    pub confirmed: u64,
    /// Orders whose payment was declined.
    pub cancelled: u64,
    /// Orders the payment service dead-lettered, closed by reconciliation.
    pub rejected: u64,
    /// Reservations released by the saga's compensation.
    pub compensated: u64,
    /// Notifications sent.
    pub notified: u64,
    /// Orders ended and with every effect done.
    pub settled: u64,
}

/// A run's orders on the board.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct RunCounts {
    /// Placed.
    pub placed: u64,
    /// Ended, with every effect done.
    pub settled: u64,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, OrderView>,
    counts: Counts,
}

/// The read model, shared by the projection that feeds it and the readers.
#[derive(Clone, Default)]
pub struct Board {
    state: Arc<Mutex<State>>,
    checkpoint: Arc<Mutex<Position>>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Board {
        Board::default()
    }

    /// One order's view.
    pub fn order(&self, id: &str) -> Option<OrderView> {
        self.state
            .lock()
            .expect("board lock")
            .orders
            .get(id)
            .cloned()
    }

    /// The counts.
    pub fn counts(&self) -> Counts {
        self.state.lock().expect("board lock").counts.clone()
    }

    /// How many of `ids` are settled.
    pub fn settled_of<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> usize {
        let state = self.state.lock().expect("board lock");
        ids.into_iter()
            .filter(|id| state.orders.get(*id).is_some_and(OrderView::settled))
            .count()
    }

    /// The orders whose ids start with `prefix` (a run's): how many were
    /// placed, how many are settled.
    pub fn run(&self, prefix: &str) -> RunCounts {
        let state = self.state.lock().expect("board lock");
        let mut counts = RunCounts::default();
        for (id, view) in &state.orders {
            if id.starts_with(prefix) && !view.status.is_empty() {
                counts.placed += 1;
                counts.settled += u64::from(view.settled());
            }
        }
        counts
    }

    fn fold(state: &mut State, recorded: &RecordedEvent) {
        let stream = recorded.stream.as_str();
        let Some((category, order)) = stream.split_once('-') else {
            return;
        };
        let kind = match category {
            "order" => Facts::Order,
            "payment" => Facts::Payment,
            "reservation" => Facts::Reservation,
            "notification" => Facts::Notification,
            "analytics" => Facts::Analytics,
            _ => return,
        };
        let State { orders, counts } = state;
        let view = orders.entry(order.to_owned()).or_default();
        let was_settled = view.settled();
        let at = recorded.recorded.0;
        match (kind, recorded.event.ty()) {
            (Facts::Order, model::ORDER_PLACED) => {
                view.status = "placed";
                view.placed_ms = at;
                counts.placed += 1;
            }
            (Facts::Order, ty) => {
                let (status, count) = match ty {
                    model::ORDER_CONFIRMED => ("confirmed", &mut counts.confirmed),
                    model::ORDER_CANCELLED => ("cancelled", &mut counts.cancelled),
                    model::ORDER_REJECTED => ("rejected", &mut counts.rejected),
                    _ => return,
                };
                view.status = status;
                view.ended_ms = Some(at);
                *count += 1;
            }
            (Facts::Payment, _) => view.payments += 1,
            (Facts::Reservation, model::STOCK_RESERVED) => view.reserved += 1,
            (Facts::Reservation, model::STOCK_RELEASED) => {
                view.released += 1;
                counts.compensated += 1;
            }
            (Facts::Reservation, _) => view.voided += 1,
            (Facts::Notification, _) => {
                view.notifications += 1;
                counts.notified += 1;
            }
            (Facts::Analytics, _) => view.counted += 1,
        }
        if view.settled() && !was_settled {
            counts.settled += 1;
        }
    }
}

impl Projection for Board {
    async fn checkpoint(&mut self) -> Result<Position, ProjectionError> {
        Ok(*self.checkpoint.lock().expect("board lock"))
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let mut state = self.state.lock().expect("board lock");
        for e in events {
            Board::fold(&mut state, e);
        }
        *self.checkpoint.lock().expect("board lock") = checkpoint;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        *self.state.lock().expect("board lock") = State::default();
        *self.checkpoint.lock().expect("board lock") = Position::START;
        Ok(())
    }
}
