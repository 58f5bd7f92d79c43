//! The admin API: `/admin/sessions` (open sessions and who holds them) and `/admin/tail`
//! (live-tail readers and their sockets). Both need the admin action.

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::gate::{no_window, Endpoint, Params, Slot};
use super::{AppState, HttpError};
use crate::access::{Action, Resource};

/// The gate of an admin read: no session slot, the admin action on the proxy.
async fn admit(state: &AppState, parts: &Parts, q: Params) -> Result<(), HttpError> {
    state
        .gate(
            parts,
            q,
            Endpoint {
                slot: Slot::None,
                parse: |_: &_| Ok(()),
                wants: |_: &()| vec![(Action::Admin, Resource::Proxy)],
                window: no_window,
            },
        )
        .await?;
    Ok(())
}

/// `GET /admin/sessions`.
pub async fn sessions(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q).await?;
    let body = serde_json::json!({ "sessions": state.metrics.sessions() });
    Ok(axum::Json(body).into_response())
}

/// `GET /admin/tail`: running readers and their socket counts.
pub async fn tail(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q).await?;
    let body = serde_json::json!({ "readers": state.tail.report() });
    Ok(axum::Json(body).into_response())
}
