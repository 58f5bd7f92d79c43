//! Kafka clients: the only module that talks to librdkafka. Shared clients, errors and the
//! settings every client derives from; metadata look-ups, session consumers, the shared
//! producer and record encoding live in the submodules.
//!
//! Every blocking librdkafka call (metadata, watermarks, offsets-for-times, sync commit, drop)
//! runs on the blocking pool so tokio workers never stall.

pub mod consumer;
pub mod metadata;
pub mod producer;
pub mod record;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ThreadedProducer;
use rdkafka::ClientContext;

use crate::config::Config;
use crate::protocol::{ErrorCode, ProtocolError};

/// Sessions setting up their Kafka side at once; the rest wait their turn (docs/PROTOCOL.md).
pub const SETUP_CONCURRENCY: usize = 32;

/// Timeout for metadata and offset look-ups made on behalf of a client.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a topic's partition list is reused by produce (every HTTP request checks its topic).
const PARTITION_CACHE_TTL: Duration = Duration::from_secs(10);

/// Topics kept in the partition cache before expired entries are swept.
const PARTITION_CACHE_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KafkaAdapterError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("partition {1} does not exist in topic {0:?} ({2} partitions)")]
    UnknownPartition(String, i32, usize),
    #[error("offset {offset} is outside partition {topic}/{partition}'s range [{low}, {high}]")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        low: i64,
        high: i64,
    },
    #[error("Kafka denies access to topic {0:?}")]
    Forbidden(String),
    #[error("Kafka is unreachable: {0}")]
    Unavailable(String),
    #[error("Kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<KafkaAdapterError> for ProtocolError {
    fn from(e: KafkaAdapterError) -> Self {
        let code = match &e {
            KafkaAdapterError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            KafkaAdapterError::UnknownPartition(..) => ErrorCode::UnknownPartition,
            KafkaAdapterError::Forbidden(_) => ErrorCode::Forbidden,
            KafkaAdapterError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            KafkaAdapterError::Unavailable(_) => ErrorCode::KafkaUnavailable,
            KafkaAdapterError::Kafka(k) if is_unavailable(k) => ErrorCode::KafkaUnavailable,
            KafkaAdapterError::Kafka(_) => ErrorCode::KafkaError,
            KafkaAdapterError::Internal(_) => ErrorCode::Internal,
        };
        ProtocolError::new(code, e.to_string())
    }
}

fn is_unavailable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}

/// Quiets librdkafka's own logging into `tracing` at the right levels.
#[derive(Clone, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!(fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Warning => tracing::info!(fac, "librdkafka: {log_message}"),
            _ => tracing::debug!(fac, "librdkafka: {log_message}"),
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        if needs_operator(&error) {
            // The proxy's own credentials or TLS setup are wrong: nothing a client can fix, and
            // nothing that heals by itself.
            tracing::warn!(%error, "Kafka refuses the proxy: {reason}");
        } else {
            // Transport hiccups librdkafka retries by itself.
            tracing::debug!(%error, "librdkafka error: {reason}");
        }
    }
}
impl ConsumerContext for LogContext {}

/// librdkafka errors about the proxy's own access to Kafka, which an operator must see.
fn needs_operator(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::UnsupportedSASLMechanism
                | RDKafkaErrorCode::IllegalSASLState
                | RDKafkaErrorCode::InvalidConfig
        )
    )
}

/// Topic -> (when fetched, partition ids).
type PartitionCache = HashMap<String, (Instant, Arc<[i32]>)>;

/// Shared Kafka clients and the settings every session client derives from.
pub struct Kafka {
    config: Arc<Config>,
    /// One long-lived client for metadata and watermark look-ups, so sessions don't each bootstrap.
    meta: Arc<BaseConsumer<LogContext>>,
    /// The shared idempotent producer for all produce sockets and HTTP requests.
    pub producer: ThreadedProducer<producer::ProduceContext>,
    /// Last readiness probe (time, result), so `/readyz` polled often costs one look-up a second.
    ready: Mutex<Option<(Instant, bool)>>,
    /// Only one readiness look-up at a time; concurrent callers wait for it and read its result,
    /// so an unauthenticated `/readyz` flood cannot occupy the blocking pool.
    ready_refresh: tokio::sync::Mutex<()>,
    /// Bounds how many sessions set up their Kafka side at once (look-ups, a new client, the
    /// group join): a reconnect storm of thousands of sockets queues here instead of starting
    /// thousands of librdkafka clients, and their threads and sockets, together.
    setup: tokio::sync::Semaphore,
    /// Partition lists of existing topics with when they were fetched, so produce does not pay a
    /// blocking metadata round trip per request. An unknown topic is held as an empty list for
    /// `metadata::UNKNOWN_TOPIC_TTL`, so a flood of requests for it costs one look-up.
    partition_cache: Mutex<PartitionCache>,
}

impl Kafka {
    pub fn new(config: Arc<Config>) -> Result<Kafka, KafkaAdapterError> {
        let meta: BaseConsumer<LogContext> = base_config(&config)
            .set("client.id", "kafka-proxy-meta")
            .create_with_context(LogContext)?;
        let mut pc = base_config(&config);
        // Keyed records land where the Java client would put them, so per-key order holds
        // across proxy and native producers; a user's own `partitioner` wins.
        if !config.kafka_properties.contains_key("partitioner") {
            pc.set("partitioner", "murmur2_random");
        }
        let producer: ThreadedProducer<producer::ProduceContext> = pc
            .set("client.id", "kafka-proxy-producer")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "30000")
            .create_with_context(producer::ProduceContext)?;
        Ok(Kafka {
            config,
            meta: Arc::new(meta),
            producer,
            ready: Mutex::new(None),
            ready_refresh: tokio::sync::Mutex::new(()),
            setup: tokio::sync::Semaphore::new(SETUP_CONCURRENCY),
            partition_cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Base settings shared by every client: bootstrap servers and the user's pass-through properties.
fn base_config(c: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &c.kafka)
        .set("socket.keepalive.enable", "true")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in &c.kafka_properties {
        cc.set(k, v.expose());
    }
    cc
}

/// Runs a blocking librdkafka call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaAdapterError> + Send + 'static,
) -> Result<T, KafkaAdapterError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaAdapterError::Internal(format!("blocking task failed: {e}")))?
}

/// Hands the heap memory that closed sessions (their librdkafka clients above all) freed back to
/// the operating system, off the async workers. See `rdkafka_batch::release_free_memory`.
pub async fn release_free_memory() {
    let _ = tokio::task::spawn_blocking(rdkafka_batch::release_free_memory).await;
}

impl Kafka {
    /// A turn to set up a session's Kafka side; held until the session's consumer has joined.
    pub async fn setup_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // Never closed, so `None` cannot happen; a session then goes on without waiting.
        self.setup.acquire().await.ok()
    }

    /// Waits up to `limit` for queued produce records to reach Kafka (off the async workers).
    pub async fn flush(self: &Arc<Self>, limit: Duration) {
        let k = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            let _ = k.producer.flush(limit);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_access_problems_reach_the_operator() {
        let auth = KafkaError::ClientCreation("x".into());
        assert!(!needs_operator(&auth));
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ] {
            assert!(needs_operator(&KafkaError::Global(code)), "{code:?}");
        }
        assert!(!needs_operator(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
