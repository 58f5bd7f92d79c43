//! Consume, the use case: one socket's Kafka consumer, batching, window, backpressure, commits.
//!
//! Data flows one way: Kafka (`kafka::consumer::Fetch`) -> this loop (offsets, window, batching)
//! -> encoder (`protocol::consume::BatchWriter`) -> connection (`transport::Outbound`: a WebSocket
//! or an SSE body). A WebSocket client's control frames come back through the same connection. Offsets are stored for commit only after
//! their frame was written (`auto`) or acknowledged (`ack`), as the ack ledger (`flow::ledger`)
//! decides, so nothing is skipped and no commit moves backwards.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::flow::ledger::{Batch, Commit, Ledger, Mode, Run};
use crate::flow::Deps;
use crate::kafka::consumer::{Fetch, Reader, RebalanceEvent};
use crate::kafka::record::{Detached, Fetched};
use crate::metrics::SessionStats;
use crate::protocol::consume::{
    parse_client_frame, partitions_frame, BatchWriter, ClientFrame, CommitMode, ConsumeRequest,
    Format,
};
use crate::protocol::sse::Positions;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;
use crate::transport::ws::{Conn, End, Inbound, Io, Note, Socket, Written};
use crate::transport::Outbound;

/// Runs a consume session until the client leaves, an error ends it, or the proxy shuts down;
/// then closes the socket and commits what was delivered (`auto`) or acknowledged (`ack`).
pub async fn serve<S: Socket>(
    socket: S,
    req: ConsumeRequest,
    deps: Deps,
    stats: Arc<SessionStats>,
) {
    let config = &deps.config;
    let mut conn = Conn::new(
        socket,
        config.ping_interval,
        config.max_frame_bytes,
        deps.shutdown.clone(),
    );
    match Reader::open(&deps.kafka, &req).await {
        Ok(opened) => drive(&mut conn, &req, &deps, &stats, opened, None).await,
        Err(e) => {
            let end = End::Error(e);
            log_end(&end);
            conn.finish(&end, req.format != Format::Seed, close_budget(config))
                .await;
        }
    }
    stats.set_buffered(0);
}

/// A session's open consumer: the reader, its fetch queue and its group events.
pub type Opened = (Reader, Fetch, mpsc::UnboundedReceiver<RebalanceEvent>);

/// Serves an opened consumer on `conn` until the session ends, then closes both. With
/// `positions` (SSE), each record event's id is the stream position after it.
pub async fn drive<O: Outbound>(
    conn: &mut O,
    req: &ConsumeRequest,
    deps: &Deps,
    stats: &SessionStats,
    (reader, mut fetch, events): Opened,
    positions: Option<Positions>,
) {
    let config = &deps.config;
    let mut s = Session::new(req, config, stats, conn, &reader, positions);
    let end = s.run(&mut fetch, events, deps.shutdown.clone()).await;
    log_end(&end);
    // The close sequence and the final commit share a budget inside the shutdown grace,
    // so acknowledged offsets are committed before the process exits.
    let started = Instant::now();
    let budget = close_budget(config);
    s.conn
        .finish(&end, req.format != Format::Seed, budget / 2)
        .await;
    // Frames written during the close sequence were delivered: store their offsets
    // before the final commit.
    s.take_written();
    drop(s);
    let left = budget.saturating_sub(started.elapsed());
    reader
        .close_within(fetch, req.commit != CommitMode::None, left)
        .await;
}

/// Time a session's close sequence may take: inside the shutdown grace with a margin for the
/// process's own exit (the producer flush).
fn close_budget(config: &Config) -> Duration {
    config
        .shutdown_grace
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(500))
}

fn log_end(end: &End) {
    match end {
        End::Error(e) => {
            tracing::info!(code = e.code.name(), reason = %e.message, "consume session closed with error")
        }
        End::Violation(code, reason) => {
            tracing::debug!(code, %reason, "consume socket violated the WebSocket protocol")
        }
        _ => {}
    }
}

struct Session<'a, O> {
    req: &'a ConsumeRequest,
    config: &'a Config,
    stats: &'a SessionStats,
    conn: &'a mut O,
    reader: &'a Reader,
    /// The frame being built.
    writer: BatchWriter,
    /// Offsets in the frame being built.
    current: Batch,
    next_seq: u64,
    batch_started: Option<Instant>,
    /// The frame being built cannot take the next record (maxBytes or window reached).
    batch_full: bool,
    /// Records received while the frame was full, in order; bounded because fetching pauses.
    stash: VecDeque<Detached>,
    stash_bytes: usize,
    /// Frames handed to the socket, not yet written.
    inflight: VecDeque<Batch>,
    inflight_records: usize,
    /// What was delivered, acknowledged and may be committed.
    ledger: Ledger,
    commits: Vec<Commit>,
    written: Vec<Written>,
    paused: bool,
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

/// Record frames queued to the socket or being written, at most. Small on purpose: the socket's
/// own buffer is the queue, and backpressure must reach Kafka quickly.
const WRITER_QUEUE: usize = 3;

/// Frames of any kind queued to the socket beyond which the client's frames are not read: a
/// client that sends bad frames and reads nothing pushes back on itself.
const CONTROL_QUEUE: usize = 64;

/// Frame bytes a record takes beyond its key and value (field names, offsets, quoting), as
/// counted against `maxBytes` when deciding whether it fits.
const RECORD_OVERHEAD: usize = 64;

/// How long a session may hold (not poll) before its partitions are paused, which keeps it a
/// live group member (`max.poll.interval.ms`) while a slow client reads nothing.
const PAUSE_AFTER: Duration = Duration::from_secs(5);

impl<'a, O: Outbound> Session<'a, O> {
    fn new(
        req: &'a ConsumeRequest,
        config: &'a Config,
        stats: &'a SessionStats,
        conn: &'a mut O,
        reader: &'a Reader,
        positions: Option<Positions>,
    ) -> Self {
        Session {
            req,
            config,
            stats,
            conn,
            reader,
            writer: match positions {
                Some(p) => BatchWriter::with_positions(req.format, p),
                None => BatchWriter::new(req.format),
            },
            current: Batch::default(),
            next_seq: 1,
            batch_started: None,
            batch_full: false,
            stash: VecDeque::new(),
            stash_bytes: 0,
            inflight: VecDeque::new(),
            inflight_records: 0,
            ledger: Ledger::new(Mode::from(req.commit)),
            commits: Vec::new(),
            written: Vec::new(),
            paused: false,
            holding: None,
            record_size_hint: None,
        }
    }

    async fn run(
        &mut self,
        fetch: &mut Fetch,
        mut events: mpsc::UnboundedReceiver<RebalanceEvent>,
        mut shutdown: Shutdown,
    ) -> End {
        let reader = self.reader;
        let mut stream = reader.stream();
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
            let room = self.frame_room();
            let reading = self.conn.queued_frames() < CONTROL_QUEUE;
            let polling = self.holding.is_none() || self.paused;
            let fetching =
                polling && !self.batch_full && self.stash.is_empty() && self.window_left() > 0;
            // While holding, nothing else may wake this loop (a client that reads nothing makes no
            // write progress): without this deadline it would never pause and poll the group again.
            let pause_at = self
                .holding
                .filter(|_| !self.paused)
                .map(|t| t + PAUSE_AFTER);
            tokio::select! {
                biased;
                _ = shutdown.wait() => return End::Shutdown,
                // Before Kafka: writes progress, written frames are counted, and an ack may
                // arrive right after its frame was written.
                io = self.conn.io(reading) => match io {
                    Io::Written => self.take_written(),
                    Io::Frame(f) => self.on_inbound(f),
                    Io::End(end) => return end,
                },
                ev = events.recv() => if let Some(ev) = ev {
                    if let Err(e) = self.on_rebalance(ev) {
                        return End::Error(e);
                    }
                },
                _ = std::future::ready(()), if flush_ready && room => self.send_frame(),
                // Not while the frame is full: its records would only be copied into the stash.
                // `drain_fetch` re-armed the wake-up when it stopped early.
                _ = fetch.ready(), if fetching => {
                    if let Some(e) = self.drain_fetch(fetch) {
                        return End::Error(e);
                    }
                },
                // Group events, and records that reached the consumer's own queue (a partition
                // not routed to `fetch`, e.g. one added to the topic later).
                m = stream.next(), if polling => match m {
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
                                Some(Some(Err(Some(e)))) => return End::Error(e),
                                Some(Some(Err(None))) => {}
                                Some(None) => return End::Error(stream_ended()),
                                None => break,
                            }
                        }
                    }
                    Some(Err(Some(e))) => return End::Error(e),
                    Some(Err(None)) => {}
                    None => return End::Error(stream_ended()),
                },
                _ = tokio::time::sleep_until(linger.into()), if !flush_ready && self.batch_started.is_some() => {}
                // `update_flow` at the top of the loop then pauses; the group is polled again.
                _ = tokio::time::sleep_until(pause_at.unwrap_or_else(Instant::now).into()), if pause_at.is_some() => {}
            }
        }
    }

    /// Whether another record frame may be handed to the socket.
    fn frame_room(&self) -> bool {
        self.conn.is_open() && self.conn.queued_frames() < WRITER_QUEUE
    }

    /// Hands the frame being built to the socket.
    fn send_frame(&mut self) {
        let text = self.writer.finish();
        let batch = std::mem::take(&mut self.current);
        self.inflight_records += batch.records;
        let note = Note {
            batch: batch.seq,
            records: u32::try_from(batch.records).unwrap_or(u32::MAX),
        };
        self.conn.push_frame(text.into(), note);
        self.inflight.push_back(batch);
        self.batch_started = None;
        self.batch_full = false;
    }

    /// Counts the record frames the socket took since the last look.
    fn take_written(&mut self) {
        self.conn.take_written(&mut self.written);
        let mut written = std::mem::take(&mut self.written);
        for w in written.drain(..) {
            self.on_written(w.note.batch, w.bytes);
        }
        self.written = written;
    }

    fn on_inbound(&mut self, f: Inbound) {
        let frame = match (self.req.format, f) {
            // Seed clients never sent anything meaningful; their frames are ignored. An event
            // stream has no way back.
            (Format::Seed | Format::Sse(_), _) => return,
            (Format::V1(_), Inbound::Text(t)) => parse_client_frame(t.as_str()),
            (Format::V1(_), Inbound::Binary(_)) => Err(ProtocolError::bad_request(
                "binary frames are not accepted on a consume socket; send JSON text",
            )),
        };
        if let Err(e) = frame.and_then(|f| self.on_client_frame(f)) {
            self.conn.push_event("error", e.frame());
        }
    }

    /// Takes the records librdkafka already holds, a batch per call, until the frame being built
    /// is full or `DRAIN_MAX` were taken. librdkafka wakes the queue only on new arrivals, so
    /// stopping early re-arms the wake-up itself: never waited on with a full window (a spin).
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
            let n = fetch.poll_batch(want, |r| match r {
                Ok(r) => self.on_message(r),
                Err(fault) => {
                    if error.is_none() {
                        error = fault;
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
        self.req.window.saturating_sub(
            self.ledger.unacked_records() + self.inflight_records + self.writer.len(),
        )
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
        let size = m.size();
        // The larger of this record and a decaying maximum of the earlier ones: batches shrink
        // at once when records grow, and recover within a few dozen records after a big one.
        let hint = self.record_size_hint.unwrap_or(0);
        self.record_size_hint = Some(size.max(hint - hint / 16));
        if self.stash.is_empty() && self.fits(size) {
            self.push(m);
        } else {
            self.batch_full = !self.writer.is_empty();
            let owned = m.detach();
            self.stash_bytes += owned.held_size();
            self.stash.push_back(owned);
        }
    }

    fn push<M: Fetched>(&mut self, m: &M) {
        if self.writer.is_empty() {
            self.current.seq = self.next_seq;
            self.next_seq += 1;
            self.batch_started = Some(Instant::now());
        }
        let with_headers = self.req.format != Format::Seed;
        m.encode(&mut self.writer, self.current.seq, with_headers);
        self.current
            .add(&mut self.ledger, m.topic(), m.partition(), m.offset());
        if self.writer.bytes() >= self.config.max_bytes || self.window_left() == 0 {
            self.batch_full = true;
        }
    }

    fn drain_stash(&mut self) {
        while let Some(m) = self.stash.front() {
            let size = m.size();
            if !self.fits(size) {
                self.batch_full = !self.writer.is_empty();
                return;
            }
            if let Some(m) = self.stash.pop_front() {
                self.stash_bytes -= m.held_size();
                self.push(&m);
            }
        }
    }

    /// Pauses fetching when the session holds too much or the window is full; resumes below half.
    fn update_flow(&mut self) {
        let held = self.conn.queued_bytes()
            + self.writer.bytes()
            + self.stash_bytes
            + self.ledger.held_bytes();
        self.stats.set_buffered(held);
        self.stats
            .unacked
            .store(self.ledger.unacked_records(), Relaxed);
        let limit = self.config.session_buffer_bytes / 2;
        // The stash counts in `held`, so it is bounded too; it being non-empty alone is normal
        // (a frame filled while the previous one was still being written) and must not pause,
        // since every resume costs a re-fetch.
        // A full frame the writer has no room for holds the session too: records are not taken
        // (they would only be stashed), librdkafka's bounded queue fills and stops fetching.
        let stuck = self.batch_full && !self.frame_room();
        let over = held >= limit || self.window_left() == 0 || stuck;
        if over {
            let since = *self.holding.get_or_insert_with(Instant::now);
            if !self.paused && since.elapsed() >= PAUSE_AFTER {
                self.set_paused(true);
                if !self.paused {
                    self.holding = Some(Instant::now()); // retry later, not in a tight loop
                }
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
        match self.reader.pause(pause) {
            Ok(()) => {
                self.paused = pause;
                tracing::trace!(pause, "flow control");
            }
            Err(e) => tracing::debug!(error = %e, "pause/resume failed"),
        }
    }

    fn on_written(&mut self, seq: u64, len: usize) {
        let Some(batch) = self.inflight.pop_front() else {
            return;
        };
        debug_assert_eq!(batch.seq, seq);
        self.inflight_records -= batch.records;
        let at = |r: &Run| (self.ledger.name(r.part), r.last + 1);
        self.stats
            .wrote(batch.records, len, batch.runs.iter().map(at));
        // Runs of partitions revoked while their frame was in flight belong to the new owner:
        // the ledger neither commits them here nor waits for their ack.
        self.ledger
            .written(batch.seq, &batch.runs, &mut self.commits);
        self.store();
    }

    /// Stores the positions the ledger released for commit.
    fn store(&mut self) {
        if self.commits.is_empty() {
            return;
        }
        let ledger = &self.ledger;
        self.reader.store(self.commits.iter().map(|c| {
            let (topic, partition) = ledger.name(c.part);
            (topic, partition, c.next_offset)
        }));
        self.commits.clear();
    }

    fn on_client_frame(&mut self, f: ClientFrame) -> Result<(), ProtocolError> {
        if self.req.commit != CommitMode::Ack {
            return Err(ProtocolError::new(
                ErrorCode::BadAck,
                "acks are only taken on commit=ack sockets",
            ));
        }
        let unacked = self.ledger.unacked_records();
        let r = match f {
            ClientFrame::AckBatch(n) => self.ledger.ack_batch(n, &mut self.commits),
            ClientFrame::AckOffset {
                topic,
                partition,
                offset,
            } => self
                .ledger
                .ack_offset(&topic, partition, offset, &mut self.commits),
        };
        self.store();
        self.stats
            .acked(unacked.saturating_sub(self.ledger.unacked_records()));
        r.map_err(|e| ProtocolError::new(ErrorCode::BadAck, e.to_string()))
    }

    fn on_rebalance(&mut self, ev: RebalanceEvent) -> Result<(), ProtocolError> {
        tracing::debug!(?ev, "rebalance");
        let (kind, frame) = match &ev {
            RebalanceEvent::Assigned(ps) => {
                // Again after the assignment took effect: a partition whose fetch stopped (a
                // revoke) lost its route, and one fetching nowhere would stall silently.
                self.reader.route(ps);
                self.ledger.assigned(ps);
                if let Some(p) = self.writer.positions_mut() {
                    p.assigned(ps);
                }
                self.stats.assign(ps);
                if self.paused {
                    // New partitions start unpaused; keep the session's flow state.
                    self.set_paused(true);
                }
                ("assigned", partitions_frame("assigned", ps))
            }
            RebalanceEvent::Revoked(ps) => {
                let gone = |t: &str, p: i32| ps.iter().any(|(rt, rp)| rt == t && *rp == p);
                // Records of revoked partitions go to the new owner: drop those not yet in a
                // frame; the ledger stops counting those delivered and unacknowledged.
                self.stash.retain(|m| !gone(m.topic(), m.partition()));
                self.stash_bytes = self.stash.iter().map(Detached::held_size).sum();
                self.ledger.revoked(ps);
                if let Some(p) = self.writer.positions_mut() {
                    p.revoked(ps);
                }
                self.stats.revoke(ps);
                ("revoked", partitions_frame("revoked", ps))
            }
            RebalanceEvent::Failed(reason) => {
                return Err(ProtocolError::new(ErrorCode::KafkaError, reason.clone()));
            }
            RebalanceEvent::Lost(e) => return Err(e.clone()),
        };
        if self.req.format != Format::Seed {
            self.conn.push_event(kind, frame);
        }
        Ok(())
    }
}

fn stream_ended() -> ProtocolError {
    ProtocolError::new(ErrorCode::Internal, "consumer stream ended")
}
