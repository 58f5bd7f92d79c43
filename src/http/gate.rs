//! The one request gate every endpoint passes: admission limit -> failed-login back-off ->
//! authenticate -> principal's session quota -> parse -> authorize -> upgrade. What comes out is a typed, authorized request that carries its
//! `Principal` into the session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::{AppState, HttpError};
use crate::access::admission::Permit;
use crate::access::authn::Credential;
use crate::access::{Action, Principal, Resource};
use crate::protocol::{parse_query, ErrorCode, ProtocolError};

/// A WebSocket upgrade, or why the request is not one (answered with a JSON 400).
pub type Ws = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
/// The request's path and raw query string. The gate decodes the query
/// (`protocol::parse_query`) so that a parameter given twice is refused rather than silently
/// reduced to one, as `Query<HashMap>` would; the path is what a ticket must have been issued for.
pub struct Params {
    pub path: String,
    pub query: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
        })
    }
}

/// The WebSocket subprotocol a browser names to authenticate with a bearer token: it offers
/// `kafka-proxy` and `bearer.<token>`, the server answers `kafka-proxy` (docs/PROTOCOL.md).
pub const SUBPROTOCOL: &str = "kafka-proxy";
const BEARER_PREFIX: &str = "bearer.";

/// The bearer token of a `Sec-WebSocket-Protocol` offer, when it names `kafka-proxy` too.
fn subprotocol_bearer(headers: &HeaderMap) -> Option<String> {
    // Only a WebSocket upgrade negotiates subprotocols.
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&SUBPROTOCOL) {
        return None;
    }
    offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PREFIX))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The subject CN of the connection's verified client certificate (mTLS), put on each of its
/// requests by the connection's service (`http::serve`).
#[derive(Debug, Clone)]
pub struct PeerCert(pub std::sync::Arc<str>);

/// The credential a request presents (a ticket aside): its `Authorization` header, else a bearer
/// token offered as a WebSocket subprotocol, else its verified client certificate. A request with
/// a header and a certificate is judged by the header.
pub fn credential<'a>(req: &'a Parts, subprotocol_bearer: Option<&'a str>) -> Credential<'a> {
    if let Some(h) = req.headers.get(header::AUTHORIZATION) {
        return Credential::Authorization(h.as_bytes());
    }
    if let Some(token) = subprotocol_bearer {
        return Credential::Bearer(token);
    }
    match req.extensions.get::<PeerCert>() {
        Some(PeerCert(cn)) => Credential::Certificate(cn),
        None => Credential::None,
    }
}

/// Whether a request takes a session slot (`maxConnections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Sockets and HTTP produce requests: they hold Kafka resources while they run.
    Session,
    /// Admin reads: answered at once, and must work when the proxy is full.
    None,
}

/// A request the gate let through.
pub struct Admitted<R> {
    pub req: R,
    pub principal: Principal,
    /// The session slot it holds; dropping it frees the slot.
    pub permit: Option<Permit>,
}

/// What an endpoint tells the gate: how to parse its parameters, what the parsed request asks
/// to do to what, and how many unacknowledged records (its window) it may hold.
pub struct Endpoint<P, W, V> {
    pub slot: Slot,
    pub parse: P,
    pub wants: W,
    /// Records the request reserves from `maxUnackedRecords` while it runs.
    pub window: V,
}

/// The query parameter a ticket (`POST /v1/tickets`) is presented in.
pub const TICKET_PARAM: &str = "ticket";

/// For endpoints that hold no records unacknowledged.
pub fn no_window<R>(_: &R) -> usize {
    0
}

impl AppState {
    /// Admission, authentication, parsing and authorization, in that order. A refusal is counted
    /// and answered with its documented status. A client address that failed authentication too
    /// often is refused before its credentials are even looked at, so a guessing loop learns
    /// nothing more.
    pub async fn gate<R, P, W, V>(
        &self,
        req: &Parts,
        q: Params,
        endpoint: Endpoint<P, W, V>,
    ) -> Result<Admitted<R>, HttpError>
    where
        P: FnOnce(&HashMap<String, String>) -> Result<R, ProtocolError>,
        W: FnOnce(&R) -> Vec<(Action, Resource)>,
        V: FnOnce(&R) -> usize,
    {
        let peer = req
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let passed = async {
            let mut permit = match endpoint.slot {
                Slot::Session => Some(self.admission.admit()?),
                Slot::None => None,
            };
            self.quotas.auth_allowed(peer)?;
            // A malformed query is reported after authentication, in the gate's order.
            let parsed = parse_query(q.query.as_deref().unwrap_or(""));
            let ticket = parsed.as_ref().ok().and_then(|p| p.get(TICKET_PARAM));
            let bearer = subprotocol_bearer(&req.headers);
            let principal = match ticket {
                Some(t) => self.tickets.redeem(t, &q.path),
                None => self.auth.check(credential(req, bearer.as_deref())).await,
            }
            .inspect_err(|e| {
                if e.code == ErrorCode::Unauthorized {
                    self.quotas.auth_failed(peer);
                }
            })?;
            if let Some(p) = &mut permit {
                p.hold(self.quotas.session(&principal)?);
            }
            let mut params = parsed?;
            params.remove(TICKET_PARAM);
            let req = (endpoint.parse)(&params)?;
            self.policy
                .authorize_all(&principal, &(endpoint.wants)(&req))
                .inspect_err(|_| {
                    self.metrics.access.denied.fetch_add(1, Relaxed);
                })?;
            if let Some(p) = &mut permit {
                self.admission.reserve(p, (endpoint.window)(&req))?;
            }
            Ok::<_, HttpError>(Admitted {
                req,
                principal,
                permit,
            })
        }
        .await;
        passed.inspect_err(|_| self.metrics.reject())
    }

    /// The whole gate of a WebSocket endpoint: `gate`, then a real upgrade request. `hint` shows
    /// how to connect when the request is not one.
    pub async fn ws_gate<R, P, W, V>(
        &self,
        req: &Parts,
        q: Params,
        ws: Ws,
        hint: &str,
        endpoint: Endpoint<P, W, V>,
    ) -> Result<(Admitted<R>, WebSocketUpgrade), HttpError>
    where
        P: FnOnce(&HashMap<String, String>) -> Result<R, ProtocolError>,
        W: FnOnce(&R) -> Vec<(Action, Resource)>,
        V: FnOnce(&R) -> usize,
    {
        let admitted = self.gate(req, q, endpoint).await?;
        let ws = ws.map_err(|e| {
            self.metrics.reject();
            HttpError::from(ProtocolError::bad_request(format!(
                "this endpoint takes a WebSocket upgrade ({e}); try {hint}"
            )))
        })?;
        // Answered only when offered: a client that names no subprotocol must get none back.
        Ok((admitted, ws.protocols([SUBPROTOCOL])))
    }
}

/// What a consume request asks: to read each topic, and to join its group if it names one.
pub fn consume_wants(topics: &[String], group: Option<&str>) -> Vec<(Action, Resource)> {
    let mut wants: Vec<(Action, Resource)> = topics
        .iter()
        .map(|t| (Action::Consume, Resource::Topic(t.clone())))
        .collect();
    if let Some(g) = group {
        wants.push((Action::Group, Resource::Group(g.to_string())));
    }
    wants
}
