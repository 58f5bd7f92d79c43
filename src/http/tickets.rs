//! `POST /v1/tickets`: trades a credential for a short-lived, single-use ticket a page puts in a
//! socket's URL (`?ticket=...`), so no long-lived secret lands in a URL or a log.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::gate::{no_window, Endpoint, Params, Slot};
use super::{AppState, HttpError};
use crate::protocol::ProtocolError;

/// The paths a ticket may open: the socket and stream endpoints.
pub const TICKET_PATHS: &[&str] = &["/", "/v1/consume", "/v1/tail", "/v1/produce", "/v1/sse"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    path: String,
}

fn parse(body: &[u8]) -> Result<String, ProtocolError> {
    let req: TicketRequest = serde_json::from_slice(body).map_err(|e| {
        ProtocolError::bad_request(format!(
            "expected a JSON body {{\"path\":\"/v1/consume\"}}: {e}"
        ))
    })?;
    if !TICKET_PATHS.contains(&req.path.as_str()) {
        return Err(ProtocolError::bad_request(format!(
            "tickets open one of {}; got {:?}",
            TICKET_PATHS.join(", "),
            req.path
        )));
    }
    Ok(req.path)
}

/// `POST /v1/tickets` with `{"path":"/v1/consume"}` and a credential: 201 with
/// `{"ticket","path","expiresIn"}`. The body must be `application/json`, which makes a
/// cross-origin call a preflighted CORS request that only allowed origins pass.
pub async fn issue(
    State(state): State<AppState>,
    parts: Parts,
    q: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(HttpError::from(ProtocolError::bad_request(
            "POST /v1/tickets takes Content-Type: application/json",
        )));
    }
    let body = body.map_err(|e| HttpError::from(ProtocolError::bad_request(e.body_text())))?;
    let path = parse(&body).map_err(|e| {
        state.metrics.reject();
        HttpError::from(e)
    })?;
    let admitted = state
        .gate(
            &parts,
            q,
            Endpoint {
                slot: Slot::None,
                parse: |_: &_| Ok(()),
                // What the ticket's socket asks for is authorized when it opens.
                wants: |_: &()| Vec::new(),
                window: no_window,
            },
        )
        .await?;
    let issued = state.tickets.issue(&admitted.principal, &path)?;
    Ok((StatusCode::CREATED, axum::Json(issued)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_requests_name_a_socket_path() {
        assert_eq!(parse(br#"{"path":"/v1/consume"}"#).unwrap(), "/v1/consume");
        for bad in [
            &br#"{"path":"/admin/sessions"}"#[..],
            br#"{"path":"/v1/consume","x":1}"#,
            br#"{}"#,
            b"path=/v1/consume",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
