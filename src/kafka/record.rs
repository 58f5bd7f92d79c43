//! A record taken from Kafka, as the use cases see it: its position, its size, a copy that
//! outlives the poll, and its encoding into a frame (borrowing its bytes, no copy).
//!
//! Headers are read as raw bytes (`rdkafka_batch::RawHeaders`): `rdkafka`'s own header access
//! panics on a header name that is not UTF-8, which any producer can write. Such a name is shown
//! with U+FFFD for the invalid bytes.

use std::borrow::Cow;

use rdkafka::message::BorrowedMessage;
use rdkafka_batch::{message_raw_headers, RawHeaders};

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
pub struct Detached {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Detached {
    /// Memory the copy holds: bytes plus a fixed allowance for the record and its strings, so
    /// records with empty values still count against a session's bound.
    pub fn held_size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 32)
            .sum();
        self.value.as_ref().map_or(0, Vec::len)
            + self.key.as_ref().map_or(0, Vec::len)
            + self.topic.len()
            + headers
            + 128
    }
}

/// The parts of a record every path can give.
struct Parts<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

fn encode<'a>(
    p: Parts<'_>,
    headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    writer: &mut BatchWriter,
    seq: u64,
    with_headers: bool,
) {
    let mut names: Vec<(Cow<'a, str>, Option<&'a [u8]>)> = Vec::new();
    if with_headers {
        names.extend(headers.map(|(k, v)| (String::from_utf8_lossy(k), v)));
    }
    let header_buf: Vec<(&str, Option<&[u8]>)> =
        names.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
    let view = RecordView {
        topic: p.topic,
        partition: p.partition,
        offset: p.offset,
        timestamp: p.timestamp,
        key: p.key,
        headers: &header_buf,
        value: p.value,
    };
    writer.push(seq, &view);
}

fn detach<'a>(
    p: Parts<'_>,
    headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Detached {
    Detached {
        topic: p.topic.to_string(),
        partition: p.partition,
        offset: p.offset,
        timestamp: p.timestamp,
        key: p.key.map(<[u8]>::to_vec),
        value: p.value.map(<[u8]>::to_vec),
        headers: headers
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

/// A record `rdkafka` hands out, with a way to read its headers raw.
trait Native: rdkafka::Message {
    fn raw_headers(&self) -> RawHeaders<'_>;
}

impl Native for BorrowedMessage<'_> {
    fn raw_headers(&self) -> RawHeaders<'_> {
        message_raw_headers(self)
    }
}

impl Native for rdkafka_batch::Record<'_> {
    fn raw_headers(&self) -> RawHeaders<'_> {
        rdkafka_batch::Record::raw_headers(self)
    }
}

fn parts<M: rdkafka::Message>(m: &M) -> Parts<'_> {
    Parts {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key(),
        value: m.payload(),
    }
}

impl<M: Native> Fetched for M {
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
        detach(parts(self), self.raw_headers())
    }
    fn encode(&self, writer: &mut BatchWriter, seq: u64, with_headers: bool) {
        // Reading headers costs a call into librdkafka; the seed format shows none.
        if with_headers {
            encode(parts(self), self.raw_headers(), writer, seq, true)
        } else {
            encode(parts(self), std::iter::empty(), writer, seq, false)
        }
    }
}

impl Detached {
    fn parts(&self) -> Parts<'_> {
        Parts {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
        }
    }

    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

impl Fetched for Detached {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn size(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len) + self.key.as_ref().map_or(0, Vec::len)
    }
    fn detach(&self) -> Detached {
        detach(self.parts(), self.headers())
    }
    fn encode(&self, writer: &mut BatchWriter, seq: u64, with_headers: bool) {
        encode(self.parts(), self.headers(), writer, seq, with_headers)
    }
}
