//! A record taken from Kafka, as the use cases see it: its position, its size, a copy that
//! outlives the poll, and its encoding into a frame (borrowing its bytes, no copy).

use rdkafka::message::{BorrowedMessage, Headers, Message as _, OwnedMessage};

use crate::protocol::consume::{BatchWriter, RecordView};

/// A record by either path: the batch fetch queue, the consumer's own queue, or a detached copy.
pub trait Fetched {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    /// Key plus value bytes.
    fn size(&self) -> usize;
    /// A copy that outlives the poll it came from.
    fn detach(&self) -> Detached;
    /// Encodes the record into the frame being built. Headers are collected only when the
    /// format shows them (the seed format does not).
    fn encode(&self, writer: &mut BatchWriter, seq: u64, with_headers: bool);
}

/// A record copied out of librdkafka, held while the frame it belongs in is not ready for it.
pub struct Detached(OwnedMessage);

impl Detached {
    /// Memory the copy holds: bytes plus a fixed allowance for the message and its strings, so
    /// records with empty values still count against a session's bound.
    pub fn held_size(&self) -> usize {
        let m = &self.0;
        let headers = m.headers().map_or(0, |h| {
            h.iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 32)
                .sum()
        });
        m.payload().map_or(0, <[u8]>::len)
            + m.key().map_or(0, <[u8]>::len)
            + rdkafka::Message::topic(m).len()
            + headers
            + 128
    }
}

fn encode<M: rdkafka::Message>(m: &M, writer: &mut BatchWriter, seq: u64, with_headers: bool) {
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

macro_rules! fetched {
    ($ty:ty, |$m:ident| $detach:expr) => {
        impl Fetched for $ty {
            fn topic(&self) -> &str {
                rdkafka::Message::topic(self)
            }
            fn partition(&self) -> i32 {
                rdkafka::Message::partition(self)
            }
            fn offset(&self) -> i64 {
                rdkafka::Message::offset(self)
            }
            fn size(&self) -> usize {
                self.payload().map_or(0, <[u8]>::len) + self.key().map_or(0, <[u8]>::len)
            }
            fn detach(&self) -> Detached {
                let $m = self;
                Detached($detach)
            }
            fn encode(&self, writer: &mut BatchWriter, seq: u64, with_headers: bool) {
                encode(self, writer, seq, with_headers)
            }
        }
    };
}

fetched!(BorrowedMessage<'_>, |m| m.detach());
fetched!(rdkafka_batch::Record<'_>, |m| m.detach());
fetched!(OwnedMessage, |m| m.clone());

impl Fetched for Detached {
    fn topic(&self) -> &str {
        Fetched::topic(&self.0)
    }
    fn partition(&self) -> i32 {
        Fetched::partition(&self.0)
    }
    fn offset(&self) -> i64 {
        Fetched::offset(&self.0)
    }
    fn size(&self) -> usize {
        Fetched::size(&self.0)
    }
    fn detach(&self) -> Detached {
        Detached(self.0.clone())
    }
    fn encode(&self, writer: &mut BatchWriter, seq: u64, with_headers: bool) {
        encode(&self.0, writer, seq, with_headers)
    }
}
