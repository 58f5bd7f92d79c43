//! Session consumers: the builder (group or assigned partitions), the rebalance hooks that
//! report to the session, and the batch fetch queue its records are read from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use rdkafka::message::BorrowedMessage;
use rdkafka_batch::FetchQueue;

use super::metadata::StartPlan;
use super::{base_config, Kafka, KafkaAdapterError, LogContext};
use crate::protocol::consume::{Assignment, CommitMode, ConsumeRequest};
use crate::protocol::{ErrorCode, ProtocolError};

impl Kafka {
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
            .set("enable.partition.eof", "false");
        // The group's liveness settings are the operator's to tune (`-X`): a member that died
        // without leaving (a proxy killed, a broker away) holds its partitions this long.
        for (key, default) in [
            ("heartbeat.interval.ms", "1000"),
            ("session.timeout.ms", "30000"),
        ] {
            if !c.kafka_properties.contains_key(key) {
                cc.set(key, default);
            }
        }
        if let Some(g) = group {
            cc.set("group.id", g);
        } else {
            // librdkafka wants a group id even for assign(). Nothing is committed without a
            // group (commit mode `none`), and a private id per client means no client can
            // commit to a group another session shares by accident.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cc.set(
                "group.id",
                format!("kafka-proxy-private-{}-{n}", std::process::id()),
            );
        }
        self.log.redactor().create(&cc, context)
    }
}

/// Group events the session forwards to its client.
#[derive(Debug)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
    /// The assignment could not be applied (assign, route or rebalance failed): the session
    /// would stall on it silently, so it ends with this error instead.
    Failed(String),
    /// A partition's read failed for good (its topic was deleted, or access was revoked).
    Lost(ProtocolError),
}

/// Consumer context of one session: applies the start plan on assignment and reports rebalances.
pub struct SessionContext {
    first_offsets: Mutex<HashMap<(String, i32), Offset>>,
    /// Where group events and read failures go (the session, or the tail reader).
    events: Option<mpsc::UnboundedSender<RebalanceEvent>>,
    /// Where assigned partitions' records go: the session's batch fetch queue.
    router: std::sync::OnceLock<rdkafka_batch::Router>,
    log: LogContext,
}

impl SessionContext {
    pub fn new(
        plan: &StartPlan,
        events: Option<mpsc::UnboundedSender<RebalanceEvent>>,
        log: LogContext,
    ) -> Self {
        SessionContext {
            first_offsets: Mutex::new(plan.first_offsets.clone()),
            events,
            router: std::sync::OnceLock::new(),
            log,
        }
    }

    /// Sets the fetch queue that assigned partitions are routed to (once, before joining).
    pub fn set_router(&self, router: rdkafka_batch::Router) {
        let _ = self.router.set(router);
    }

    /// Routes partitions to the session's fetch queue; call before assigning them. A partition
    /// that cannot be routed would never deliver: it is reported as a failure.
    pub fn route(&self, partitions: &[(String, i32)]) {
        if let Some(r) = self.router.get() {
            for (t, p) in partitions {
                if !r.route(t, *p) {
                    tracing::warn!(topic = %t, partition = p, "partition not routed to its session");
                    self.send(RebalanceEvent::Failed(format!(
                        "partition {t}/{p} could not be routed to this session"
                    )));
                }
            }
        }
    }

    fn send(&self, ev: RebalanceEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ev);
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
        self.log.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
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
                match r {
                    Ok(()) => self.send(RebalanceEvent::Assigned(pairs)),
                    Err(e) => {
                        tracing::warn!(error = %e, "assign failed");
                        self.send(RebalanceEvent::Failed(format!("assign failed: {e}")));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // What was delivered (auto) or acknowledged (ack) is committed by librdkafka
                // itself when the partitions are unassigned (auto-commit is on whenever the
                // session commits), and it rejoins the group only once that commit is done, so
                // the next owner starts right after it. A second, explicit commit here only
                // added one more outstanding commit for the rejoin to wait on.
                let pairs = tpl_pairs(tpl);
                if let Some(r) = self.router.get() {
                    for (t, p) in &pairs {
                        r.unroute(t, *p);
                    }
                }
                let r = match base_consumer.rebalance_protocol() {
                    rdkafka::consumer::RebalanceProtocol::Cooperative => {
                        base_consumer.incremental_unassign(tpl)
                    }
                    _ => base_consumer.unassign(),
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "unassign failed");
                }
                self.send(RebalanceEvent::Revoked(pairs));
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                let _ = base_consumer.unassign();
                self.send(RebalanceEvent::Failed(format!(
                    "rebalance failed: {other:?}"
                )));
            }
        }
    }
}

/// Consumer errors that end a session or a tail reader; librdkafka retries the rest (transient
/// broker hiccups), which are only logged. Every error that ends one is a warning for the
/// operator: the client sees it as an error frame and close code.
pub fn consumer_error(e: &KafkaError) -> Option<ProtocolError> {
    use rdkafka::error::RDKafkaErrorCode as C;
    let ended = match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => {
            ProtocolError::new(ErrorCode::UnknownTopic, format!("topic went away: {e}"))
        }
        Some(C::TopicAuthorizationFailed) | Some(C::GroupAuthorizationFailed) => {
            ProtocolError::new(ErrorCode::Forbidden, format!("Kafka refused: {e}"))
        }
        Some(code) if group_refusal(code) => ProtocolError::new(
            ErrorCode::KafkaError,
            format!("Kafka refused the group join: {}", description(code)),
        ),
        Some(C::AllBrokersDown) => {
            tracing::warn!(error = %e, "all brokers down; librdkafka keeps retrying");
            return None;
        }
        _ => {
            tracing::debug!(error = %e, "consumer error");
            return None;
        }
    };
    tracing::warn!(code = ended.code.name(), reason = %ended.message, "Kafka ended a read");
    Some(ended)
}

/// Group errors Kafka answers a join with that librdkafka only retries, every few seconds, for
/// as long as the cause lasts (another member speaks an assignment protocol this one does not,
/// the group is full, ...): the session would wait for an assignment that never comes.
fn group_refusal(code: RDKafkaErrorCode) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        code,
        C::InconsistentGroupProtocol
            | C::InvalidGroupId
            | C::GroupMaxSizeReached
            | C::InvalidSessionTimeout
            | C::FencedInstanceId
            | C::Fatal
    )
}

/// librdkafka's description of an error code: `Display` is "Name (description)".
fn description(code: RDKafkaErrorCode) -> String {
    let shown = code.to_string();
    shown
        .strip_prefix(&format!("{code:?} ("))
        .and_then(|d| d.strip_suffix(')'))
        .map_or(shown.clone(), str::to_string)
}

type Inner = StreamConsumer<SessionContext>;

/// A read failed: `None` for a transient error librdkafka retries, or the error that ends it.
pub type ReadFault = Option<ProtocolError>;

/// A session's (or tail reader's) Kafka consumer.
pub struct Reader {
    consumer: Arc<Inner>,
    /// Ends the read (`RebalanceEvent::Lost`) when one of its topics is deleted.
    _watch: Option<super::watch::Watching>,
}

/// The queue a reader's partitions' records are taken from in batches (`rdkafka-batch`). Apart
/// from the `Reader` because taking records needs it mutably while the consumer's own stream is
/// being polled.
pub struct Fetch(FetchQueue<Inner>);

pub(super) fn kafka_error(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(ErrorCode::KafkaError, e.to_string())
}

impl Reader {
    /// Opens a consume session's consumer: checks the request against the cluster, plans its
    /// start, and joins the group or assigns its partitions.
    pub async fn open(
        kafka: &Kafka,
        req: &ConsumeRequest,
    ) -> Result<(Reader, Fetch, mpsc::UnboundedReceiver<RebalanceEvent>), ProtocolError> {
        let _turn = kafka.setup_turn().await;
        let plan = kafka
            .resolve_start(&req.topics, &req.assignment, &req.start)
            .await?;
        Reader::join(kafka, req, plan).await
    }

    /// Joins the group or assigns the plan's partitions; the caller holds its setup turn.
    pub(super) async fn join(
        kafka: &Kafka,
        req: &ConsumeRequest,
        plan: StartPlan,
    ) -> Result<(Reader, Fetch, mpsc::UnboundedReceiver<RebalanceEvent>), ProtocolError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let ctx = SessionContext::new(&plan, Some(events_tx.clone()), kafka.log.clone());
        let explicit = match &req.assignment {
            Assignment::Partitions(_) => Some(ctx.explicit_assignment(&plan.partitions)),
            Assignment::Group => None,
        };
        let (mut reader, fetch) =
            Reader::new(kafka.session_consumer(req.group.as_deref(), req.commit, ctx)?);
        reader._watch = Some(kafka.watch.watch(&req.topics, &events_tx));
        let joined = match explicit {
            Some(tpl) => tpl.map_err(kafka_error).and_then(|tpl| {
                reader.consumer.context().route(&plan.partitions);
                reader.consumer.assign(&tpl).map_err(kafka_error)?;
                let _ = events_tx.send(RebalanceEvent::Assigned(plan.partitions.clone()));
                Ok(())
            }),
            None => {
                let topics: Vec<&str> = req.topics.iter().map(String::as_str).collect();
                reader.consumer.subscribe(&topics).map_err(kafka_error)
            }
        };
        match joined {
            Ok(()) => Ok((reader, fetch, events_rx)),
            Err(e) => {
                reader.close(fetch).await;
                Err(e)
            }
        }
    }

    /// Opens a live-tail reader: every partition of `topic`, from the high watermarks read now,
    /// so "assigned" means "everything produced from here on is delivered". Returns each
    /// partition with the offset it starts at.
    pub async fn open_tail(
        kafka: &Kafka,
        topic: &str,
    ) -> Result<
        (
            Reader,
            Fetch,
            Vec<(String, i32, i64)>,
            mpsc::UnboundedReceiver<RebalanceEvent>,
        ),
        ProtocolError,
    > {
        let _turn = kafka.setup_turn().await;
        let partitions = kafka.partitions(topic).await?;
        let mut tpl = TopicPartitionList::new();
        let mut pairs = Vec::with_capacity(partitions.len());
        let mut starts = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let (_, high) = kafka.watermarks(topic, *p).await?;
            tpl.add_partition_offset(topic, *p, Offset::Offset(high))
                .map_err(kafka_error)?;
            pairs.push((topic.to_string(), *p));
            starts.push((topic.to_string(), *p, high));
        }
        let plan = StartPlan {
            partitions: pairs.clone(),
            first_offsets: HashMap::new(),
        };
        // No group events for assigned partitions; the channel carries read failures.
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let ctx = SessionContext::new(&plan, Some(events_tx.clone()), kafka.log.clone());
        let (mut reader, fetch) =
            Reader::new(kafka.session_consumer(None, CommitMode::None, ctx)?);
        reader._watch = Some(kafka.watch.watch(&[topic.to_string()], &events_tx));
        reader.consumer.context().route(&pairs);
        if let Err(e) = reader.consumer.assign(&tpl) {
            reader.close(fetch).await;
            return Err(kafka_error(e));
        }
        Ok((reader, fetch, starts, events_rx))
    }

    fn new(consumer: Inner) -> (Reader, Fetch) {
        let consumer = Arc::new(consumer);
        let fetch = FetchQueue::new(consumer.clone());
        consumer.context().set_router(fetch.router());
        (
            Reader {
                consumer,
                _watch: None,
            },
            Fetch(fetch),
        )
    }

    /// The consumer's own queue: group events (served while it is polled) and records of a
    /// partition that was not routed to the fetch queue (none expected).
    pub fn stream(
        &self,
    ) -> impl futures::Stream<Item = Result<BorrowedMessage<'_>, ReadFault>> + Unpin + '_ {
        use futures::StreamExt;
        self.consumer
            .stream()
            .map(|r| r.map_err(|e| consumer_error(&e)))
    }

    /// Routes partitions (just assigned) to the fetch queue.
    pub fn route(&self, partitions: &[(String, i32)]) {
        self.consumer.context().route(partitions);
    }

    /// Pauses or resumes fetching of every assigned partition.
    pub fn pause(&self, pause: bool) -> Result<(), String> {
        let assigned = self.consumer.assignment().map_err(|e| e.to_string())?;
        let r = if pause {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        r.map_err(|e| e.to_string())
    }

    /// Stores next-offset-to-read positions for commit (Kafka's convention: last processed + 1).
    /// `offsets_store` stores exactly what it is given, unlike the legacy per-partition call,
    /// which adds one itself.
    pub fn store<'a>(&self, positions: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in positions {
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(next)) {
                tracing::debug!(error = %e, "bad offset");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Expected after a revoke: the new owner re-reads from the last commit.
            tracing::debug!(error = %e, "offsets not stored");
        }
    }

    /// Closes the consumer: a final synchronous commit of what was stored when `commit`, then
    /// the group leave, both off the async workers (they block), within `budget`.
    pub async fn close_within(self, fetch: Fetch, commit: bool, budget: std::time::Duration) {
        // The queue handle goes before the consumer it belongs to.
        drop(fetch);
        let consumer = self.consumer;
        let done = tokio::task::spawn_blocking(move || {
            if commit {
                if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
                {
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                        tracing::warn!(error = %e, "final commit failed");
                    }
                }
            }
            drop(consumer);
        });
        if tokio::time::timeout(budget, done).await.is_err() {
            tracing::warn!("consumer close did not finish within its budget");
        }
    }

    /// Closes a consumer that never served: no commit, no budget of its own.
    pub async fn close(self, fetch: Fetch) {
        self.close_within(fetch, false, std::time::Duration::MAX)
            .await
    }
}

impl Fetch {
    /// Resolves when records (or errors) wait.
    pub async fn ready(&self) {
        self.0.ready().await
    }

    /// Re-arms the wake-up after stopping before the queue was empty (librdkafka wakes the
    /// queue only on new arrivals).
    pub fn kick(&self) {
        self.0.kick();
    }

    /// Takes up to `max` records; returns how many items were taken.
    pub fn poll_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(Result<&rdkafka_batch::Record<'_>, ReadFault>),
    ) -> usize {
        self.0.poll_batch(max, |r| match r.error() {
            None => f(Ok(&r)),
            Some(e) => f(Err(consumer_error(&e))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::ClientConfig;

    /// A session consumer that never connects (nothing listens on port 1): its rebalance hooks
    /// are called directly, as librdkafka would, with what no broker can be made to send.
    fn session() -> (
        Arc<BaseConsumer<SessionContext>>,
        mpsc::UnboundedReceiver<RebalanceEvent>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let plan = StartPlan {
            partitions: Vec::new(),
            first_offsets: HashMap::new(),
        };
        let ctx = SessionContext::new(&plan, Some(tx), LogContext::default());
        let c = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "kafka-proxy-unit")
            .set_log_level(RDKafkaLogLevel::Emerg)
            .create_with_context(ctx)
            .expect("consumer");
        (Arc::new(c), rx)
    }

    /// Warnings logged on this thread while `f` runs.
    fn warnings(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log buffer").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let text = buf.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&text).into_owned()
    }

    fn failure(rx: &mut mpsc::UnboundedReceiver<RebalanceEvent>) -> String {
        match rx.try_recv() {
            Ok(RebalanceEvent::Failed(reason)) => reason,
            other => panic!("expected a failure event, got {other:?}"),
        }
    }

    // No broker can make librdkafka 2.12 fail an assign of the partitions it hands to the
    // rebalance callback (it only ever passes a valid, duplicate-free list): a list with a
    // duplicate is what makes `assign` fail here.
    #[test]
    fn a_failed_assign_is_a_failure_and_a_warning_not_assigned() {
        let (c, mut rx) = session();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        tpl.add_partition("t", 0);
        let logged = warnings(|| {
            c.context().rebalance(
                c.as_ref(),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS,
                &mut tpl,
            )
        });
        let reason = failure(&mut rx);
        assert!(reason.starts_with("assign failed"), "{reason}");
        assert!(
            rx.try_recv().is_err(),
            "no `assigned` after a failed assign"
        );
        assert!(
            logged.contains("WARN") && logged.contains("assign failed"),
            "{logged}"
        );
    }

    // librdkafka 2.12 calls the rebalance callback with assign or revoke only; rust-rdkafka still
    // has an error case, kept here as a failure of the session rather than a silent unassign.
    #[test]
    fn a_rebalance_error_is_a_failure_and_a_warning() {
        let (c, mut rx) = session();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        let logged = warnings(|| {
            c.context().rebalance(
                c.as_ref(),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__FAIL,
                &mut tpl,
            )
        });
        let reason = failure(&mut rx);
        assert!(reason.starts_with("rebalance failed"), "{reason}");
        assert!(
            logged.contains("WARN") && logged.contains("rebalance error"),
            "{logged}"
        );
    }

    // A route fails only when the session's fetch queue is gone (or for a topic name with a NUL
    // byte, which Kafka's names never have).
    #[test]
    fn a_failed_route_is_a_failure_and_a_warning() {
        let (c, mut rx) = session();
        let fetch = FetchQueue::new(c.clone());
        c.context().set_router(fetch.router());
        drop(fetch);
        let logged = warnings(|| c.context().route(&[("t".to_string(), 3)]));
        let reason = failure(&mut rx);
        assert!(reason.contains("t/3 could not be routed"), "{reason}");
        assert!(
            logged.contains("WARN") && logged.contains("not routed"),
            "{logged}"
        );
    }

    #[test]
    fn a_refused_group_join_ends_the_read_with_its_reason() {
        let refused = KafkaError::MessageConsumption(RDKafkaErrorCode::InconsistentGroupProtocol);
        let mut e = None;
        let logged = warnings(|| e = consumer_error(&refused));
        let e = e.expect("a refused join ends the session");
        assert_eq!(e.code, ErrorCode::KafkaError);
        assert_eq!(
            e.message,
            "Kafka refused the group join: Broker: Inconsistent group protocol"
        );
        assert!(
            logged.contains("WARN") && logged.contains("Inconsistent"),
            "{logged}"
        );
        // Transient errors stay librdkafka's to retry.
        let transient = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(consumer_error(&transient).is_none());
    }
}
