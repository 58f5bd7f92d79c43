//! Produce over WebSocket and HTTP (in progress).

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::{AppState, HttpError};

pub async fn ws_produce(State(_state): State<AppState>) -> Response {
    HttpError(ProtocolError::new(
        ErrorCode::Internal,
        "produce is not built yet",
    ))
    .into_response()
}

pub async fn http_produce(State(_state): State<AppState>) -> Response {
    HttpError(ProtocolError::new(
        ErrorCode::Internal,
        "produce is not built yet",
    ))
    .into_response()
}
