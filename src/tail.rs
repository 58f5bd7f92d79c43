//! Live tail: one shared Kafka read per (topic, encoding), each frame encoded once and fanned out to every socket following it.
//
// A reader task assigns every partition at its high watermark, batches whatever records are ready
// into one v1 `records` frame and publishes it on a bounded broadcast ring. Each socket is one task
// holding a ring receiver: no per-socket copy of the frame, no per-socket queue. A socket that falls
// more than the ring behind gets `{"type":"skipped","records":N}` and continues with the oldest
// frame still held (docs/PROTOCOL.md, "Live tail"). The reader stops when its last socket leaves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use rdkafka_batch::FetchQueue;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::Config;
use crate::kafka::{Kafka, SessionContext, StartPlan};
use crate::metrics::{now_ms, SessionMeta, SessionStats};
use crate::protocol::consume::{parse_encoding, partitions_frame, BatchWriter, Encoding, Format};
use crate::protocol::{validate_topic, ErrorCode, ProtocolError};
use crate::server::{configure, require_upgrade, AppState, HttpError};
use crate::shutdown::Shutdown;

/// Frames a reader keeps for slow sockets; a socket further behind skips (bounds memory per topic
/// at `RING * FRAME_BYTES`).
pub const RING: usize = 256;

/// Most encoded bytes in one tail frame. Small because every socket's WebSocket writer keeps a
/// buffer as large as the largest frame it sent.
pub const FRAME_BYTES: usize = 16 * 1024;

/// Read buffer of a tail socket: clients send almost nothing (pongs, close).
const READ_BUFFER: usize = 1024;

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

/// (topic, encoding name): `Encoding` itself is not `Hash`.
type Key = (String, &'static str);

/// Keeps a reader alive; the reader stops when the last handle (the last socket) is dropped.
struct ReaderHandle {
    key: Key,
    tx: broadcast::Sender<Event>,
    partitions: Vec<(String, i32)>,
    readers: Weak<Mutex<HashMap<Key, Weak<ReaderHandle>>>>,
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
    readers: Arc<Mutex<HashMap<Key, Weak<ReaderHandle>>>>,
}

/// What `/admin/tail` reports per reader.
#[derive(Debug, Serialize)]
pub struct ReaderReport {
    pub topic: String,
    pub encoding: &'static str,
    pub sockets: usize,
}

impl Hub {
    pub fn new(kafka: Arc<Kafka>) -> Hub {
        Hub {
            kafka,
            readers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn live(&self, key: &Key) -> Option<Arc<ReaderHandle>> {
        self.readers.lock().ok()?.get(key)?.upgrade()
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
                sockets: h.tx.receiver_count(),
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.encoding).cmp(&(&b.topic, b.encoding)));
        out
    }

    /// Joins the reader of `(topic, encoding)`, starting it if none runs. Fails before the
    /// upgrade when the topic does not exist or Kafka cannot be reached.
    async fn join(&self, topic: &str, enc: Encoding) -> Result<Arc<ReaderHandle>, ProtocolError> {
        let key = (topic.to_string(), encoding_name(enc));
        if let Some(h) = self.live(&key) {
            return Ok(h);
        }
        let partitions = self.kafka.partitions(topic).await?;
        // Start at the high watermarks read now, so "assigned" means "everything produced from
        // here on is delivered".
        let mut tpl = TopicPartitionList::new();
        let mut pairs = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let (_, high) = self.kafka.watermarks(topic, *p).await?;
            tpl.add_partition_offset(topic, *p, Offset::Offset(high))
                .map_err(|e| ProtocolError::new(ErrorCode::KafkaError, e.to_string()))?;
            pairs.push((topic.to_string(), *p));
        }
        let (events_tx, _events_rx) = mpsc::unbounded_channel();
        let plan = StartPlan {
            partitions: pairs.clone(),
            first_offsets: HashMap::new(),
        };
        let ctx = SessionContext::new(&plan, crate::protocol::consume::CommitMode::None, events_tx);
        let consumer = Arc::new(self.kafka.session_consumer(
            None,
            crate::protocol::consume::CommitMode::None,
            ctx,
        )?);
        // Records are read in batches from a queue of the reader's own (see src/session.rs).
        let fetch = FetchQueue::new(consumer.clone());
        consumer.context().set_router(fetch.router());
        consumer.context().route(&pairs);
        if let Err(e) = consumer.assign(&tpl) {
            drop(fetch);
            tokio::task::spawn_blocking(move || drop(consumer));
            return Err(ProtocolError::new(ErrorCode::KafkaError, e.to_string()));
        }

        let Ok(mut m) = self.readers.lock() else {
            return Err(ProtocolError::new(
                ErrorCode::Internal,
                "tail registry poisoned",
            ));
        };
        // Another socket may have started the same reader meanwhile: use that one.
        if let Some(h) = m.get(&key).and_then(Weak::upgrade) {
            drop(m);
            drop(fetch);
            tokio::task::spawn_blocking(move || drop(consumer));
            return Ok(h);
        }
        let (tx, _) = broadcast::channel(RING);
        let (stop_tx, stop_rx) = oneshot::channel();
        let handle = Arc::new(ReaderHandle {
            key: key.clone(),
            tx: tx.clone(),
            partitions: pairs,
            readers: Arc::downgrade(&self.readers),
            _stop: stop_tx,
        });
        m.insert(key, Arc::downgrade(&handle));
        drop(m);
        tracing::debug!(%topic, "tail reader starts");
        tokio::spawn(read(consumer, fetch, tx, stop_rx, enc));
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

type TailConsumer = StreamConsumer<SessionContext>;

/// The shared reader: runs until stopped or failed, then drops the consumer off the workers.
async fn read(
    consumer: Arc<TailConsumer>,
    mut fetch: FetchQueue<TailConsumer>,
    tx: broadcast::Sender<Event>,
    stop: oneshot::Receiver<()>,
    enc: Encoding,
) {
    pump(&consumer, &mut fetch, &tx, stop, enc).await;
    // The queue handle goes before the consumer it belongs to.
    drop(fetch);
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
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
    fn push<M: rdkafka::Message>(&mut self, m: &M) {
        if self.records == 0 {
            self.seq += 1;
        }
        crate::session::encode_message(&mut self.writer, self.seq, m, true);
        self.records += 1;
        if self.writer.bytes() >= FRAME_BYTES {
            self.publish();
        }
    }

    fn error(&mut self, e: &rdkafka::error::KafkaError) {
        if self.failed.is_none() {
            self.failed = fatal(e);
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

/// Kafka -> one encoded frame per ready batch (at most `FRAME_BYTES`) -> broadcast ring.
async fn pump(
    consumer: &TailConsumer,
    fetch: &mut FetchQueue<TailConsumer>,
    tx: &broadcast::Sender<Event>,
    mut stop: oneshot::Receiver<()>,
    enc: Encoding,
) {
    let mut f = Frames {
        writer: BatchWriter::new(Format::V1(enc)),
        tx,
        seq: 0,
        records: 0,
        next_record: 0,
        failed: None,
    };
    // Records of a partition that reached the consumer's own queue instead (none expected: all
    // are routed before the assignment) and Kafka's errors come through the stream.
    let mut stream = consumer.stream();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = fetch.ready() => {
                // Everything already waiting, in frames of at most `FRAME_BYTES`.
                let mut taken = 0;
                loop {
                    let n = fetch.poll_batch(FETCH_BATCH, |r| match r.error() {
                        None => f.push(&r),
                        Some(e) => f.error(&e),
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
            m = stream.next() => match m {
                Some(Ok(m)) => f.push(&m),
                Some(Err(e)) => f.error(&e),
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
            tracing::info!(error = %err, "tail reader stops");
            let _ = tx.send(Event::Failed(Arc::new(err)));
            return;
        }
    }
}

/// Consumer errors that stop the reader; librdkafka retries the rest.
fn fatal(e: &rdkafka::error::KafkaError) -> Option<ProtocolError> {
    use rdkafka::error::RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => Some(ProtocolError::new(
            ErrorCode::UnknownTopic,
            format!("topic went away: {e}"),
        )),
        Some(C::TopicAuthorizationFailed) => Some(ProtocolError::new(
            ErrorCode::Forbidden,
            format!("Kafka refused: {e}"),
        )),
        _ => {
            tracing::debug!(error = %e, "tail consumer error");
            None
        }
    }
}

/// Parses `/v1/tail` parameters: `topic` and optional `encoding`.
pub fn parse(q: &HashMap<String, String>) -> Result<(String, Encoding), ProtocolError> {
    const KNOWN: &[&str] = &["topic", "encoding"];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ProtocolError::bad_request(format!(
            "unknown parameter {k:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let topic = match q.get("topic").map(|s| s.trim()) {
        Some(t) if !t.is_empty() => t,
        _ => {
            return Err(ProtocolError::bad_request(
                "missing required parameter topic",
            ))
        }
    };
    validate_topic(topic)?;
    let enc = match q.get("encoding") {
        Some(e) => parse_encoding(e)?,
        None => Encoding::Text,
    };
    Ok((topic.to_string(), enc))
}

/// `GET /v1/tail?topic=T[&encoding=text|json|base64]`.
pub async fn v1_tail(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let r = async {
        state.authenticate(&headers)?;
        let q = q
            .map(|Query(m)| m)
            .map_err(|e| ProtocolError::bad_request(format!("bad query string: {e}")))?;
        let (topic, enc) = parse(&q)?;
        let ws = require_upgrade(ws)?;
        let permit = state.admit()?;
        let reader = state.tail.join(&topic, enc).await?;
        Ok::<_, ProtocolError>((topic, ws, permit, reader))
    }
    .await;
    let (topic, ws, permit, reader) = r.inspect_err(|_| {
        state.metrics.reject();
    })?;
    let guard = state.metrics.register(SessionMeta {
        kind: "tail",
        topics: vec![topic],
        group: None,
        peer: peer.to_string(),
    });
    let token = state.token.clone();
    let shutdown = state.shutdown.clone();
    let ping = state.config.ping_interval;
    tracing::debug!(%peer, "tail session");
    Ok(tail_socket(configure(ws, &state.config), &state.config)
        .on_upgrade(move |socket| async move {
            // Subscribe first, then say "assigned": everything produced after it is delivered.
            let rx = reader.tx.subscribe();
            let hello = partitions_frame("assigned", &reader.partitions);
            follow(socket, rx, hello, &guard.stats, shutdown, ping).await;
            drop(reader);
            drop(guard);
            drop(permit);
            drop(token);
        })
        .into_response())
}

/// Socket buffers sized for fan-out: tiny reads, frames written as they come.
fn tail_socket(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
    let max = config.max_frame_bytes.max(FRAME_BYTES);
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * max + 1024)
}

/// `GET /admin/tail`: running readers and their socket counts.
pub async fn admin_tail(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    state.authenticate(&headers)?;
    let body = serde_json::json!({ "readers": state.tail.report() });
    Ok(axum::Json(body).into_response())
}

enum End {
    ClientGone,
    Close(u16, String),
}

/// One tail socket: frames from the ring to the socket, skip signals, pings, close.
async fn follow(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Event>,
    hello: String,
    stats: &SessionStats,
    mut shutdown: Shutdown,
    ping_interval: Duration,
) {
    // A send that cannot complete for this long means the peer reads nothing: drop it.
    let stall = crate::socket::stall_limit(ping_interval);
    let dead_after = ping_interval.as_millis() as i64 * 3;
    let mut last_seen = now_ms();
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    // Index of the next record this socket expects; None until its first frame.
    let mut expect: Option<u64> = None;
    let end = 'session: {
        if !crate::socket::send_within(&mut socket, Message::Text(hello.into()), stall).await {
            break 'session End::ClientGone;
        }
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.wait() => break 'session End::Close(1001, "proxy shutting down".into()),
                m = socket.recv() => {
                    last_seen = now_ms();
                    match m {
                        // Pings are answered by the WebSocket layer; other client frames are ignored.
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break 'session End::ClientGone,
                        Some(Ok(_)) => continue,
                    }
                }
                _ = ping.tick() => {
                    if now_ms() - last_seen > dead_after {
                        tracing::debug!("tail peer silent for three ping intervals; closing");
                        break 'session End::ClientGone;
                    }
                    if !crate::socket::send_within(&mut socket, Message::Ping(Default::default()), stall).await {
                        break 'session End::ClientGone;
                    }
                    continue;
                }
                e = rx.recv() => e,
            };
            match event {
                Ok(Event::Records {
                    text,
                    first,
                    records,
                }) => {
                    if let Some(want) = expect {
                        if first > want {
                            let skipped =
                                format!(r#"{{"type":"skipped","records":{}}}"#, first - want);
                            if !crate::socket::send_within(
                                &mut socket,
                                Message::Text(skipped.into()),
                                stall,
                            )
                            .await
                            {
                                break 'session End::ClientGone;
                            }
                        }
                    }
                    expect = Some(first + u64::from(records));
                    let len = text.len() as u64;
                    if !crate::socket::send_within(&mut socket, Message::Text(text), stall).await {
                        break 'session End::ClientGone;
                    }
                    stats.sent.fetch_add(u64::from(records), Relaxed);
                    stats.frames.fetch_add(1, Relaxed);
                    stats.bytes.fetch_add(len, Relaxed);
                    stats.last_delivery_ms.store(now_ms(), Relaxed);
                }
                // Fell behind the ring: the next frame received tells how many records were skipped.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                ev @ (Ok(Event::Failed(_)) | Err(broadcast::error::RecvError::Closed)) => {
                    let e = match ev {
                        Ok(Event::Failed(e)) => e,
                        _ => Arc::new(ProtocolError::new(
                            ErrorCode::Internal,
                            "tail reader stopped",
                        )),
                    };
                    let _ = crate::socket::send_within(
                        &mut socket,
                        Message::Text(e.frame().into()),
                        stall,
                    )
                    .await;
                    break 'session End::Close(e.code.close_code(), e.close_reason());
                }
            }
        }
    };
    if let End::Close(code, reason) = end {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = crate::socket::send_within(&mut socket, frame, Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::query as q;

    #[test]
    fn parses_topic_and_encoding() {
        assert_eq!(
            parse(&q(&[("topic", "t1")])).unwrap(),
            ("t1".into(), Encoding::Text)
        );
        assert_eq!(
            parse(&q(&[("topic", "t1"), ("encoding", "base64")])).unwrap(),
            ("t1".into(), Encoding::Base64)
        );
        assert!(parse(&q(&[])).is_err());
        assert!(parse(&q(&[("topic", "a b")])).is_err());
        assert!(parse(&q(&[("topic", "t"), ("group", "g")])).is_err());
        assert!(parse(&q(&[("topic", "t"), ("encoding", "hex")])).is_err());
    }
}
