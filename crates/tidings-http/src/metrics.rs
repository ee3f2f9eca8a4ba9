//! `GET /metrics`: the broker's state, read at the scrape, and the process's
//! own metrics, in the Prometheus text exposition format.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Api;

/// `GET /metrics`, in the Prometheus text exposition format.
pub(crate) async fn render(State(api): State<Api>) -> Response {
    let mut text = tidings_telemetry::render_broker(api.broker()).await;
    text.push_str(&api.inner.metrics.render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
