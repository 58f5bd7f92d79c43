//! The one request gate every endpoint passes: admission limit -> authenticate -> parse ->
//! authorize -> upgrade. What comes out is a typed, authorized request that carries its
//! `Principal` into the session.

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::RawQuery;
use axum::http::header;
use axum::http::request::Parts;

use super::{AppState, HttpError};
use crate::access::admission::Permit;
use crate::access::authn::Credential;
use crate::access::{Action, Principal, Resource};
use crate::protocol::{parse_query, ProtocolError};

/// A WebSocket upgrade, or why the request is not one (answered with a JSON 400).
pub type Ws = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
/// The raw query string; the gate decodes it (`protocol::parse_query`) so that a parameter
/// given twice is refused rather than silently reduced to one, as `Query<HashMap>` would.
pub type Params = RawQuery;

/// The subject CN of the connection's verified client certificate (mTLS), put on each of its
/// requests by the connection's service (`http::serve`).
#[derive(Debug, Clone)]
pub struct PeerCert(pub std::sync::Arc<str>);

/// The credential a request presents: its `Authorization` header, else its verified client
/// certificate. A request with both is judged by the header.
pub fn credential(req: &Parts) -> Credential<'_> {
    if let Some(h) = req.headers.get(header::AUTHORIZATION) {
        return Credential::Authorization(h.as_bytes());
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

/// For endpoints that hold no records unacknowledged.
pub fn no_window<R>(_: &R) -> usize {
    0
}

impl AppState {
    /// Admission, authentication, parsing and authorization, in that order. A refusal is counted
    /// and answered with its documented status.
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
        let passed = async {
            let mut permit = match endpoint.slot {
                Slot::Session => Some(self.admission.admit()?),
                Slot::None => None,
            };
            let principal = self.auth.check(credential(req)).await?;
            let params = parse_query(q.0.as_deref().unwrap_or(""))?;
            let req = (endpoint.parse)(&params)?;
            self.policy
                .authorize_all(&principal, &(endpoint.wants)(&req))?;
            if let Some(p) = &mut permit {
                self.admission.reserve(p, (endpoint.window)(&req))?;
            }
            Ok(Admitted {
                req,
                principal,
                permit,
            })
        }
        .await;
        passed.map_err(|e: ProtocolError| {
            self.metrics.reject();
            HttpError(e)
        })
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
            HttpError(ProtocolError::bad_request(format!(
                "this endpoint takes a WebSocket upgrade ({e}); try {hint}"
            )))
        })?;
        Ok((admitted, ws))
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
