//! `GET /` (the seed's consume) and `GET /v1/consume`: gate, then a consume session.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::response::Response;

use super::gate::{consume_wants, Admitted, Endpoint, Params, Slot, Ws};
use super::{configure, open_session, AppState, HttpError, Opening};
use crate::flow;
use crate::protocol::consume::{self, ConsumeRequest};

const HINT: &str = "wscat --connect \"ws://HOST:PORT/?topic=T&consumerGroup=G\"";

/// An acknowledging socket holds up to `window` records unacknowledged.
fn window(req: &ConsumeRequest) -> usize {
    match req.commit {
        consume::CommitMode::Ack => req.window,
        consume::CommitMode::Auto | consume::CommitMode::None => 0,
    }
}

fn wants(req: &ConsumeRequest) -> Vec<(crate::access::Action, crate::access::Resource)> {
    consume_wants(&req.topics, req.group.as_deref())
}

/// `GET /?topic=T&consumerGroup=G[&offset=N][&partition=P]`.
pub async fn seed(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    let default_partition = state.config.partition;
    let endpoint = Endpoint {
        slot: Slot::Session,
        parse: |q: &_| consume::parse_seed(q, default_partition),
        wants,
        window,
    };
    let (admitted, ws) = state.ws_gate(&parts, q, ws, HINT, endpoint).await?;
    Ok(upgrade(state, peer, admitted, ws, "seed"))
}

/// `GET /v1/consume?topic=T[,U]&group=G|partition=P[...]`.
pub async fn v1(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    let endpoint = Endpoint {
        slot: Slot::Session,
        parse: consume::parse_v1,
        wants,
        window,
    };
    let (admitted, ws) = state.ws_gate(&parts, q, ws, HINT, endpoint).await?;
    Ok(upgrade(state, peer, admitted, ws, "consume"))
}

fn upgrade(
    state: AppState,
    peer: SocketAddr,
    admitted: Admitted<ConsumeRequest>,
    ws: axum::extract::ws::WebSocketUpgrade,
    kind: &'static str,
) -> Response {
    let Admitted {
        req,
        principal,
        permit,
    } = admitted;
    let opening = Opening {
        kind,
        topics: req.topics.clone(),
        group: req.group.clone(),
        peer,
        principal,
        permit,
    };
    let deps = state.deps();
    let ws = configure(ws, &state.config);
    open_session(&state, ws, opening, move |socket, stats| {
        flow::consume::serve(socket, req, deps, stats)
    })
}
