//! The final check, read from the event store itself (not from the read
//! model or any counter): every order accepted ended in exactly the one
//! outcome its data calls for, and every service's effect for it happened
//! exactly once, in the same correlation.

use serde::Serialize;
use tidings::CloudEvent;
use tidings_store::{EventStore, RecordedEvent};

use crate::model::{self, Facts, Order};
use crate::services::read_all;

/// Most problems listed; the count says how many there were.
const LISTED_MAX: usize = 20;

/// What the check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Orders checked.
    pub orders: usize,
    /// Orders that ended confirmed, cancelled, rejected.
    pub confirmed: usize,
    /// Cancelled: payment declined.
    pub cancelled: usize,
    /// Rejected: dead-lettered by the payment service.
    pub rejected: usize,
    /// Failed orders whose reserved stock was released.
    pub compensated: usize,
    /// Failed orders whose reservation was voided before it was made.
    pub voided: usize,
    /// Problems found, in all.
    pub problem_count: usize,
    /// The first of them.
    pub problems: Vec<String>,
    /// Each ended order's time from placed to its outcome, as the store
    /// recorded them (ms).
    #[serde(skip)]
    pub latencies_ms: Vec<i64>,
}

impl Verdict {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < LISTED_MAX {
            self.problems.push(text);
        }
    }
}

/// The outcome `order`'s data calls for.
pub fn expected_outcome(order: &Order) -> &'static str {
    if !model::CURRENCIES.contains(&order.currency.as_str()) {
        model::ORDER_REJECTED
    } else if order.payment_token == model::TOKEN_DECLINED {
        model::ORDER_CANCELLED
    } else {
        model::ORDER_CONFIRMED
    }
}

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.ty()).collect()
}

/// Checks every order of `orders` in `store`.
pub async fn check<S: EventStore>(store: &S, orders: &[Order]) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict {
        orders: orders.len(),
        ..Verdict::default()
    };
    for order in orders {
        let id = &order.order;
        let mut facts = Vec::with_capacity(Facts::ALL.len());
        for kind in Facts::ALL {
            let stream = kind
                .stream(id)
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            facts.push(read_all(store, &stream).await?);
        }
        let [order_facts, payment, reservation, notification, analytics] =
            <[Vec<RecordedEvent>; 5]>::try_from(facts).expect("one list per kind");
        let outcome = expected_outcome(order);
        let mut bad = |what: String| verdict_problem(&mut verdict, id, what);

        if types(&order_facts) != [model::ORDER_PLACED, outcome] {
            bad(format!(
                "the order's stream is {:?}, expected [{}, {outcome}]",
                types(&order_facts),
                model::ORDER_PLACED
            ));
        } else if order_facts[0].event.json::<Order>().ok().as_ref() != Some(order) {
            bad("the order's stream holds other contents than were placed".into());
        }
        let payments: &[&str] = match outcome {
            model::ORDER_CONFIRMED => &["payment.charged"],
            model::ORDER_CANCELLED => &["payment.declined"],
            _ => &[],
        };
        if types(&payment) != payments {
            bad(format!(
                "payment facts {:?}, expected {payments:?}",
                types(&payment)
            ));
        }
        let stock = types(&reservation);
        let stock_ok = match outcome {
            model::ORDER_CONFIRMED => stock == [model::STOCK_RESERVED],
            _ => {
                stock == [model::STOCK_RESERVED, model::STOCK_RELEASED]
                    || stock == ["reservation.void"]
            }
        };
        if !stock_ok {
            bad(format!("reservation facts {stock:?} for {outcome}"));
        }
        let notified: Vec<String> = notification
            .iter()
            .filter_map(|e| e.event.json::<serde_json::Value>().ok())
            .filter_map(|v| v["outcome"].as_str().map(str::to_owned))
            .collect();
        if notified != [outcome] {
            bad(format!(
                "notifications {notified:?}, expected one for {outcome}"
            ));
        }
        let mut counted: Vec<String> = analytics
            .iter()
            .filter_map(|e| e.event.json::<serde_json::Value>().ok())
            .filter_map(|v| v["counted"].as_str().map(str::to_owned))
            .collect();
        counted.sort();
        let mut expected = vec![model::ORDER_PLACED.to_owned(), outcome.to_owned()];
        expected.sort();
        if counted != expected {
            bad(format!(
                "analytics counted {counted:?}, expected {expected:?}"
            ));
        }
        // One flow, one correlation: every fact after the order's first
        // carries the id of the `order.placed` that started it.
        let correlation = format!("{id}.placed");
        let strays: Vec<&CloudEvent> = [&payment, &reservation, &notification, &analytics]
            .into_iter()
            .flatten()
            .chain(order_facts.iter().skip(1))
            .map(|e| &e.event)
            .filter(|e| e.correlationid() != Some(correlation.as_str()))
            .collect();
        if let Some(stray) = strays.first() {
            bad(format!(
                "{} facts outside the order's correlation, as {} with {:?}",
                strays.len(),
                stray.ty(),
                stray.correlationid()
            ));
        }

        if let [placed, ended, ..] = &order_facts[..] {
            verdict
                .latencies_ms
                .push(ended.recorded.0 - placed.recorded.0);
        }
        match outcome {
            model::ORDER_CONFIRMED => verdict.confirmed += 1,
            model::ORDER_CANCELLED => verdict.cancelled += 1,
            _ => verdict.rejected += 1,
        }
        if stock.contains(&model::STOCK_RELEASED) {
            verdict.compensated += 1;
        } else if stock.contains(&"reservation.void") {
            verdict.voided += 1;
        }
    }
    Ok(verdict)
}

fn verdict_problem(verdict: &mut Verdict, order: &str, what: String) {
    verdict.problem(format!("order {order}: {what}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(currency: &str, token: &str) -> Order {
        Order {
            order: "o-1".into(),
            customer: "c".into(),
            sku: "s".into(),
            quantity: 1,
            cents: 100,
            currency: currency.into(),
            payment_token: token.into(),
        }
    }

    #[test]
    fn an_order_calls_for_the_outcome_its_currency_and_token_decide() {
        assert_eq!(
            expected_outcome(&order("EUR", model::TOKEN_VISA)),
            model::ORDER_CONFIRMED
        );
        assert_eq!(
            expected_outcome(&order("EUR", model::TOKEN_DECLINED)),
            model::ORDER_CANCELLED
        );
        // An unsettled currency is poison whatever the card.
        assert_eq!(
            expected_outcome(&order("XTS", model::TOKEN_DECLINED)),
            model::ORDER_REJECTED
        );
    }
}
