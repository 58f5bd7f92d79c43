//! Kafka clients: the only module that talks to librdkafka. Shared clients, errors and the
//! settings every client derives from; metadata look-ups, session consumers, the shared
//! producer and record encoding live in the submodules.
//!
//! Every blocking librdkafka call (metadata, watermarks, offsets-for-times, sync commit, drop)
//! runs on the blocking pool so tokio workers never stall.

pub mod consumer;
pub mod groups;
pub mod metadata;
pub mod producer;
pub mod record;
pub mod resume;
pub mod watch;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
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
    /// Kafka refuses the proxy's own login or TLS connection (see `login_refused`).
    #[error("{0}; the proxy's operator must fix its Kafka settings")]
    LoginRefused(&'static str),
    /// librdkafka refused the Kafka properties; the rejected value is never part of it.
    #[error("librdkafka refuses the Kafka properties (values not shown): {0}")]
    Config(String),
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
            KafkaAdapterError::Unavailable(_) | KafkaAdapterError::LoginRefused(_) => {
                ErrorCode::KafkaUnavailable
            }
            KafkaAdapterError::Kafka(k) if is_unavailable(k) => ErrorCode::KafkaUnavailable,
            KafkaAdapterError::Kafka(_) => ErrorCode::KafkaError,
            KafkaAdapterError::Config(_) | KafkaAdapterError::Internal(_) => ErrorCode::Internal,
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

/// Marks a secret in a line the proxy logs or sends instead of it.
pub const REDACTED: &str = "<redacted>";

/// Whether a Kafka property's value is a secret. librdkafka hides its own secret properties
/// (`sasl.password`, `ssl.key.password`, ...) in its configuration dumps, but a rejected
/// property's value is quoted by rust-rdkafka's error, and any log line could quote one;
/// `sasl.jaas.config` (the Java client's way to give a password, which librdkafka refuses) is
/// how a password most often ends up in a property librdkafka does not know.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "oauthbearer.config",
        "key.pem",
        "ssl_key",
        "private.key",
    ]
    .iter()
    .any(|part| key.contains(part))
}

/// The secret values among the operator's Kafka properties, cut out of every librdkafka log
/// line and error before the proxy logs it or tells a client.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is cut whole.
    secrets: Arc<[String]>,
}

impl Redactor {
    pub fn new(c: &Config) -> Redactor {
        let mut secrets: Vec<String> = c
            .kafka_properties
            .iter()
            .filter(|(k, v)| is_secret_property(k) && !v.expose().is_empty())
            .map(|(_, v)| v.expose().to_string())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor {
            secrets: secrets.into(),
        }
    }

    /// `s` with every secret replaced by `REDACTED`.
    pub fn apply<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(s);
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    /// The error of creating a client, safe to log and to show: a refused property is named
    /// with librdkafka's reason, never with its value (rust-rdkafka's `Display` appends it, so
    /// a typo such as `sasl.passwd=...` would print the password).
    fn client_error(&self, e: KafkaError) -> KafkaAdapterError {
        match e {
            KafkaError::ClientConfig(_, desc, key, value) => {
                let mut desc = self.apply(&desc).into_owned();
                if !value.is_empty() {
                    desc = desc.replace(&value, REDACTED);
                }
                KafkaAdapterError::Config(format!("{key}: {desc}"))
            }
            KafkaError::ClientCreation(msg) => KafkaAdapterError::Config(self.apply(&msg).into()),
            other => KafkaAdapterError::Kafka(other),
        }
    }

    /// Creates a client; errors as `client_error`.
    pub fn create<C, T>(&self, cc: &ClientConfig, context: C) -> Result<T, KafkaAdapterError>
    where
        C: ClientContext,
        T: FromClientConfigAndContext<C>,
    {
        cc.create_with_context(context)
            .map_err(|e| self.client_error(e))
    }
}

/// How long a refused login explains why Kafka cannot be reached. librdkafka retries a refused
/// connection at least every `reconnect.backoff.max.ms` (10 s by default) but reports the same
/// error again only after 30 s.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);

/// librdkafka's own logging into `tracing` at the right levels, with secrets cut out, and the
/// last time Kafka refused the proxy's own login (shared by all its clients, which log in alike).
#[derive(Clone, Default)]
pub struct LogContext {
    redact: Redactor,
    refused: Arc<Mutex<Option<(Instant, &'static str)>>>,
}

impl LogContext {
    pub fn new(redact: Redactor) -> LogContext {
        LogContext {
            redact,
            refused: Arc::default(),
        }
    }

    /// Why Kafka refused the proxy's login or TLS connection within `REFUSAL_MEMORY`, if it did:
    /// a lookup that timed out meanwhile timed out because of it.
    pub fn refusal(&self) -> Option<&'static str> {
        let g = self.refused.lock().ok()?;
        g.and_then(|(at, why)| (at.elapsed() < REFUSAL_MEMORY).then_some(why))
    }

    /// Kafka answered: a refusal seen before is over.
    pub fn answered(&self) {
        if let Ok(mut g) = self.refused.lock() {
            *g = None;
        }
    }

    /// Why Kafka is unavailable, for a client: the proxy's refused login when that is the
    /// cause (a timeout alone would send operators after the network), else `detail`.
    pub fn unavailable(&self, detail: impl std::fmt::Display) -> KafkaAdapterError {
        match self.refusal() {
            Some(why) => KafkaAdapterError::LoginRefused(why),
            None => KafkaAdapterError::Unavailable(self.redact.apply(&detail.to_string()).into()),
        }
    }

    /// A failed metadata or watermark look-up as the client should see it.
    pub fn lookup_error(&self, e: KafkaError) -> KafkaAdapterError {
        if let Some(why) = login_refused(&e) {
            KafkaAdapterError::LoginRefused(why)
        } else if is_unavailable(&e) {
            self.unavailable(e)
        } else {
            KafkaAdapterError::Kafka(e)
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redact
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let line = self.redact.apply(log_message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!(fac, "librdkafka: {line}"),
            RDKafkaLogLevel::Warning => tracing::info!(fac, "librdkafka: {line}"),
            _ => tracing::debug!(fac, "librdkafka: {line}"),
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.redact.apply(reason);
        let shown = error.to_string();
        let shown = self.redact.apply(&shown);
        if let Some(why) = login_refused(&error) {
            if let Ok(mut g) = self.refused.lock() {
                *g = Some((Instant::now(), why));
            }
        }
        if needs_operator(&error) {
            // The proxy's own credentials or TLS setup are wrong: nothing a client can fix, and
            // nothing that heals by itself.
            tracing::warn!(error = %shown, "Kafka refuses the proxy: {reason}");
        } else {
            // Transport hiccups librdkafka retries by itself.
            tracing::debug!(error = %shown, "librdkafka error: {reason}");
        }
    }
}
impl ConsumerContext for LogContext {}

/// What a client is told when Kafka refuses the proxy's own connection (`None` for other errors).
fn login_refused(e: &KafkaError) -> Option<&'static str> {
    match e.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::UnsupportedSASLMechanism
        | RDKafkaErrorCode::IllegalSASLState => {
            Some("Kafka refuses the proxy's login (SASL authentication failed)")
        }
        RDKafkaErrorCode::SSL => {
            Some("the TLS connection from the proxy to Kafka fails (certificate or TLS settings)")
        }
        _ => None,
    }
}

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
    /// Logging, secret redaction and login refusals, shared by every client of this proxy.
    log: LogContext,
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
    /// Ends the reads of a topic deleted (or hidden by Kafka's ACLs) while it is read.
    watch: watch::TopicWatch,
}

impl Kafka {
    pub fn new(config: Arc<Config>) -> Result<Kafka, KafkaAdapterError> {
        let log = LogContext::new(Redactor::new(&config));
        let meta: BaseConsumer<LogContext> = log.redactor().create(
            base_config(&config).set("client.id", "kafka-proxy-meta"),
            log.clone(),
        )?;
        let watcher: BaseConsumer<LogContext> = log.redactor().create(
            base_config(&config).set("client.id", "kafka-proxy-watch"),
            log.clone(),
        )?;
        let mut pc = base_config(&config);
        // Keyed records land where the Java client would put them, so per-key order holds
        // across proxy and native producers; a user's own `partitioner` wins.
        if !config.kafka_properties.contains_key("partitioner") {
            pc.set("partitioner", "murmur2_random");
        }
        pc.set("client.id", "kafka-proxy-producer")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "30000");
        let producer: ThreadedProducer<producer::ProduceContext> = log
            .redactor()
            .create(&pc, producer::ProduceContext { log: log.clone() })?;
        let watch = watch::TopicWatch::new(watcher, log.clone());
        Ok(Kafka {
            config,
            meta: Arc::new(meta),
            log,
            producer,
            ready: Mutex::new(None),
            ready_refresh: tokio::sync::Mutex::new(()),
            setup: tokio::sync::Semaphore::new(SETUP_CONCURRENCY),
            partition_cache: Mutex::new(HashMap::new()),
            watch,
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

    fn config_with(props: &[(&str, &str)]) -> Config {
        let mut c = Config::default();
        for (k, v) in props {
            c.kafka_properties
                .insert(k.to_string(), crate::config::Secret::new(*v));
        }
        c
    }

    #[test]
    fn secret_property_values_are_cut_out_of_lines() {
        let c = config_with(&[
            ("sasl.password", "hunter2-long"),
            ("ssl.key.password", "hunter2"),
            ("sasl.username", "proxy"),
            ("ssl.ca.location", "/etc/ca.pem"),
        ]);
        let r = Redactor::new(&c);
        let line = "login proxy/hunter2-long, key hunter2, ca /etc/ca.pem";
        assert_eq!(
            r.apply(line),
            "login proxy/<redacted>, key <redacted>, ca /etc/ca.pem"
        );
        assert!(matches!(r.apply("nothing secret"), Cow::Borrowed(_)));
        for key in [
            "sasl.jaas.config",
            "SASL.PASSWORD",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        assert!(!is_secret_property("sasl.username"));
    }

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let r = Redactor::new(&config_with(&[("sasl.password", "s3cret-pw")]));
        // As rust-rdkafka reports a property librdkafka does not know (a typo of a secret key).
        let e = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            "No such configuration property: \"sasl.passwd\"".into(),
            "sasl.passwd".into(),
            "typo-secret".into(),
        );
        assert!(
            e.to_string().contains("typo-secret"),
            "rust-rdkafka quotes it"
        );
        let shown = r.client_error(e).to_string();
        assert!(
            shown.contains("sasl.passwd") && !shown.contains("typo-secret"),
            "{shown}"
        );
        let e = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"quoted-secret\" for configuration property \"x\"".into(),
            "x".into(),
            "quoted-secret".into(),
        );
        let shown = r.client_error(e).to_string();
        assert!(!shown.contains("quoted-secret"), "{shown}");
        let e = KafkaError::ClientCreation("failed near s3cret-pw".into());
        let shown = r.client_error(e).to_string();
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }

    #[test]
    fn a_refused_login_explains_unavailability_until_kafka_answers() {
        let log = LogContext::default();
        assert!(log
            .unavailable("timed out")
            .to_string()
            .contains("timed out"));
        log.error(KafkaError::Global(RDKafkaErrorCode::Authentication), "bad");
        let shown = log.unavailable("timed out").to_string();
        assert!(shown.contains("refuses the proxy's login"), "{shown}");
        log.answered();
        assert!(log.refusal().is_none());
        // librdkafka may also fail the look-up itself with the refusal.
        let e = log.lookup_error(KafkaError::MetadataFetch(
            RDKafkaErrorCode::SaslAuthenticationFailed,
        ));
        assert_eq!(ProtocolError::from(e).code, ErrorCode::KafkaUnavailable);
        let e = log.lookup_error(KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(matches!(e, KafkaAdapterError::Unavailable(_)), "{e}");
    }
}
