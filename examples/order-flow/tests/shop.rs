//! The order service's HTTP endpoint: what it refuses and why, that a
//! client's retry places nothing twice, and that an accepted order is in
//! the store with exactly one announcement in the outbox.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use order_flow::board::Board;
use order_flow::model::{self, Facts, Names};
use order_flow::services::read_all;
use order_flow::shop::{routes, Shop};
use tidings::outbox::store::{outbox_stream, ForwarderOptions, StoreOutbox};
use tidings::schemas::SchemaCheck;
use tidings::Publisher;
use tidings_schema::{Registry, SchemaInput, SchemaType};
use tidings_store::{EmbeddedOptions, EmbeddedStore};

/// One request on a connection of its own: the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn order(id: &str, quantity: u32) -> String {
    serde_json::json!({
        "order": id, "customer": "c-1", "sku": "sku-1", "quantity": quantity,
        "cents": 1200, "currency": "EUR", "payment_token": model::TOKEN_VISA
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_refuses_clearly_and_places_each_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(&dir.path().join("registry")).unwrap());
    for (ty, schema) in model::schemas() {
        let input = SchemaInput {
            schema_type: SchemaType::Json,
            schema: schema.to_string(),
        };
        registry.register(ty, &input).unwrap();
    }
    let backend = tidings::connect(&format!("embedded:{}", dir.path().join("engine").display()))
        .await
        .unwrap();
    let store = Arc::new(
        EmbeddedStore::open(dir.path().join("store"), EmbeddedOptions::default()).unwrap(),
    );
    let outbox = StoreOutbox::start(
        Arc::clone(&store),
        Publisher::new(backend),
        ForwarderOptions::default(),
    )
    .unwrap();
    let names = Arc::new(Names::new(""));
    let shop = Arc::new(Shop {
        store: Arc::clone(&store),
        outbox: Arc::new(outbox),
        schemas: Arc::new(SchemaCheck::registry(registry)),
        board: Board::new(),
        names: Arc::clone(&names),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, routes(shop)).await });

    let call = |method: &'static str, path: &'static str, body: String| {
        tokio::task::spawn_blocking(move || request(addr, method, path, &body))
    };
    // Not JSON, not an order, an id no stream can carry, a quantity its
    // schema refuses: 400, saying what is wrong.
    let (status, body) = call("POST", "/orders", "{".into()).await.unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = call("POST", "/orders", r#"{"order": "o-1"}"#.into())
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("customer"), "{body}");
    let (status, body) = call("POST", "/orders", order("o/1", 1)).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("order id"), "{body}");
    let (status, body) = call("POST", "/orders", order("o-1", 0)).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("quantity"), "{body}");

    // Placed, placed again by a client's retry, then the id reused for
    // another order.
    let (status, body) = call("POST", "/orders", order("o-1", 2)).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = call("POST", "/orders", order("o-1", 2)).await.unwrap();
    assert_eq!(
        (status, body.contains(r#""placed":false"#)),
        (200, true),
        "{body}"
    );
    let (status, body) = call("POST", "/orders", order("o-1", 3)).await.unwrap();
    assert_eq!(status, 409, "{body}");

    // One order in the store, one announcement in the outbox, with the id
    // consumers see.
    let placed = read_all(&*store, &Facts::Order.stream("o-1").unwrap())
        .await
        .unwrap();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].event.ty(), model::ORDER_PLACED);
    let announced = read_all(&*store, &outbox_stream(&names.orders).unwrap())
        .await
        .unwrap();
    let ids: Vec<&str> = announced.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids, ["o-1.placed"]);
    let (status, _) = call("GET", "/orders/o-2", String::new()).await.unwrap();
    assert_eq!(status, 404);
}
