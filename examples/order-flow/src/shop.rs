//! The order service's front: `POST /orders` places an order through the
//! store outbox (the order's first event and its announcement in one atomic
//! append), `GET /orders/{id}` answers the read model, `GET /summary` the
//! counts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;
use tidings::outbox::store::StoreOutbox;
use tidings::schemas::SchemaCheck;
use tidings_store::{AppendError, EventStore, ExpectedVersion};
use tracing::Instrument as _;

use crate::board::Board;
use crate::model::{self, fact, Facts, Order};
use crate::services::read_all;

/// What the order service needs.
pub struct Shop<S: EventStore> {
    /// The store the orders live in.
    pub store: Arc<S>,
    /// The outbox their announcements go through.
    pub outbox: Arc<StoreOutbox<S>>,
    /// Schemas, checked before an order is accepted.
    pub schemas: Arc<SchemaCheck>,
    /// The read model.
    pub board: Board,
    /// The topics' names.
    pub names: Arc<model::Names>,
}

/// Why an order was not placed.
#[derive(Debug)]
pub enum Refusal {
    /// The order is malformed or its event fails its schema: 400.
    Invalid(String),
    /// The id names another order: 409.
    Conflict(String),
    /// The store failed: 503, try again.
    Unavailable(String),
}

impl<S: EventStore> Shop<S> {
    /// Places `order`: `Ok(true)` when placed now, `Ok(false)` when the same
    /// order was placed before (a client's retry).
    pub async fn place(&self, order: &Order) -> Result<bool, Refusal> {
        if !model::valid_order_id(&order.order) {
            return Err(Refusal::Invalid(format!(
                "order id {:?}: 1 to 64 letters, digits, '-' or '_'",
                order.order
            )));
        }
        let placed = fact(
            model::SOURCE_SHOP,
            model::ORDER_PLACED,
            &order.order,
            order,
            None,
        )
        .with_id(format!("{}.placed", order.order));
        self.schemas
            .check(&self.names.orders, &placed)
            .await
            .map_err(|e| match e {
                tidings::Error::SchemaRejected(m) => Refusal::Invalid(m),
                other => Refusal::Unavailable(other.to_string()),
            })?;
        let stream = Facts::Order
            .stream(&order.order)
            .map_err(|e| Refusal::Invalid(e.message().to_owned()))?;
        // The order's own stream holds the fact; the outbox's, the
        // announcement with the id consumers see.
        let recorded = fact(
            model::SOURCE_SHOP,
            model::ORDER_PLACED,
            &order.order,
            order,
            None,
        );
        let mut tx = self.outbox.transaction();
        tx.append(stream.clone(), ExpectedVersion::NoStream, vec![recorded]);
        tx.stage(&self.names.orders, vec![placed])
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        match tx.commit().await {
            Ok(_) => Ok(true),
            Err(
                AppendError::WrongExpectedVersion { .. } | AppendError::DuplicateEventId { .. },
            ) => {
                let first = read_all(&*self.store, &stream)
                    .await
                    .map_err(|e| Refusal::Unavailable(e.to_string()))?;
                let same = first
                    .first()
                    .and_then(|e| e.event.json::<Order>().ok())
                    .is_some_and(|o| o == *order);
                if same {
                    Ok(false)
                } else {
                    Err(Refusal::Conflict(format!(
                        "order {} exists with other contents",
                        order.order
                    )))
                }
            }
            Err(AppendError::Store(e)) => Err(Refusal::Unavailable(e.to_string())),
            Err(e) => Err(Refusal::Invalid(e.to_string())),
        }
    }
}

/// The HTTP routes.
pub fn routes<S: EventStore>(shop: Arc<Shop<S>>) -> axum::Router {
    axum::Router::new()
        .route("/orders", post(place::<S>))
        .route("/orders/{id}", get(show::<S>))
        .route("/summary", get(summary::<S>))
        .route("/runs/{run}", get(run::<S>))
        .with_state(shop)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn place<S: EventStore>(
    State(shop): State<Arc<Shop<S>>>,
    body: Result<Json<Order>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(order) = match body {
        Ok(order) => order,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    // The order's trace starts here: the announcement staged in the
    // outbox carries this span's context to every service after it.
    let span = tracing::info_span!(
        "POST /orders",
        otel.kind = "server",
        order = %order.order,
    );
    match shop.place(&order).instrument(span).await {
        Ok(new) => {
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!({"order": order.order, "placed": new}))).into_response()
        }
        Err(Refusal::Invalid(m)) => error(StatusCode::BAD_REQUEST, &m),
        Err(Refusal::Conflict(m)) => error(StatusCode::CONFLICT, &m),
        Err(Refusal::Unavailable(m)) => error(StatusCode::SERVICE_UNAVAILABLE, &m),
    }
}

async fn show<S: EventStore>(State(shop): State<Arc<Shop<S>>>, Path(id): Path<String>) -> Response {
    match shop.board.order(&id) {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no order {id:?}")),
    }
}

async fn summary<S: EventStore>(State(shop): State<Arc<Shop<S>>>) -> Response {
    Json(shop.board.counts()).into_response()
}

/// `GET /runs/{run}`: how many of the run's orders (ids `<run>-<n>`) were
/// placed and how many have settled.
async fn run<S: EventStore>(State(shop): State<Arc<Shop<S>>>, Path(run): Path<String>) -> Response {
    Json(shop.board.run(&format!("{run}-"))).into_response()
}
