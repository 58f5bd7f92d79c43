//! Produce, the use case: records in arrival order until each has its answer (`Order`), the
//! answers' frames, and the checks before sending. The socket loop is in `socket`, the HTTP batch
//! in `batch`; librdkafka's side (delivery routing, error mapping) is `kafka::producer`.

pub mod batch;
pub mod socket;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;

use crate::kafka::producer::{self, InboxHandle, Outcome};
use crate::kafka::Kafka;
use crate::protocol::produce::{self as wire, AcksBatch, ProduceRequest};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::transport::ws::Utf8Bytes;

/// Records of one socket read but not yet answered (in the producer, awaiting delivery, or
/// queued as acks) unless the socket asks for another `window`. At the limit the socket is not
/// read, so TCP pushes back on the client. Large enough to keep librdkafka's batches full (1000
/// measured about 20% slower); cheap, because a sent record's bytes live in librdkafka's bounded
/// queue and only its answer is held. A larger window hides more of the acks=all round trip.
pub const MAX_IN_FLIGHT: usize = wire::DEFAULT_WINDOW;

/// How often a record refused with `QueueFull` is offered to librdkafka again. librdkafka has no
/// "space available" signal; the socket is not read meanwhile.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(5);

/// Checks that the topic exists and the default partition is in it.
pub async fn check_target(
    kafka: &Kafka,
    req: &ProduceRequest,
) -> Result<Arc<[i32]>, ProtocolError> {
    let partitions = kafka.partitions_cached(&req.topic).await?;
    if let Some(p) = req.partition {
        if !partitions.contains(&p) {
            return Err(wire::unknown_partition(&req.topic, p, partitions.len()));
        }
    }
    Ok(partitions)
}

fn shutting_down() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::ShuttingDown,
        "proxy is shutting down; the record was not produced",
    )
}

/// Records in arrival order until their answers are known; reports arriving in any order are
/// filed by sequence number and answers leave from the front only.
pub(crate) struct Order {
    pub(crate) inbox: InboxHandle,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Sent records whose report has not come yet.
    pub(crate) waiting: usize,
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
    pub(crate) fn new() -> Self {
        Order {
            inbox: InboxHandle::open(),
            slots: VecDeque::new(),
            head: 0,
            waiting: 0,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A record whose answer is known before sending.
    pub(crate) fn done(&mut self, seq: u64, id: Option<Value>, outcome: Outcome) {
        self.slots.push_back(Slot {
            seq,
            id,
            outcome: Some(outcome),
        });
    }

    /// The delivery opaque of the next record; it takes its place with `sent` once librdkafka
    /// has it.
    pub(crate) fn ticket(&self) -> usize {
        producer::ticket(&self.inbox, self.head + self.slots.len() as u64)
    }

    pub(crate) fn sent(&mut self, seq: u64, id: Option<Value>) {
        self.slots.push_back(Slot {
            seq,
            id,
            outcome: None,
        });
        self.waiting += 1;
    }

    /// Files the reports that came in; `true` if there were any.
    pub(crate) fn collect(&mut self) -> bool {
        if self.waiting == 0 || !self.inbox.has_reports() {
            return false;
        }
        self.inbox.take(&mut self.scratch);
        let got = !self.scratch.is_empty();
        for (seq, outcome) in self.scratch.drain(..) {
            // Sequence numbers travel modulo 2^40; slots span far fewer.
            let i = producer::seq_distance(seq, self.head);
            let slot = usize::try_from(i).ok().and_then(|i| self.slots.get_mut(i));
            if let Some(slot) = slot.filter(|s| s.outcome.is_none()) {
                slot.outcome = Some(outcome);
                self.waiting -= 1;
            }
        }
        got
    }

    /// The first record's answer, once known: `(sequence number, client id, outcome)`.
    pub(crate) fn pop(&mut self) -> Option<(u64, Option<Value>, Outcome)> {
        self.slots.front()?.outcome.as_ref()?;
        let slot = self.slots.pop_front()?;
        self.head += 1;
        Some((slot.seq, slot.id, slot.outcome?))
    }
}

/// Encodes ack frames into one buffer; each frame is a slice of it, so an ack costs no
/// allocation of its own.
#[derive(Default)]
pub(crate) struct Frames {
    text: String,
    buf: BytesMut,
}

impl Frames {
    const CHUNK: usize = 16 * 1024;

    pub(crate) fn ack(&mut self, id: &Value, partition: i32, offset: i64) -> Utf8Bytes {
        self.text.clear();
        wire::push_ack_frame(&mut self.text, id, partition, offset);
        if self.buf.capacity() < self.text.len() {
            self.buf.reserve(Self::CHUNK.max(self.text.len()));
        }
        self.buf.extend_from_slice(self.text.as_bytes());
        self.split()
    }

    /// The `acks` frame of `batch`, which it empties.
    pub(crate) fn batch(&mut self, batch: &mut AcksBatch) -> Utf8Bytes {
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
