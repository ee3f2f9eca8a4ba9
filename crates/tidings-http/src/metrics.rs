//! `GET /metrics`: the broker's state mirrored into the process's metrics, then
//! everything rendered in the Prometheus text exposition format.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Api;

/// `GET /metrics`, in the Prometheus text exposition format.
pub(crate) async fn render(State(api): State<Api>) -> Response {
    tidings_telemetry::mirror_broker(api.broker()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.inner.metrics.render(),
    )
        .into_response()
}
