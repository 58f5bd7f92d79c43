//! `GET /v1/tail?topic=T[&encoding=E]`: gate, join the topic's shared reader, then a tail socket.

use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::response::Response;

use super::gate::{no_window, Admitted, Endpoint, Params, Slot, Ws};
use super::{configure, open_session, AppState, HttpError, Opening};
use crate::access::{Action, Resource};
use crate::config::Config;
use crate::flow::tail::FRAME_BYTES;
use crate::protocol::tail::parse_tail;

/// Read buffer of a tail socket: clients send almost nothing (pongs, close).
const READ_BUFFER: usize = 1024;

const HINT: &str = "wscat --connect \"ws://HOST:PORT/v1/tail?topic=T\"";

pub async fn v1_tail(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    let endpoint = Endpoint {
        slot: Slot::Session,
        parse: parse_tail,
        wants: |(topic, _): &(String, _)| vec![(Action::Tail, Resource::Topic(topic.clone()))],
        window: no_window,
    };
    let (admitted, ws) = state.ws_gate(&parts, q, ws, HINT, endpoint).await?;
    let Admitted {
        req: (topic, enc),
        principal,
        permit,
    } = admitted;
    let reader = state.tail.join(&topic, enc, false).await.map_err(|e| {
        state.metrics.reject();
        HttpError::from(e)
    })?;
    let opening = Opening {
        kind: "tail",
        topics: vec![topic],
        group: None,
        peer,
        principal,
        permit,
    };
    let deps = state.deps();
    let ws = tail_socket(configure(ws, &state.config), &state.config);
    Ok(open_session(
        &state,
        ws,
        opening,
        move |socket, stats| async move {
            crate::flow::tail::follow(socket, reader, &stats, &deps).await
        },
    ))
}

/// Socket buffers sized for fan-out: tiny reads, frames written as they come.
fn tail_socket(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
    let max = config.max_frame_bytes.max(FRAME_BYTES);
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * max + 1024)
}
