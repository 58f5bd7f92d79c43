//! Produce over WebSocket and HTTP: socket reader -> decoder -> shared idempotent producer -> acks.
//!
//! Every record is answered exactly once, in the order it arrived: an ack with partition and
//! offset once Kafka has stored it (acks=all), or an error. Many sends are in flight at once;
//! backpressure stops reading the socket when too many answers are outstanding or librdkafka's
//! queue is full, so nothing is buffered without bound. See docs/PROTOCOL.md ("Produce").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::kafka::{Kafka, LogContext};
use crate::metrics::{now_ms, SessionMeta, SessionStats};
use crate::protocol::produce::{
    self as wire, error_frame, Decoded, Decoder, ProduceRequest, Record,
};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::{configure, params, AppState, HttpError, Params, Ws};
use crate::shutdown::Shutdown;
use crate::socket;

/// Records of one socket read but not yet answered (in the producer, awaiting delivery, or
/// queued as acks). At the limit the socket is not read, so TCP pushes back on the client.
/// Large enough to keep librdkafka's batches full (1000 measured about 20% slower); cheap,
/// because a sent record's bytes live in librdkafka's bounded queue and only its answer is held.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// Batches of decoded frames the reader task may hold ahead of the session.
const READER_QUEUE: usize = 4;

/// Frames already received that the reader decodes and hands over together, at most; a batch
/// also ends once its frames reach `READER_BATCH_BYTES`, so the reader's memory stays near
/// `READER_QUEUE` frames of the largest size.
const READER_BATCH_FRAMES: usize = 64;
const READER_BATCH_BYTES: usize = 256 * 1024;

/// Frames queued to the writer task; acks are small, and a client that does not read them
/// stalls the session (and so its reading) once this and `MAX_IN_FLIGHT` fill up.
const WRITER_QUEUE: usize = 256;

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

/// What the session hands the writer task.
enum Out {
    Text(Utf8Bytes),
    /// A close frame, after everything queued before it.
    Close(u16, String),
}

/// What the reader task reports, in socket order.
enum Inbound {
    Records(Vec<Decoded>),
    /// The reader stopped: the client closed, the frame was too large, or the socket broke.
    End(End),
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

async fn session(socket: WebSocket, req: ProduceRequest, ctx: Ctx, stats: Arc<SessionStats>) {
    let last_seen = Arc::new(AtomicI64::new(now_ms()));
    let (sink, stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel(WRITER_QUEUE);
    let writer = tokio::spawn(writer(sink, out_rx, ctx.config.ping_interval));

    let end = match check_target(&ctx.kafka, &req).await {
        Ok(partitions) => {
            let (stop_tx, stop_rx) = watch::channel(false);
            let inbound = spawn_reader(
                stream,
                Decoder::new(&req),
                stop_rx,
                last_seen.clone(),
                ctx.config.max_frame_bytes,
            );
            let mut s = Session::new(&req, &ctx, &stats, &out_tx, partitions);
            s.run(inbound, stop_tx, last_seen).await
        }
        Err(e) => End::Error(e),
    };

    let close = match end {
        End::ClientGone => None,
        End::Shutdown => Some((1001, "proxy shutting down".to_string())),
        End::Error(e) => {
            tracing::info!(code = e.code.name(), reason = %e.message, "produce session closed with error");
            let _ = out_tx.send(Out::Text(e.frame().into())).await;
            Some((e.code.close_code(), e.close_reason()))
        }
        End::Violation(code, reason) => {
            tracing::debug!(code, %reason, "produce socket violated the WebSocket protocol");
            Some((code, reason))
        }
    };
    if let Some((code, reason)) = close {
        let _ = out_tx.send(Out::Close(code, reason)).await;
    }
    drop(out_tx);
    // A writer stuck on a peer that reads nothing must not outlive the session.
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        abort.abort();
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

/// Writes frames in order and pings on a timer. Takes every frame already queued at once and
/// flushes only when nothing else is queued, so acks under load leave in few TCP writes.
async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    ping_interval: Duration,
) {
    // A peer that takes no bytes for this long is dead; the writer lets go of it.
    let limit = socket::stall_limit(ping_interval);
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    let mut batch = Vec::with_capacity(WRITER_QUEUE);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, WRITER_QUEUE) => {
                if n == 0 {
                    let _ = tokio::time::timeout(limit, sink.flush()).await;
                    return;
                }
                match tokio::time::timeout(limit, write_batch(&mut sink, &mut batch, &rx)).await {
                    Ok(Ok(Written::More)) => {}
                    Ok(Ok(Written::Close(code, reason))) => {
                        let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                        socket::send_within(&mut sink, close, limit).await;
                        return;
                    }
                    Ok(Err(_)) | Err(_) => return,
                }
            },
            _ = ping.tick() => {
                if !socket::send_within(&mut sink, Message::Ping(Default::default()), limit).await {
                    return;
                }
            }
        }
    }
}

/// What writing one batch of frames came to.
enum Written {
    More,
    Close(u16, String),
}

/// Feeds a batch of frames; flushes once at its end when nothing else is queued. Stops at a close.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Out>,
    rx: &mpsc::Receiver<Out>,
) -> Result<Written, axum::Error> {
    for out in batch.drain(..) {
        match out {
            Out::Text(text) => sink.feed(Message::Text(text)).await?,
            Out::Close(code, reason) => {
                sink.flush().await?;
                return Ok(Written::Close(code, reason));
            }
        }
    }
    if rx.is_empty() {
        sink.flush().await?;
    }
    Ok(Written::More)
}

/// Reads and decodes frames until the client leaves, a frame breaks the protocol, or `stop`
/// (proxy shutdown) is raised. Decoding here keeps it off the session task, in parallel.
fn spawn_reader(
    mut stream: SplitStream<WebSocket>,
    mut decoder: Decoder,
    mut stop: watch::Receiver<bool>,
    last_seen: Arc<AtomicI64>,
    max_frame_bytes: usize,
) -> mpsc::Receiver<Inbound> {
    let (tx, rx) = mpsc::channel(READER_QUEUE);
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                m = stream.next() => m,
            };
            last_seen.store(now_ms(), Relaxed);
            // Frames already received are decoded together and handed over as one batch.
            let mut records = Vec::new();
            let mut end = None;
            let mut next = Some(msg);
            let (mut frames, mut bytes) = (0, 0);
            while let Some(msg) = next.take() {
                frames += 1;
                match msg {
                    None => end = Some(End::ClientGone),
                    Some(Ok(Message::Text(t))) => {
                        bytes += t.len();
                        decoder.text_into(Bytes::from(t), &mut records);
                    }
                    Some(Ok(Message::Binary(b))) => {
                        bytes += b.len();
                        decoder.binary_into(b, &mut records);
                    }
                    Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => end = Some(End::ClientGone),
                    Some(Err(e)) => {
                        end = Some(classify_read_error(&e.to_string(), max_frame_bytes))
                    }
                }
                if end.is_some() || frames >= READER_BATCH_FRAMES || bytes >= READER_BATCH_BYTES {
                    break;
                }
                next = stream.next().now_or_never();
            }
            if !records.is_empty() && tx.send(Inbound::Records(records)).await.is_err() {
                return;
            }
            if let Some(end) = end {
                let _ = tx.send(Inbound::End(end)).await;
                return;
            }
        }
    });
    rx
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

/// The shared producer's context: each record carries a `Ticket`, and its delivery report goes
/// straight to the `Inbox` of the socket or request that sent it (no future per record).
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
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, report: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        let outcome = match report {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(delivery_error(e)),
        };
        ticket.inbox.put(ticket.seq, outcome);
    }
}

/// What a sent record carries through librdkafka: where its report goes and its place there.
pub struct Ticket {
    inbox: Arc<Inbox>,
    seq: u64,
}

/// Delivery reports for one socket or request, as librdkafka's thread hands them over.
#[derive(Default)]
struct Inbox {
    reports: Mutex<Vec<(u64, Outcome)>>,
    /// Raised when reports arrive in an empty inbox; its owner takes them all at once.
    ready: Notify,
}

impl Inbox {
    fn put(&self, seq: u64, outcome: Outcome) {
        let first = {
            let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            r.push((seq, outcome));
            r.len() == 1
        };
        if first {
            self.ready.notify_one();
        }
    }

    /// Moves every report that came in to `into` (which must be empty).
    fn take(&self, into: &mut Vec<(u64, Outcome)>) {
        let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *r, into);
    }
}

/// Records in arrival order until their answers are known; reports arriving in any order are
/// filed by sequence number and answers leave from the front only.
struct Order {
    inbox: Arc<Inbox>,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Sent records whose report has not come yet.
    waiting: usize,
    scratch: Vec<(u64, Outcome)>,
}

struct Slot {
    id: Option<Value>,
    outcome: Option<Outcome>,
}

impl Order {
    fn new() -> Self {
        Order {
            inbox: Arc::default(),
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
    fn done(&mut self, id: Option<Value>, outcome: Outcome) {
        self.slots.push_back(Slot {
            id,
            outcome: Some(outcome),
        });
    }

    /// The ticket for the next record; it takes its place with `sent` once librdkafka has it.
    fn ticket(&self) -> Box<Ticket> {
        Box::new(Ticket {
            inbox: self.inbox.clone(),
            seq: self.head + self.slots.len() as u64,
        })
    }

    fn sent(&mut self, id: Option<Value>) {
        self.slots.push_back(Slot { id, outcome: None });
        self.waiting += 1;
    }

    /// Files the reports that came in.
    fn collect(&mut self) {
        if self.waiting == 0 {
            return;
        }
        self.inbox.take(&mut self.scratch);
        for (seq, outcome) in self.scratch.drain(..) {
            let slot = seq
                .checked_sub(self.head)
                .and_then(|i| self.slots.get_mut(usize::try_from(i).ok()?));
            if let Some(slot) = slot.filter(|s| s.outcome.is_none()) {
                slot.outcome = Some(outcome);
                self.waiting -= 1;
            }
        }
    }

    /// The first record's answer, once known.
    fn pop(&mut self) -> Option<(Option<Value>, Outcome)> {
        self.slots.front()?.outcome.as_ref()?;
        let slot = self.slots.pop_front()?;
        self.head += 1;
        Some((slot.id, slot.outcome?))
    }
}

/// Result of offering one record to librdkafka.
enum Enqueue {
    Sent,
    /// The producer's queue is full: offer it again later, and read no more meanwhile.
    Full,
    Failed(ProtocolError),
}

fn enqueue(kafka: &Kafka, topic: &str, r: &Record, ticket: Box<Ticket>) -> Enqueue {
    let mut fr = BaseRecord::<[u8], [u8], Box<Ticket>>::with_opaque_to(topic, ticket);
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
        let frame = self.buf.split().freeze();
        // The bytes were a `String`, so this cannot fail; if it did, the copy is still right.
        Utf8Bytes::try_from(frame).unwrap_or_else(|_| Utf8Bytes::from(self.text.as_str()))
    }
}

struct Session<'a> {
    req: &'a ProduceRequest,
    ctx: &'a Ctx,
    stats: &'a SessionStats,
    out: &'a mpsc::Sender<Out>,
    /// The topic's partitions, checked before sending so a wrong partition fails at once.
    partitions: Arc<[i32]>,
    /// Every record taken from the reader, in arrival order, until its answer is known.
    order: Order,
    /// Records refused with `QueueFull`, in order; while any wait, the socket is not read.
    blocked: VecDeque<Record>,
    /// Answers ready for the writer, in order.
    acks: VecDeque<Utf8Bytes>,
    /// Acks are encoded here and split off as frames that share its allocation.
    frames: Frames,
    /// The writer stopped (client gone); answers are counted but no longer sent.
    writer_gone: bool,
}

/// Whether the session takes more records from the reader now; `draining` once it takes only
/// what the reader already has (shutdown, or the writer gone) until the reader is done.
fn can_read(s: &Session<'_>, ending: &Option<End>, reader_done: bool, draining: bool) -> bool {
    !reader_done
        && (draining
            || (ending.is_none() && s.blocked.is_empty() && s.outstanding() < MAX_IN_FLIGHT))
}

impl<'a> Session<'a> {
    fn new(
        req: &'a ProduceRequest,
        ctx: &'a Ctx,
        stats: &'a SessionStats,
        out: &'a mpsc::Sender<Out>,
        partitions: Arc<[i32]>,
    ) -> Self {
        Session {
            req,
            ctx,
            stats,
            out,
            partitions,
            order: Order::new(),
            blocked: VecDeque::new(),
            acks: VecDeque::new(),
            frames: Frames::default(),
            writer_gone: false,
        }
    }
}

impl Session<'_> {
    fn outstanding(&self) -> usize {
        self.order.len() + self.blocked.len() + self.acks.len()
    }

    async fn run(
        &mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        stop_reader: watch::Sender<bool>,
        last_seen: Arc<AtomicI64>,
    ) -> End {
        let mut shutdown = self.ctx.shutdown.clone();
        let inbox = self.order.inbox.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let dead_after = self.ctx.config.ping_interval.as_millis() as i64 * 3;
        // Set once no more records will be taken: the session ends when every answer is out.
        let mut ending: Option<End> = None;
        let mut deadline = Instant::now();
        // After shutdown, records the reader already decoded are answered `shutting_down`.
        let mut refusing = false;
        // Once the writer is gone (usually: the client closed), the reader is stopped, and the
        // records it read before the close are still produced; the session ends after them.
        let mut draining = false;
        let mut reader_done = false;
        // When parked records are next offered to librdkafka; a fixed instant, so steady ack
        // traffic cannot keep postponing it.
        let mut retry_at = Instant::now();
        loop {
            if !self.blocked.is_empty() && retry_at <= Instant::now() {
                self.retry_blocked();
                retry_at = Instant::now() + QUEUE_FULL_RETRY;
            }
            // Everything ready now is done in one go, so one wake-up serves many records:
            // frames the reader already decoded, deliveries already reported, and answers the
            // writer has room for.
            while can_read(self, &ending, reader_done, refusing || draining) {
                match inbound.try_recv() {
                    Ok(m) => {
                        if let Some(end) = self.take(m, refusing).await {
                            reader_done = true;
                            if ending.is_none() {
                                ending = Some(end);
                                deadline = Instant::now() + self.ctx.config.shutdown_grace;
                            }
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => reader_done = true,
                }
            }
            self.answer_ready();
            if self.hand_to_writer() {
                let _ = stop_reader.send(true);
                draining = true;
                if ending.is_none() {
                    ending = Some(End::ClientGone);
                    deadline = Instant::now() + self.ctx.config.shutdown_grace;
                }
            }
            if let Some(end) = &ending {
                let answered = self.order.is_empty()
                    && self.blocked.is_empty()
                    && (self.acks.is_empty() || self.writer_gone);
                if answered
                    && (reader_done || !(refusing || draining || matches!(end, End::Shutdown)))
                {
                    break;
                }
            }
            let can_read = can_read(self, &ending, reader_done, refusing || draining);
            tokio::select! {
                biased;
                _ = shutdown.wait(), if ending.is_none() => {
                    tracing::debug!(outstanding = self.outstanding(), "shutdown: finishing records in flight");
                    let _ = stop_reader.send(true);
                    refusing = true;
                    self.refuse_blocked();
                    ending = Some(End::Shutdown);
                    deadline = Instant::now() + self.ctx.config.shutdown_grace;
                }
                // Only reached while the writer's queue is full.
                permit = self.out.reserve(), if !self.acks.is_empty() && !self.writer_gone => match permit {
                    Ok(permit) => {
                        if let Some(a) = self.acks.pop_front() {
                            permit.send(Out::Text(a));
                        }
                    }
                    Err(_) => {
                        self.writer_gone = true;
                        self.acks.clear();
                        let _ = stop_reader.send(true);
                        draining = true;
                        if ending.is_none() {
                            ending = Some(End::ClientGone);
                            deadline = Instant::now() + self.ctx.config.shutdown_grace;
                        }
                    }
                },
                _ = inbox.ready.notified(), if self.order.waiting > 0 => {}
                _ = tokio::time::sleep_until(retry_at.into()), if !self.blocked.is_empty() => {}
                m = inbound.recv(), if can_read => match m {
                    Some(m) => {
                        if let Some(end) = self.take(m, refusing).await {
                            reader_done = true;
                            if ending.is_none() {
                                ending = Some(end);
                                deadline = Instant::now() + self.ctx.config.shutdown_grace;
                            }
                        }
                    }
                    None => reader_done = true,
                },
                _ = tokio::time::sleep_until(deadline.into()), if ending.is_some() => {
                    tracing::warn!(outstanding = self.outstanding(), "produce session gave up waiting for deliveries");
                    break;
                }
                _ = tick.tick(), if ending.is_none() => {
                    if now_ms() - last_seen.load(Relaxed) > dead_after {
                        tracing::debug!("peer silent for three ping intervals; closing");
                        let _ = stop_reader.send(true);
                        ending = Some(End::ClientGone);
                        deadline = Instant::now() + self.ctx.config.shutdown_grace;
                    }
                }
            }
        }
        let _ = stop_reader.send(true);
        ending.unwrap_or(End::ClientGone)
    }

    /// Takes what the reader sent; an end of input is returned to the caller.
    async fn take(&mut self, m: Inbound, refusing: bool) -> Option<End> {
        match m {
            Inbound::Records(records) => {
                for d in records {
                    if refusing {
                        self.refuse(d);
                    } else {
                        self.submit(d).await;
                    }
                }
                None
            }
            Inbound::End(end) => Some(end),
        }
    }

    /// Answers every record at the head of the order whose delivery is already known.
    fn answer_ready(&mut self) {
        self.order.collect();
        while let Some((id, outcome)) = self.order.pop() {
            self.answer(id, outcome);
        }
    }

    /// Queues answers to the writer while it has room; `true` when the writer just turned out
    /// to be gone.
    fn hand_to_writer(&mut self) -> bool {
        if self.writer_gone {
            return false;
        }
        while let Some(a) = self.acks.pop_front() {
            match self.out.try_send(Out::Text(a)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Out::Text(a))) => {
                    self.acks.push_front(a);
                    return false;
                }
                Err(mpsc::error::TrySendError::Full(Out::Close(..))) => return false,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.writer_gone = true;
                    self.acks.clear();
                    return true;
                }
            }
        }
        false
    }

    /// Queues the answer for the writer and counts it.
    fn answer(&mut self, id: Option<Value>, outcome: Outcome) {
        let id = id.unwrap_or(Value::Null);
        let frame = match &outcome {
            Ok((p, o)) => {
                self.stats.produced.fetch_add(1, Relaxed);
                self.frames.ack(&id, *p, *o)
            }
            Err(e) => {
                self.stats.produce_errors.fetch_add(1, Relaxed);
                tracing::debug!(code = e.code.name(), reason = %e.message, "record refused");
                error_frame(&id, e).into()
            }
        };
        if !self.writer_gone {
            self.acks.push_back(frame);
        }
    }

    /// Checks a decoded record and offers it to the producer, keeping arrival order.
    async fn submit(&mut self, d: Decoded) {
        let r = match d {
            Ok(r) => r,
            Err(e) => {
                let id = e.ack_id();
                self.order.done(Some(id), Err(e.error));
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
                    self.order.done(Some(r.ack_id()), Err(e));
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
                self.order.sent(Some(r.ack_id()));
                true
            }
            Enqueue::Failed(e) => {
                self.order.done(Some(r.ack_id()), Err(e));
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
        let id = match d {
            Ok(r) => r.ack_id(),
            Err(e) => e.ack_id(),
        };
        self.order.done(Some(id), Err(shutting_down()));
    }

    fn refuse_blocked(&mut self) {
        for r in std::mem::take(&mut self.blocked) {
            self.order.done(Some(r.ack_id()), Err(shutting_down()));
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
                order.done(e.id, Err(e.error));
                continue;
            }
        };
        if let Some(p) = r.partition.filter(|p| !partitions.contains(p)) {
            let e = wire::unknown_partition(topic, p, partitions.len());
            order.done(r.id, Err(e));
            continue;
        }
        loop {
            match enqueue(kafka, topic, &r, order.ticket()) {
                Enqueue::Sent => order.sent(r.id.clone()),
                Enqueue::Failed(e) => order.done(r.id.clone(), Err(e)),
                Enqueue::Full if Instant::now() < give_up => {
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                    continue;
                }
                Enqueue::Full => order.done(
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
    let inbox = order.inbox.clone();
    loop {
        order.collect();
        while let Some(a) = order.pop() {
            answers.push(a);
        }
        if order.is_empty() {
            return answers;
        }
        // Every sent record gets a report from librdkafka (at the latest after
        // `message.timeout.ms`).
        inbox.ready.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use rdkafka::mocking::MockCluster;

    /// A session over channels against an in-process mock cluster: `(records in, answers out)`.
    /// The returned cluster must outlive the session.
    async fn mock_session(
        props: &[(&str, &str)],
    ) -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        crate::shutdown::ShutdownTrigger,
        Decoder,
        mpsc::Sender<Inbound>,
        mpsc::Receiver<Out>,
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
        let decoder = Decoder::new(&req);
        let (in_tx, in_rx) = mpsc::channel(READER_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(WRITER_QUEUE);
        let session = tokio::spawn(async move {
            let ctx = Ctx {
                kafka,
                config,
                shutdown,
            };
            let partitions = check_target(&ctx.kafka, &req).await.unwrap();
            let stats = SessionStats::default();
            let mut s = Session::new(&req, &ctx, &stats, &out_tx, partitions);
            let (stop_tx, _stop_rx) = watch::channel(false);
            s.run(in_rx, stop_tx, Arc::new(AtomicI64::new(now_ms())))
                .await
        });
        (mock, trigger, decoder, in_tx, out_rx, session)
    }

    async fn expect_acks(out: &mut mpsc::Receiver<Out>, n: usize) {
        for i in 1..=n {
            match tokio::time::timeout(Duration::from_secs(20), out.recv()).await {
                Ok(Some(Out::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "ack", "{v}");
                    assert_eq!(v["id"], Value::from(i), "answers in order");
                }
                _ => panic!("answer {i} of {n} missing"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stops_taking_records_while_answers_are_not_read() {
        let (_mock, _trigger, mut decoder, records, mut out, session) = mock_session(&[]).await;
        // Nobody reads the answers: the session must stop taking records at its limit.
        let mut taken = 0;
        loop {
            let frame = Inbound::Records(decoder.text(Bytes::from_static(b"x")));
            match tokio::time::timeout(Duration::from_secs(2), records.send(frame)).await {
                Ok(Ok(())) => taken += 1,
                Ok(Err(_)) => panic!("session ended"),
                Err(_) => break,
            }
            assert!(taken <= 10 * MAX_IN_FLIGHT, "the session never pushed back");
        }
        let bound = MAX_IN_FLIGHT + WRITER_QUEUE + READER_QUEUE + 1;
        assert!(
            taken >= MAX_IN_FLIGHT && taken <= bound,
            "took {taken}, bound {bound}"
        );
        // Reading the answers lets it go on; every record is answered once, in order.
        expect_acks(&mut out, taken).await;
        records.send(Inbound::End(End::ClientGone)).await.unwrap();
        assert!(matches!(session.await.unwrap(), End::ClientGone));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_producer_queue_parks_records_in_order() {
        // A queue of 5 messages and a slow broker: most sends meet `QueueFull`.
        let (mock, _trigger, mut decoder, records, mut out, session) =
            mock_session(&[("queue.buffering.max.messages", "5")]).await;
        mock.broker_round_trip_time(1, Duration::from_millis(20))
            .unwrap();
        let n = 200;
        let reader = tokio::spawn(async move {
            expect_acks(&mut out, n).await;
            out
        });
        for i in 0..n {
            let v = format!("v{i}");
            let frame = Inbound::Records(decoder.text(Bytes::from(v)));
            records.send(frame).await.unwrap();
        }
        let _out = reader.await.unwrap();
        records.send(Inbound::End(End::ClientGone)).await.unwrap();
        assert!(matches!(session.await.unwrap(), End::ClientGone));
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
