//! The services that react: payment, inventory, the order's outcome,
//! reconciliation, notification and analytics — routes of one router, each
//! behind the store inbox, so each event's facts and the events it emits
//! are written once, in one atomic append, however often it is delivered.
//!
//! | group | topic | events | writes | emits |
//! |---|---|---|---|---|
//! | `payments` | orders | placed | `payment-<id>` | completed / failed |
//! | `inventory` | orders | placed, rejected | `reservation-<id>` | reserved / released |
//! | `inventory-compensation` | payments | failed | `reservation-<id>` | released |
//! | `orders` | payments | completed, failed | `order-<id>` | confirmed / cancelled |
//! | `reconciliation` | orders' dead letters of `payments` | placed | `order-<id>` | rejected |
//! | `notifications` | orders | outcomes | `notification-<id>` | — |
//! | `analytics` (stream mode) | orders | placed, outcomes | `analytics-<id>` | — |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tidings::inbox::store::{StoreInbox, StoreUnit};
use tidings::router::{Context, HandlerError, Retry, Router};
use tidings::schemas::SchemaCheck;
use tidings::{Backend, CloudEvent, Mode};
use tidings_store::{EventStore, ExpectedVersion, ReadStream, RecordedEvent, StreamVersion};

use crate::model::{self, fact, Facts, Order, Outcome, Payment, Stock};
use crate::splitmix;

/// How the simulated card gateway behaves.
#[derive(Clone, Copy, Debug)]
pub struct GatewayOptions {
    /// Share of calls, in percent, that time out (a transient failure the
    /// router tries again with backoff).
    pub transient_percent: u32,
    /// The seed of its randomness.
    pub seed: u64,
}

/// The card gateway the payment service calls: declines
/// [`model::TOKEN_DECLINED`], times out on a share of calls.
pub struct Gateway {
    options: GatewayOptions,
    state: Mutex<u64>,
    /// Calls that timed out.
    pub timeouts: AtomicU64,
}

impl Gateway {
    /// A gateway behaving as `options` say.
    pub fn new(options: GatewayOptions) -> Gateway {
        Gateway {
            options,
            state: Mutex::new(options.seed),
            timeouts: AtomicU64::new(0),
        }
    }

    /// Charges `order`: `Ok(None)` when charged, `Ok(Some(reason))` when
    /// declined, `Err` when the call timed out.
    fn charge(&self, order: &Order) -> Result<Option<String>, HandlerError> {
        let roll = {
            let mut x = self.state.lock().expect("gateway lock");
            *x = splitmix(*x);
            *x % 100
        };
        if roll < u64::from(self.options.transient_percent) {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(HandlerError::retry("the card gateway timed out"));
        }
        Ok((order.payment_token == model::TOKEN_DECLINED).then(|| "card declined".to_owned()))
    }
}

/// What the services share.
pub struct Services<S: EventStore> {
    /// The event store every service keeps its facts in.
    pub store: Arc<S>,
    /// Schemas, checked before an event is emitted.
    pub schemas: Arc<SchemaCheck>,
    /// The card gateway.
    pub gateway: Arc<Gateway>,
    /// The topics' and groups' names.
    pub names: Arc<model::Names>,
}

impl<S: EventStore> Clone for Services<S> {
    fn clone(&self) -> Self {
        Services {
            store: Arc::clone(&self.store),
            schemas: Arc::clone(&self.schemas),
            gateway: Arc::clone(&self.gateway),
            names: Arc::clone(&self.names),
        }
    }
}

/// The events of one stream, all of them.
pub async fn read_all<S: EventStore>(
    store: &S,
    stream: &tidings_store::StreamName,
) -> Result<Vec<RecordedEvent>, tidings_store::StoreError> {
    let mut events = Vec::new();
    loop {
        let from = StreamVersion(events.len() as u64);
        let page = store.read_stream(stream, ReadStream::forward(from)).await?;
        let full = page.events.len() >= tidings_store::READ_LIMIT_MAX;
        events.extend(page.events);
        if !full {
            return Ok(events);
        }
    }
}

impl<S: EventStore> Services<S> {
    /// `order`'s facts of `kind`; a store failure is worth another try.
    async fn facts(
        &self,
        kind: Facts,
        order: &str,
    ) -> Result<(tidings_store::StreamName, Vec<RecordedEvent>), HandlerError> {
        let stream = kind.stream(order)?;
        let events = read_all(&*self.store, &stream).await.map_err(|e| {
            HandlerError::retry(format!("reading {stream} from the store failed: {e}"))
        })?;
        Ok((stream, events))
    }

    /// Emits `event` to `topic` after checking it against its schema: an
    /// event its own schema refuses is a bug no retry fixes.
    async fn emit(
        &self,
        ctx: &Context,
        topic: &str,
        event: CloudEvent,
    ) -> Result<(), HandlerError> {
        self.schemas
            .check(topic, &event)
            .await
            .map_err(|e| match e {
                tidings::Error::SchemaRejected(m) => HandlerError::dead_letter(m),
                other => HandlerError::retry(other),
            })?;
        ctx.emit(topic, event);
        Ok(())
    }

    /// The payment service: charges the order once, answers with
    /// `payment.completed` or `payment.failed`; an order in a currency the
    /// gateway does not settle can never be paid, and goes to the dead
    /// letters.
    async fn pay(&self, ctx: Context, order: Order) -> Result<(), HandlerError> {
        if !model::CURRENCIES.contains(&order.currency.as_str()) {
            return Err(HandlerError::dead_letter(format!(
                "the gateway does not settle {}",
                order.currency
            )));
        }
        let unit = StoreUnit::<S>::of(&ctx)?;
        let declined = self.gateway.charge(&order)?;
        let (recorded, answer) = match &declined {
            None => ("payment.charged", model::PAYMENT_COMPLETED),
            Some(_) => ("payment.declined", model::PAYMENT_FAILED),
        };
        let payment = Payment {
            order: order.order.clone(),
            cents: order.cents,
            reason: declined,
        };
        unit.append(
            Facts::Payment.stream(&order.order)?,
            ExpectedVersion::NoStream,
            vec![fact(
                model::SOURCE_PAYMENTS,
                recorded,
                &order.order,
                &payment,
                Some(ctx.event()),
            )],
        );
        let out = fact(model::SOURCE_PAYMENTS, answer, &order.order, &payment, None);
        self.emit(&ctx, &self.names.payments, out).await
    }

    /// The inventory saga's step: reserves the order's stock, unless the
    /// order already failed (its reservation voided before it came).
    async fn reserve(&self, ctx: Context, order: Order) -> Result<(), HandlerError> {
        let unit = StoreUnit::<S>::of(&ctx)?;
        let (stream, facts) = self.facts(Facts::Reservation, &order.order).await?;
        if !facts.is_empty() {
            return Ok(());
        }
        let stock = Stock {
            order: order.order.clone(),
            sku: order.sku.clone(),
            quantity: order.quantity,
        };
        unit.append(
            stream,
            ExpectedVersion::NoStream,
            vec![fact(
                model::SOURCE_INVENTORY,
                model::STOCK_RESERVED,
                &order.order,
                &stock,
                Some(ctx.event()),
            )],
        );
        let out = fact(
            model::SOURCE_INVENTORY,
            model::STOCK_RESERVED,
            &order.order,
            &stock,
            None,
        );
        self.emit(&ctx, &self.names.inventory, out).await
    }

    /// The saga's compensation, when the order failed: releases what was
    /// reserved, or voids the reservation not made yet (events of two
    /// topics arrive in either order). The expected versions make a
    /// reservation and a release racing for one order take turns.
    async fn release(&self, ctx: Context, order: &str) -> Result<(), HandlerError> {
        let unit = StoreUnit::<S>::of(&ctx)?;
        let (stream, facts) = self.facts(Facts::Reservation, order).await?;
        let Some(last) = facts.last() else {
            let void = Outcome {
                order: order.to_owned(),
                reason: Some(format!(
                    "{} before the stock was reserved",
                    ctx.event().ty()
                )),
            };
            unit.append(
                stream,
                ExpectedVersion::NoStream,
                vec![fact(
                    model::SOURCE_INVENTORY,
                    "reservation.void",
                    order,
                    &void,
                    Some(ctx.event()),
                )],
            );
            return Ok(());
        };
        if last.event.ty() != model::STOCK_RESERVED {
            return Ok(());
        }
        let stock: Stock = last.event.json().map_err(HandlerError::dead_letter)?;
        unit.append(
            stream,
            ExpectedVersion::Exact(last.version),
            vec![fact(
                model::SOURCE_INVENTORY,
                model::STOCK_RELEASED,
                order,
                &stock,
                Some(ctx.event()),
            )],
        );
        let out = fact(
            model::SOURCE_INVENTORY,
            model::STOCK_RELEASED,
            order,
            &stock,
            None,
        );
        self.emit(&ctx, &self.names.inventory, out).await
    }

    /// The order service's side of an outcome: appends it to the order's
    /// stream (once: an order that has one keeps it) and announces it.
    async fn conclude(
        &self,
        ctx: Context,
        order: &str,
        outcome: &str,
        reason: Option<String>,
    ) -> Result<(), HandlerError> {
        let unit = StoreUnit::<S>::of(&ctx)?;
        let (stream, facts) = self.facts(Facts::Order, order).await?;
        let Some(last) = facts.last() else {
            // Placed orders are in the store before they are announced.
            return Err(HandlerError::dead_letter(format!(
                "order {order} is not in the store"
            )));
        };
        if last.event.ty() != model::ORDER_PLACED {
            return Ok(());
        }
        let data = Outcome {
            order: order.to_owned(),
            reason,
        };
        unit.append(
            stream,
            ExpectedVersion::Exact(last.version),
            vec![fact(
                model::SOURCE_SHOP,
                outcome,
                order,
                &data,
                Some(ctx.event()),
            )],
        );
        let out = fact(model::SOURCE_SHOP, outcome, order, &data, None);
        self.emit(&ctx, &self.names.orders, out).await
    }

    /// Records one fact about `order` in its stream of `kind`, with
    /// `expected`: the notification and analytics services' effects.
    fn record<T: Serialize>(
        ctx: &Context,
        kind: Facts,
        order: &str,
        ty: &str,
        expected: ExpectedVersion,
        data: &T,
    ) -> Result<(), HandlerError> {
        let unit = StoreUnit::<S>::of(ctx)?;
        let source = match kind {
            Facts::Notification => model::SOURCE_NOTIFICATIONS,
            _ => model::SOURCE_ANALYTICS,
        };
        unit.append(
            kind.stream(order)?,
            expected,
            vec![fact(source, ty, order, data, Some(ctx.event()))],
        );
        Ok(())
    }
}

/// How the routes retry and redeliver.
#[derive(Clone, Copy, Debug)]
pub struct RouteOptions {
    /// Deliveries handled at once per route.
    pub concurrency: usize,
    /// Attempts before a dead letter.
    pub max_deliveries: u32,
}

/// The router with every service's routes.
pub fn router<S: EventStore>(
    backend: Arc<dyn Backend>,
    services: &Services<S>,
    options: RouteOptions,
) -> Router {
    let inbox = StoreInbox::new(Arc::clone(&services.store));
    let mut router = Router::new(Arc::clone(&backend)).shutdown_timeout(Duration::from_secs(10));
    let retry = Retry {
        tries: 3,
        backoff: tidings::backend::Backoff {
            initial: Duration::from_millis(20),
            factor: 2,
            max: Duration::from_millis(500),
        },
    };
    let outcomes = [
        model::ORDER_CONFIRMED,
        model::ORDER_CANCELLED,
        model::ORDER_REJECTED,
    ];
    let names = &services.names;
    let dead_letters = backend.dead_letter_topic(&names.orders, &names.group("payments"));
    let common = Common {
        inbox,
        retry,
        options,
    };

    let s = services.clone();
    configure(
        &mut router,
        &names.orders,
        &names.group("payments"),
        &common,
    )
    .on(model::ORDER_PLACED, move |ctx, order: Order| {
        let s = s.clone();
        async move { s.pay(ctx, order).await }
    });

    let s = services.clone();
    let s2 = services.clone();
    configure(
        &mut router,
        &names.orders,
        &names.group("inventory"),
        &common,
    )
    .on(model::ORDER_PLACED, move |ctx, order: Order| {
        let s = s.clone();
        async move { s.reserve(ctx, order).await }
    })
    .on(model::ORDER_REJECTED, move |ctx, outcome: Outcome| {
        let s = s2.clone();
        async move { s.release(ctx, &outcome.order).await }
    });

    let s = services.clone();
    configure(
        &mut router,
        &names.payments,
        &names.group("inventory-compensation"),
        &common,
    )
    .on(model::PAYMENT_FAILED, move |ctx, payment: Payment| {
        let s = s.clone();
        async move { s.release(ctx, &payment.order).await }
    });

    let s = services.clone();
    let s2 = services.clone();
    configure(
        &mut router,
        &names.payments,
        &names.group("orders"),
        &common,
    )
    .on(model::PAYMENT_COMPLETED, move |ctx, payment: Payment| {
        let s = s.clone();
        async move {
            s.conclude(ctx, &payment.order, model::ORDER_CONFIRMED, None)
                .await
        }
    })
    .on(model::PAYMENT_FAILED, move |ctx, payment: Payment| {
        let s = s2.clone();
        async move {
            let reason = payment.reason.unwrap_or_else(|| "payment failed".into());
            s.conclude(ctx, &payment.order, model::ORDER_CANCELLED, Some(reason))
                .await
        }
    });

    // Reconciliation: an order the payment service dead-lettered is closed
    // as rejected, with the reason the dead letter carries.
    let s = services.clone();
    configure(
        &mut router,
        &dead_letters,
        &names.group("reconciliation"),
        &common,
    )
    .on(model::ORDER_PLACED, move |ctx: Context, order: Order| {
        let s = s.clone();
        async move {
            let reason = ctx
                .event()
                .extension("dlqerror")
                .map_or_else(|| "dead-lettered".to_owned(), |v| v.to_canonical_string());
            s.conclude(ctx, &order.order, model::ORDER_REJECTED, Some(reason))
                .await
        }
    });

    let route = configure(
        &mut router,
        &names.orders,
        &names.group("notifications"),
        &common,
    );
    for outcome in outcomes {
        route.on(outcome, move |ctx: Context, data: Outcome| async move {
            tracing::debug!(order = %data.order, outcome, "notifying the customer");
            let sent = serde_json::json!({"order": data.order, "outcome": outcome});
            Services::<S>::record(
                &ctx,
                Facts::Notification,
                &data.order,
                "notification.sent",
                ExpectedVersion::NoStream,
                &sent,
            )
        });
    }

    let route = configure(
        &mut router,
        &names.orders,
        &names.group("analytics"),
        &common,
    );
    route.mode(Mode::Stream);
    for ty in std::iter::once(model::ORDER_PLACED).chain(outcomes) {
        route.on_event(ty, move |ctx: Context| async move {
            let order = ctx.event().partitionkey().unwrap_or_default().to_owned();
            let counted = serde_json::json!({"order": order, "counted": ctx.event().ty()});
            Services::<S>::record(
                &ctx,
                Facts::Analytics,
                &order,
                "analytics.counted",
                ExpectedVersion::Any,
                &counted,
            )
        });
    }
    router
}

/// What every route shares.
struct Common<S: EventStore> {
    inbox: StoreInbox<S>,
    retry: Retry,
    options: RouteOptions,
}

/// A route of `router` with the common part set: the inbox, the retries,
/// the redelivery, the concurrency.
fn configure<'r, S: EventStore>(
    router: &'r mut Router,
    topic: &str,
    group: &str,
    common: &Common<S>,
) -> &'r mut tidings::router::Route {
    router
        .route(topic, group)
        .wrap(common.inbox.clone())
        // A delivery whose process died goes to another attempt after
        // this; the router extends the lease while a handler runs.
        .ack_timeout(Duration::from_secs(10))
        .retry(common.retry)
        .redelivery_delay(Duration::from_millis(100))
        .max_deliveries(common.options.max_deliveries)
        .concurrency(common.options.concurrency)
}
