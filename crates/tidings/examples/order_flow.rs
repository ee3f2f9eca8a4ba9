//! The README's toolkit example: an order placed, a payment handler that
//! emits its outcome, on the backend `TIDINGS_BACKEND` names (the embedded
//! engine when unset). `tests/toolkit/readme.rs` runs it on all five
//! backends and keeps this file and the README the same.

use std::sync::Arc;
use tidings::router::{HandlerError, Router};
use tidings::{CloudEvent, Publisher};

#[derive(serde::Deserialize)]
struct OrderPlaced {
    order: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?; // a service names a directory of its own

    // The one line that picks the engine: embedded:<dir>, http://127.0.0.1:8080,
    // nats://127.0.0.1:4222, postgres://user@host/db or kafka://127.0.0.1:9092.
    let url =
        std::env::var("TIDINGS_BACKEND").unwrap_or(format!("embedded:{}", dir.path().display()));
    let backend = tidings::connect(&url).await?;

    let placed = CloudEvent::new("/shop", "order.placed")
        .with_partitionkey("o-17")
        .with_json(&serde_json::json!({ "order": "o-17", "total_cents": 4200 }))?;
    Publisher::new(backend.clone())
        .publish("orders", placed)
        .await?;

    let done = Arc::new(tokio::sync::Notify::new()); // a service waits for SIGTERM instead
    let finished = Arc::clone(&done);
    let mut router = Router::new(backend);
    router.route("orders", "payments").key_ordering().on(
        "order.placed",
        move |ctx, order: OrderPlaced| {
            let finished = Arc::clone(&finished);
            async move {
                let paid = CloudEvent::new("/payments", "payment.completed")
                    .with_partitionkey(order.order.as_str())
                    .with_json(&serde_json::json!({ "cents": order.total_cents }))
                    .map_err(HandlerError::dead_letter)?;
                ctx.emit("payments", paid); // published before the order is acked
                finished.notify_one();
                Ok::<(), HandlerError>(())
            }
        },
    );
    let report = router.run(done.notified_owned()).await?;
    assert_eq!(report.handled, 1);
    Ok(())
}
