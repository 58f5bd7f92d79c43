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
            // Not the bootstrap addresses: /readyz is open, and they map the network behind.
            "Kafka does not answer metadata requests; the proxy log names the brokers",
        ))
        .into_response()
    }
}

/// `GET /metrics`; with `metricsAuth`, only for an authenticated principal.
pub async fn metrics(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    q: super::gate::Params,
) -> Response {
    if state.config.security.metrics_auth {
        if let Err(e) = state
            .gate(
                &parts,
                q,
                super::gate::Endpoint {
                    slot: super::gate::Slot::None,
                    parse: |_: &_| Ok(()),
                    wants: |_: &()| Vec::new(),
                    window: super::gate::no_window,
                },
            )
            .await
        {
            return e.into_response();
        }
    }
    let ready = state.kafka.ready().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(ready),
    )
        .into_response()
}
