//! The shared idempotent producer's side of produce: each record's delivery report goes to the
//! inbox of the socket or request that sent it, and librdkafka errors become client errors.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::Poll;

use bytes::Bytes;
use futures::task::AtomicWaker;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use super::{Kafka, LogContext};
use crate::config::Config;
use crate::protocol::produce::Record;
use crate::protocol::{ErrorCode, ProtocolError};

/// librdkafka's default `message.max.bytes`, used in messages when the user did not set one.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// A record's answer once it is known: partition and offset, or why it failed.
pub type Outcome = Result<(i32, i64), ProtocolError>;

/// The shared producer's context: each record carries its inbox id and sequence number packed in
/// its delivery opaque, and its delivery report goes straight to the `Inbox` of the socket or
/// request that sent it (no future and no allocation per record).
pub struct ProduceContext {
    pub log: LogContext,
}

impl ClientContext for ProduceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
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
pub struct Inbox {
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

    /// Wakes `waker` when reports land in an empty inbox.
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    pub fn has_reports(&self) -> bool {
        self.nonempty.load(SeqCst)
    }

    /// Moves every report that came in to `into` (which must be empty).
    pub fn take(&self, into: &mut Vec<(u64, Outcome)>) {
        let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        self.nonempty.store(false, SeqCst);
        std::mem::swap(&mut r.list, into);
    }

    /// Resolves once reports are waiting.
    pub async fn ready(&self) {
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
pub struct InboxHandle(Arc<Inbox>);

impl InboxHandle {
    pub fn open() -> Self {
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

/// Result of offering one record to librdkafka.
pub enum Enqueue {
    Sent,
    /// The producer's queue is full: offer it again later, and read no more meanwhile.
    Full,
    Failed(ProtocolError),
}

pub fn enqueue(kafka: &Kafka, topic: &str, r: &Record, ticket: usize) -> Enqueue {
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
pub fn delivery_error(e: &KafkaError) -> ProtocolError {
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

/// The delivery opaque of the record with sequence number `seq` in `inbox`.
pub fn ticket(inbox: &InboxHandle, seq: u64) -> usize {
    pack(inbox.0.id, seq)
}

/// How far `seq` is after `head` (sequence numbers travel modulo 2^40).
pub fn seq_distance(seq: u64, head: u64) -> u64 {
    seq.wrapping_sub(head) & SEQ_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

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
