//! kafka-proxy: Apache Kafka behind WebSocket and HTTP.
//!
//! # Layout
//! - [`config`]: startup options (CLI, `KAFKA_PROXY_*`, TOML), validated before binding.
//! - [`server`]: routes, authentication and limits before the upgrade; hands sockets to sessions.
//! - [`auth`]: the seed's `basic <password>` header and RFC 7617 Basic, in constant time.
//! - [`protocol`]: the wire contract, pure and unit-tested: parameters, frames, error codes.
//! - [`session`]: one consume socket: consumer, batching, window, backpressure, commits.
//! - [`tail`]: live tail without a group: one shared Kafka read per topic, fanned out to sockets.
//! - [`produce`]: produce sockets and the HTTP produce endpoint.
//! - [`kafka`]: librdkafka clients, metadata look-ups, the session consumer's rebalance hooks.
//!   Sessions read their records in batches through `rdkafka-batch` (`crates/rdkafka-batch`),
//!   the project's only `unsafe` code, kept out of this crate.
//! - [`metrics`]: counters, the session registry, `/metrics` and the seed's stats log.
//! - [`shutdown`]: the stop signal and the wait for sessions to drain.
//! - [`socket`]: WebSocket plumbing shared by sessions: bounded sends, read-error mapping.
//!
//! Data flows one way: Kafka -> session -> encoder -> socket, and socket -> decoder -> producer ->
//! ack for produce.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod kafka;
pub mod metrics;
pub mod produce;
pub mod protocol;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod socket;
pub mod tail;

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
}

/// Serves on an already bound listener until `shutdown` fires, then closes every socket with 1001,
/// commits what was delivered and returns within `config.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let kafka = Arc::new(kafka::Kafka::new(config.clone())?);
    let metrics = Arc::new(metrics::Metrics::default());
    let (token, drained) = shutdown::tracker();
    let state = server::AppState {
        config: config.clone(),
        kafka: kafka.clone(),
        metrics: metrics.clone(),
        auth: auth::Authenticator::new(config.auth.clone()),
        tail: Arc::new(tail::Hub::new(kafka.clone())),
        limiter: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        shutdown: shutdown.clone(),
        token,
    };
    if let Some(every) = config.stats_interval {
        tokio::spawn(metrics.clone().stats_log(every));
    }
    let app = server::router(state);
    let grace = config.shutdown_grace;
    let mut stop = shutdown.clone();
    let serve = tokio::spawn(server::serve(listener, app, shutdown.clone()));
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
    let k = kafka.clone();
    let _ = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        let _ = k.producer.flush(left);
    })
    .await;
    Ok(())
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
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        tracing::info!(%addr, kafka = %self.config.kafka, "kafka-proxy listening");
        let (trigger, shutdown) = shutdown::channel();
        tokio::spawn(async move {
            shutdown::os_signal().await;
            trigger.trigger();
        });
        run(listener, self.config, shutdown).await
    }
}
