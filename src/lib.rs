//! kafka-proxy: Apache Kafka behind WebSocket and HTTP.
//!
//! # Layout
//! Layers, lowest first. A module imports only from layers below it (or its own), and
//! `tests/layers.rs` fails when one does not. docs/ARCHITECTURE.md shows the data paths.
//!
//! 1. [`protocol`], [`config`], [`shutdown`], [`metrics`]: the wire contract (parameters,
//!    frames, error and close codes; pure), startup options with their one source of defaults,
//!    the stop signal, and counters with the session registry.
//! 2. [`access`]: `authn` (credentials to a principal: the shared password, the users and
//!    tokens files, JWTs with their keys (`jwt`, `jwks`, `fetch`), client certificates, tickets),
//!    `authz` (principal + action + resource to allow or deny, by the `[[acl]]` rules and
//!    `pattern`s), `admission` (the session cap, the unacknowledged-record budget, shutdown),
//!    `quota` (sessions per principal, produce rates, failed authentications per address).
//! 3. [`kafka`]: the only module that uses librdkafka: shared clients and metadata look-ups
//!    (`metadata`), session consumers with their rebalance events and batch fetch queue
//!    (`consumer`; the queue's `unsafe` code is `crates/rdkafka-batch`), the shared producer
//!    with its delivery routing (`producer`), records as the use cases see them (`record`),
//!    exact starts for resumable event streams (`resume`), and the topic watch that ends the
//!    reads of a topic deleted while it is read (`watch`).
//! 4. [`transport`]: `listen`, the accept loop with the connection-level limits (header-read
//!    timeout, socket cap, descriptors in reserve); `tls`, in-process TLS (rustls) with
//!    certificate reload; `ws`, the one WebSocket driver: queued writes, pings, dead-peer and
//!    stall detection, typed read errors, every end's close code; `sse`, the Server-Sent Events
//!    driver (a response body fed from a queue); both are `Outbound`, what the use cases drive;
//!    `lease`, what ends a connection from outside (`Watch`: a credential that lapses or is
//!    revoked, 4401, and an operator's close, 4410), and the socket wrapper (`Guarded`) that
//!    also renews the credential from in-band auth frames; `SseConn` polls its own `Watch`.
//! 5. [`flow`]: the use cases: `consume` (batching, window, backpressure), `ledger` (the ack
//!    ledger, pure), `tail` (hub and shared readers), `sse` (consume and tail on an event
//!    stream), `produce` (answer order and window; `produce::socket`, `produce::batch` for HTTP).
//! 6. [`http`]: the only module that serves HTTP: router, `browser` (origin check, CORS, no
//!    Basic challenge to a browser), the request gate (`gate`: limit -> authenticate -> parse ->
//!    authorize -> upgrade), `tickets`, `lease` (a session's credential and close request for
//!    `transport::lease`), thin handlers per endpoint, `ops` (healthz, readyz, metrics), `admin`
//!    (the admin API and the group-lag refresh) and `console` (the browser console's page and
//!    files, compiled in; the page's own code is `http/console/`, plain HTML, CSS and JavaScript).
//!
//! Records flow one way: Kafka -> `kafka::consumer` -> `flow::consume` or `flow::tail` ->
//! `protocol` encoder -> `transport::ws` or `transport::sse` -> client; and socket ->
//! `transport::ws` -> `protocol::produce` decoder -> `flow::produce` -> `kafka::producer` -> ack.

#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod flow;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod protocol;
pub mod shutdown;
pub mod transport;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;
pub use shutdown::{Shutdown, ShutdownTrigger};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot create Kafka clients: {0}")]
    Kafka(#[from] kafka::KafkaAdapterError),
    #[error("{0}")]
    Tls(#[from] transport::tls::TlsError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Access(#[from] access::authn::AccessError),
}

/// TLS for the listener, with client certificates when `tlsClientCa` is set (and their
/// revocation lists with `tlsClientCrl`).
fn load_tls(config: &Config) -> Result<Option<transport::tls::Tls>, ServerError> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let s = &config.security;
    let client = s
        .tls_client_ca
        .clone()
        .map(|ca| transport::tls::ClientAuth {
            ca,
            crl: s.tls_client_crl.clone(),
        });
    Ok(Some(transport::tls::Tls::with_client_auth(files, client)?))
}

/// Serves on an already bound listener until `shutdown` fires, then closes every socket with 1001,
/// commits what was delivered and returns within `config.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        for warning in access::authz::startup_warnings(&config, addr) {
            tracing::warn!("{warning}");
        }
    }
    // First, so a bad certificate or credential file stops startup before any Kafka client
    // exists.
    let tls = load_tls(&config)?;
    let auth = access::authn::Authenticator::from_config(&config)?;
    let ticket_key = match &config.security.ticket_key_file {
        Some(path) => Some(config::security::read_secret_file("ticketKeyFile", path)?),
        None => None,
    };
    let kafka = Arc::new(kafka::Kafka::new(config.clone())?);
    let metrics = Arc::new(metrics::Metrics::default());
    let (token, drained) = shutdown::tracker();
    let state = http::AppState::new(
        config.clone(),
        kafka.clone(),
        metrics.clone(),
        shutdown.clone(),
        token,
        auth.clone(),
        ticket_key,
    );
    auth.start(&shutdown);
    tokio::spawn(release_memory_after_sessions_leave(
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(http::admin::lag::refresh(
        kafka.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    if let Some(every) = config.stats_interval {
        tokio::spawn(metrics.clone().stats_log(every));
    }
    let app = http::router(state);
    let grace = config.shutdown_grace;
    let mut stop = shutdown.clone();
    let serve = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { http::serve(listener, app, &config, tls, shutdown).await })
    };
    stop.wait().await;
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(sessions = metrics.active(), "shutting down");
    // Sessions see the same signal, close with 1001 and commit; wait for them within the grace.
    let drain = async {
        drained.wait().await;
        let _ = serve.await;
    };
    if tokio::time::timeout_at(deadline, drain).await.is_err() {
        tracing::warn!(
            sessions = metrics.active(),
            "grace period over; exiting with sessions open"
        );
    }
    // Queued produce records get what is left of the grace period (at least a moment) to reach
    // Kafka.
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(std::time::Duration::from_millis(200));
    kafka.flush(left).await;
    Ok(())
}

/// How often the number of open sessions is looked at for `release_memory_after_sessions_leave`.
const TRIM_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Sessions that must have closed since the last look before freed memory is handed back.
const TRIM_AFTER_CLOSED: u64 = 100;

/// After many sessions left (a storm passed, or everyone disconnected), hands the memory they
/// freed back to the operating system; otherwise RSS stays near the storm's peak.
async fn release_memory_after_sessions_leave(
    metrics: Arc<metrics::Metrics>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(TRIM_CHECK);
    // Sessions closed when memory was last handed back. Counted, not sampled: a storm can come
    // and go between two looks.
    let mut trimmed_at = 0u64;
    // Looks left that hand memory back: librdkafka clients of closed sessions and readers are
    // destroyed on blocking threads, some after their session has left the count, so the
    // memory is handed back again on the next look too.
    let mut again = 0u8;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let active = metrics.active();
        let closed = metrics
            .connections_total
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(active as u64);
        let left = closed.saturating_sub(trimmed_at);
        if left >= TRIM_AFTER_CLOSED || (active == 0 && left > 0) {
            again = 2;
            trimmed_at = closed;
        }
        if again > 0 {
            again -= 1;
            kafka::release_free_memory().await;
            tracing::debug!(sessions = active, "freed memory handed back");
        }
    }
}

/// Connections the kernel queues before the accept loop takes them. tokio's default (1024) drops
/// the SYNs of a reconnect storm beyond it, and those clients wait seconds to retry; Linux caps
/// it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted proxy binds again at once, whatever connections of the last one linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The seed's embedding API: `KafkaProxy::new(config).listen().await`.
pub struct KafkaProxy {
    config: Config,
}

impl KafkaProxy {
    pub fn new(config: Config) -> Self {
        KafkaProxy { config }
    }

    /// Binds `config.listen` and serves until SIGINT or SIGTERM.
    pub async fn listen(self) -> Result<(), ServerError> {
        // A bad certificate or credential file is reported before the port is bound and
        // "listening" is logged; `run` loads the files again (cheap) for the embedders that call
        // it directly.
        load_tls(&self.config)?;
        access::authn::Authenticator::from_config(&self.config)?;
        let addr = self.config.listen;
        let listener = bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        tracing::info!(%addr, kafka = %self.config.kafka, "kafka-proxy listening");
        let (trigger, shutdown) = shutdown::channel();
        tokio::spawn(async move {
            shutdown::os_signal().await;
            trigger.trigger();
        });
        run(listener, self.config, shutdown).await
    }
}
