//! Kafka adapter: client configuration, metadata look-ups and the per-session consumer.
//!
//! Every blocking librdkafka call (metadata, watermarks, offsets-for-times, sync commit, drop)
//! runs on the blocking pool so tokio workers never stall.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ThreadedProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::protocol::consume::{Assignment, CommitMode, StartAt};
use crate::protocol::{ErrorCode, ProtocolError};

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
        tracing::debug!(%error, "librdkafka error: {reason}");
    }
}
impl ConsumerContext for LogContext {}

/// Topic -> (when fetched, partition ids).
type PartitionCache = HashMap<String, (Instant, Arc<[i32]>)>;

/// Shared Kafka clients and the settings every session client derives from.
pub struct Kafka {
    config: Arc<Config>,
    /// One long-lived client for metadata and watermark look-ups, so sessions don't each bootstrap.
    meta: Arc<BaseConsumer<LogContext>>,
    /// The shared idempotent producer for all produce sockets and HTTP requests.
    pub producer: ThreadedProducer<crate::produce::ProduceContext>,
    /// Last readiness probe (time, result), so `/readyz` polled often costs one look-up a second.
    ready: Mutex<Option<(Instant, bool)>>,
    /// Only one readiness look-up at a time; concurrent callers wait for it and read its result,
    /// so an unauthenticated `/readyz` flood cannot occupy the blocking pool.
    ready_refresh: tokio::sync::Mutex<()>,
    /// Partition lists of existing topics with when they were fetched, so produce does not pay a
    /// blocking metadata round trip per request. Unknown topics are never cached.
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
        let producer: ThreadedProducer<crate::produce::ProduceContext> = pc
            .set("client.id", "kafka-proxy-producer")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "30000")
            .create_with_context(crate::produce::ProduceContext)?;
        Ok(Kafka {
            config,
            meta: Arc::new(meta),
            producer,
            ready: Mutex::new(None),
            ready_refresh: tokio::sync::Mutex::new(()),
            partition_cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Partition ids of `topic`, or `UnknownTopic`.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaAdapterError> {
        let meta = self.meta.clone();
        let topic = topic.to_string();
        blocking(move || {
            let md = meta
                .fetch_metadata(Some(&topic), LOOKUP_TIMEOUT)
                .map_err(|e| {
                    if is_unavailable(&e) {
                        KafkaAdapterError::Unavailable(e.to_string())
                    } else {
                        KafkaAdapterError::Kafka(e)
                    }
                })?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| KafkaAdapterError::UnknownTopic(topic.clone()))?;
            match t.error() {
                None => {}
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                    return Err(KafkaAdapterError::UnknownTopic(topic.clone()))
                }
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                    return Err(KafkaAdapterError::Forbidden(topic.clone()))
                }
                Some(e) => {
                    return Err(KafkaAdapterError::Kafka(KafkaError::MetadataFetch(
                        e.into(),
                    )))
                }
            }
            let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            if ps.is_empty() {
                return Err(KafkaAdapterError::UnknownTopic(topic.clone()));
            }
            ps.sort_unstable();
            Ok(ps)
        })
        .await
    }

    /// Like `partitions`, but reuses a list fetched within `PARTITION_CACHE_TTL`.
    pub async fn partitions_cached(&self, topic: &str) -> Result<Arc<[i32]>, KafkaAdapterError> {
        if let Ok(cache) = self.partition_cache.lock() {
            if let Some((at, ps)) = cache.get(topic) {
                if at.elapsed() < PARTITION_CACHE_TTL {
                    return Ok(ps.clone());
                }
            }
        }
        let ps: Arc<[i32]> = self.partitions(topic).await?.into();
        if let Ok(mut cache) = self.partition_cache.lock() {
            if cache.len() >= PARTITION_CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < PARTITION_CACHE_TTL);
                if cache.len() >= PARTITION_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(topic.to_string(), (Instant::now(), ps.clone()));
        }
        Ok(ps)
    }

    /// Low and high watermarks of one partition.
    pub async fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), KafkaAdapterError> {
        let meta = self.meta.clone();
        let topic = topic.to_string();
        blocking(move || Ok(meta.fetch_watermarks(&topic, partition, LOOKUP_TIMEOUT)?)).await
    }

    /// Whether Kafka answers a metadata request; cached for a second.
    pub async fn ready(&self) -> bool {
        let cached = || {
            self.ready.lock().ok().and_then(|g| match *g {
                Some((at, ok)) if at.elapsed() < Duration::from_secs(1) => Some(ok),
                _ => None,
            })
        };
        if let Some(ok) = cached() {
            return ok;
        }
        let _refresh = self.ready_refresh.lock().await;
        if let Some(ok) = cached() {
            return ok;
        }
        let meta = self.meta.clone();
        let ok = blocking(move || {
            // This client has no group, so errors queue on its main queue: drain them here.
            let _ = meta.poll(Duration::ZERO);
            Ok(meta
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| !md.brokers().is_empty())
                .unwrap_or(false))
        })
        .await
        .unwrap_or(false);
        if let Ok(mut guard) = self.ready.lock() {
            *guard = Some((Instant::now(), ok));
        }
        ok
    }

    /// Validates a consume request against the cluster and resolves where each partition starts.
    /// Returns the start plan: partitions whose first assignment must begin somewhere other than
    /// the committed offset.
    pub async fn resolve_start(
        &self,
        topics: &[String],
        assignment: &Assignment,
        start: &StartAt,
    ) -> Result<StartPlan, KafkaAdapterError> {
        let mut all: Vec<(String, i32)> = Vec::new();
        for t in topics {
            let ps = self.partitions(t).await?;
            match assignment {
                Assignment::Group => all.extend(ps.iter().map(|p| (t.clone(), *p))),
                Assignment::Partitions(wanted) => {
                    for w in wanted {
                        if !ps.contains(w) {
                            return Err(KafkaAdapterError::UnknownPartition(
                                t.clone(),
                                *w,
                                ps.len(),
                            ));
                        }
                        all.push((t.clone(), *w));
                    }
                }
            }
        }
        let mut plan = HashMap::new();
        match start {
            StartAt::Committed => {}
            StartAt::Earliest => plan.extend(all.iter().map(|tp| (tp.clone(), Offset::Beginning))),
            StartAt::Latest => plan.extend(all.iter().map(|tp| (tp.clone(), Offset::End))),
            StartAt::Offset(_) | StartAt::Offsets(_) => {
                for (t, p) in &all {
                    let wanted = match start {
                        StartAt::Offset(o) => Some(*o),
                        StartAt::Offsets(per) => {
                            per.iter().find(|(pp, _)| pp == p).map(|(_, o)| *o)
                        }
                        _ => None,
                    };
                    let Some(offset) = wanted else { continue };
                    let (low, high) = self.watermarks(t, *p).await?;
                    if offset < low || offset > high {
                        return Err(KafkaAdapterError::OffsetOutOfRange {
                            topic: t.clone(),
                            partition: *p,
                            offset,
                            low,
                            high,
                        });
                    }
                    plan.insert((t.clone(), *p), Offset::Offset(offset));
                }
                if let StartAt::Offsets(per) = start {
                    for (p, _) in per {
                        if !all.iter().any(|(_, ap)| ap == p) {
                            let ps = self.partitions(&topics[0]).await?;
                            return Err(KafkaAdapterError::UnknownPartition(
                                topics[0].clone(),
                                *p,
                                ps.len(),
                            ));
                        }
                    }
                }
            }
            StartAt::Timestamp(ts) => {
                let meta = self.meta.clone();
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &all {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*ts))?;
                }
                let resolved =
                    blocking(move || Ok(meta.offsets_for_times(tpl, LOOKUP_TIMEOUT)?)).await?;
                for e in resolved.elements() {
                    if let Err(err) = e.error() {
                        return Err(KafkaAdapterError::Kafka(err));
                    }
                    let off = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        // No record at or after the timestamp: start at the end.
                        _ => Offset::End,
                    };
                    plan.insert((e.topic().to_string(), e.partition()), off);
                }
            }
        }
        Ok(StartPlan {
            partitions: all,
            first_offsets: plan,
        })
    }

    /// A consumer for one session, with its memory bounded by `session_buffer_bytes`.
    pub fn session_consumer(
        &self,
        group: Option<&str>,
        commit: CommitMode,
        context: SessionContext,
    ) -> Result<StreamConsumer<SessionContext>, KafkaAdapterError> {
        let c = &self.config;
        // A quarter of the session budget for librdkafka's prefetch queue; the rest is the
        // proxy's own (frame being built, frames queued to the socket, records held while paused).
        let queue_kb = (c.session_buffer_bytes / 4 / 1024).max(64);
        let fetch_max = (c.session_buffer_bytes / 4).max(64 * 1024);
        let mut cc = base_config(c);
        cc.set("client.id", "kafka-proxy-session")
            .set("enable.auto.offset.store", "false")
            .set(
                "enable.auto.commit",
                if commit == CommitMode::None {
                    "false"
                } else {
                    "true"
                },
            )
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", c.offset_reset.as_str())
            .set("queued.max.messages.kbytes", queue_kb.to_string())
            .set("queued.min.messages", "10000")
            // librdkafka waits this long to fetch again once the prefetch queue above is full
            // (default 1000 ms): with a small queue that capped a session at one fetch a second.
            .set("fetch.queue.backoff.ms", "5")
            .set("fetch.max.bytes", fetch_max.to_string())
            // Only checked against fetch.max.bytes on a consumer; brokers still return a record
            // larger than the fetch limit on its own (KIP-74), so big records are not stuck.
            .set("message.max.bytes", fetch_max.to_string())
            .set("max.partition.fetch.bytes", fetch_max.to_string())
            .set("fetch.wait.max.ms", "100")
            .set("heartbeat.interval.ms", "1000")
            .set("session.timeout.ms", "30000")
            .set("enable.partition.eof", "false");
        if let Some(g) = group {
            cc.set("group.id", g);
        } else {
            // librdkafka wants a group id even for assign(); nothing is committed without a group.
            cc.set("group.id", "kafka-proxy-unused");
        }
        Ok(cc.create_with_context(context)?)
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

/// What a session reads and where each partition starts on its first assignment.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// Every (topic, partition) the session may be assigned.
    pub partitions: Vec<(String, i32)>,
    /// Start positions that override the committed offset, consumed on first assignment.
    pub first_offsets: HashMap<(String, i32), Offset>,
}

/// Group events the session forwards to its client.
#[derive(Debug)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Consumer context of one session: applies the start plan on assignment and reports rebalances.
pub struct SessionContext {
    first_offsets: Mutex<HashMap<(String, i32), Offset>>,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    commit: CommitMode,
    /// Where assigned partitions' records go: the session's batch fetch queue.
    router: std::sync::OnceLock<rdkafka_batch::Router>,
}

impl SessionContext {
    pub fn new(
        plan: &StartPlan,
        commit: CommitMode,
        events: mpsc::UnboundedSender<RebalanceEvent>,
    ) -> Self {
        SessionContext {
            first_offsets: Mutex::new(plan.first_offsets.clone()),
            events,
            commit,
            router: std::sync::OnceLock::new(),
        }
    }

    /// Sets the fetch queue that assigned partitions are routed to (once, before joining).
    pub fn set_router(&self, router: rdkafka_batch::Router) {
        let _ = self.router.set(router);
    }

    /// Routes partitions to the session's fetch queue; call before assigning them.
    pub fn route(&self, partitions: &[(String, i32)]) {
        if let Some(r) = self.router.get() {
            for (t, p) in partitions {
                if !r.route(t, *p) {
                    tracing::debug!(topic = %t, partition = p, "partition not routed");
                }
            }
        }
    }

    /// Takes the start offset for a partition's first assignment, if the client asked for one.
    fn take_first_offset(&self, topic: &str, partition: i32) -> Option<Offset> {
        self.first_offsets
            .lock()
            .ok()?
            .remove(&(topic.to_string(), partition))
    }

    /// The assignment list for explicit partitions: requested start or the committed offset.
    pub fn explicit_assignment(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            let off = self.take_first_offset(t, *p).unwrap_or(Offset::Stored);
            tpl.add_partition_offset(t, *p, off)?;
        }
        Ok(tpl)
    }
}

fn tpl_pairs(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SessionContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        LogContext.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        LogContext.error(error, reason)
    }
}

impl ConsumerContext for SessionContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let pairs = tpl_pairs(tpl);
                for (t, p) in &pairs {
                    if let Some(off) = self.take_first_offset(t, *p) {
                        let _ = tpl.set_partition_offset(t, *p, off);
                    }
                }
                // The client's start position is for its first assignment only. A partition it
                // takes over later (another member left) continues from the group's commit;
                // seeking it would skip the records that member never committed.
                if let Ok(mut plan) = self.first_offsets.lock() {
                    plan.clear();
                }
                // Before assigning: from the first fetch on, records take the session's batch
                // queue, never the consumer's own.
                self.route(&pairs);
                let r = match base_consumer.rebalance_protocol() {
                    rdkafka::consumer::RebalanceProtocol::Cooperative => {
                        base_consumer.incremental_assign(tpl)
                    }
                    _ => base_consumer.assign(tpl),
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "assign failed");
                }
                let _ = self.events.send(RebalanceEvent::Assigned(pairs));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Commit what was delivered (auto) or acknowledged (ack) before giving it away, so
                // the next owner starts right after it. Async: this runs on a tokio worker, and
                // librdkafka waits for outstanding commits before it rejoins the group.
                if self.commit != CommitMode::None {
                    if let Err(e) =
                        base_consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Async)
                    {
                        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                            tracing::debug!(error = %e, "commit on revoke failed");
                        }
                    }
                }
                let pairs = tpl_pairs(tpl);
                let r = match base_consumer.rebalance_protocol() {
                    rdkafka::consumer::RebalanceProtocol::Cooperative => {
                        base_consumer.incremental_unassign(tpl)
                    }
                    _ => base_consumer.unassign(),
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "unassign failed");
                }
                let _ = self.events.send(RebalanceEvent::Revoked(pairs));
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                let _ = base_consumer.unassign();
            }
        }
    }
}
