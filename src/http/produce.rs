//! `GET /v1/produce` (a produce socket) and `POST /v1/topics/{topic}/records` (produce over
//! HTTP): gate, then the produce use case.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::gate::{Admitted, Endpoint, Params, Slot, Ws};
use super::{configure, open_session, AppState, HttpError, Opening};
use crate::access::{Action, Resource};
use crate::flow::produce::{batch, check_target, socket};
use crate::kafka::producer::Outcome;
use crate::protocol::produce::{self as wire, Decoder, ProduceRequest};
use crate::protocol::{ErrorCode, ProtocolError};

const HINT: &str = "wscat -c \"ws://HOST:PORT/v1/produce?topic=T\", or POST /v1/topics/T/records";

fn wants(req: &ProduceRequest) -> Vec<(Action, Resource)> {
    vec![(Action::Produce, Resource::Topic(req.topic.clone()))]
}

/// `GET /v1/produce?topic=T[&key=K][&partition=P][&encoding=E][&format=F]`: a produce socket.
pub async fn ws_produce(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    let endpoint = Endpoint {
        slot: Slot::Session,
        parse: wire::parse_ws,
        wants,
        // Unanswered records stay within the larger of the window and one frame's records.
        window: |r: &ProduceRequest| r.window.max(wire::MAX_FRAME_RECORDS),
    };
    let (admitted, ws) = state.ws_gate(&parts, q, ws, HINT, endpoint).await?;
    let Admitted {
        req,
        principal,
        permit,
    } = admitted;
    let opening = Opening {
        kind: "produce",
        topics: vec![req.topic.clone()],
        group: None,
        peer,
        principal,
        permit,
    };
    // The principal's produce rate, shared with its other sockets and requests: over it, the
    // socket is not read until tokens return.
    let rate = state.quotas.produce_rate(&opening.principal);
    let deps = state.deps();
    let ws = configure(ws, &state.config);
    Ok(open_session(&state, ws, opening, move |ws, stats| {
        socket::serve(ws, req, deps, stats, rate)
    }))
}

/// `POST /v1/topics/{topic}/records`: one record or a batch, answered when Kafka stored them.
pub async fn http_produce(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    parts: Parts,
    q: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    state.metrics.http_produce_requests.fetch_add(1, Relaxed);
    let endpoint = Endpoint {
        slot: Slot::Session,
        parse: |q: &_| {
            let Path(topic) =
                path.map_err(|e| ProtocolError::bad_request(format!("bad topic in path: {e}")))?;
            wire::parse_http(&topic, q)
        },
        wants,
        // A request holds at most this many records.
        window: |_: &ProduceRequest| wire::MAX_FRAME_RECORDS,
    };
    // A request holds a session slot and the drain token while it runs, like a socket.
    let Admitted {
        req,
        principal,
        permit: _permit,
        ..
    } = state.gate(&parts, q, endpoint).await?;
    let _token = state.token.clone();
    // Over the principal's produce rate: 429 with the seconds until it may produce again.
    let rate = state.quotas.produce_rate(&principal);
    if let Some(rate) = &rate {
        if let Some(wait) = rate.wait() {
            state.metrics.reject();
            return Err(rate.refuse(wait).into());
        }
    }
    let body = body.map_err(|e| {
        state.metrics.reject();
        HttpError::from(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "body exceeds maxFrameBytes ({} bytes)",
                    state.config.max_frame_bytes
                ),
            )
        } else {
            ProtocolError::bad_request(format!("cannot read body: {e}"))
        })
    })?;
    let partitions = check_target(&state.kafka, &req).await?;
    let raw = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("text/plain") || ct.starts_with("application/octet-stream")
        })
        .unwrap_or(false);
    let (decoded, single) = Decoder::new(&req).http_body(body, raw)?;
    if let Some(rate) = &rate {
        let (records, bytes) = socket::cost(&decoded);
        rate.take(records, bytes);
    }
    let answers = batch::produce_all(&state.kafka, &req.topic, &partitions, decoded).await;
    let ok = answers.iter().filter(|(_, o)| o.is_ok()).count() as u64;
    state
        .metrics
        .count_http_produce(ok, answers.len() as u64 - ok);
    if single {
        if let Some((id, outcome)) = answers.into_iter().next() {
            return match outcome {
                Ok(_) => Ok(json_response(
                    StatusCode::OK,
                    &wire::http_result(id.as_ref(), &outcome),
                )),
                Err(e) => Err(HttpError::from(e)),
            };
        }
        return Err(HttpError::from(ProtocolError::new(
            ErrorCode::Internal,
            "no answer for the record",
        )));
    }
    let status = StatusCode::from_u16(wire::http_batch_status(answers.iter().map(|(_, o)| o)))
        .unwrap_or(StatusCode::MULTI_STATUS);
    Ok(json_response(status, &Batch { records: &answers }))
}

/// A batch's response body, `{"records":[...]}`, serialized straight from the answers (at most
/// `MAX_FRAME_RECORDS` of them) without copying them.
#[derive(serde::Serialize)]
struct Batch<'a> {
    #[serde(serialize_with = "results")]
    records: &'a [(Option<serde_json::Value>, Outcome)],
}

fn results<S: serde::Serializer>(
    answers: &&[(Option<serde_json::Value>, Outcome)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        answers
            .iter()
            .map(|(id, o)| wire::http_result(id.as_ref(), o)),
    )
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(s) => (status, [(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => {
            HttpError::from(ProtocolError::new(ErrorCode::Internal, e.to_string())).into_response()
        }
    }
}
