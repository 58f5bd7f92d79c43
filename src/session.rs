//! Consume session: one socket's Kafka consumer, batching, credits, backpressure and commits.
//!
//! Data flows one way: Kafka consumer -> this loop (offsets, window, batching) -> encoder
//! (`protocol::consume::BatchWriter`) -> writer task -> socket. The reader task sends the client's
//! control frames back in. Offsets are stored for commit only after their frame was written
//! (`auto`) or acknowledged (`ack`), so nothing is skipped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _, OwnedMessage};
use rdkafka_batch::FetchQueue;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::kafka::{Kafka, RebalanceEvent, SessionContext};
use crate::metrics::{now_ms, SessionStats};
use crate::protocol::consume::{
    parse_client_frame, partitions_frame, Assignment, BatchWriter, ClientFrame, CommitMode,
    ConsumeRequest, Format, RecordView,
};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;
use crate::socket;

/// Frames queued to the writer task beyond the one being written. Small on purpose: the socket's
/// own buffer is the queue, and backpressure must reach Kafka quickly.
const WRITER_QUEUE: usize = 2;

/// What the session hands the writer task.
pub enum Outbound {
    /// A text frame; `batch` is set for record frames so the session learns when it was written.
    Text { text: String, batch: Option<u64> },
    /// A close frame, after everything queued before it.
    Close(u16, String),
    /// No more output: send what is queued (and tungstenite's echo of a client close), then stop.
    Finish,
}

/// What the reader task reports.
enum Inbound {
    Frame(ClientFrame),
    /// A malformed frame: answered with an error frame, the socket stays open.
    Bad(ProtocolError),
    /// The socket cannot go on: a frame over the limit (4413) or a WebSocket violation.
    Broken(socket::ReadError),
    Closed,
}

/// Shared with the writer and reader tasks.
pub struct Shared {
    /// Bytes of frames queued to or being written by the writer task.
    pub queued_bytes: AtomicUsize,
    /// Last time the peer sent anything (ms since epoch), for dead-peer detection.
    pub last_seen_ms: AtomicI64,
}

/// Splits the socket and runs the writer task: frames in order, pings on a timer.
pub fn spawn_writer(
    sink: SplitSink<WebSocket, Message>,
    ping_interval: Duration,
    shared: Arc<Shared>,
) -> (
    mpsc::Sender<Outbound>,
    mpsc::UnboundedReceiver<(u64, usize)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(writer(sink, rx, written_tx, ping_interval, shared));
    (tx, written_rx, handle)
}

async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    written: mpsc::UnboundedSender<(u64, usize)>,
    ping_interval: Duration,
    shared: Arc<Shared>,
) {
    let limit = socket::stall_limit(ping_interval);
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Outbound::Text { text, batch }) => {
                    let len = text.len();
                    let ok = socket::send_within(&mut sink, Message::Text(text.into()), limit).await;
                    // Only record frames are counted in `queued_bytes` (control frames are not).
                    if batch.is_some() {
                        shared.queued_bytes.fetch_sub(len, Relaxed);
                    }
                    if !ok {
                        break;
                    }
                    if let Some(b) = batch {
                        let _ = written.send((b, len));
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                    socket::send_within(&mut sink, close, limit).await;
                    break;
                }
                Some(Outbound::Finish) | None => {
                    // Sends tungstenite's queued echo of a client's close frame.
                    let _ = tokio::time::timeout(limit, sink.flush()).await;
                    break;
                }
            },
            _ = ping.tick() => {
                if !socket::send_within(&mut sink, Message::Ping(Default::default()), limit).await {
                    break;
                }
            }
        }
    }
}

fn spawn_reader(
    mut stream: SplitStream<WebSocket>,
    format: Format,
    shared: Arc<Shared>,
) -> (mpsc::Receiver<Inbound>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let handle = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            shared.last_seen_ms.store(now_ms(), Relaxed);
            let inbound = match msg {
                Ok(Message::Text(t)) => match format {
                    // Seed clients never sent anything meaningful; their frames are ignored.
                    Format::Seed => continue,
                    Format::V1(_) => match parse_client_frame(t.as_str()) {
                        Ok(f) => Inbound::Frame(f),
                        Err(e) => Inbound::Bad(e),
                    },
                },
                Ok(Message::Binary(_)) => match format {
                    Format::Seed => continue,
                    Format::V1(_) => Inbound::Bad(ProtocolError::bad_request(
                        "binary frames are not accepted on a consume socket; send JSON text",
                    )),
                },
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => Inbound::Closed,
                Err(e) => match socket::classify_read_error(&e.to_string()) {
                    socket::ReadError::Gone => Inbound::Closed,
                    broken => Inbound::Broken(broken),
                },
            };
            let end = matches!(inbound, Inbound::Closed | Inbound::Broken(_));
            if tx.send(inbound).await.is_err() || end {
                return;
            }
        }
        let _ = tx.send(Inbound::Closed).await;
    });
    (rx, handle)
}

/// Offsets a frame carries for one partition.
#[derive(Debug, Clone)]
struct PartOffsets {
    topic: String,
    partition: i32,
    last: i64,
    count: usize,
}

/// A record frame on its way to, or delivered to, the client.
#[derive(Debug, Default)]
struct Batch {
    seq: u64,
    parts: Vec<PartOffsets>,
    records: usize,
}

impl Batch {
    fn add(&mut self, topic: &str, partition: i32, offset: i64) {
        self.records += 1;
        if let Some(p) = self
            .parts
            .iter_mut()
            .find(|p| p.partition == partition && p.topic == topic)
        {
            p.last = offset;
            p.count += 1;
        } else {
            self.parts.push(PartOffsets {
                topic: topic.to_string(),
                partition,
                last: offset,
                count: 1,
            });
        }
    }
}

/// Everything one session needs from the server.
#[derive(Clone)]
pub struct Deps {
    pub kafka: Arc<Kafka>,
    pub config: Arc<Config>,
    pub shutdown: Shutdown,
}

/// Runs a consume session until the client leaves, an error ends it, or the proxy shuts down.
pub async fn consume(socket: WebSocket, req: ConsumeRequest, deps: Deps, stats: Arc<SessionStats>) {
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        last_seen_ms: AtomicI64::new(now_ms()),
    });
    let (sink, stream) = socket.split();
    let (out_tx, mut written_rx, writer) =
        spawn_writer(sink, deps.config.ping_interval, shared.clone());
    let (inbound, reader) = spawn_reader(stream, req.format, shared.clone());

    match start(&req, &deps).await {
        Ok((consumer, mut fetch, events_rx)) => {
            let mut s = Session {
                req: &req,
                config: &deps.config,
                consumer: &consumer,
                stats: &stats,
                shared: &shared,
                out: &out_tx,
                writer: BatchWriter::new(req.format),
                current: Batch::default(),
                next_seq: 1,
                batch_started: None,
                batch_full: false,
                stash: VecDeque::new(),
                stash_bytes: 0,
                inflight: VecDeque::new(),
                unacked: VecDeque::new(),
                unacked_records: 0,
                inflight_records: 0,
                last_written: 0,
                paused: false,
                revoked: Vec::new(),
                acked: Default::default(),
                holding: None,
                record_size_hint: None,
            };
            let end = s
                .run(
                    &mut fetch,
                    inbound,
                    events_rx,
                    &mut written_rx,
                    deps.shutdown.clone(),
                )
                .await;
            finish(&out_tx, &req, end).await;
            // Frames the writer completes after the loop ended (the client may have closed right
            // after reading them) are delivered: store their offsets before the final commit.
            let drain = async {
                while let Some((seq, len)) = written_rx.recv().await {
                    s.on_written(seq, len);
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            drop(s);
            // The queue handle goes before the consumer it belongs to.
            drop(fetch);
            let commit = req.commit;
            // Final commit and group leave block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                if commit != CommitMode::None {
                    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                }
                drop(consumer);
            })
            .await;
        }
        Err(e) => finish(&out_tx, &req, End::Error(e)).await,
    }
    drop(out_tx);
    // A writer still stuck on a peer that reads nothing must not outlive the session.
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
    reader.abort();
    stats.set_buffered(0);
}

/// Queues the session's last frames: an error frame (v1) and a close frame, or just the end of
/// output when the client left. The writer sends what was queued before them first.
async fn finish(out: &mpsc::Sender<Outbound>, req: &ConsumeRequest, end: End) {
    let last = match end {
        End::ClientGone => Outbound::Finish,
        End::Shutdown => Outbound::Close(1001, "proxy shutting down".to_string()),
        End::Violation(code, reason) => {
            tracing::debug!(code, %reason, "consume socket violated the WebSocket protocol");
            Outbound::Close(code, reason)
        }
        End::Error(e) => {
            tracing::info!(code = e.code.name(), reason = %e.message, "consume session closed with error");
            if matches!(req.format, Format::V1(_)) {
                let frame = Outbound::Text {
                    text: e.frame(),
                    batch: None,
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), out.send(frame)).await;
            }
            Outbound::Close(e.code.close_code(), e.close_reason())
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), out.send(last)).await;
}

enum End {
    ClientGone,
    Shutdown,
    Error(ProtocolError),
    /// A WebSocket-level violation: close with this RFC 6455 code, no error frame.
    Violation(u16, String),
}

/// The session's Kafka consumer and the queue its partitions' records are read from in batches.
type SessionConsumer = StreamConsumer<SessionContext>;
type Fetch = FetchQueue<SessionConsumer>;

async fn start(
    req: &ConsumeRequest,
    deps: &Deps,
) -> Result<
    (
        Arc<SessionConsumer>,
        Fetch,
        mpsc::UnboundedReceiver<RebalanceEvent>,
    ),
    ProtocolError,
> {
    let plan = deps
        .kafka
        .resolve_start(&req.topics, &req.assignment, &req.start)
        .await?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let ctx = SessionContext::new(&plan, req.commit, events_tx.clone());
    let explicit = match &req.assignment {
        Assignment::Partitions(_) => Some(ctx.explicit_assignment(&plan.partitions)),
        Assignment::Group => None,
    };
    let consumer = Arc::new(
        deps.kafka
            .session_consumer(req.group.as_deref(), req.commit, ctx)?,
    );
    let fetch = FetchQueue::new(consumer.clone());
    consumer.context().set_router(fetch.router());
    if let Err(e) = join(&consumer, req, explicit, &plan.partitions, &events_tx) {
        drop(fetch);
        // Closing a consumer blocks; keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        return Err(e);
    }
    Ok((consumer, fetch, events_rx))
}

/// Subscribes to the group or assigns the explicit partitions.
fn join(
    consumer: &StreamConsumer<SessionContext>,
    req: &ConsumeRequest,
    explicit: Option<Result<rdkafka::TopicPartitionList, rdkafka::error::KafkaError>>,
    partitions: &[(String, i32)],
    events_tx: &mpsc::UnboundedSender<RebalanceEvent>,
) -> Result<(), ProtocolError> {
    match explicit {
        Some(tpl) => {
            let tpl = tpl.map_err(|e| ProtocolError::new(ErrorCode::KafkaError, e.to_string()))?;
            consumer.context().route(partitions);
            consumer
                .assign(&tpl)
                .map_err(|e| ProtocolError::new(ErrorCode::KafkaError, e.to_string()))?;
            let _ = events_tx.send(RebalanceEvent::Assigned(partitions.to_vec()));
        }
        None => {
            let topics: Vec<&str> = req.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|e| ProtocolError::new(ErrorCode::KafkaError, e.to_string()))?;
        }
    }
    Ok(())
}

struct Session<'a> {
    req: &'a ConsumeRequest,
    config: &'a Config,
    consumer: &'a StreamConsumer<SessionContext>,
    stats: &'a SessionStats,
    shared: &'a Shared,
    out: &'a mpsc::Sender<Outbound>,
    /// The frame being built.
    writer: BatchWriter,
    /// Offsets in the frame being built.
    current: Batch,
    next_seq: u64,
    batch_started: Option<Instant>,
    /// The frame being built cannot take the next record (maxBytes or window reached).
    batch_full: bool,
    /// Records received while the frame was full, in order; bounded because fetching pauses.
    stash: VecDeque<OwnedMessage>,
    stash_bytes: usize,
    /// Frames handed to the writer, not yet written.
    inflight: VecDeque<Batch>,
    inflight_records: usize,
    /// Frames written but not acknowledged (ack mode).
    unacked: VecDeque<Batch>,
    unacked_records: usize,
    /// Highest frame sequence written to the socket.
    last_written: u64,
    paused: bool,
    /// Partitions revoked from this socket whose records may still be in flight to it.
    revoked: Vec<(String, i32)>,
    /// Highest offset acknowledged per partition (ack mode), so acks never move a commit back.
    acked: std::collections::HashMap<(String, i32), i64>,
    /// Since when the session has stopped polling Kafka because it holds too much; `None` while
    /// it polls. Not polling is the cheap, immediate backpressure (librdkafka's own queue is
    /// bounded); partitions are paused only when the hold lasts `PAUSE_AFTER`, because every
    /// pause purges librdkafka's prefetch and every resume re-fetches.
    holding: Option<Instant>,
    /// Key plus value bytes of recent records (a decaying maximum), to size fetch batches.
    record_size_hint: Option<usize>,
}

/// Most records taken from librdkafka's queue per wake-up of the session loop.
const DRAIN_MAX: usize = 1024;

/// Most records taken from the fetch queue in one call (one lock round per record, one clock
/// read and one wake-up re-arm per call).
const FETCH_BATCH: usize = 512;

/// Frame bytes a record takes beyond its key and value (field names, offsets, quoting), as
/// counted against `maxBytes` when deciding whether it fits.
const RECORD_OVERHEAD: usize = 64;

/// How long a session may hold (not poll) before its partitions are paused, which keeps it a
/// live group member (`max.poll.interval.ms`) while a slow client reads nothing.
const PAUSE_AFTER: Duration = Duration::from_secs(5);

impl Session<'_> {
    async fn run(
        &mut self,
        fetch: &mut Fetch,
        mut inbound: mpsc::Receiver<Inbound>,
        mut events: mpsc::UnboundedReceiver<RebalanceEvent>,
        written: &mut mpsc::UnboundedReceiver<(u64, usize)>,
        mut shutdown: Shutdown,
    ) -> End {
        let mut stream = self.consumer.stream();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let dead_after = self.config.ping_interval.as_millis() as i64 * 3;
        loop {
            self.drain_stash();
            self.update_flow();
            let flush_ready = !self.writer.is_empty()
                && (self.batch_full
                    || self.config.idle_timeout.is_zero()
                    || self
                        .batch_started
                        .is_some_and(|t| t.elapsed() >= self.config.idle_timeout));
            let linger = self
                .batch_started
                .map(|t| t + self.config.idle_timeout)
                .unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                _ = shutdown.wait() => return End::Shutdown,
                // Before client frames: an ack may arrive right after its frame was written.
                w = written.recv() => match w {
                    Some((seq, len)) => self.on_written(seq, len),
                    None => return End::ClientGone,
                },
                m = inbound.recv() => match m {
                    Some(Inbound::Frame(f)) => {
                        if let Err(e) = self.on_client_frame(f) {
                            let _ = self.out.send(Outbound::Text { text: e.frame(), batch: None }).await;
                        }
                    }
                    Some(Inbound::Bad(e)) => {
                        let _ = self.out.send(Outbound::Text { text: e.frame(), batch: None }).await;
                    }
                    Some(Inbound::Broken(socket::ReadError::TooLarge(msg))) => {
                        return End::Error(ProtocolError::new(ErrorCode::TooLarge, format!(
                            "client frame over maxFrameBytes ({} bytes): {msg}", self.config.max_frame_bytes)));
                    }
                    Some(Inbound::Broken(socket::ReadError::Violation(code, reason))) => {
                        return End::Violation(code, reason);
                    }
                    Some(Inbound::Broken(socket::ReadError::Gone)) => return End::ClientGone,
                    Some(Inbound::Closed) | None => return End::ClientGone,
                },
                ev = events.recv() => if let Some(ev) = ev { self.on_rebalance(ev).await },
                permit = self.out.reserve(), if flush_ready => match permit {
                    Ok(permit) => {
                        let text = self.writer.finish();
                        let batch = std::mem::take(&mut self.current);
                        self.shared.queued_bytes.fetch_add(text.len(), Relaxed);
                        self.inflight_records += batch.records;
                        permit.send(Outbound::Text { text, batch: Some(batch.seq) });
                        self.inflight.push_back(batch);
                        self.batch_started = None;
                        self.batch_full = false;
                    }
                    Err(_) => return End::ClientGone,
                },
                // Not while the frame is full: its records would only be copied into the stash.
                // `drain_fetch` re-armed the wake-up when it stopped early.
                _ = fetch.ready(), if (self.holding.is_none() || self.paused)
                    && !self.batch_full && self.stash.is_empty() => {
                    if let Some(e) = self.drain_fetch(fetch) {
                        return End::Error(e);
                    }
                },
                // Group events, and records that reached the consumer's own queue (a partition
                // not routed to `fetch`, e.g. one added to the topic later).
                m = stream.next(), if self.holding.is_none() || self.paused => match m {
                    Some(Ok(m)) => {
                        self.on_message(&m);
                        // Take what librdkafka already holds without another trip through this
                        // select! (which costs more than encoding a record), until the frame is
                        // full; bounded so control frames and acks are never starved.
                        for _ in 0..DRAIN_MAX {
                            if self.batch_full || !self.stash.is_empty() {
                                break;
                            }
                            match stream.next().now_or_never() {
                                Some(Some(Ok(m))) => self.on_message(&m),
                                Some(Some(Err(e))) => {
                                    if let Some(end) = classify_consumer_error(&e) {
                                        return End::Error(end);
                                    }
                                }
                                Some(None) => return End::Error(ProtocolError::new(ErrorCode::Internal, "consumer stream ended")),
                                None => break,
                            }
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(end) = classify_consumer_error(&e) {
                            return End::Error(end);
                        }
                    }
                    None => return End::Error(ProtocolError::new(ErrorCode::Internal, "consumer stream ended")),
                },
                _ = tokio::time::sleep_until(linger.into()), if !flush_ready && self.batch_started.is_some() => {}
                _ = tick.tick() => {
                    if now_ms() - self.shared.last_seen_ms.load(Relaxed) > dead_after {
                        tracing::debug!("peer silent for three ping intervals; closing");
                        return End::ClientGone;
                    }
                }
            }
        }
    }

    /// Takes the records librdkafka already holds, a batch per call, until the frame being
    /// built is full or `DRAIN_MAX` were taken. librdkafka wakes the queue only on new arrivals,
    /// so stopping early re-arms the wake-up itself.
    fn drain_fetch(&mut self, fetch: &mut Fetch) -> Option<ProtocolError> {
        let mut taken = 0;
        let mut error = None;
        loop {
            if self.batch_full || !self.stash.is_empty() || taken >= DRAIN_MAX || error.is_some() {
                fetch.kick();
                return error;
            }
            let want = self.batch_room().min(DRAIN_MAX - taken);
            if want == 0 {
                fetch.kick();
                return None;
            }
            let n = fetch.poll_batch(want, |r| match r.error() {
                None => self.on_message(&r),
                Some(e) => {
                    if error.is_none() {
                        error = classify_consumer_error(&e);
                    }
                }
            });
            taken += n;
            if n < want {
                return error;
            }
        }
    }

    /// About how many records the frame being built can still take, so a batch rarely takes
    /// more than fits: the rest would be copied into the stash, which counts against the
    /// session's memory bound. Until a record was seen, one at a time.
    fn batch_room(&self) -> usize {
        let Some(size) = self.record_size_hint else {
            return 1.min(self.window_left());
        };
        let per_record = size + RECORD_OVERHEAD;
        let bytes_left = self.config.max_bytes.saturating_sub(self.writer.bytes());
        (bytes_left / per_record)
            .clamp(1, FETCH_BATCH)
            .min(self.window_left())
    }

    fn window_left(&self) -> usize {
        if self.req.commit != CommitMode::Ack {
            return usize::MAX;
        }
        self.req
            .window
            .saturating_sub(self.unacked_records + self.inflight_records + self.writer.len())
    }

    /// Whether the next record of `size` payload bytes fits in the frame being built.
    fn fits(&self, size: usize) -> bool {
        if self.window_left() == 0 {
            return false;
        }
        // A frame always takes at least one record, so an oversize record never stalls.
        self.writer.is_empty()
            || self.writer.bytes() + size + RECORD_OVERHEAD <= self.config.max_bytes
    }

    fn on_message<M: Fetched>(&mut self, m: &M) {
        self.stats.received.fetch_add(1, Relaxed);
        let size = m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
        // The larger of this record and a decaying maximum of the earlier ones: batches shrink
        // at once when records grow, and recover within a few dozen records after a big one.
        let hint = self.record_size_hint.unwrap_or(0);
        self.record_size_hint = Some(size.max(hint - hint / 16));
        if self.stash.is_empty() && self.fits(size) {
            self.push(m);
        } else {
            self.batch_full = !self.writer.is_empty();
            let owned = m.to_owned_message();
            self.stash_bytes += held_size(&owned);
            self.stash.push_back(owned);
        }
    }

    fn push<M: rdkafka::Message>(&mut self, m: &M) {
        if self.writer.is_empty() {
            self.current.seq = self.next_seq;
            self.next_seq += 1;
            self.batch_started = Some(Instant::now());
        }
        let with_headers = matches!(self.req.format, Format::V1(_));
        encode_message(&mut self.writer, self.current.seq, m, with_headers);
        self.current.add(m.topic(), m.partition(), m.offset());
        if self.writer.bytes() >= self.config.max_bytes || self.window_left() == 0 {
            self.batch_full = true;
        }
    }

    fn drain_stash(&mut self) {
        while let Some(m) = self.stash.front() {
            let size = m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
            if !self.fits(size) {
                self.batch_full = !self.writer.is_empty();
                return;
            }
            if let Some(m) = self.stash.pop_front() {
                self.stash_bytes -= held_size(&m);
                self.push(&m);
            }
        }
    }

    /// Pauses fetching when the session holds too much or the window is full; resumes below half.
    fn update_flow(&mut self) {
        let held = self.shared.queued_bytes.load(Relaxed) + self.writer.bytes() + self.stash_bytes;
        self.stats.set_buffered(held);
        self.stats.unacked.store(self.unacked_records, Relaxed);
        let limit = self.config.session_buffer_bytes / 2;
        // The stash counts in `held`, so it is bounded too; it being non-empty alone is normal
        // (a frame filled while the previous one was still being written) and must not pause,
        // since every resume costs a re-fetch.
        // A full frame the writer has no room for holds the session too: records are not taken
        // (they would only be stashed), librdkafka's bounded queue fills and stops fetching.
        let stuck = self.batch_full && self.out.capacity() == 0;
        let over = held >= limit || self.window_left() == 0 || stuck;
        if over {
            let since = *self.holding.get_or_insert_with(Instant::now);
            if !self.paused && since.elapsed() >= PAUSE_AFTER {
                self.set_paused(true);
            }
        } else if held < limit / 2 || !self.paused {
            self.holding = None;
            if self.paused {
                self.set_paused(false);
            }
        }
        let held_back = self.holding.is_some() || self.paused;
        self.stats.paused.store(usize::from(held_back), Relaxed);
    }

    fn set_paused(&mut self, pause: bool) {
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let r = if pause {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        match r {
            Ok(()) => {
                self.paused = pause;
                tracing::trace!(pause, "flow control");
            }
            Err(e) => tracing::debug!(error = %e, "pause/resume failed"),
        }
    }

    fn on_written(&mut self, seq: u64, len: usize) {
        let Some(mut batch) = self.inflight.pop_front() else {
            return;
        };
        debug_assert_eq!(batch.seq, seq);
        self.last_written = seq;
        self.inflight_records -= batch.records;
        self.stats.sent.fetch_add(batch.records as u64, Relaxed);
        self.stats.frames.fetch_add(1, Relaxed);
        self.stats.bytes.fetch_add(len as u64, Relaxed);
        self.stats.last_delivery_ms.store(now_ms(), Relaxed);
        // Records of partitions revoked while their frame was in flight belong to the new owner:
        // neither committed here nor waiting for an ack.
        if !self.revoked.is_empty() {
            batch.parts.retain(|p| {
                !self
                    .revoked
                    .iter()
                    .any(|(t, pp)| *t == p.topic && *pp == p.partition)
            });
            batch.records = batch.parts.iter().map(|p| p.count).sum();
        }
        match self.req.commit {
            CommitMode::Auto => self.store(&batch.parts),
            CommitMode::Ack if !batch.parts.is_empty() => {
                self.unacked_records += batch.records;
                self.unacked.push_back(batch);
            }
            CommitMode::Ack | CommitMode::None => {}
        }
    }

    /// Stores next-offset-to-read for commit (Kafka's convention: last processed + 1).
    /// `offsets_store` stores exactly what it is given, unlike the legacy per-partition call,
    /// which adds one itself.
    fn store(&self, parts: &[PartOffsets]) {
        let mut tpl = rdkafka::TopicPartitionList::with_capacity(parts.len());
        for p in parts {
            if let Err(e) =
                tpl.add_partition_offset(&p.topic, p.partition, rdkafka::Offset::Offset(p.last + 1))
            {
                tracing::debug!(error = %e, "bad offset");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Expected after a revoke: the new owner re-reads from the last commit.
            tracing::debug!(error = %e, "offsets not stored");
        }
    }

    fn on_client_frame(&mut self, f: ClientFrame) -> Result<(), ProtocolError> {
        if self.req.commit != CommitMode::Ack {
            return Err(ProtocolError::new(
                ErrorCode::BadAck,
                "acks are only taken on commit=ack sockets",
            ));
        }
        match f {
            ClientFrame::AckBatch(n) => {
                if n > self.last_written {
                    return Err(ProtocolError::new(
                        ErrorCode::BadAck,
                        format!(
                            "batch {n} was not delivered (last delivered {})",
                            self.last_written
                        ),
                    ));
                }
                let mut done = Vec::new();
                while self.unacked.front().is_some_and(|b| b.seq <= n) {
                    if let Some(b) = self.unacked.pop_front() {
                        self.unacked_records -= b.records;
                        done.extend(b.parts);
                    }
                }
                self.commit_acked(done);
            }
            ClientFrame::AckOffset {
                topic,
                partition,
                offset,
            } => {
                let key = (topic, partition);
                // Acking again what is already acknowledged is harmless, and so is acking a
                // partition that was revoked meanwhile (its new owner gets the records again).
                if self.acked.get(&key).is_some_and(|&a| offset <= a) || self.revoked.contains(&key)
                {
                    return Ok(());
                }
                let delivered = self
                    .unacked
                    .iter()
                    .flat_map(|b| b.parts.iter())
                    .filter(|p| p.topic == key.0 && p.partition == key.1)
                    .map(|p| p.last)
                    .max();
                if delivered.is_none_or(|max| offset > max) {
                    return Err(ProtocolError::new(
                        ErrorCode::BadAck,
                        format!(
                            "offset {offset} of {}/{} was not delivered on this socket",
                            key.0, key.1
                        ),
                    ));
                }
                for b in self.unacked.iter_mut() {
                    b.parts.retain(|p| {
                        !(p.topic == key.0 && p.partition == key.1 && p.last <= offset)
                    });
                    b.records = b.parts.iter().map(|p| p.count).sum();
                }
                self.unacked.retain(|b| !b.parts.is_empty());
                self.unacked_records = self.unacked.iter().map(|b| b.records).sum();
                self.commit_acked(vec![PartOffsets {
                    topic: key.0,
                    partition: key.1,
                    last: offset,
                    count: 0,
                }]);
            }
        }
        Ok(())
    }

    /// Stores acknowledged offsets, never moving a partition's position backwards.
    fn commit_acked(&mut self, parts: Vec<PartOffsets>) {
        let mut forward = Vec::with_capacity(parts.len());
        for p in parts {
            let key = (p.topic.clone(), p.partition);
            if self.acked.get(&key).is_some_and(|&a| p.last <= a) {
                continue;
            }
            self.acked.insert(key, p.last);
            forward.push(p);
        }
        if !forward.is_empty() {
            self.store(&forward);
        }
    }

    async fn on_rebalance(&mut self, ev: RebalanceEvent) {
        let frame = match &ev {
            RebalanceEvent::Assigned(ps) => {
                // Again after the assignment took effect: a partition whose fetch stopped (a
                // revoke) lost its route, and one fetching nowhere would stall silently.
                self.consumer.context().route(ps);
                self.revoked
                    .retain(|r| !ps.iter().any(|(t, p)| r.0 == *t && r.1 == *p));
                if self.paused {
                    // New partitions start unpaused; keep the session's flow state.
                    self.set_paused(true);
                }
                partitions_frame("assigned", ps)
            }
            RebalanceEvent::Revoked(ps) => {
                let gone = |t: &str, p: i32| ps.iter().any(|(rt, rp)| rt == t && *rp == p);
                // Records of revoked partitions go to the new owner: drop those not yet in a
                // frame, stop counting those delivered and unacknowledged.
                self.stash.retain(|m| !gone(m.topic(), m.partition()));
                self.stash_bytes = self.stash.iter().map(held_size).sum();
                for (t, p) in ps {
                    self.acked.remove(&(t.clone(), *p));
                    if !self.revoked.iter().any(|r| r.0 == *t && r.1 == *p) {
                        self.revoked.push((t.clone(), *p));
                    }
                }
                for b in self.unacked.iter_mut() {
                    b.parts
                        .retain(|p| !ps.iter().any(|(t, pp)| *t == p.topic && *pp == p.partition));
                    b.records = b.parts.iter().map(|p| p.count).sum();
                }
                self.unacked.retain(|b| !b.parts.is_empty());
                self.unacked_records = self.unacked.iter().map(|b| b.records).sum();
                partitions_frame("revoked", ps)
            }
        };
        tracing::debug!(?ev, "rebalance");
        if matches!(self.req.format, Format::V1(_)) {
            let _ = self
                .out
                .send(Outbound::Text {
                    text: frame,
                    batch: None,
                })
                .await;
        }
    }
}

/// A record as taken from Kafka, by either path: the batch fetch queue or the consumer's own.
trait Fetched: rdkafka::Message {
    /// A copy that outlives the poll it came from (for the stash).
    fn to_owned_message(&self) -> OwnedMessage;
}

impl Fetched for BorrowedMessage<'_> {
    fn to_owned_message(&self) -> OwnedMessage {
        self.detach()
    }
}

impl Fetched for rdkafka_batch::Record<'_> {
    fn to_owned_message(&self) -> OwnedMessage {
        self.detach()
    }
}

/// Encodes one Kafka message into the frame being built, borrowing its bytes (no copy). Headers
/// are collected only when the format shows them (the seed format does not).
pub(crate) fn encode_message<M: rdkafka::Message>(
    writer: &mut BatchWriter,
    seq: u64,
    m: &M,
    with_headers: bool,
) {
    let mut header_buf: Vec<(&str, Option<&[u8]>)> = Vec::new();
    if let (true, Some(h)) = (with_headers, m.headers()) {
        header_buf.extend(h.iter().map(|h| (h.key, h.value)));
    }
    let view = RecordView {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key(),
        headers: &header_buf,
        value: m.payload(),
    };
    writer.push(seq, &view);
}

/// Memory a stashed record holds: bytes plus a fixed allowance for the message and its strings,
/// so records with empty values still count against the session's bound.
fn held_size(m: &OwnedMessage) -> usize {
    let headers = m.headers().map_or(0, |h| {
        h.iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 32)
            .sum()
    });
    m.payload().map_or(0, <[u8]>::len)
        + m.key().map_or(0, <[u8]>::len)
        + m.topic().len()
        + headers
        + 128
}

/// Consumer errors that end the session; others (transient broker hiccups) are retried by
/// librdkafka and only logged.
fn classify_consumer_error(e: &rdkafka::error::KafkaError) -> Option<ProtocolError> {
    use rdkafka::error::RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => Some(ProtocolError::new(
            ErrorCode::UnknownTopic,
            format!("topic went away: {e}"),
        )),
        Some(C::TopicAuthorizationFailed) | Some(C::GroupAuthorizationFailed) => Some(
            ProtocolError::new(ErrorCode::Forbidden, format!("Kafka refused: {e}")),
        ),
        Some(C::AllBrokersDown) => {
            tracing::warn!(error = %e, "all brokers down; librdkafka keeps retrying");
            None
        }
        _ => {
            tracing::debug!(error = %e, "consumer error");
            None
        }
    }
}
