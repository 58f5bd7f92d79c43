//! Live tail: one shared Kafka read per (topic, encoding), each frame encoded once and fanned out
//! to every socket following it.
//
// A reader task assigns every partition at its high watermark, batches whatever records are ready
// into one v1 `records` frame and publishes it on a bounded broadcast ring. Each socket is one task
// holding a ring receiver: no per-socket copy of the frame, no per-socket queue. A socket that falls
// more than the ring behind gets `{"type":"skipped","records":N}` and continues with the oldest
// frame still held (docs/PROTOCOL.md, "Live tail"). The reader stops when its last socket leaves,
// or when Kafka fails it: then every socket on it closes with the error, and the next socket to
// join starts a fresh reader.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::flow::Deps;
use crate::kafka::consumer::{Fetch, ReadFault, Reader, RebalanceEvent};
use crate::kafka::record::Fetched;
use crate::kafka::Kafka;
use crate::metrics::{now_ms, SessionStats};
use crate::protocol::consume::{partitions_frame, BatchWriter, Encoding, Format};
use crate::protocol::sse::Positions;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::transport::ws::{Conn, End, Io, Note, Socket, Utf8Bytes, Written};
use crate::transport::Outbound;

/// Frames a reader keeps for slow sockets; a socket further behind skips (bounds memory per topic
/// at `RING * FRAME_BYTES`).
pub const RING: usize = 256;

/// Most encoded bytes in one tail frame. Small because every socket's WebSocket writer keeps a
/// buffer as large as the largest frame it sent.
pub const FRAME_BYTES: usize = 16 * 1024;

/// One published frame: encoded once, shared by every socket (cloning is a reference count).
#[derive(Clone)]
enum Event {
    Records {
        text: Utf8Bytes,
        /// Index of the frame's first record in the reader's stream, for skip accounting.
        first: u64,
        records: u32,
    },
    /// The reader stopped on a fatal error; sockets close with its code.
    Failed(Arc<ProtocolError>),
}

/// (topic, encoding name, SSE): `Encoding` itself is not `Hash`. Event streams have readers of
/// their own, since their frames are events with ids.
type Key = (String, &'static str, bool);

type Readers = Mutex<HashMap<Key, Weak<ReaderHandle>>>;

/// Keeps a reader alive; the reader stops when the last handle (the last socket) is dropped.
pub struct ReaderHandle {
    key: Key,
    tx: broadcast::Sender<Event>,
    partitions: Vec<(String, i32)>,
    /// Set by the reader task when Kafka failed it; a failed reader is never joined again.
    failure: Arc<OnceLock<Arc<ProtocolError>>>,
    readers: Weak<Readers>,
    /// Dropping it tells the reader task to stop.
    _stop: oneshot::Sender<()>,
}

impl Drop for ReaderHandle {
    fn drop(&mut self) {
        if let Some(map) = self.readers.upgrade() {
            if let Ok(mut m) = map.lock() {
                if m.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                    m.remove(&self.key);
                }
            }
        }
        tracing::debug!(topic = %self.key.0, "last tail socket left; reader stops");
    }
}

/// All live-tail readers of the proxy.
pub struct Hub {
    kafka: Arc<Kafka>,
    readers: Arc<Readers>,
    /// One start at a time per key: a burst of sockets on a topic no reader follows yet starts
    /// one reader, not one each (the others wait and join it).
    starting: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// What `/admin/tail` reports per reader.
#[derive(Debug, Serialize)]
pub struct ReaderReport {
    pub topic: String,
    pub encoding: &'static str,
    /// `ws` (`/v1/tail`) or `sse` (`/v1/sse?live`).
    pub transport: &'static str,
    pub sockets: usize,
}

impl Hub {
    pub fn new(kafka: Arc<Kafka>) -> Hub {
        Hub {
            kafka,
            readers: Arc::new(Mutex::new(HashMap::new())),
            starting: Mutex::new(HashMap::new()),
        }
    }

    /// The running, healthy reader of `key`, if any.
    fn live(&self, key: &Key) -> Option<Arc<ReaderHandle>> {
        let h = self.readers.lock().ok()?.get(key)?.upgrade()?;
        // Dropped outside the lock if failed: dropping the last handle locks the map.
        h.failure.get().is_none().then_some(h)
    }

    /// Readers running now, with how many sockets follow each.
    pub fn report(&self) -> Vec<ReaderReport> {
        // Upgraded handles are dropped after the lock is released: dropping the last one locks.
        let live: Vec<Arc<ReaderHandle>> = match self.readers.lock() {
            Ok(m) => m.values().filter_map(Weak::upgrade).collect(),
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<ReaderReport> = live
            .iter()
            .map(|h| ReaderReport {
                topic: h.key.0.clone(),
                encoding: h.key.1,
                transport: if h.key.2 { "sse" } else { "ws" },
                sockets: h.tx.receiver_count(),
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.topic, a.encoding, a.transport).cmp(&(&b.topic, b.encoding, b.transport))
        });
        out
    }

    /// Joins the reader of `(topic, encoding)` for sockets or, with `sse`, for event streams,
    /// starting it if none runs. Fails before the upgrade when the topic does not exist or Kafka
    /// cannot be reached.
    pub async fn join(
        &self,
        topic: &str,
        enc: Encoding,
        sse: bool,
    ) -> Result<Arc<ReaderHandle>, ProtocolError> {
        let key = (topic.to_string(), encoding_name(enc), sse);
        if let Some(h) = self.live(&key) {
            return Ok(h);
        }
        let gate = {
            let mut starting = self
                .starting
                .lock()
                .map_err(|_| ProtocolError::new(ErrorCode::Internal, "tail registry poisoned"))?;
            starting.entry(key.clone()).or_default().clone()
        };
        let started = {
            let _one = gate.lock().await;
            match self.live(&key) {
                // Another socket started it while this one waited.
                Some(h) => Ok(h),
                None => self.start(key.clone(), enc).await,
            }
        };
        if let Ok(mut starting) = self.starting.lock() {
            // The last one through removes the gate (the map holds one reference).
            if starting
                .get(&key)
                .is_some_and(|g| Arc::strong_count(g) <= 2)
            {
                starting.remove(&key);
            }
        }
        started
    }

    async fn start(&self, key: Key, enc: Encoding) -> Result<Arc<ReaderHandle>, ProtocolError> {
        // Each reader is a librdkafka client with its own threads and broker connections.
        let most = self.kafka.config().max_tail_readers;
        let running = self.readers.lock().map(|m| m.len()).unwrap_or(0);
        if running >= most {
            return Err(ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "too many live-tail readers ({running} topics are followed; \
                     maxTailReaders = {most}); retry later"
                ),
            ));
        }
        let (reader, fetch, starts, events) = Reader::open_tail(&self.kafka, &key.0).await?;
        let partitions: Vec<(String, i32)> =
            starts.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        // Event streams' records carry the reader's position as their id, so a stream that
        // reconnects with it resumes exactly (as a consume stream of its own).
        let writer = if key.2 {
            let mut positions = Positions::new(std::slice::from_ref(&key.0));
            for (t, p, at) in &starts {
                positions.set(t, *p, *at);
            }
            BatchWriter::with_positions(Format::Sse(enc), positions)
        } else {
            BatchWriter::new(Format::V1(enc))
        };
        let (tx, _) = broadcast::channel(RING);
        let (stop_tx, stop_rx) = oneshot::channel();
        let failure = Arc::new(OnceLock::new());
        let handle = Arc::new(ReaderHandle {
            key: key.clone(),
            tx: tx.clone(),
            partitions,
            failure: failure.clone(),
            readers: Arc::downgrade(&self.readers),
            _stop: stop_tx,
        });
        // The guard must not live across the await below (it is not `Send`).
        let inserted = self
            .readers
            .lock()
            .map(|mut m| m.insert(key.clone(), Arc::downgrade(&handle)))
            .is_ok();
        if !inserted {
            drop(handle);
            reader.close(fetch).await;
            return Err(ProtocolError::new(
                ErrorCode::Internal,
                "tail registry poisoned",
            ));
        }
        tracing::debug!(topic = %key.0, "tail reader starts");
        tokio::spawn(read(reader, fetch, events, tx, stop_rx, writer, failure));
        Ok(handle)
    }
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Text => "text",
        Encoding::Json => "json",
        Encoding::Base64 => "base64",
    }
}

/// The shared reader: runs until stopped or failed, then closes the consumer off the workers.
async fn read(
    reader: Reader,
    mut fetch: Fetch,
    events: mpsc::UnboundedReceiver<RebalanceEvent>,
    tx: broadcast::Sender<Event>,
    stop: oneshot::Receiver<()>,
    writer: BatchWriter,
    failure: Arc<OnceLock<Arc<ProtocolError>>>,
) {
    if let Some(err) = pump(&reader, &mut fetch, events, &tx, stop, writer).await {
        tracing::warn!(error = %err, "tail reader failed; its sockets close");
        let err = Arc::new(err);
        // Set before publishing: a socket that subscribes after the event sees the flag.
        let _ = failure.set(err.clone());
        let _ = tx.send(Event::Failed(err));
    }
    reader.close(fetch).await;
}

/// Most records taken from the fetch queue in one call.
const FETCH_BATCH: usize = 256;

/// Most records published per wake-up of the reader, so a stop is never starved.
const DRAIN_MAX: usize = 4096;

/// The frame being built and the reader's position in its stream of records.
struct Frames<'a> {
    writer: BatchWriter,
    tx: &'a broadcast::Sender<Event>,
    /// Frame sequence number (`batch` in the frame).
    seq: u64,
    /// Records in the frame being built.
    records: u32,
    /// Index of the frame's first record in the reader's stream.
    next_record: u64,
    /// Set when Kafka reported an error that stops the reader.
    failed: Option<ProtocolError>,
}

impl Frames<'_> {
    fn push<M: Fetched>(&mut self, m: &M) {
        if self.records == 0 {
            self.seq += 1;
        }
        m.encode(&mut self.writer, self.seq, true);
        self.records += 1;
        if self.writer.bytes() >= FRAME_BYTES {
            self.publish();
        }
    }

    fn error(&mut self, fault: ReadFault) {
        if self.failed.is_none() {
            self.failed = fault;
        }
    }

    /// Publishes the frame being built, if it holds records.
    fn publish(&mut self) {
        if self.records == 0 {
            return;
        }
        let text = Utf8Bytes::from(self.writer.finish());
        // No receivers is fine: the last socket just left and `stop` fires next.
        let _ = self.tx.send(Event::Records {
            text,
            first: self.next_record,
            records: self.records,
        });
        self.next_record += u64::from(self.records);
        self.records = 0;
    }
}

/// Kafka -> one encoded frame per ready batch (at most `FRAME_BYTES`) -> broadcast ring. Returns
/// the error that failed the reader, or `None` when it was stopped.
async fn pump(
    reader: &Reader,
    fetch: &mut Fetch,
    mut events: mpsc::UnboundedReceiver<RebalanceEvent>,
    tx: &broadcast::Sender<Event>,
    mut stop: oneshot::Receiver<()>,
    writer: BatchWriter,
) -> Option<ProtocolError> {
    let mut f = Frames {
        writer,
        tx,
        seq: 0,
        records: 0,
        next_record: 0,
        failed: None,
    };
    // Records of a partition that reached the consumer's own queue instead (none expected: all
    // are routed before the assignment) and Kafka's errors come through the stream.
    let mut stream = reader.stream();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return None,
            _ = fetch.ready() => {
                // Everything already waiting, in frames of at most `FRAME_BYTES`.
                let mut taken = 0;
                loop {
                    let n = fetch.poll_batch(FETCH_BATCH, |r| match r {
                        Ok(r) => f.push(r),
                        Err(fault) => f.error(fault),
                    });
                    taken += n;
                    if n < FETCH_BATCH || f.failed.is_some() {
                        break;
                    }
                    if taken >= DRAIN_MAX {
                        // librdkafka wakes the queue only on new arrivals: come back at once.
                        fetch.kick();
                        break;
                    }
                }
            }
            // Read failures from outside the fetch queue: the topic deleted (`kafka::watch`), a
            // partition that could not be routed.
            Some(ev) = events.recv() => match ev {
                RebalanceEvent::Lost(e) => f.failed = Some(e),
                RebalanceEvent::Failed(reason) => {
                    f.failed = Some(ProtocolError::new(ErrorCode::KafkaError, reason));
                }
                // No group: nothing is assigned or revoked after the start.
                RebalanceEvent::Assigned(_) | RebalanceEvent::Revoked(_) => {}
            },
            m = stream.next() => match m {
                Some(Ok(m)) => f.push(&m),
                Some(Err(fault)) => f.error(fault),
                None => {
                    f.failed = Some(ProtocolError::new(
                        ErrorCode::Internal,
                        "tail consumer stream ended",
                    ));
                }
            },
        }
        f.publish();
        if let Some(err) = f.failed.take() {
            return Some(err);
        }
    }
}

/// One tail socket: frames from the ring to the socket, skip signals, pings, close.
pub async fn follow<S: Socket>(
    socket: S,
    reader: Arc<ReaderHandle>,
    stats: &SessionStats,
    deps: &Deps,
) {
    let mut conn = Conn::new(
        socket,
        deps.config.ping_interval,
        deps.config.max_frame_bytes,
        deps.shutdown.clone(),
    );
    follow_on(&mut conn, reader, stats, deps).await
}

/// One follower on any connection (a socket, or an event stream of an `sse` reader).
pub async fn follow_on<O: Outbound>(
    conn: &mut O,
    reader: Arc<ReaderHandle>,
    stats: &SessionStats,
    deps: &Deps,
) {
    stats.assign(&reader.partitions);
    // Subscribe first, then say "assigned": everything produced after it is delivered.
    let mut rx = reader.tx.subscribe();
    conn.push_event("assigned", partitions_frame("assigned", &reader.partitions));
    let mut shutdown = deps.shutdown.clone();
    let mut written: Vec<Written> = Vec::new();
    // Index of the next record this socket expects; None until its first frame.
    let mut expect: Option<u64> = None;
    let end = loop {
        if let Some(e) = reader.failure.get() {
            break End::Error(ProtocolError::clone(e));
        }
        let idle = conn.queued_frames() == 0;
        let event = tokio::select! {
            biased;
            _ = shutdown.wait() => break End::Shutdown,
            io = conn.io(true) => match io {
                Io::Written => {
                    conn.take_written(&mut written);
                    for w in written.drain(..) {
                        stats.sent.fetch_add(u64::from(w.note.records), Relaxed);
                        stats.frames.fetch_add(1, Relaxed);
                        stats.bytes.fetch_add(w.bytes as u64, Relaxed);
                        stats.last_delivery_ms.store(now_ms(), Relaxed);
                    }
                    continue;
                }
                // Pings are answered by the WebSocket layer; other client frames are ignored.
                Io::Frame(_) => continue,
                Io::End(end) => break end,
            },
            // The next frame only once the last one was taken: the ring is the queue.
            e = rx.recv(), if idle => e,
        };
        match event {
            Ok(Event::Records {
                text,
                first,
                records,
            }) => {
                if let Some(want) = expect.filter(|want| first > *want) {
                    conn.push_event(
                        "skipped",
                        format!(r#"{{"type":"skipped","records":{}}}"#, first - want),
                    );
                }
                expect = Some(first + u64::from(records));
                // `batch` only marks the frame as one to report once written.
                conn.push_frame(text, Note { batch: 1, records });
            }
            // Fell behind the ring: the next frame received tells how many records were skipped.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Ok(Event::Failed(e)) => break End::Error(ProtocolError::clone(&e)),
            Err(broadcast::error::RecvError::Closed) => {
                break End::Error(ProtocolError::new(
                    ErrorCode::Internal,
                    "tail reader stopped",
                ))
            }
        }
    };
    conn.finish(&end, true, std::time::Duration::from_secs(5))
        .await;
}
