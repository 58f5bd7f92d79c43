//! The HTTP surface, the only module that serves HTTP: the router, the request gate (`gate`),
//! one thin handler per endpoint, operations (`ops`) and the admin API (`admin`).
//!
//! Errors before the upgrade are an HTTP status with a JSON body; after it, sessions report them
//! with an error frame and/or a 4xxx close code (see `protocol::ErrorCode`).

pub mod admin;
pub mod browser;
pub mod consume;
pub mod gate;
pub mod lease;
pub mod ops;
pub mod produce;
pub mod sse;
pub mod tail;
pub mod tickets;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::access::admission::Admission;
use crate::access::authn::Authenticator;
use crate::access::authz::Policy;
use crate::access::quota::{Limited, Quotas};
use crate::access::tickets::Tickets;
use crate::config::Config;
use crate::flow::tail::Hub;
use crate::flow::Deps;
use crate::kafka::Kafka;
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::{SessionToken, Shutdown};
use crate::transport::lease::Renewable;
use crate::transport::listen::{self, Limits};
use crate::transport::tls::Tls;
use crate::transport::ws::Guarded;

/// State every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub kafka: Arc<Kafka>,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    pub policy: Policy,
    /// Caps concurrent sessions; a permit is taken before anything else.
    pub admission: Admission,
    /// Per-principal and per-address limits (sessions, produce rates, failed logins).
    pub quotas: Quotas,
    /// Shared live-tail readers, one per (topic, encoding).
    pub tail: Arc<Hub>,
    /// The admin API's limit and cache of look-ups that read Kafka.
    pub lookups: Arc<admin::Lookups>,
    /// Issues and redeems `POST /v1/tickets` tickets.
    pub tickets: Arc<Tickets>,
    /// Browser origins allowed to call the proxy.
    pub origins: browser::Origins,
    pub shutdown: Shutdown,
    /// Held by every session so shutdown can wait for them to finish.
    pub token: SessionToken,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        kafka: Arc<Kafka>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        token: SessionToken,
        auth: Authenticator,
        ticket_key: Option<String>,
    ) -> AppState {
        AppState {
            tickets: Arc::new(Tickets::new(
                ticket_key.as_deref(),
                config.security.ticket_ttl,
            )),
            origins: browser::Origins::new(&config.security.allowed_origins, auth.enabled()),
            auth,
            policy: Policy::from_config(&config),
            quotas: Quotas::new(config.security.quotas.clone(), metrics.clone()),
            admission: Admission::new(
                config.max_connections,
                config.max_unacked_records,
                shutdown.clone(),
            ),
            tail: Arc::new(Hub::new(kafka.clone())),
            lookups: Arc::default(),
            config,
            kafka,
            metrics,
            shutdown,
            token,
        }
    }

    /// What every session needs from the server.
    pub fn deps(&self) -> Deps {
        Deps {
            kafka: self.kafka.clone(),
            config: self.config.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// An error response before the upgrade: status plus `{"error":{"code","message"}}`, and a
/// `Retry-After` header when the client is told when to come back.
pub struct HttpError {
    pub error: ProtocolError,
    /// Whole seconds for `Retry-After` (429s of rate limits and failed-login back-off).
    pub retry_after: Option<u64>,
}

impl From<ProtocolError> for HttpError {
    fn from(error: ProtocolError) -> Self {
        HttpError {
            error,
            retry_after: None,
        }
    }
}

impl From<Limited> for HttpError {
    fn from(l: Limited) -> Self {
        HttpError {
            retry_after: Some(l.retry_after_secs()),
            error: l.error,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.error.http_body(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.error.code == ErrorCode::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"kafka-proxy\""),
            );
        }
        resp
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(consume::seed))
        .route("/v1/consume", get(consume::v1))
        .route("/v1/tail", get(tail::v1_tail))
        .route("/v1/sse", get(sse::v1_sse))
        .route("/v1/produce", get(produce::ws_produce))
        .route(
            "/v1/topics/{topic}/records",
            // An HTTP produce body is bounded like a WebSocket frame.
            post(produce::http_produce).layer(axum::extract::DefaultBodyLimit::max(
                state.config.max_frame_bytes,
            )),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin/sessions", get(admin::sessions))
        .route(
            "/admin/sessions/{id}/close",
            post(admin::close).layer(axum::extract::DefaultBodyLimit::max(
                admin::CLOSE_BODY_LIMIT,
            )),
        )
        .route("/admin/tail", get(admin::tail))
        .route("/admin/config", get(admin::config))
        .route("/admin/topics", get(admin::kafka::topics))
        .route("/admin/topics/{topic}", get(admin::kafka::topic))
        .route("/admin/groups", get(admin::kafka::groups))
        .route("/admin/groups/{group}", get(admin::kafka::group))
        .route("/v1/tickets", post(tickets::issue))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ))
        .with_state(state)
}

/// A socket the gate let through, on its way to becoming a session: what `/admin/sessions`
/// shows of it, and the slot it holds.
pub struct Opening {
    pub kind: &'static str,
    pub topics: Vec<String>,
    pub group: Option<String>,
    pub peer: std::net::SocketAddr,
    pub principal: crate::access::Principal,
    pub permit: Option<crate::access::admission::Permit>,
}

/// Registers the session and runs `serve` on the socket once upgraded. The registry entry, the
/// session slot and the drain token live exactly as long as `serve`, whatever the endpoint. The
/// socket ends with 4401 when the principal's credential lapses or is revoked, and with 4410 on
/// an operator's close request (`lease::session_watch`).
pub fn open_session<F, Fut>(
    state: &AppState,
    ws: WebSocketUpgrade,
    o: Opening,
    serve: F,
) -> Response
where
    F: FnOnce(Guarded<axum::extract::ws::WebSocket>, Arc<crate::metrics::SessionStats>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Opening {
        kind,
        topics,
        group,
        peer,
        principal,
        permit,
    } = o;
    tracing::debug!(%peer, %principal, ?topics, ?group, kind, "session opens");
    let guard = state.metrics.register(crate::metrics::SessionMeta {
        kind,
        topics,
        group,
        peer: peer.to_string(),
        principal: principal.to_string(),
    });
    let token = state.token.clone();
    // A credential that lapses (a JWT) or that a reload removes or changes ends the session with
    // 4401, unless the client renews it in-band; an operator's close request ends it with 4410.
    let watch = lease::session_watch(&state.auth, &principal, &guard.stats, Renewable::InBand);
    ws.on_upgrade(move |socket| async move {
        let socket = Guarded::new(socket, watch);
        serve(socket, guard.stats.clone()).await;
        tracing::debug!(%peer, kind, "session ended");
        drop(guard);
        drop(permit);
        drop(token);
    })
    .into_response()
}

/// Applies the frame limits every socket shares.
pub fn configure(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
    ws.max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes)
}

/// Serves `router` on `listener` until `shutdown` fires, through the accept loop's limits
/// (`transport::listen`): sockets beyond `maxConnections` + headroom, or near the open-file
/// limit, are refused with 429 before HTTP. With `tls` (loaded from `config.tls` at startup),
/// HTTPS and wss share the port.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &Config,
    tls: Option<Tls>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let make = move |peer: SocketAddr, cert: Option<String>| {
        let router = app.clone();
        let cert = cert.map(|cn| gate::PeerCert(Arc::from(cn)));
        hyper::service::service_fn(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                // Handlers read the peer address as axum's `ConnectInfo`, and the gate its
                // verified client certificate's name.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                if let Some(cert) = &cert {
                    req.extensions_mut().insert(cert.clone());
                }
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, req).await }
            },
        )
    };
    let limits = Limits::for_sessions(config.max_connections);
    listen::serve(listener, make, limits, tls, shutdown).await
}
