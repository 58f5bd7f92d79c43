//! The admin API (docs/PROTOCOL.md, "Admin API"): sessions and the close action, live-tail
//! readers and the effective configuration here; topics and groups read from Kafka in `kafka`;
//! the background refresh of `kafka_proxy_group_lag` in `lag`. Every endpoint needs the admin
//! action on the proxy.

pub mod config;
pub mod kafka;
pub mod lag;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::gate::{no_window, Endpoint, Params, Slot};
use super::{AppState, HttpError};
use crate::access::{Action, Resource};
use crate::metrics::SessionReport;
use crate::protocol::{admin as params, ErrorCode, ProtocolError};

pub use kafka::Lookups;

/// Largest body of the close action: a reason of at most `protocol::admin::MAX_CLOSE_REASON`
/// bytes fits many times over; a larger body is refused with 413 before it is read whole.
pub const CLOSE_BODY_LIMIT: usize = 4096;

/// Most assigned partitions whose lag one `GET /admin/sessions` reads from Kafka; sessions
/// beyond them show `lag: null`.
pub const MAX_SESSION_LAG_PARTITIONS: usize = 10_000;

/// The gate of an admin request: no session slot, the admin action on the proxy, then the
/// endpoint's parameters.
async fn admit<R>(
    state: &AppState,
    parts: &Parts,
    q: Params,
    parse: impl FnOnce(&HashMap<String, String>) -> Result<R, ProtocolError>,
) -> Result<R, HttpError> {
    let admitted = state
        .gate(
            parts,
            q,
            Endpoint {
                slot: Slot::None,
                parse,
                wants: |_: &R| vec![(Action::Admin, Resource::Proxy)],
                window: no_window,
            },
        )
        .await?;
    Ok(admitted.req)
}

/// A JSON answer, never cached by a browser or proxy in between.
pub fn json(body: serde_json::Value) -> Response {
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// `GET /admin/sessions[?lag=false]`: open sessions with their counters, assigned partitions
/// and, unless `lag=false`, their lag read from Kafka.
pub async fn sessions(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    let with_lag = admit(&state, &parts, q, params::parse_sessions).await?;
    let mut sessions = state.metrics.sessions();
    let mut body = serde_json::Map::new();
    if with_lag {
        if let Err(e) = fill_lag(&state, &mut sessions).await {
            body.insert("lag_error".into(), e.into());
        }
    }
    body.insert("sessions".into(), serde_json::json!(sessions));
    Ok(json(body.into()))
}

/// Each session's lag: per assigned partition with a known position, high watermark minus it;
/// per session, their sum (`None` when no partition's lag is known). One batched watermark
/// look-up for all sessions, through the admin look-up limit.
async fn fill_lag(state: &AppState, sessions: &mut [SessionReport]) -> Result<(), String> {
    let mut wanted: Vec<(String, i32)> = sessions
        .iter()
        .flat_map(|s| s.assigned.iter())
        .filter(|a| a.position.is_some())
        .map(|a| (a.topic.clone(), a.partition))
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted.truncate(MAX_SESSION_LAG_PARTITIONS);
    if wanted.is_empty() {
        return Ok(());
    }
    let marks = state
        .lookups
        .run(Duration::from_secs(5), state.kafka.watermarks_of(wanted))
        .await
        .map_err(|e| e.error.message)?;
    for s in sessions {
        let mut total = None;
        for a in &mut s.assigned {
            let high = marks.get(&(a.topic.clone(), a.partition)).and_then(|m| m.1);
            if let (Some(h), Some(p)) = (high, a.position) {
                a.lag = Some((h - p).max(0));
                total = Some(total.unwrap_or(0) + (h - p).max(0));
            }
        }
        s.lag = total;
    }
    Ok(())
}

/// `POST /admin/sessions/{id}/close` with an optional `{"reason":"..."}`: the session closes with
/// `closed_by_admin` (4410) and the reason.
pub async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    parts: Parts,
    q: Params,
    body: Bytes,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q, params::parse_none).await?;
    let reason = params::parse_close(&body)?;
    let not_found = || {
        HttpError::from(ProtocolError::new(
            ErrorCode::NotFound,
            format!("no open session has id {id:?}"),
        ))
    };
    let n: u64 = id.parse().map_err(|_| not_found())?;
    let first = state
        .metrics
        .close_session(n, reason.clone())
        .ok_or_else(not_found)?;
    tracing::info!(session = n, %reason, first, "session closed by an operator");
    let body = serde_json::json!({ "id": n, "reason": reason, "already_closing": !first });
    let mut r = json(body);
    *r.status_mut() = StatusCode::ACCEPTED;
    Ok(r)
}

/// `GET /admin/tail`: running readers and their socket counts.
pub async fn tail(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q, params::parse_none).await?;
    Ok(json(serde_json::json!({ "readers": state.tail.report() })))
}

/// `GET /admin/config`: the configuration the proxy runs with, secrets redacted.
pub async fn config(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    admit(&state, &parts, q, params::parse_none).await?;
    Ok(json(config::effective(&state.config)))
}
