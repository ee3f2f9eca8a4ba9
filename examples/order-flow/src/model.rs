//! The flow's events: their types, their data, the topics they travel on,
//! the streams that keep each service's facts, and the JSON Schemas every
//! published type is registered with.

use serde::{Deserialize, Serialize};
use tidings::CloudEvent;
use tidings_store::StreamName;

/// The names of the flow's topics and groups: `orders` (orders placed and
/// their outcomes), `payments` (the payment service's answers), `inventory`
/// (stock reserved and released), each with a prefix, so flows that share
/// a cluster (a test suite's, a staging one's) keep apart.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
    /// Orders placed, and their outcomes (confirmed, cancelled, rejected).
    pub orders: String,
    /// The payment service's answers.
    pub payments: String,
    /// Stock reserved and released by the inventory saga.
    pub inventory: String,
}

impl Names {
    /// The names with `prefix` (empty for the plain names).
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
            orders: format!("{prefix}orders"),
            payments: format!("{prefix}payments"),
            inventory: format!("{prefix}inventory"),
        }
    }

    /// The topics the flow publishes to, created before it starts.
    pub fn topics(&self) -> [&str; 3] {
        [&self.orders, &self.payments, &self.inventory]
    }

    /// The consumer group of the service `name`.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// `order.placed`: the order service accepted an order.
pub const ORDER_PLACED: &str = "order.placed";
/// `order.confirmed`: paid; terminal.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// `order.cancelled`: the payment was declined; terminal.
pub const ORDER_CANCELLED: &str = "order.cancelled";
/// `order.rejected`: the payment service could not process it (dead
/// letter), reconciliation closed it; terminal.
pub const ORDER_REJECTED: &str = "order.rejected";
/// `payment.completed`: the card was charged.
pub const PAYMENT_COMPLETED: &str = "payment.completed";
/// `payment.failed`: the card was declined.
pub const PAYMENT_FAILED: &str = "payment.failed";
/// `stock.reserved`: the inventory saga's step.
pub const STOCK_RESERVED: &str = "stock.reserved";
/// `stock.released`: the saga's compensation.
pub const STOCK_RELEASED: &str = "stock.released";

/// The payment token the gateway always declines (Stripe's test token of
/// the same name).
pub const TOKEN_DECLINED: &str = "tok_chargeDeclined";
/// A token the gateway charges.
pub const TOKEN_VISA: &str = "tok_visa";
/// The currencies the gateway settles; any other makes the event poison.
pub const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// The `source` of each service's events.
pub const SOURCE_SHOP: &str = "/shop/orders";
/// The payment service's `source`.
pub const SOURCE_PAYMENTS: &str = "/shop/payments";
/// The inventory service's `source`.
pub const SOURCE_INVENTORY: &str = "/shop/inventory";
/// The notification service's `source`.
pub const SOURCE_NOTIFICATIONS: &str = "/shop/notifications";
/// The analytics service's `source`.
pub const SOURCE_ANALYTICS: &str = "/shop/analytics";

/// What a customer orders: the body of `POST /orders` and the data of
/// `order.placed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id, chosen by the client: placing the same id again is
    /// answered with the first order, not a second one.
    pub order: String,
    /// Who ordered.
    pub customer: String,
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The total, in cents of `currency`.
    pub cents: u64,
    /// ISO 4217.
    pub currency: String,
    /// The payment method's token.
    pub payment_token: String,
}

/// The data of `payment.completed` and `payment.failed`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payment {
    /// The order.
    pub order: String,
    /// The amount charged or refused.
    pub cents: u64,
    /// Why it failed (`payment.failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The data of the order's outcome events and of the effects recorded
/// about one order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// The order.
    pub order: String,
    /// Why, for a cancelled or rejected order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The data of `stock.reserved` and `stock.released`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stock {
    /// The order.
    pub order: String,
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

/// The streams the services keep their facts in, one per order each: the
/// order itself (event-sourced), the payment, the stock reservation, the
/// notification sent and the analytics counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facts {
    /// `order-<id>`: placed, then one outcome.
    Order,
    /// `payment-<id>`: `payment.charged` or `payment.declined`.
    Payment,
    /// `reservation-<id>`: reserved (then released), or `reservation.void`
    /// when the order failed before anything was reserved.
    Reservation,
    /// `notification-<id>`: the one notification sent.
    Notification,
    /// `analytics-<id>`: the order counted when placed and when it ended.
    Analytics,
}

impl Facts {
    /// Every kind, in the order the check reads them.
    pub const ALL: [Facts; 5] = [
        Facts::Order,
        Facts::Payment,
        Facts::Reservation,
        Facts::Notification,
        Facts::Analytics,
    ];

    /// The stream category.
    pub fn category(self) -> &'static str {
        match self {
            Facts::Order => "order",
            Facts::Payment => "payment",
            Facts::Reservation => "reservation",
            Facts::Notification => "notification",
            Facts::Analytics => "analytics",
        }
    }

    /// The stream of `order`'s facts of this kind.
    pub fn stream(self, order: &str) -> Result<StreamName, tidings::router::HandlerError> {
        StreamName::new(&format!("{}-{order}", self.category())).map_err(|e| {
            tidings::router::HandlerError::dead_letter(format!("order id {order:?}: {e}"))
        })
    }
}

/// Whether `id` can name an order: it becomes part of stream names and
/// event ids, so letters, digits, `-` and `_`, at most 64.
pub fn valid_order_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fact or an event about `order`, caused by `cause` when there is one
/// (its correlation carried on), keyed by the order.
pub fn fact<T: Serialize>(
    source: &str,
    ty: &str,
    order: &str,
    data: &T,
    cause: Option<&CloudEvent>,
) -> CloudEvent {
    let event = CloudEvent::new(source, ty)
        .with_partitionkey(order)
        .with_json(data)
        .expect("the flow's data types serialise to JSON");
    match cause {
        Some(cause) => event.caused_by(cause),
        None => event,
    }
}

/// The JSON Schema of each event type the flow publishes, registered under
/// the type's name (the subject a type resolves to).
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let order_id = json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"});
    let placed = json!({
        "type": "object",
        "properties": {
            "order": order_id,
            "customer": {"type": "string", "minLength": 1},
            "sku": {"type": "string", "minLength": 1},
            "quantity": {"type": "integer", "minimum": 1},
            "cents": {"type": "integer", "minimum": 1},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "payment_token": {"type": "string", "minLength": 1}
        },
        "required": ["order", "customer", "sku", "quantity", "cents", "currency", "payment_token"],
        "additionalProperties": false
    });
    let payment = json!({
        "type": "object",
        "properties": {
            "order": order_id,
            "cents": {"type": "integer", "minimum": 1},
            "reason": {"type": "string"}
        },
        "required": ["order", "cents"],
        "additionalProperties": false
    });
    let outcome = |reason: bool| {
        let mut required = vec!["order"];
        if reason {
            required.push("reason");
        }
        json!({
            "type": "object",
            "properties": {"order": order_id, "reason": {"type": "string"}},
            "required": required,
            "additionalProperties": false
        })
    };
    let stock = json!({
        "type": "object",
        "properties": {
            "order": order_id,
            "sku": {"type": "string", "minLength": 1},
            "quantity": {"type": "integer", "minimum": 1}
        },
        "required": ["order", "sku", "quantity"],
        "additionalProperties": false
    });
    vec![
        (ORDER_PLACED, placed),
        (ORDER_CONFIRMED, outcome(false)),
        (ORDER_CANCELLED, outcome(true)),
        (ORDER_REJECTED, outcome(true)),
        (PAYMENT_COMPLETED, payment.clone()),
        (PAYMENT_FAILED, payment),
        (STOCK_RESERVED, stock.clone()),
        (STOCK_RELEASED, stock),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_what_stream_names_and_event_ids_take() {
        assert!(valid_order_id("o-17_a"));
        for bad in ["", "o 17", "o/17", "ö", &"x".repeat(65)] {
            assert!(!valid_order_id(bad), "{bad:?}");
        }
        assert!(Facts::Order.stream(&"x".repeat(64)).is_ok());
    }
}
