//! HTTP and WebSocket surface: routes, authentication, limits and the accept loop.
//!
//! Errors before the upgrade are an HTTP status with a JSON body; after it, sessions report them
//! with an error frame and/or a 4xxx close code (see `protocol::ErrorCode`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::kafka::Kafka;
use crate::metrics::{Metrics, SessionMeta};
use crate::protocol::consume::{self, ConsumeRequest};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::session::{self, Deps};
use crate::shutdown::{SessionToken, Shutdown};

/// State every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub kafka: Arc<Kafka>,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    /// Shared live-tail readers, one per (topic, encoding).
    pub tail: Arc<crate::tail::Hub>,
    /// Caps concurrent sessions; a permit is taken before the upgrade.
    pub limiter: Arc<Semaphore>,
    pub shutdown: Shutdown,
    /// Held by every session so shutdown can wait for them to finish.
    pub token: SessionToken,
}

impl AppState {
    pub fn deps(&self) -> Deps {
        Deps {
            kafka: self.kafka.clone(),
            config: self.config.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Authenticates a request from its `Authorization` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ProtocolError> {
        self.auth
            .check(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    }

    /// Takes a session slot or refuses with `limit_reached`.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ProtocolError> {
        if self.shutdown.is_triggered() {
            return Err(ProtocolError::new(
                ErrorCode::ShuttingDown,
                "proxy is shutting down",
            ));
        }
        self.limiter.clone().try_acquire_owned().map_err(|_| {
            ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "too many sessions (maxConnections = {})",
                    self.config.max_connections
                ),
            )
        })
    }
}

/// An error response before the upgrade: status plus `{"error":{"code","message"}}`.
pub struct HttpError(pub ProtocolError);

impl From<ProtocolError> for HttpError {
    fn from(e: ProtocolError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.0.http_body(),
        )
            .into_response();
        if self.0.code == ErrorCode::Unauthorized {
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
        .route("/", get(seed_consume))
        .route("/v1/consume", get(v1_consume))
        .route("/v1/tail", get(crate::tail::v1_tail))
        .route("/v1/produce", get(crate::produce::ws_produce))
        .route(
            "/v1/topics/{topic}/records",
            // An HTTP produce body is bounded like a WebSocket frame.
            post(crate::produce::http_produce).layer(axum::extract::DefaultBodyLimit::max(
                state.config.max_frame_bytes,
            )),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/sessions", get(admin_sessions))
        .route("/admin/tail", get(crate::tail::admin_tail))
        .with_state(state)
}

/// A WebSocket upgrade, or why the request is not one (answered with a JSON 400).
pub type Ws = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
/// Query parameters, or why they could not be decoded (answered with a JSON 400).
pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub fn params(q: Params) -> Result<HashMap<String, String>, ProtocolError> {
    q.map(|Query(m)| m)
        .map_err(|e| ProtocolError::bad_request(format!("bad query string: {e}")))
}

/// Checks what every WebSocket endpoint needs before the upgrade: a real upgrade request.
pub fn require_upgrade(ws: Ws) -> Result<WebSocketUpgrade, ProtocolError> {
    ws.map_err(|e| {
        ProtocolError::bad_request(format!(
            "this endpoint takes a WebSocket upgrade ({e}); try wscat --connect \"ws://HOST:PORT/?topic=T&consumerGroup=G\""
        ))
    })
}

async fn seed_consume(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    let default_partition = state.config.partition;
    let parse = |q: &HashMap<String, String>| consume::parse_seed(q, default_partition);
    consume_endpoint(state, peer, &headers, q, ws, parse, "seed")
}

async fn v1_consume(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    consume_endpoint(state, peer, &headers, q, ws, consume::parse_v1, "consume")
}

/// What both consume endpoints check before the upgrade: credentials, parameters, an upgrade.
fn consume_endpoint(
    state: AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    q: Params,
    ws: Ws,
    parse: impl FnOnce(&HashMap<String, String>) -> Result<ConsumeRequest, ProtocolError>,
    kind: &'static str,
) -> Result<Response, HttpError> {
    let checked = state
        .authenticate(headers)
        .and_then(|_principal| parse(&params(q)?))
        .and_then(|req| Ok((req, require_upgrade(ws)?)));
    let (req, ws) = checked.inspect_err(|_| state.metrics.reject())?;
    upgrade_consume(state, ws, req, peer, kind)
}

fn upgrade_consume(
    state: AppState,
    ws: WebSocketUpgrade,
    req: ConsumeRequest,
    peer: SocketAddr,
    kind: &'static str,
) -> Result<Response, HttpError> {
    let permit = state.admit()?;
    let guard = state.metrics.register(SessionMeta {
        kind,
        topics: req.topics.clone(),
        group: req.group.clone(),
        peer: peer.to_string(),
    });
    let deps = state.deps();
    let token = state.token.clone();
    tracing::debug!(%peer, topics = ?req.topics, group = ?req.group, kind, "consume session");
    let format = req.format;
    Ok(configure(ws, &state.config)
        .on_upgrade(move |socket| async move {
            let stats = guard.stats.clone();
            session::consume(socket, req, deps, stats).await;
            tracing::debug!(%peer, ?format, "consume session ended");
            drop(guard);
            drop(permit);
            drop(token);
        })
        .into_response())
}

/// Applies the frame limits every socket shares.
pub fn configure(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
    ws.max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.kafka.ready().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        HttpError(ProtocolError::new(
            ErrorCode::KafkaUnavailable,
            format!("Kafka at {} does not answer", state.config.kafka),
        ))
        .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let ready = state.kafka.ready().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(ready),
    )
        .into_response()
}

async fn admin_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    state.authenticate(&headers)?;
    let body = serde_json::json!({ "sessions": state.metrics.sessions() });
    Ok(axum::Json(body).into_response())
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Frames must not wait for the client's delayed ACK (Nagle): small live frames would gain up
    // to 40 ms of latency.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
}
