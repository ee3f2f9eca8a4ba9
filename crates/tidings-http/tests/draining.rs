//! While the server drains, new requests get 503 and the health check says so;
//! metrics stay available for the scrape that watches the shutdown.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tidings_broker::{Broker, BrokerOptions};
use tidings_http::{router, Api, Limits};
use tidings_telemetry::Metrics;
use tower::ServiceExt;

async fn status_and_code(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = json["error_code"]
        .as_str()
        .or(json["status"].as_str())
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_answers_503_except_for_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), BrokerOptions::default()).unwrap());
    let store =
        tidings_store::EmbeddedStore::open(dir.path().join("store"), Default::default()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let api = Api::new(
        broker,
        store,
        Limits::default(),
        Metrics::install().unwrap(),
        shutdown.clone(),
    );
    let app = router(api.clone());
    assert_eq!(status_and_code(&app, "/v1/topics").await.0, StatusCode::OK);
    shutdown.cancel();
    assert_eq!(
        status_and_code(&app, "/v1/topics").await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down".to_owned())
    );
    assert_eq!(
        status_and_code(&app, "/healthz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned())
    );
    let metrics = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
}
