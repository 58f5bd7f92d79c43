//! Operations endpoints: `/healthz`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AppState, HttpError};
use crate::protocol::{ErrorCode, ProtocolError};

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.kafka.ready().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        HttpError::from(ProtocolError::new(
            ErrorCode::KafkaUnavailable,
            format!("Kafka at {} does not answer", state.config.kafka),
        ))
        .into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let ready = state.kafka.ready().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(ready),
    )
        .into_response()
}
