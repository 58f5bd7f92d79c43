//! `GET /v1/sse`: gate, open the stream's consumer (or join the topic's live tail) while errors
//! are still HTTP statuses, then an event stream (docs/PROTOCOL.md, "Server-Sent Events").

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::gate::{consume_wants, no_window, Admitted, Endpoint, Params, Slot};
use super::lease::session_watch;
use super::{AppState, HttpError};
use crate::access::{Action, Resource};
use crate::flow;
use crate::metrics::SessionMeta;
use crate::protocol::sse::{parse_sse, SseRequest};
use crate::protocol::ProtocolError;
use crate::transport::lease::Renewable;
use crate::transport::sse::SseConn;
use crate::transport::ws::stall_limit;

/// The header an `EventSource` sends back when it reconnects.
const LAST_EVENT_ID: &str = "last-event-id";

/// What a stream request asks: `tail` on the topic for a live stream (resumed or not), else
/// what `/v1/consume` asks.
fn wants(r: &SseRequest) -> Vec<(Action, Resource)> {
    match r {
        SseRequest::Live { topic, .. } => vec![(Action::Tail, Resource::Topic(topic.clone()))],
        SseRequest::Consume {
            req, live: true, ..
        } => req
            .topics
            .iter()
            .map(|t| (Action::Tail, Resource::Topic(t.clone())))
            .collect(),
        SseRequest::Consume { req, .. } => consume_wants(&req.topics, req.group.as_deref()),
    }
}

/// `GET /v1/sse?topic=T[,U]&group=G|partition=P[...]` or `GET /v1/sse?topic=T&live`.
pub async fn v1_sse(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
    q: Params,
) -> Result<Response, HttpError> {
    let header_id = parts
        .headers
        .get(LAST_EVENT_ID)
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ProtocolError::bad_request(
                    "Last-Event-ID is not one of the ids this endpoint sends",
                )
            })
        })
        .transpose();
    let endpoint = Endpoint {
        slot: Slot::Session,
        parse: move |q: &_| parse_sse(q, header_id?.as_deref()),
        wants,
        window: no_window,
    };
    let Admitted {
        req,
        principal,
        permit,
    } = state.gate(&parts, q, endpoint).await?;
    let deps = state.deps();
    let refused = |e: ProtocolError| {
        state.metrics.reject();
        HttpError::from(e)
    };
    let (meta, stream) = match req {
        SseRequest::Live { topic, encoding } => {
            let reader = state
                .tail
                .join(&topic, encoding, true)
                .await
                .map_err(refused)?;
            let meta = meta("sse-tail", vec![topic], None, peer, &principal);
            (meta, Stream::Live(reader))
        }
        SseRequest::Consume { req, resume, live } => {
            let kind = if live { "sse-tail" } else { "sse" };
            let meta = meta(
                kind,
                req.topics.clone(),
                req.group.clone(),
                peer,
                &principal,
            );
            let opened = flow::sse::open(&deps, req, &resume)
                .await
                .map_err(refused)?;
            (meta, Stream::Consume(Box::new(opened)))
        }
    };
    tracing::debug!(%peer, %principal, kind = meta.kind, "event stream opens");
    // The registry entry, the session slot and the drain token live exactly as long as the
    // stream's task.
    let guard = state.metrics.register(meta);
    // What the body handed to the connection is as acknowledged as an event stream gets.
    guard.stats.acks_when_written();
    // The stream ends with an `unauthorized` error event when the credential lapses or a reload
    // revokes it (no in-band renewal: the client reconnects with a fresh credential), and with
    // `closed_by_admin` on an operator's close request.
    let watch = session_watch(
        &state.auth,
        &principal,
        &guard.stats,
        Renewable::ByReconnect,
    );
    let (conn, body) = SseConn::new(
        state.config.ping_interval,
        stall_limit(state.config.ping_interval),
        watch,
    );
    let token = state.token.clone();
    tokio::spawn(async move {
        let stats = guard.stats.clone();
        match stream {
            Stream::Live(reader) => flow::sse::follow(conn, reader, deps, stats).await,
            Stream::Consume(opened) => flow::sse::serve(conn, *opened, deps, stats).await,
        }
        tracing::debug!(%peer, "event stream ended");
        drop(guard);
        drop(permit);
        drop(token);
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies in front (nginx) must pass events on as they come, not buffer the response.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn meta(
    kind: &'static str,
    topics: Vec<String>,
    group: Option<String>,
    peer: SocketAddr,
    principal: &crate::access::Principal,
) -> SessionMeta {
    SessionMeta {
        kind,
        topics,
        group,
        peer: peer.to_string(),
        principal: principal.to_string(),
    }
}

/// What a stream serves once it is registered.
enum Stream {
    Live(Arc<flow::tail::ReaderHandle>),
    Consume(Box<flow::sse::Opened>),
}
