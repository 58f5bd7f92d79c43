//! Produce over WebSocket and HTTP: socket -> decoder -> shared idempotent producer -> acks.
//!
//! Every record is answered exactly once, in the order it arrived: an ack with partition and
//! offset once Kafka has stored it (acks=all), or an error. Many sends are in flight at once;
//! backpressure stops reading the socket when too many answers are outstanding or librdkafka's
//! queue is full, so nothing is buffered without bound. See docs/PROTOCOL.md ("Produce").

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::task::AtomicWaker;
use futures::{Sink, SinkExt, Stream};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use serde_json::Value;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::config::Config;
use crate::kafka::{Kafka, LogContext};
use crate::metrics::{SessionMeta, SessionStats};
use crate::protocol::produce::{
    self as wire, error_frame, AcksBatch, Answers, Decoded, Decoder, ProduceRequest, Record,
};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::{configure, params, AppState, HttpError, Params, Ws};
use crate::shutdown::Shutdown;
use crate::socket;

/// Records of one socket read but not yet answered (in the producer, awaiting delivery, or
/// queued as acks) unless the socket asks for another `window`. At the limit the socket is not
/// read, so TCP pushes back on the client. Large enough to keep librdkafka's batches full (1000
/// measured about 20% slower); cheap, because a sent record's bytes live in librdkafka's bounded
/// queue and only its answer is held. A larger window hides more of the acks=all round trip.
pub const MAX_IN_FLIGHT: usize = wire::DEFAULT_WINDOW;

/// How often a record refused with `QueueFull` is offered to librdkafka again. librdkafka has no
/// "space available" signal; the socket is not read meanwhile.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(5);

/// librdkafka's default `message.max.bytes`, used in messages when the user did not set one.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// `GET /v1/produce?topic=T[&key=K][&partition=P][&encoding=E][&format=F]`: a produce socket.
pub async fn ws_produce(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Params,
    ws: Ws,
) -> Result<Response, HttpError> {
    let r = (|| {
        let principal = state.authenticate(&headers)?;
        let req = wire::parse_ws(&params(q)?)?;
        let ws = ws.map_err(|e| {
            ProtocolError::bad_request(format!(
                "this endpoint takes a WebSocket upgrade ({e}); try wscat -c \"ws://HOST:PORT/v1/produce?topic=T\", or POST /v1/topics/T/records"
            ))
        })?;
        Ok::<_, ProtocolError>((principal, req, ws))
    })();
    let (_principal, req, ws) = r.inspect_err(|_| state.metrics.reject())?;
    let permit = state.admit()?;
    let guard = state.metrics.register(SessionMeta {
        kind: "produce",
        topics: vec![req.topic.clone()],
        group: None,
        peer: peer.to_string(),
    });
    let token = state.token.clone();
    let ctx = Ctx {
        kafka: state.kafka.clone(),
        config: state.config.clone(),
        shutdown: state.shutdown.clone(),
    };
    tracing::debug!(%peer, topic = %req.topic, "produce session");
    Ok(configure(ws, &state.config)
        .on_upgrade(move |socket| async move {
            let stats = guard.stats.clone();
            session(socket, req, ctx, stats).await;
            tracing::debug!(%peer, "produce session ended");
            drop(guard);
            drop(permit);
            drop(token);
        })
        .into_response())
}

/// What a session needs from the server.
struct Ctx {
    kafka: Arc<Kafka>,
    config: Arc<Config>,
    shutdown: Shutdown,
}

/// Why a session ends.
#[derive(Debug)]
enum End {
    /// Closed or vanished; nothing more can be sent.
    ClientGone,
    Shutdown,
    /// Closes with this code after the outstanding answers and an error frame.
    Error(ProtocolError),
    /// A WebSocket-level violation (RFC 6455 codes 1002, 1007): close without an error frame.
    Violation(u16, String),
}

/// The socket a produce session owns: axum's `WebSocket`, or a channel pair in unit tests.
trait Transport:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin
{
}

impl<T> Transport for T where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin
{
}

async fn session(mut socket: WebSocket, req: ProduceRequest, ctx: Ctx, stats: Arc<SessionStats>) {
    let (end, writer) = match check_target(&ctx.kafka, &req).await {
        Ok(partitions) => {
            let mut s = Session::new(&req, &ctx, &stats, &mut socket, partitions);
            let end = s.run().await;
            (end, s.writer)
        }
        Err(e) => (End::Error(e), Writer::Open),
    };
    finish(&mut socket, end, writer, ctx.config.ping_interval).await;
}

/// Sends the session's last frames: an error frame and a close frame as `end` says, or only the
/// flush of what is buffered (such as tungstenite's reply to the client's close frame).
async fn finish<S: Transport>(ws: &mut S, end: End, writer: Writer, ping_interval: Duration) {
    let limit = socket::stall_limit(ping_interval);
    let (frame, close) = match end {
        End::ClientGone => (None, None),
        End::Shutdown => (None, Some((1001, "proxy shutting down".to_string()))),
        End::Error(e) => {
            tracing::info!(code = e.code.name(), reason = %e.message, "produce session closed with error");
            (
                Some(e.frame()),
                Some((e.code.close_code(), e.close_reason())),
            )
        }
        End::Violation(code, reason) => {
            tracing::debug!(code, %reason, "produce socket violated the WebSocket protocol");
            (None, Some((code, reason)))
        }
    };
    match writer {
        // A peer that took no bytes for the stall limit would only stall us again.
        Writer::Stalled => return,
        Writer::Gone => {
            let _ = tokio::time::timeout(limit, ws.flush()).await;
            return;
        }
        Writer::Open => {}
    }
    if let Some(frame) = frame {
        if !socket::send_within(ws, Message::Text(frame.into()), limit).await {
            return;
        }
    }
    match close {
        Some((code, reason)) => {
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            socket::send_within(ws, close, limit).await;
        }
        None => {
            let _ = tokio::time::timeout(limit, ws.flush()).await;
        }
    }
}

/// Checks that the topic exists and the default partition is in it.
async fn check_target(kafka: &Kafka, req: &ProduceRequest) -> Result<Arc<[i32]>, ProtocolError> {
    let partitions = kafka.partitions_cached(&req.topic).await?;
    if let Some(p) = req.partition {
        if !partitions.contains(&p) {
            return Err(wire::unknown_partition(&req.topic, p, partitions.len()));
        }
    }
    Ok(partitions)
}

/// Maps a read error to how the session ends.
fn classify_read_error(text: &str, max_frame_bytes: usize) -> End {
    match socket::classify_read_error(text) {
        socket::ReadError::TooLarge(text) => End::Error(ProtocolError::new(
            ErrorCode::TooLarge,
            format!("frame exceeds maxFrameBytes ({max_frame_bytes} bytes): {text}"),
        )),
        socket::ReadError::Violation(code, reason) => End::Violation(code, reason),
        socket::ReadError::Gone => End::ClientGone,
    }
}

/// A record's answer once it is known: partition and offset, or why it failed.
type Outcome = Result<(i32, i64), ProtocolError>;

/// The shared producer's context: each record carries its inbox id and sequence number packed in
/// its delivery opaque, and its delivery report goes straight to the `Inbox` of the socket or
/// request that sent it (no future and no allocation per record).
pub struct ProduceContext;

impl ClientContext for ProduceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        LogContext.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        LogContext.error(error, reason)
    }
}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, report: &DeliveryResult<'_>, opaque: usize) {
        let outcome = match report {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(delivery_error(e)),
        };
        let (inbox, seq) = unpack(opaque);
        route(inbox, seq, outcome);
    }
}

/// Bits of a delivery opaque that carry the record's sequence number (modulo 2^40, which is far
/// more than the records a socket has in flight); the upper 24 bits name its inbox.
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Inbox ids are reused after this many (open ones are bounded by `maxConnections`, far lower).
/// A late report of a closed inbox could only be misfiled if 2^24 sockets and requests opened
/// within `message.timeout.ms` (30 s) after it closed, which is far beyond what a proxy accepts.
const INBOX_IDS: u32 = 1 << (64 - SEQ_BITS);
const _: () = assert!(
    usize::BITS == 64,
    "delivery opaques pack an inbox id and a sequence number into a 64-bit usize"
);

fn pack(inbox: u32, seq: u64) -> usize {
    // Lossless: `usize` has 64 bits (asserted above) and `inbox` < 2^24.
    ((u64::from(inbox) << SEQ_BITS) | (seq & SEQ_MASK)) as usize
}

fn unpack(opaque: usize) -> (u32, u64) {
    let v = opaque as u64;
    ((v >> SEQ_BITS) as u32, v & SEQ_MASK)
}

/// Every open inbox by id, for the delivery callback. Process-wide rather than in the context
/// so that ids stay unique across producers (tests run several in one process).
static INBOXES: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct Registry {
    next: u32,
    open: HashMap<u32, Arc<Inbox>>,
}

thread_local! {
    /// The inbox the last report on this thread went to. Reports come in batches for one
    /// socket at a time, so this spares the registry's lock on almost every record.
    static LAST_INBOX: RefCell<Option<Arc<Inbox>>> = const { RefCell::new(None) };
}

/// Hands a report to its inbox; a report for an inbox that has closed (its session gave up
/// waiting) is dropped.
fn route(id: u32, seq: u64, outcome: Outcome) {
    let lookup = || {
        INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .get(&id)
            .cloned()
    };
    let mut outcome = Some(outcome);
    let _ = LAST_INBOX.try_with(|last| {
        // Not reentrant in practice; if it were, the report goes the uncached way below.
        let Ok(mut last) = last.try_borrow_mut() else {
            return;
        };
        if last.as_ref().is_none_or(|i| i.id != id) {
            *last = lookup();
        }
        if let (Some(inbox), Some(o)) = (last.as_ref(), outcome.take()) {
            // A closed inbox gives the report back: its id may belong to a new inbox by now.
            outcome = inbox.put(seq, o).err();
            if outcome.is_some() {
                *last = None;
            }
        }
    });
    // Not delivered through the cache (closed, missing, or the thread is exiting).
    if let (Some(o), Some(inbox)) = (outcome, lookup()) {
        let _ = inbox.put(seq, o);
    }
}

/// Delivery reports for one socket or request, as librdkafka's thread hands them over.
struct Inbox {
    id: u32,
    reports: Mutex<Reports>,
    /// Set when reports arrive in an empty inbox, so the owner can look without the lock.
    nonempty: AtomicBool,
    /// The owner's task, woken once per batch of reports (when they land in an empty inbox).
    waker: AtomicWaker,
}

#[derive(Default)]
struct Reports {
    list: Vec<(u64, Outcome)>,
    closed: bool,
}

impl Inbox {
    /// Files a report; gives it back when the inbox is closed.
    fn put(&self, seq: u64, outcome: Outcome) -> Result<(), Outcome> {
        let first = {
            let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            if r.closed {
                return Err(outcome);
            }
            r.list.push((seq, outcome));
            r.list.len() == 1
        };
        if first {
            self.nonempty.store(true, SeqCst);
            self.waker.wake();
        }
        Ok(())
    }

    fn has_reports(&self) -> bool {
        self.nonempty.load(SeqCst)
    }

    /// Moves every report that came in to `into` (which must be empty).
    fn take(&self, into: &mut Vec<(u64, Outcome)>) {
        let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        self.nonempty.store(false, SeqCst);
        std::mem::swap(&mut r.list, into);
    }

    /// Resolves once reports are waiting.
    async fn ready(&self) {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.has_reports() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// An open inbox; dropping it closes the inbox, so later reports for it are dropped.
struct InboxHandle(Arc<Inbox>);

impl InboxHandle {
    fn open() -> Self {
        let mut reg = INBOXES.lock().unwrap_or_else(PoisonError::into_inner);
        // Terminates: open inboxes (one per session or request) are far fewer than the ids.
        let id = loop {
            let id = reg.next;
            reg.next = (reg.next + 1) % INBOX_IDS;
            if !reg.open.contains_key(&id) {
                break id;
            }
        };
        let inbox = Arc::new(Inbox {
            id,
            reports: Mutex::default(),
            nonempty: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        reg.open.insert(id, inbox.clone());
        InboxHandle(inbox)
    }
}

impl std::ops::Deref for InboxHandle {
    type Target = Inbox;
    fn deref(&self) -> &Inbox {
        &self.0
    }
}

impl Drop for InboxHandle {
    fn drop(&mut self) {
        INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .remove(&self.0.id);
        let mut r = self
            .0
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        r.closed = true;
        r.list = Vec::new();
    }
}

/// Records in arrival order until their answers are known; reports arriving in any order are
/// filed by sequence number and answers leave from the front only.
struct Order {
    inbox: InboxHandle,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Sent records whose report has not come yet.
    waiting: usize,
    scratch: Vec<(u64, Outcome)>,
}

struct Slot {
    /// The record's sequence number in its socket or request.
    seq: u64,
    /// The client's id for the record, if it gave one.
    id: Option<Value>,
    outcome: Option<Outcome>,
}

impl Order {
    fn new() -> Self {
        Order {
            inbox: InboxHandle::open(),
            slots: VecDeque::new(),
            head: 0,
            waiting: 0,
            scratch: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A record whose answer is known before sending.
    fn done(&mut self, seq: u64, id: Option<Value>, outcome: Outcome) {
        self.slots.push_back(Slot {
            seq,
            id,
            outcome: Some(outcome),
        });
    }

    /// The delivery opaque of the next record; it takes its place with `sent` once librdkafka
    /// has it.
    fn ticket(&self) -> usize {
        pack(self.inbox.id, self.head + self.slots.len() as u64)
    }

    fn sent(&mut self, seq: u64, id: Option<Value>) {
        self.slots.push_back(Slot {
            seq,
            id,
            outcome: None,
        });
        self.waiting += 1;
    }

    /// Files the reports that came in; `true` if there were any.
    fn collect(&mut self) -> bool {
        if self.waiting == 0 || !self.inbox.has_reports() {
            return false;
        }
        self.inbox.take(&mut self.scratch);
        let got = !self.scratch.is_empty();
        for (seq, outcome) in self.scratch.drain(..) {
            // Sequence numbers travel modulo 2^40; slots span far fewer.
            let i = seq.wrapping_sub(self.head) & SEQ_MASK;
            let slot = usize::try_from(i).ok().and_then(|i| self.slots.get_mut(i));
            if let Some(slot) = slot.filter(|s| s.outcome.is_none()) {
                slot.outcome = Some(outcome);
                self.waiting -= 1;
            }
        }
        got
    }

    /// The first record's answer, once known: `(sequence number, client id, outcome)`.
    fn pop(&mut self) -> Option<(u64, Option<Value>, Outcome)> {
        self.slots.front()?.outcome.as_ref()?;
        let slot = self.slots.pop_front()?;
        self.head += 1;
        Some((slot.seq, slot.id, slot.outcome?))
    }
}

/// Result of offering one record to librdkafka.
enum Enqueue {
    Sent,
    /// The producer's queue is full: offer it again later, and read no more meanwhile.
    Full,
    Failed(ProtocolError),
}

fn enqueue(kafka: &Kafka, topic: &str, r: &Record, ticket: usize) -> Enqueue {
    let mut fr = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, ticket);
    if let Some(k) = &r.key {
        fr = fr.key(&k[..]);
    }
    if let Some(v) = &r.value {
        fr = fr.payload(&v[..]);
    }
    if let Some(p) = r.partition {
        fr = fr.partition(p);
    }
    if let Some(ts) = r.timestamp {
        fr = fr.timestamp(ts);
    }
    if !r.headers.is_empty() {
        let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
        for (key, value) in &r.headers {
            h = h.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        fr = fr.headers(h);
    }
    match kafka.producer.send(fr) {
        Ok(()) => Enqueue::Sent,
        Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => Enqueue::Full,
        Err((e, _)) => {
            let size =
                r.value.as_ref().map_or(0, Bytes::len) + r.key.as_ref().map_or(0, Bytes::len);
            Enqueue::Failed(enqueue_error(&e, size, message_max_bytes(kafka.config())))
        }
    }
}

/// The producer's record size limit: the user's `message.max.bytes` Kafka property or
/// librdkafka's default.
fn message_max_bytes(config: &Config) -> usize {
    config
        .kafka_properties
        .get("message.max.bytes")
        .and_then(|v| v.expose().trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// An error librdkafka returned before accepting the record.
fn enqueue_error(e: &KafkaError, size: usize, limit: usize) -> ProtocolError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "record of about {size} bytes exceeds the producer's message.max.bytes ({limit})"
            ),
        ),
        _ => delivery_error(e),
    }
}

/// Maps a failed delivery to the client's error. librdkafka has already retried retriable errors
/// (until `message.timeout.ms`); what is left is final for this record.
fn delivery_error(e: &KafkaError) -> ProtocolError {
    use RDKafkaErrorCode as C;
    let code = match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize) => {
            return ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "Kafka refused the record as too large (the topic's max.message.bytes): {e}"
                ),
            )
        }
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => ErrorCode::UnknownTopic,
        Some(C::UnknownPartition) => ErrorCode::UnknownPartition,
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::Authentication,
        ) => ErrorCode::Forbidden,
        Some(
            C::MessageTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition,
        ) => ErrorCode::KafkaUnavailable,
        Some(C::InvalidRecord | C::InvalidMessage | C::InvalidTimestamp) => ErrorCode::BadRequest,
        _ => ErrorCode::KafkaError,
    };
    ProtocolError::new(code, format!("Kafka did not store the record: {e}"))
}

/// Encodes ack frames into one buffer; each frame is a slice of it, so an ack costs no
/// allocation of its own.
#[derive(Default)]
struct Frames {
    text: String,
    buf: BytesMut,
}

impl Frames {
    const CHUNK: usize = 16 * 1024;

    fn ack(&mut self, id: &Value, partition: i32, offset: i64) -> Utf8Bytes {
        self.text.clear();
        wire::push_ack_frame(&mut self.text, id, partition, offset);
        if self.buf.capacity() < self.text.len() {
            self.buf.reserve(Self::CHUNK.max(self.text.len()));
        }
        self.buf.extend_from_slice(self.text.as_bytes());
        self.split()
    }

    /// The `acks` frame of `batch`, which it empties.
    fn batch(&mut self, batch: &mut AcksBatch) -> Utf8Bytes {
        self.text.clear();
        batch.take_frame(&mut self.text);
        if self.buf.capacity() < self.text.len() {
            self.buf.reserve(Self::CHUNK.max(self.text.len()));
        }
        self.buf.extend_from_slice(self.text.as_bytes());
        self.split()
    }

    /// The frame just appended to the buffer (a copy of `text`).
    fn split(&mut self) -> Utf8Bytes {
        let frame = self.buf.split().freeze();
        // The bytes were a `String`, so this cannot fail; if it did, the copy is still right.
        Utf8Bytes::try_from(frame).unwrap_or_else(|_| Utf8Bytes::from(self.text.as_str()))
    }
}

/// Whether answers can still be written to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Open,
    /// The client closed or the socket broke: answers are counted but no longer sent.
    Gone,
    /// The peer took no bytes for the stall limit: given up, nothing more is written.
    Stalled,
}

/// What woke the session from waiting on its socket, its inbox and its timers.
enum Io {
    /// Frames were decoded, reports came in, or answers were written: go round again.
    Work,
    /// A record refused with `QueueFull` is due to be offered again.
    Retry,
    /// The socket has no more frames to read (closed, broken, or a frame broke the rules).
    ReadEnd(End),
    Shutdown,
    /// Writing failed, or the peer took no bytes for the stall limit.
    WriterGone(Writer),
    /// The answers still outstanding did not come within `shutdownGrace`.
    GaveUp,
    /// No frame (not even a pong) for three ping intervals.
    Silent,
}

/// The session's clocks; armed only while they matter, so a busy socket reads no clock per
/// record.
struct Timers {
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Liveness check, once a second.
    tick: Interval,
    /// When a frame was last read, as of the last tick.
    last_seen: Instant,
    dead_after: Duration,
    ping: Interval,
    retry: Pin<Box<Sleep>>,
    retry_armed: bool,
    deadline: Pin<Box<Sleep>>,
    deadline_armed: bool,
    stall: Pin<Box<Sleep>>,
    stall_armed: bool,
    stall_limit: Duration,
}

impl Timers {
    fn new(config: &Config, mut shutdown: Shutdown) -> Self {
        let now = tokio::time::Instant::now();
        let mut tick =
            tokio::time::interval_at(now + Duration::from_secs(1), Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval_at(now + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Timers {
            shutdown: Box::pin(async move { shutdown.wait().await }),
            tick,
            last_seen: Instant::now(),
            dead_after: config.ping_interval * 3,
            ping,
            retry: Box::pin(tokio::time::sleep_until(now)),
            retry_armed: false,
            deadline: Box::pin(tokio::time::sleep_until(now)),
            deadline_armed: false,
            stall: Box::pin(tokio::time::sleep_until(now)),
            stall_armed: false,
            stall_limit: socket::stall_limit(config.ping_interval),
        }
    }
}

/// One produce socket, served by one task: it reads and decodes frames, offers the records to
/// the shared producer, files their delivery reports and writes the answers. One task instead of
/// reader, session and writer tasks saves the hand-offs (and thread wake-ups) between them.
struct Session<'a, S> {
    req: &'a ProduceRequest,
    ctx: &'a Ctx,
    stats: &'a SessionStats,
    ws: &'a mut S,
    decoder: Decoder,
    /// The topic's partitions, checked before sending so a wrong partition fails at once.
    partitions: Arc<[i32]>,
    /// Records read and decoded but not yet offered to the producer, in arrival order.
    decoded: Vec<Decoded>,
    /// Every record offered or answered, in arrival order, until its answer is out.
    order: Order,
    /// Records refused with `QueueFull`, in order; while any wait, the socket is not read.
    blocked: VecDeque<Record>,
    /// Answer frames not yet handed to the socket, in order, with how many records each answers.
    acks: VecDeque<(Utf8Bytes, u32)>,
    /// Records the frames in `acks` answer.
    queued: usize,
    /// Stored records waiting to share an `acks` frame (`answers=batch`).
    batch: AcksBatch,
    /// Acks are encoded here and split off as frames that share its allocation.
    frames: Frames,
    writer: Writer,
    /// A ping is due to be written.
    ping_due: bool,
    /// Frames were handed to the socket (or a pong queued) since its last flush.
    unflushed: bool,
    /// A frame was read since the last liveness tick.
    seen: bool,
}

/// Frames read per turn at most (or `READ_BATCH_BYTES`), before the records go to the producer
/// and answers are written; both limits keep a turn short and the decoded frames small.
const READ_BATCH_FRAMES: usize = 256;
const READ_BATCH_BYTES: usize = 256 * 1024;

impl<'a, S: Transport> Session<'a, S> {
    fn new(
        req: &'a ProduceRequest,
        ctx: &'a Ctx,
        stats: &'a SessionStats,
        ws: &'a mut S,
        partitions: Arc<[i32]>,
    ) -> Self {
        Session {
            req,
            ctx,
            stats,
            ws,
            decoder: Decoder::new(req),
            partitions,
            decoded: Vec::new(),
            order: Order::new(),
            blocked: VecDeque::new(),
            acks: VecDeque::new(),
            queued: 0,
            batch: AcksBatch::default(),
            frames: Frames::default(),
            writer: Writer::Open,
            ping_due: false,
            unflushed: false,
            seen: false,
        }
    }

    /// Records taken from the socket and not answered yet.
    fn outstanding(&self) -> usize {
        self.decoded.len() + self.order.len() + self.blocked.len() + self.queued
    }

    /// Whether every record taken has its answer written (or can no longer be written).
    fn answered(&self) -> bool {
        self.decoded.is_empty()
            && self.order.is_empty()
            && self.blocked.is_empty()
            && (self.acks.is_empty() || self.writer != Writer::Open)
    }

    /// Serves the socket until it ends; every record read is answered (or its answer can no
    /// longer be sent) before this returns, unless the deadline after the end passed.
    async fn run(&mut self) -> End {
        let mut t = Timers::new(&self.ctx.config, self.ctx.shutdown.clone());
        // Set once no more frames are read: the session ends when every answer is out.
        let mut ending: Option<End> = None;
        // After shutdown, records already decoded are answered `shutting_down`.
        let mut refusing = false;
        let mut batch = Vec::new();
        loop {
            std::mem::swap(&mut batch, &mut self.decoded);
            for d in batch.drain(..) {
                if refusing {
                    self.refuse(d);
                } else {
                    self.submit(d).await;
                }
            }
            self.answer_ready();
            if ending.is_some() && self.answered() {
                break;
            }
            let reading = ending.is_none();
            let io = std::future::poll_fn(|cx| self.poll_io(cx, &mut t, reading)).await;
            let end = match io {
                Io::Work => continue,
                Io::Retry => {
                    self.retry_blocked();
                    continue;
                }
                Io::ReadEnd(end) => end,
                Io::Shutdown => {
                    tracing::debug!(
                        outstanding = self.outstanding(),
                        "shutdown: finishing records in flight"
                    );
                    refusing = true;
                    self.refuse_blocked();
                    End::Shutdown
                }
                Io::WriterGone(w) => {
                    self.writer = w;
                    End::ClientGone
                }
                Io::GaveUp => {
                    tracing::warn!(
                        outstanding = self.outstanding(),
                        "produce session gave up waiting for deliveries"
                    );
                    break;
                }
                Io::Silent => {
                    tracing::debug!("peer silent for three ping intervals; closing");
                    End::ClientGone
                }
            };
            if let End::ClientGone = end {
                // Closed or broken: tungstenite refuses to send after the peer's close frame.
                if self.writer == Writer::Open {
                    self.writer = Writer::Gone;
                }
                self.acks.clear();
                self.queued = 0;
            }
            if ending.is_none() {
                ending = Some(end);
                t.deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.ctx.config.shutdown_grace);
                t.deadline_armed = true;
            }
        }
        ending.unwrap_or(End::ClientGone)
    }

    /// Does what can be done without waiting (write answers, read frames, take reports) and
    /// returns once there is something for `run` to act on.
    fn poll_io(&mut self, cx: &mut Context<'_>, t: &mut Timers, reading: bool) -> Poll<Io> {
        if reading && t.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Io::Shutdown);
        }
        if self.writer == Writer::Open {
            if t.ping.poll_tick(cx).is_ready() {
                self.ping_due = true;
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => t.stall_armed = false,
                Poll::Ready(Err(_)) => return Poll::Ready(Io::WriterGone(Writer::Gone)),
                Poll::Pending => {
                    if !t.stall_armed {
                        t.stall_armed = true;
                        let at = tokio::time::Instant::now() + t.stall_limit;
                        t.stall.as_mut().reset(at);
                    }
                    if t.stall.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Io::WriterGone(Writer::Stalled));
                    }
                }
            }
        }
        if reading && self.blocked.is_empty() && self.outstanding() < self.req.window {
            match self.poll_read(cx) {
                Poll::Ready(Some(end)) => return Poll::Ready(Io::ReadEnd(end)),
                Poll::Ready(None) => return Poll::Ready(Io::Work),
                Poll::Pending => {}
            }
        }
        if self.order.waiting > 0 {
            self.order.inbox.waker.register(cx.waker());
            if self.order.inbox.has_reports() {
                return Poll::Ready(Io::Work);
            }
        }
        if !self.blocked.is_empty() {
            if !t.retry_armed {
                t.retry_armed = true;
                let at = tokio::time::Instant::now() + QUEUE_FULL_RETRY;
                t.retry.as_mut().reset(at);
            }
            if t.retry.as_mut().poll(cx).is_ready() {
                t.retry_armed = false;
                return Poll::Ready(Io::Retry);
            }
        }
        if t.deadline_armed && t.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Io::GaveUp);
        }
        if reading && t.tick.poll_tick(cx).is_ready() {
            let now = Instant::now();
            if std::mem::take(&mut self.seen) {
                t.last_seen = now;
            } else if now.duration_since(t.last_seen) > t.dead_after {
                return Poll::Ready(Io::Silent);
            }
        }
        Poll::Pending
    }

    /// Hands the queued answers (and a due ping) to the socket and flushes it; `Pending` while
    /// the peer does not take them.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let mut ws = Pin::new(&mut *self.ws);
        while self.ping_due || !self.acks.is_empty() {
            ready!(ws.as_mut().poll_ready(cx))?;
            let msg = if std::mem::take(&mut self.ping_due) {
                Message::Ping(Bytes::new())
            } else if let Some((a, n)) = self.acks.pop_front() {
                self.queued -= n as usize;
                Message::Text(a)
            } else {
                break;
            };
            ws.as_mut().start_send(msg)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(ws.as_mut().poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and decodes the frames already received, up to a batch; `Ready(None)` once any
    /// were read, `Ready(Some(end))` when reading is over.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let (mut frames, mut bytes) = (0, 0);
        loop {
            let msg = match Pin::new(&mut *self.ws).poll_next(cx) {
                Poll::Ready(m) => m,
                Poll::Pending if frames > 0 => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            self.seen = true;
            frames += 1;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    bytes += t.len();
                    self.decoder.text_into(Bytes::from(t), &mut self.decoded);
                }
                Some(Ok(Message::Binary(b))) => {
                    bytes += b.len();
                    self.decoder.binary_into(b, &mut self.decoded);
                }
                // tungstenite queued the pong; it leaves with the next flush.
                Some(Ok(Message::Ping(_))) => self.unflushed = true,
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Some(End::ClientGone)),
                Some(Err(e)) => {
                    let end = classify_read_error(&e.to_string(), self.ctx.config.max_frame_bytes);
                    return Poll::Ready(Some(end));
                }
            }
            if frames >= READ_BATCH_FRAMES
                || bytes >= READ_BATCH_BYTES
                || self.outstanding() >= self.req.window
            {
                return Poll::Ready(None);
            }
        }
    }

    /// Answers every record at the head of the order whose delivery is already known.
    fn answer_ready(&mut self) {
        self.order.collect();
        while let Some((seq, id, outcome)) = self.order.pop() {
            self.answer(seq, id, outcome);
        }
        self.send_batch();
    }

    /// Queues the answer for the socket and counts it. With `answers=batch`, a stored record
    /// joins the `acks` frame being built; an error frame goes after the frame built so far.
    fn answer(&mut self, seq: u64, id: Option<Value>, outcome: Outcome) {
        match &outcome {
            Ok(_) => self.stats.produced.fetch_add(1, Relaxed),
            Err(_) => self.stats.produce_errors.fetch_add(1, Relaxed),
        };
        if self.writer != Writer::Open {
            return;
        }
        let frame = match (&outcome, self.req.answers) {
            (Ok((p, o)), Answers::Batch) => {
                if self.batch.is_full() || !self.batch.push(seq, id.as_ref(), *p, *o) {
                    self.send_batch();
                    self.batch.push(seq, id.as_ref(), *p, *o);
                }
                return;
            }
            (Ok((p, o)), Answers::Each) => {
                let id = id.unwrap_or_else(|| Value::from(seq));
                self.frames.ack(&id, *p, *o)
            }
            (Err(e), _) => {
                tracing::debug!(code = e.code.name(), reason = %e.message, "record refused");
                self.send_batch();
                let id = id.unwrap_or_else(|| Value::from(seq));
                error_frame(&id, e).into()
            }
        };
        self.acks.push_back((frame, 1));
        self.queued += 1;
    }

    /// Queues the `acks` frame built so far, if any.
    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len();
        let frame = self.frames.batch(&mut self.batch);
        self.acks.push_back((frame, n));
        self.queued += n as usize;
    }

    /// Checks a decoded record and offers it to the producer, keeping arrival order.
    async fn submit(&mut self, d: Decoded) {
        let r = match d {
            Ok(r) => r,
            Err(e) => {
                self.order.done(e.seq, e.id, Err(e.error));
                return;
            }
        };
        if let Some(p) = r.partition {
            if !self.partitions.contains(&p) {
                // The topic may have grown since the session started; the cache bounds how
                // often a client naming wrong partitions costs a metadata look-up.
                if let Ok(ps) = self.ctx.kafka.partitions_cached(&self.req.topic).await {
                    self.partitions = ps;
                }
                if !self.partitions.contains(&p) {
                    let e = wire::unknown_partition(&self.req.topic, p, self.partitions.len());
                    self.order.done(r.seq, r.id, Err(e));
                    return;
                }
            }
        }
        if !self.blocked.is_empty() {
            self.blocked.push_back(r);
            return;
        }
        self.offer(r);
    }

    /// Offers one record; `false` when the producer's queue is full and the record was parked.
    fn offer(&mut self, r: Record) -> bool {
        match enqueue(&self.ctx.kafka, &self.req.topic, &r, self.order.ticket()) {
            Enqueue::Sent => {
                self.order.sent(r.seq, r.id);
                true
            }
            Enqueue::Failed(e) => {
                self.order.done(r.seq, r.id, Err(e));
                true
            }
            Enqueue::Full => {
                self.blocked.push_front(r);
                false
            }
        }
    }

    fn retry_blocked(&mut self) {
        while let Some(r) = self.blocked.pop_front() {
            if !self.offer(r) {
                return;
            }
        }
    }

    fn refuse(&mut self, d: Decoded) {
        let (seq, id) = match d {
            Ok(r) => (r.seq, r.id),
            Err(e) => (e.seq, e.id),
        };
        self.order.done(seq, id, Err(shutting_down()));
    }

    fn refuse_blocked(&mut self) {
        for r in std::mem::take(&mut self.blocked) {
            self.order.done(r.seq, r.id, Err(shutting_down()));
        }
    }
}

fn shutting_down() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::ShuttingDown,
        "proxy is shutting down; the record was not produced",
    )
}

/// `POST /v1/topics/{topic}/records`: one record or a batch, answered when Kafka stored them.
pub async fn http_produce(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    q: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    state.metrics.http_produce_requests.fetch_add(1, Relaxed);
    let r = async {
        let _principal = state.authenticate(&headers)?;
        let Path(topic) =
            path.map_err(|e| ProtocolError::bad_request(format!("bad topic in path: {e}")))?;
        let req = wire::parse_http(&topic, &params(q)?)?;
        let body = body.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ProtocolError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "body exceeds maxFrameBytes ({} bytes)",
                        state.config.max_frame_bytes
                    ),
                )
            } else {
                ProtocolError::bad_request(format!("cannot read body: {e}"))
            }
        })?;
        Ok::<_, ProtocolError>((req, body))
    }
    .await;
    let (req, body) = r.inspect_err(|_| state.metrics.reject())?;
    // A request holds a session slot and the drain token while it runs, like a socket.
    let _permit = state.admit()?;
    let _token = state.token.clone();
    let partitions = check_target(&state.kafka, &req).await?;
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("text/plain") || ct.starts_with("application/octet-stream")
        })
        .unwrap_or(false);
    let (decoded, single) = Decoder::new(&req).http_body(body, raw)?;
    let answers = produce_all(&state.kafka, &req.topic, &partitions, decoded).await;
    let ok = answers.iter().filter(|(_, o)| o.is_ok()).count() as u64;
    state
        .metrics
        .count_http_produce(ok, answers.len() as u64 - ok);
    if single {
        if let Some((id, outcome)) = answers.into_iter().next() {
            return match outcome {
                Ok(_) => Ok(json_response(
                    StatusCode::OK,
                    &wire::http_result(id.as_ref(), &outcome),
                )),
                Err(e) => Err(HttpError(e)),
            };
        }
        return Err(HttpError(ProtocolError::new(
            ErrorCode::Internal,
            "no answer for the record",
        )));
    }
    let outcomes: Vec<Outcome> = answers.iter().map(|(_, o)| o.clone()).collect();
    let results: Vec<_> = answers
        .iter()
        .map(|(id, o)| wire::http_result(id.as_ref(), o))
        .collect();
    let status = StatusCode::from_u16(wire::http_batch_status(&outcomes))
        .unwrap_or(StatusCode::MULTI_STATUS);
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        records: Vec<wire::HttpResult<'a>>,
    }
    Ok(json_response(status, &Batch { records: results }))
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(s) => (status, [(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => HttpError(ProtocolError::new(ErrorCode::Internal, e.to_string())).into_response(),
    }
}

/// Sends every record (all in flight together) and waits for every answer, in input order.
/// A request's records are bounded by the body limit, so they are not windowed further.
async fn produce_all(
    kafka: &Kafka,
    topic: &str,
    partitions: &[i32],
    decoded: Vec<Decoded>,
) -> Vec<(Option<Value>, Outcome)> {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut order = Order::new();
    for d in decoded {
        let r = match d {
            Ok(r) => r,
            Err(e) => {
                order.done(e.seq, e.id, Err(e.error));
                continue;
            }
        };
        if let Some(p) = r.partition.filter(|p| !partitions.contains(p)) {
            let e = wire::unknown_partition(topic, p, partitions.len());
            order.done(r.seq, r.id, Err(e));
            continue;
        }
        loop {
            match enqueue(kafka, topic, &r, order.ticket()) {
                Enqueue::Sent => order.sent(r.seq, r.id.clone()),
                Enqueue::Failed(e) => order.done(r.seq, r.id.clone(), Err(e)),
                Enqueue::Full if Instant::now() < give_up => {
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                    continue;
                }
                Enqueue::Full => order.done(
                    r.seq,
                    r.id.clone(),
                    Err(ProtocolError::new(
                        ErrorCode::KafkaUnavailable,
                        "the producer's queue stayed full; Kafka is not keeping up",
                    )),
                ),
            }
            break;
        }
    }
    let mut answers = Vec::with_capacity(order.len());
    loop {
        order.collect();
        while let Some((_, id, outcome)) = order.pop() {
            answers.push((id, outcome));
        }
        if order.is_empty() {
            return answers;
        }
        // Every sent record gets a report from librdkafka (at the latest after
        // `message.timeout.ms`).
        order.inbox.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use futures::StreamExt;
    use rdkafka::mocking::MockCluster;

    /// A socket made of two channels: frames the test sends in, frames the session writes out.
    /// Bounded both ways, so a session that stops reading (or a test that stops reading
    /// answers) pushes back as TCP would.
    struct Pipe {
        rx: futures::channel::mpsc::Receiver<Message>,
        tx: futures::channel::mpsc::Sender<Message>,
    }

    impl Stream for Pipe {
        type Item = Result<Message, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Pin::new(&mut self.rx).poll_next(cx).map(|m| m.map(Ok))
        }
    }

    impl Sink<Message> for Pipe {
        type Error = axum::Error;
        fn poll_ready(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), axum::Error>> {
            Pin::new(&mut self.tx)
                .poll_ready(cx)
                .map_err(axum::Error::new)
        }
        fn start_send(mut self: Pin<&mut Self>, m: Message) -> Result<(), axum::Error> {
            Pin::new(&mut self.tx)
                .start_send(m)
                .map_err(axum::Error::new)
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), axum::Error>> {
            Pin::new(&mut self.tx)
                .poll_flush(cx)
                .map_err(axum::Error::new)
        }
        fn poll_close(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Result<(), axum::Error>> {
            Pin::new(&mut self.tx)
                .poll_close(cx)
                .map_err(axum::Error::new)
        }
    }

    /// Frames the test's side of a `Pipe` holds before sending blocks.
    const PIPE_IN: usize = 4;
    const PIPE_OUT: usize = 256;

    /// A session over a `Pipe` against an in-process mock cluster: `(frames in, frames out)`.
    /// The returned cluster must outlive the session.
    async fn mock_session(
        props: &[(&str, &str)],
    ) -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        crate::shutdown::ShutdownTrigger,
        futures::channel::mpsc::Sender<Message>,
        futures::channel::mpsc::Receiver<Message>,
        tokio::task::JoinHandle<End>,
    ) {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 2, 1).unwrap();
        let mut config = Config {
            kafka: mock.bootstrap_servers(),
            ..Config::default()
        };
        for (k, v) in props {
            config
                .kafka_properties
                .insert(k.to_string(), Secret::new(*v));
        }
        let config = Arc::new(config);
        let kafka = Arc::new(Kafka::new(config.clone()).unwrap());
        // Dropping the trigger would count as shutdown, so the caller keeps it.
        let (trigger, shutdown) = crate::shutdown::channel();
        let req = wire::parse_ws(&crate::protocol::query(&[("topic", "t")])).unwrap();
        let (in_tx, in_rx) = futures::channel::mpsc::channel(PIPE_IN);
        let (out_tx, out_rx) = futures::channel::mpsc::channel(PIPE_OUT);
        let session = tokio::spawn(async move {
            let ctx = Ctx {
                kafka,
                config,
                shutdown,
            };
            let partitions = check_target(&ctx.kafka, &req).await.unwrap();
            let stats = SessionStats::default();
            let mut pipe = Pipe {
                rx: in_rx,
                tx: out_tx,
            };
            let mut s = Session::new(&req, &ctx, &stats, &mut pipe, partitions);
            s.run().await
        });
        (mock, trigger, in_tx, out_rx, session)
    }

    async fn expect_acks(out: &mut futures::channel::mpsc::Receiver<Message>, n: usize) {
        let mut i = 1;
        while i <= n {
            match tokio::time::timeout(Duration::from_secs(20), out.next()).await {
                Ok(Some(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "ack", "{v}");
                    assert_eq!(v["id"], Value::from(i), "answers in order");
                    i += 1;
                }
                // The session's keep-alive pings are not answers.
                Ok(Some(Message::Ping(_))) => {}
                _ => panic!("answer {i} of {n} missing"),
            }
        }
    }

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stops_taking_records_while_answers_are_not_read() {
        let (_mock, _trigger, mut records, mut out, session) = mock_session(&[]).await;
        // Nobody reads the answers: the session must stop taking records at its limit.
        let mut taken = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(2), records.send(text("x"))).await {
                Ok(Ok(())) => taken += 1,
                Ok(Err(_)) => panic!("session ended"),
                Err(_) => break,
            }
            assert!(taken <= 10 * MAX_IN_FLIGHT, "the session never pushed back");
        }
        // Unanswered records, answers in the socket's buffer, frames in its receive buffer.
        let bound = MAX_IN_FLIGHT + (PIPE_OUT + 1) + (PIPE_IN + 1) + 1;
        assert!(
            taken >= MAX_IN_FLIGHT && taken <= bound,
            "took {taken}, bound {bound}"
        );
        // Reading the answers lets it go on; every record is answered once, in order.
        expect_acks(&mut out, taken).await;
        records.close_channel();
        assert!(matches!(session.await.unwrap(), End::ClientGone));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_producer_queue_parks_records_in_order() {
        // A queue of 5 messages and a slow broker: most sends meet `QueueFull`.
        let (mock, _trigger, mut records, mut out, session) =
            mock_session(&[("queue.buffering.max.messages", "5")]).await;
        mock.broker_round_trip_time(1, Duration::from_millis(20))
            .unwrap();
        let n = 200;
        let reader = tokio::spawn(async move {
            expect_acks(&mut out, n).await;
            out
        });
        for i in 0..n {
            records.send(text(&format!("v{i}"))).await.unwrap();
        }
        let _out = reader.await.unwrap();
        records.close_channel();
        assert!(matches!(session.await.unwrap(), End::ClientGone));
    }

    #[test]
    fn opaques_carry_inbox_and_sequence() {
        assert_eq!(unpack(pack(7, 42)), (7, 42));
        assert_eq!(
            unpack(pack(INBOX_IDS - 1, SEQ_MASK)),
            (INBOX_IDS - 1, SEQ_MASK)
        );
        // Sequence numbers wrap at 2^40 and still find their slot.
        assert_eq!(unpack(pack(3, SEQ_MASK + 5)), (3, 4));
    }

    #[test]
    fn read_errors() {
        assert!(matches!(
            classify_read_error("Space limit exceeded: Message too long: 10 > 5", 5),
            End::Error(ProtocolError {
                code: ErrorCode::TooLarge,
                ..
            })
        ));
        assert!(matches!(
            classify_read_error("Connection reset without closing handshake", 5),
            End::ClientGone
        ));
    }

    #[test]
    fn kafka_errors() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(
            enqueue_error(&e, 2_000_000, 1_000_000).code,
            ErrorCode::TooLarge
        );
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(delivery_error(&e).code, ErrorCode::Forbidden);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(delivery_error(&e).code, ErrorCode::KafkaUnavailable);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert_eq!(delivery_error(&e).code, ErrorCode::UnknownTopic);
    }
}
