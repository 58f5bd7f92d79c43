//! One produce socket, served by one task: it reads and decodes frames, offers the records to
//! the shared producer, files their delivery reports and writes the answers in arrival order.
//!
//! One task instead of reader, session and writer tasks saves the hand-offs (and thread
//! wake-ups) between them; the socket itself is driven by `transport::ws::Conn`.
//!
//! A principal over its produce rate (`access::quota`) is slowed, never failed: its socket is
//! not read until the rate has tokens again, and TCP backpressure does the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Sleep;

use super::{check_target, shutting_down, Frames, Order, QUEUE_FULL_RETRY};
use crate::access::quota::RateLimit;
use crate::flow::Deps;
use crate::kafka::producer::{enqueue, Enqueue, Outcome};
use crate::metrics::SessionStats;
use crate::protocol::produce::{
    self as wire, error_frame, AcksBatch, Answers, Decoded, Decoder, ProduceRequest, Record,
};
use crate::transport::ws::{Conn, End, Inbound, Message, Note, Socket};

/// Serves a produce socket until it ends, then closes it as the end says. With `rate`, frames
/// are read only while the principal's produce rate has tokens.
pub async fn serve<S: Socket>(
    socket: S,
    req: ProduceRequest,
    deps: Deps,
    stats: Arc<SessionStats>,
    rate: Option<RateLimit>,
) {
    let mut conn = Conn::new(
        socket,
        deps.config.ping_interval,
        deps.config.max_frame_bytes,
        deps.shutdown.clone(),
    );
    conn.closable_by_admin(&stats);
    let end = match check_target(&deps.kafka, &req).await {
        Ok(partitions) => {
            Session::new(&req, &deps, &stats, &mut conn, partitions)
                .limited(rate)
                .run()
                .await
        }
        Err(e) => End::Error(e),
    };
    if let End::Error(e) = &end {
        tracing::info!(code = e.code.name(), reason = %e.message, "produce session closed with error");
    }
    conn.finish(&end, true, deps.config.shutdown_grace).await;
}

/// What woke the session from waiting on its socket, its inbox and its timers.
enum Wake {
    /// Frames were decoded, reports came in, or answers were written: go round again.
    Work,
    /// A record refused with `QueueFull` is due to be offered again.
    Retry,
    /// The socket has no more frames to read (closed, broken, or a frame broke the rules).
    ReadEnd(End),
    Shutdown,
    /// Writing failed, or the peer took no bytes for the stall limit.
    WriterGone(End),
    /// The answers still outstanding did not come within `shutdownGrace`.
    GaveUp,
    /// No frame (not even a pong) for three ping intervals.
    Silent,
}

/// The session's own clocks, armed only while they matter.
struct Timers {
    retry: Pin<Box<Sleep>>,
    retry_armed: bool,
    deadline: Pin<Box<Sleep>>,
    deadline_armed: bool,
}

/// One produce socket's state.
pub(crate) struct Session<'a, S> {
    req: &'a ProduceRequest,
    deps: &'a Deps,
    stats: &'a SessionStats,
    conn: &'a mut Conn<S>,
    decoder: Decoder,
    /// The topic's partitions, checked before sending so a wrong partition fails at once.
    partitions: Arc<[i32]>,
    /// Records read and decoded but not yet offered to the producer, in arrival order.
    decoded: Vec<Decoded>,
    /// The records of the last frame read when they did not fit in the window: taken (moved to
    /// `decoded`) once they fit, or once nothing else is unanswered; nothing is read meanwhile.
    held: Vec<Decoded>,
    /// Every record offered or answered, in arrival order, until its answer is out.
    order: Order,
    /// Records refused with `QueueFull`, in order; while any wait, the socket is not read.
    blocked: VecDeque<Record>,
    /// Stored records waiting to share an `acks` frame (`answers=batch`).
    batch: AcksBatch,
    /// Acks are encoded here and split off as frames that share its allocation.
    frames: Frames,
    /// Bytes read since the session last yielded to other tasks.
    unyielded: usize,
    /// The principal's produce rate, when a quota limits it.
    rate: Option<Throttle>,
}

/// A produce rate and the timer that wakes a socket it stopped.
struct Throttle {
    limit: RateLimit,
    sleep: Pin<Box<Sleep>>,
    /// Whether the socket is not being read for the rate right now.
    on: bool,
}

/// Shortest wait for tokens, so rounding never makes a socket spin.
const MIN_RATE_WAIT: Duration = Duration::from_millis(1);

/// What records cost against produce quotas: one per record, and its key and value bytes.
/// Records that failed to decode are answered with an error and cost nothing.
pub fn cost(decoded: &[Decoded]) -> (u64, u64) {
    let (mut records, mut bytes) = (0u64, 0u64);
    for r in decoded.iter().flatten() {
        records += 1;
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        bytes += len(&r.key) + len(&r.value);
    }
    (records, bytes)
}

/// Frames read per turn at most (or `READ_BATCH_BYTES`), before the records go to the producer
/// and answers are written; both limits keep a turn short and the decoded frames small.
const READ_BATCH_FRAMES: usize = 256;
const READ_BATCH_BYTES: usize = 256 * 1024;

impl<'a, S: Socket> Session<'a, S> {
    pub(crate) fn new(
        req: &'a ProduceRequest,
        deps: &'a Deps,
        stats: &'a SessionStats,
        conn: &'a mut Conn<S>,
        partitions: Arc<[i32]>,
    ) -> Self {
        Session {
            req,
            deps,
            stats,
            conn,
            decoder: Decoder::new(req),
            partitions,
            decoded: Vec::new(),
            held: Vec::new(),
            order: Order::new(),
            blocked: VecDeque::new(),
            batch: AcksBatch::default(),
            frames: Frames::default(),
            unyielded: 0,
            rate: None,
        }
    }

    /// Reads frames only while `rate` (the principal's produce quota) has tokens.
    pub(crate) fn limited(mut self, rate: Option<RateLimit>) -> Self {
        self.rate = rate.map(|limit| Throttle {
            limit,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            on: false,
        });
        self
    }

    /// Whether the produce rate lets the socket be read now; if not, arms the timer that wakes
    /// the session when it will, and counts the socket as throttled.
    fn rate_open(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(th) = &mut self.rate else {
            return true;
        };
        loop {
            let Some(wait) = th.limit.wait() else {
                if th.on {
                    th.on = false;
                    self.stats.throttled.store(0, Relaxed);
                }
                return true;
            };
            if !th.on {
                th.on = true;
                self.stats.throttled.store(1, Relaxed);
                th.limit.throttled();
            }
            let at = tokio::time::Instant::now() + wait.max(MIN_RATE_WAIT);
            th.sleep.as_mut().reset(at);
            if th.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    /// Records taken from the socket and not answered yet (the window counts these; a held
    /// frame is read but not taken).
    fn outstanding(&self) -> usize {
        self.decoded.len() + self.order.len() + self.blocked.len() + self.conn.queued_records()
    }

    /// Whether every record taken has its answer written (or can no longer be written).
    fn answered(&self) -> bool {
        self.decoded.is_empty()
            && self.held.is_empty()
            && self.order.is_empty()
            && self.blocked.is_empty()
            && (self.conn.queued_frames() == 0 || !self.conn.is_open())
    }

    /// Serves the socket until it ends; every record read is answered (or its answer can no
    /// longer be sent) before this returns, unless the deadline after the end passed.
    pub(crate) async fn run(&mut self) -> End {
        let now = tokio::time::Instant::now();
        let mut t = Timers {
            retry: Box::pin(tokio::time::sleep_until(now)),
            retry_armed: false,
            deadline: Box::pin(tokio::time::sleep_until(now)),
            deadline_armed: false,
        };
        // Set once no more frames are read: the session ends when every answer is out.
        let mut ending: Option<End> = None;
        // After shutdown, records already decoded are answered `shutting_down`.
        let mut refusing = false;
        let mut batch = Vec::new();
        loop {
            if ending.is_some() {
                // No more frames will be read: a held frame is answered like any other.
                self.decoded.append(&mut self.held);
            }
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
            let wake = std::future::poll_fn(|cx| self.poll_io(cx, &mut t, reading)).await;
            let end = match wake {
                Wake::Work => {
                    // A client sending without pause keeps this loop busy: every
                    // `READ_BATCH_BYTES` read, let the sockets sharing the thread have a turn.
                    if self.unyielded >= READ_BATCH_BYTES {
                        self.unyielded = 0;
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                Wake::Retry => {
                    self.retry_blocked();
                    continue;
                }
                Wake::ReadEnd(end) => end,
                Wake::Shutdown => {
                    tracing::debug!(
                        outstanding = self.outstanding(),
                        held = self.held.len(),
                        "shutdown: finishing records in flight"
                    );
                    refusing = true;
                    self.refuse_blocked();
                    End::Shutdown
                }
                Wake::WriterGone(end) => end,
                Wake::GaveUp => {
                    tracing::warn!(
                        outstanding = self.outstanding(),
                        held = self.held.len(),
                        "produce session gave up waiting for deliveries"
                    );
                    break;
                }
                Wake::Silent => {
                    tracing::debug!("peer silent for three ping intervals; closing");
                    End::Silent
                }
            };
            if let End::ClientGone | End::Silent = end {
                // Closed or broken: tungstenite refuses to send after the peer's close frame.
                self.conn.client_gone();
            }
            if ending.is_none() {
                ending = Some(end);
                t.deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.deps.config.shutdown_grace);
                t.deadline_armed = true;
            }
        }
        ending.unwrap_or(End::ClientGone)
    }

    /// Does what can be done without waiting (write answers, read frames, take reports) and
    /// returns once there is something for `run` to act on.
    fn poll_io(&mut self, cx: &mut Context<'_>, t: &mut Timers, reading: bool) -> Poll<Wake> {
        if reading && self.conn.poll_shutdown(cx).is_ready() {
            return Poll::Ready(Wake::Shutdown);
        }
        // A lapsed credential ends reading; records already read are still answered.
        if reading {
            if let Poll::Ready(end) = self.conn.poll_lease(cx) {
                return Poll::Ready(Wake::ReadEnd(end));
            }
        }
        if let Poll::Ready(Err(end)) = self.conn.poll_write(cx) {
            return Poll::Ready(Wake::WriterGone(end));
        }
        // Once ending, the session is done when its last answers are written.
        if self.conn.take_progress() && !reading {
            return Poll::Ready(Wake::Work);
        }
        if !self.held.is_empty() && self.blocked.is_empty() && self.fits(self.held.len()) {
            self.decoded.append(&mut self.held);
            return Poll::Ready(Wake::Work);
        }
        let window_open =
            self.held.is_empty() && self.blocked.is_empty() && self.outstanding() < self.req.window;
        // Over the produce rate the socket is not read, like a closed window.
        let window_open = window_open && (!reading || self.rate_open(cx));
        if reading && window_open {
            match self.poll_read(cx) {
                Poll::Ready(Some(end)) => return Poll::Ready(Wake::ReadEnd(end)),
                Poll::Ready(None) => return Poll::Ready(Wake::Work),
                Poll::Pending => {}
            }
        }
        if self.order.waiting > 0 {
            self.order.inbox.register(cx.waker());
            if self.order.inbox.has_reports() {
                return Poll::Ready(Wake::Work);
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
                return Poll::Ready(Wake::Retry);
            }
        }
        if t.deadline_armed && t.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::GaveUp);
        }
        if reading && self.conn.poll_alive(cx, window_open).is_ready() {
            return Poll::Ready(Wake::Silent);
        }
        Poll::Pending
    }

    /// Whether a frame of `records` may be taken now: its records fit in the window, or nothing
    /// else is unanswered (a frame may hold more than a small window).
    fn fits(&self, records: usize) -> bool {
        let outstanding = self.outstanding();
        outstanding == 0 || outstanding + records <= self.req.window
    }

    /// Reads and decodes the frames already received, up to a batch; `Ready(None)` once any
    /// were read, `Ready(Some(end))` when reading is over. A frame whose records do not fit in
    /// the window is held, and reading stops.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let (mut frames, mut bytes) = (0, 0);
        loop {
            let frame = match self.conn.poll_read(cx) {
                Poll::Ready(Ok(f)) => f,
                Poll::Ready(Err(end)) => return Poll::Ready(Some(end)),
                Poll::Pending if frames > 0 => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            frames += 1;
            let before = self.decoded.len();
            match frame {
                Inbound::Text(t) => {
                    bytes += t.len();
                    self.unyielded += t.len();
                    self.decoder.text_into(Bytes::from(t), &mut self.decoded);
                }
                Inbound::Binary(b) => {
                    bytes += b.len();
                    self.unyielded += b.len();
                    self.decoder.binary_into(b, &mut self.decoded);
                }
            }
            // Records are paid for as they are read; a frame that overdraws the rate is taken,
            // and the socket then waits until the debt is paid.
            let spent = match &self.rate {
                Some(th) => {
                    let (records, bytes) = cost(&self.decoded[before..]);
                    th.limit.take(records, bytes).is_some()
                }
                None => false,
            };
            // The frame's records count against the window before it is taken: `fits`, with
            // them already in `outstanding`. One that does not fit waits in `held`.
            let records = self.decoded.len() - before;
            let outstanding = self.outstanding();
            if outstanding > self.req.window && outstanding > records {
                self.held.extend(self.decoded.drain(before..));
                return Poll::Ready(None);
            }
            if frames >= READ_BATCH_FRAMES
                || bytes >= READ_BATCH_BYTES
                || outstanding >= self.req.window
                || spent
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
        if !self.conn.is_open() {
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
        self.conn.push(Message::Text(frame), ANSWER);
    }

    /// Queues the `acks` frame built so far, if any.
    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len();
        let frame = self.frames.batch(&mut self.batch);
        self.conn.push(
            Message::Text(frame),
            Note {
                batch: 0,
                records: n,
            },
        );
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
                if let Ok(ps) = self.deps.kafka.partitions_cached(&self.req.topic).await {
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
        match enqueue(&self.deps.kafka, &self.req.topic, &r, self.order.ticket()) {
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

/// The note of a frame that answers one record.
const ANSWER: Note = Note {
    batch: 0,
    records: 1,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};
    use crate::flow::produce::MAX_IN_FLIGHT;
    use crate::kafka::Kafka;
    use futures::{Sink, SinkExt, Stream, StreamExt};
    use rdkafka::mocking::MockCluster;
    use std::time::Duration;

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
        let (mock, trigger, records, out, session, _) =
            mock_session_with(props, &[], PIPE_OUT).await;
        (mock, trigger, records, out, session)
    }

    /// `mock_session` with socket parameters besides `topic`, room for `out` + 1 answers in the
    /// pipe, and the session's counters.
    async fn mock_session_with(
        props: &[(&str, &str)],
        params: &[(&str, &str)],
        out: usize,
    ) -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        crate::shutdown::ShutdownTrigger,
        futures::channel::mpsc::Sender<Message>,
        futures::channel::mpsc::Receiver<Message>,
        tokio::task::JoinHandle<End>,
        Arc<SessionStats>,
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
        let mut query = vec![("topic", "t")];
        query.extend_from_slice(params);
        let req = wire::parse_ws(&crate::protocol::query(&query)).unwrap();
        let stats = Arc::new(SessionStats::default());
        let session_stats = stats.clone();
        let (in_tx, in_rx) = futures::channel::mpsc::channel(PIPE_IN);
        let (out_tx, out_rx) = futures::channel::mpsc::channel(out);
        let session = tokio::spawn(async move {
            let deps = Deps {
                kafka,
                config,
                shutdown,
            };
            let partitions = check_target(&deps.kafka, &req).await.unwrap();
            let pipe = Pipe {
                rx: in_rx,
                tx: out_tx,
            };
            let mut conn = Conn::new(
                pipe,
                deps.config.ping_interval,
                deps.config.max_frame_bytes,
                deps.shutdown.clone(),
            );
            let mut s = Session::new(&req, &deps, &session_stats, &mut conn, partitions);
            s.run().await
        });
        (mock, trigger, in_tx, out_rx, session, stats)
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

    /// Records the session has taken (and answered, since the mock stores every one), once that
    /// number stops changing.
    async fn settled_answers(stats: &SessionStats) -> u64 {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = stats.produced.load(Relaxed) + stats.produce_errors.load(Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// A frame's records count against the window before the frame is taken: one that does not
    /// fit waits, and the unanswered records never exceed the window (or one frame's records,
    /// when a frame holds more than the whole window).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_is_taken_only_when_its_records_fit_the_window() {
        const PER_FRAME: usize = 100;
        let array = format!("[{}]", vec![r#"{"value":"x"}"#; PER_FRAME].join(","));
        for window in [150usize, 250, 50] {
            let w = window.to_string();
            // The pipe holds one answer: every other record taken counts against the window.
            let (_mock, _trigger, mut records, mut out, session, stats) =
                mock_session_with(&[], &[("window", &w)], 0).await;
            // Nobody reads the answers: send until the session stops taking frames.
            let mut sent = 0;
            while let Ok(r) =
                tokio::time::timeout(Duration::from_secs(2), records.send(text(&array))).await
            {
                r.unwrap();
                sent += 1;
                assert!(sent < 1000, "the session never pushed back");
            }
            // Taken records are answered into the pipe (one) or still count against the window.
            let taken = settled_answers(&stats).await as usize;
            let bound = 1 + window.max(PER_FRAME);
            assert!(
                taken <= bound,
                "window {window}: took {taken} records, bound {bound}"
            );
            // Reading the answers lets it go on: every record answered once, in order. The send
            // that timed out may have left its frame in the pipe: its records come too.
            expect_acks(&mut out, sent * PER_FRAME).await;
            let mut extra = 0;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), out.next()).await {
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    extra += 1;
                    assert_eq!(v["id"], Value::from(sent * PER_FRAME + extra), "{v}");
                }
            }
            assert!(extra == 0 || extra == PER_FRAME, "{extra} more answers");
            records.close_channel();
            assert!(matches!(session.await.unwrap(), End::ClientGone));
        }
    }
}
