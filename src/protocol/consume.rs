//! Consume side of the wire protocol: socket parameters, record frames and client control frames.

use std::collections::HashMap;
use std::io::Write;

use base64::Engine;
use serde::Deserialize;

use super::{parse_int, validate_topic, ProtocolError};

/// Which records a session reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Join the consumer group for all partitions of the topics; Kafka balances them across sockets.
    Group,
    /// Read exactly these partitions of the (single) topic.
    Partitions(Vec<i32>),
}

/// Where reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset, or the configured reset policy when there is none.
    Committed,
    Earliest,
    Latest,
    /// This offset in every partition read (the seed's `offset=N`).
    Offset(i64),
    /// Per-partition offsets; partitions not named start at the committed offset.
    Offsets(Vec<(i32, i64)>),
    /// The first record at or after this Unix time in milliseconds.
    Timestamp(i64),
}

/// When offsets are committed to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// After the frame holding the record has been written to the socket.
    Auto,
    /// Only what the client acknowledged (at-least-once).
    Ack,
    /// Never; the client keeps its own offsets.
    None,
}

/// How keys, values and header values are put into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON string of the UTF-8 text; invalid sequences become U+FFFD.
    Text,
    /// The bytes embedded as JSON when they are strict UTF-8 JSON (`embeddable_json`),
    /// otherwise as `Text`.
    Json,
    /// Standard base64 with padding.
    Base64,
}

/// Parses an `encoding` parameter or record field: `text`, `json` or `base64`.
pub fn parse_encoding(raw: &str) -> Result<Encoding, ProtocolError> {
    match raw {
        "text" => Ok(Encoding::Text),
        "json" => Ok(Encoding::Json),
        "base64" => Ok(Encoding::Base64),
        other => Err(ProtocolError::bad_request(format!(
            "encoding must be text, json or base64, got {other:?}"
        ))),
    }
}

/// The frame layout a socket receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The seed's `[{"message":"...","offset":N}, ...]`.
    Seed,
    /// `{"type":"records","batch":N,"records":[...]}` with full records.
    V1(Encoding),
}

/// A validated consume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeRequest {
    pub topics: Vec<String>,
    pub group: Option<String>,
    pub assignment: Assignment,
    pub start: StartAt,
    pub commit: CommitMode,
    pub format: Format,
    /// Most records delivered but not yet acknowledged (ack mode only).
    pub window: usize,
}

pub const DEFAULT_WINDOW: usize = 1000;
pub const MAX_WINDOW: usize = 1_000_000;

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ProtocolError> {
    match q.get(name).map(|s| s.trim()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ProtocolError::bad_request(format!(
            "missing required parameter {name}"
        ))),
    }
}

fn validate_group(group: &str) -> Result<(), ProtocolError> {
    if group.len() > 255 || group.chars().any(char::is_control) {
        return Err(ProtocolError::bad_request(
            "consumer group must be at most 255 characters without control characters",
        ));
    }
    Ok(())
}

fn parse_partition(raw: &str) -> Result<i32, ProtocolError> {
    parse_int::<i32>("partition", raw).and_then(|p| {
        if p < 0 {
            Err(ProtocolError::bad_request("partition must be >= 0"))
        } else {
            Ok(p)
        }
    })
}

fn parse_offset(raw: &str) -> Result<i64, ProtocolError> {
    parse_int::<i64>("offset", raw).and_then(|o| {
        if o < 0 {
            Err(ProtocolError::bad_request("offset must be >= 0"))
        } else {
            Ok(o)
        }
    })
}

/// Parses the seed's query: `topic`, `consumerGroup`, optional `offset` and `partition`.
/// `default_partition` is the server's `partition` option.
pub fn parse_seed(
    q: &HashMap<String, String>,
    default_partition: Option<i32>,
) -> Result<ConsumeRequest, ProtocolError> {
    let topic = required(q, "topic")?;
    validate_topic(topic)?;
    let group = required(q, "consumerGroup")?;
    validate_group(group)?;
    let partition = match q.get("partition") {
        Some(p) => Some(parse_partition(p)?),
        None => default_partition,
    };
    // The seed treated offset=0 as "absent"; here 0 means 0.
    let start = match q.get("offset") {
        Some(o) => StartAt::Offset(parse_offset(o)?),
        None => StartAt::Committed,
    };
    Ok(ConsumeRequest {
        topics: vec![topic.to_string()],
        group: Some(group.to_string()),
        assignment: match partition {
            Some(p) => Assignment::Partitions(vec![p]),
            None => Assignment::Group,
        },
        start,
        commit: CommitMode::Auto,
        format: Format::Seed,
        window: DEFAULT_WINDOW,
    })
}

/// Parses `/v1/consume` parameters; see docs/PROTOCOL.md.
pub fn parse_v1(q: &HashMap<String, String>) -> Result<ConsumeRequest, ProtocolError> {
    const KNOWN: &[&str] = &[
        "topic",
        "group",
        "partition",
        "from",
        "offset",
        "timestamp",
        "commit",
        "encoding",
        "window",
    ];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ProtocolError::bad_request(format!(
            "unknown parameter {k:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let topics: Vec<String> = required(q, "topic")?
        .split(',')
        .map(|t| t.trim().to_string())
        .collect();
    for t in &topics {
        validate_topic(t)?;
    }
    let group = match q.get("group").map(|g| g.trim()) {
        Some(g) if !g.is_empty() => {
            validate_group(g)?;
            Some(g.to_string())
        }
        _ => None,
    };
    let partitions: Option<Vec<i32>> = match q.get("partition") {
        Some(p) => Some(
            p.split(',')
                .map(parse_partition)
                .collect::<Result<_, _>>()?,
        ),
        None => None,
    };
    let assignment = match partitions {
        Some(ps) => {
            let mut sorted = ps.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != ps.len() {
                return Err(ProtocolError::bad_request(
                    "partition lists a partition twice",
                ));
            }
            if topics.len() != 1 {
                return Err(ProtocolError::bad_request(
                    "partition can only be given with a single topic",
                ));
            }
            Assignment::Partitions(ps)
        }
        None => {
            if group.is_none() {
                return Err(ProtocolError::bad_request(
                    "give group (consumer group over all partitions) or partition (explicit partitions)",
                ));
            }
            Assignment::Group
        }
    };

    let mut starts = Vec::new();
    if let Some(from) = q.get("from") {
        starts.push(match from.as_str() {
            "earliest" => StartAt::Earliest,
            "latest" => StartAt::Latest,
            "committed" => StartAt::Committed,
            other => {
                return Err(ProtocolError::bad_request(format!(
                    "from must be earliest, latest or committed, got {other:?}"
                )))
            }
        });
    }
    if let Some(o) = q.get("offset") {
        starts.push(if o.contains(':') {
            let mut per = Vec::new();
            for pair in o.split(',') {
                let (p, off) = pair.split_once(':').ok_or_else(|| {
                    ProtocolError::bad_request("offset takes N or PARTITION:OFFSET,...")
                })?;
                per.push((parse_partition(p)?, parse_offset(off)?));
            }
            StartAt::Offsets(per)
        } else {
            StartAt::Offset(parse_offset(o)?)
        });
    }
    if let Some(ts) = q.get("timestamp") {
        let ts = parse_int::<i64>("timestamp", ts)?;
        if ts < 0 {
            return Err(ProtocolError::bad_request(
                "timestamp must be >= 0 (Unix ms)",
            ));
        }
        starts.push(StartAt::Timestamp(ts));
    }
    if starts.len() > 1 {
        return Err(ProtocolError::bad_request(
            "give at most one of from, offset and timestamp",
        ));
    }
    let start = starts.pop().unwrap_or(StartAt::Committed);

    let commit = match q.get("commit").map(String::as_str) {
        None => {
            if group.is_some() {
                CommitMode::Auto
            } else {
                CommitMode::None
            }
        }
        Some("auto") => CommitMode::Auto,
        Some("ack") => CommitMode::Ack,
        Some("none") => CommitMode::None,
        Some(other) => {
            return Err(ProtocolError::bad_request(format!(
                "commit must be auto, ack or none, got {other:?}"
            )))
        }
    };
    if commit != CommitMode::None && group.is_none() {
        return Err(ProtocolError::bad_request(
            "commit=auto and commit=ack need a group to commit to",
        ));
    }
    if start == StartAt::Committed && group.is_none() {
        return Err(ProtocolError::bad_request(
            "without a group there are no committed offsets: give from, offset or timestamp",
        ));
    }
    let encoding = match q.get("encoding") {
        Some(e) => parse_encoding(e)?,
        None => Encoding::Text,
    };
    let window = match q.get("window") {
        Some(w) => {
            let w = parse_int::<usize>("window", w)?;
            if w == 0 || w > MAX_WINDOW {
                return Err(ProtocolError::bad_request(format!(
                    "window must be between 1 and {MAX_WINDOW}"
                )));
            }
            w
        }
        None => DEFAULT_WINDOW,
    };
    Ok(ConsumeRequest {
        topics,
        group,
        assignment,
        start,
        commit,
        format: Format::V1(encoding),
        window,
    })
}

/// One record as the encoder needs it, borrowed from the Kafka message without copying.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    pub value: Option<&'a [u8]>,
}

/// Builds one batch frame in place; the session calls `push` per record and `finish` per frame.
#[derive(Debug)]
pub struct BatchWriter {
    format: Format,
    buf: Vec<u8>,
    count: usize,
}

impl BatchWriter {
    pub fn new(format: Format) -> Self {
        BatchWriter {
            format,
            buf: Vec::with_capacity(16 * 1024),
            count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes encoded so far (what `maxBytes` bounds).
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record. `batch` is the frame's sequence number (v1 only).
    pub fn push(&mut self, batch: u64, r: &RecordView<'_>) {
        if self.count == 0 {
            self.buf.clear();
            match self.format {
                Format::Seed => self.buf.push(b'['),
                Format::V1(_) => {
                    let _ = write!(
                        self.buf,
                        "{{\"type\":\"records\",\"batch\":{batch},\"records\":["
                    );
                }
            }
        } else {
            self.buf.push(b',');
        }
        self.count += 1;
        match self.format {
            Format::Seed => {
                self.buf.extend_from_slice(b"{\"message\":");
                write_bytes(&mut self.buf, r.value, Encoding::Text);
                self.buf.extend_from_slice(b",\"offset\":");
                write_int(&mut self.buf, r.offset);
                self.buf.push(b'}');
            }
            Format::V1(enc) => {
                self.buf.extend_from_slice(b"{\"topic\":");
                write_str(&mut self.buf, r.topic);
                self.buf.extend_from_slice(b",\"partition\":");
                write_int(&mut self.buf, i64::from(r.partition));
                self.buf.extend_from_slice(b",\"offset\":");
                write_int(&mut self.buf, r.offset);
                self.buf.extend_from_slice(b",\"timestamp\":");
                match r.timestamp {
                    Some(ts) => write_int(&mut self.buf, ts),
                    None => self.buf.extend_from_slice(b"null"),
                }
                self.buf.extend_from_slice(b",\"key\":");
                write_bytes(&mut self.buf, r.key, enc);
                self.buf.extend_from_slice(b",\"headers\":[");
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.buf.extend_from_slice(b"{\"key\":");
                    write_str(&mut self.buf, k);
                    self.buf.extend_from_slice(b",\"value\":");
                    write_bytes(&mut self.buf, *v, enc);
                    self.buf.push(b'}');
                }
                self.buf.extend_from_slice(b"],\"value\":");
                write_bytes(&mut self.buf, r.value, enc);
                self.buf.push(b'}');
            }
        }
    }

    /// Closes the frame and hands it out; the writer is ready for the next batch.
    pub fn finish(&mut self) -> String {
        match self.format {
            Format::Seed => self.buf.push(b']'),
            Format::V1(_) => self.buf.extend_from_slice(b"]}"),
        }
        self.count = 0;
        let cap = self.buf.capacity().min(1 << 20);
        let out = std::mem::replace(&mut self.buf, Vec::with_capacity(cap));
        // Every byte written is valid UTF-8: JSON punctuation, numbers, escaped strings, and
        // embedded JSON only after `embeddable_json` checked it.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Whether any byte needs JSON escaping (`<0x20`, `"`, `\\`) or, with `ascii`, is not ASCII.
/// Branch-free over 32-byte blocks so the compiler vectorises it; this runs for every value.
fn special(bytes: &[u8], ascii: bool) -> bool {
    let hit = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\') | (ascii & (b >= 0x80));
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |acc, &b| acc | hit(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| hit(b))
}

fn write_quoted(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(bytes);
    buf.push(b'"');
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Hot path: most keys and values need no escaping and are copied as they are.
    if !special(s.as_bytes(), false) {
        write_quoted(buf, s.as_bytes());
        return;
    }
    // serde_json's string escaping matches JavaScript's JSON.stringify for valid UTF-8.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Decimal digits without going through `fmt` (this runs for every record).
fn write_int(buf: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    buf.extend_from_slice(super::decimal(v, &mut digits));
}

/// Text encoding: valid UTF-8 as is (checked with the fast validator), otherwise lossily.
fn write_text(buf: &mut Vec<u8>, bytes: &[u8]) {
    // Plain ASCII needs neither UTF-8 validation nor escaping.
    if !special(bytes, true) {
        write_quoted(buf, bytes);
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => write_str(buf, s),
        Err(_) => write_str(buf, &String::from_utf8_lossy(bytes)),
    }
}

fn write_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>, enc: Encoding) {
    let Some(bytes) = bytes else {
        buf.extend_from_slice(b"null");
        return;
    };
    match enc {
        Encoding::Text => write_text(buf, bytes),
        Encoding::Json => {
            if embeddable_json(bytes) {
                // Strict JSON is embedded as-is, minus surrounding whitespace.
                buf.extend_from_slice(bytes.trim_ascii());
            } else {
                write_text(buf, bytes);
            }
        }
        Encoding::Base64 => {
            buf.push(b'"');
            let start = buf.len();
            let n = base64::encoded_len(bytes.len(), true).unwrap_or(0);
            buf.resize(start + n, 0);
            let _ =
                base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut buf[start..]);
            buf.push(b'"');
        }
    }
}

/// Deepest nesting of arrays and objects a value may have to be embedded by `encoding=json`.
/// The frame adds up to five levels around it, and strict parsers stop at 128 (serde_json).
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether `bytes` may be embedded verbatim in a frame: UTF-8 JSON that strict parsers accept.
/// `IgnoredAny` is not enough: it skips strings without checking their UTF-8 or their `\u`
/// escapes (a lone surrogate such as `"\ud800"` passes), skips numbers without checking their
/// range (`1e400`) and has no depth limit, and each of those makes the whole frame unparsable.
fn embeddable_json(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(Strict(MAX_JSON_DEPTH), &mut de).is_ok()
        && de.end().is_ok()
}

/// Walks a JSON value with `deserialize_any`, so serde_json validates every string (escapes
/// decoded, surrogates paired) and number (finite), allowing `.0` more levels of nesting.
/// Borrowed strings are visited without copying.
#[derive(Clone, Copy)]
struct Strict(usize);

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

impl Strict {
    fn deeper<E: serde::de::Error>(self) -> Result<Strict, E> {
        match self.0 {
            0 => Err(E::custom("nested too deeply")),
            n => Ok(Strict(n - 1)),
        }
    }
}

/// Frames a v1 client sends on a consume socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Everything in batches up to and including `batch` is processed.
    AckBatch(u64),
    /// Everything up to and including `offset` in this partition is processed.
    AckOffset {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientFrame {
    #[serde(rename = "type")]
    kind: String,
    batch: Option<u64>,
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
}

/// Parses a text frame from a v1 consume client.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ProtocolError> {
    let raw: RawClientFrame = serde_json::from_str(text)
        .map_err(|e| ProtocolError::bad_request(format!("invalid control frame: {e}")))?;
    match raw.kind.as_str() {
        "ack" => match (raw.batch, raw.topic, raw.partition, raw.offset) {
            (Some(b), None, None, None) => Ok(ClientFrame::AckBatch(b)),
            (None, Some(_), Some(partition), Some(offset)) if partition < 0 || offset < 0 => Err(
                ProtocolError::bad_request("ack partition and offset must be >= 0"),
            ),
            (None, Some(topic), Some(partition), Some(offset)) => Ok(ClientFrame::AckOffset {
                topic,
                partition,
                offset,
            }),
            _ => Err(ProtocolError::bad_request(
                "ack takes {\"batch\":N} or {\"topic\":T,\"partition\":P,\"offset\":N}",
            )),
        },
        other => Err(ProtocolError::bad_request(format!(
            "unknown control frame type {other:?}; known: ack"
        ))),
    }
}

/// `{"type":"assigned"|"revoked","partitions":[{"topic":..,"partition":..}]}`.
pub fn partitions_frame(kind: &str, partitions: &[(String, i32)]) -> String {
    let mut buf = Vec::with_capacity(64 + partitions.len() * 32);
    let _ = write!(buf, "{{\"type\":\"{kind}\",\"partitions\":[");
    for (i, (t, p)) in partitions.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"topic\":");
        write_str(&mut buf, t);
        let _ = write!(buf, ",\"partition\":{p}}}");
    }
    buf.extend_from_slice(b"]}");
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::query as q;
    use crate::protocol::ErrorCode;

    fn rec<'a>(offset: i64, value: Option<&'a [u8]>) -> RecordView<'a> {
        RecordView {
            topic: "t",
            partition: 0,
            offset,
            timestamp: Some(5),
            key: None,
            headers: &[],
            value,
        }
    }

    #[test]
    fn seed_frame_is_byte_exact() {
        let mut w = BatchWriter::new(Format::Seed);
        w.push(0, &rec(225107, Some(b"hello one")));
        w.push(0, &rec(225108, Some(b"say \"hi\"\n\\/\x01 \xc3\xa9")));
        assert_eq!(
            w.finish(),
            "[{\"message\":\"hello one\",\"offset\":225107},{\"message\":\"say \\\"hi\\\"\\n\\\\/\\u0001 é\",\"offset\":225108}]"
        );
        assert!(w.is_empty());
    }

    #[test]
    fn seed_null_and_binary() {
        let mut w = BatchWriter::new(Format::Seed);
        w.push(0, &rec(1, None));
        w.push(0, &rec(2, Some(&[0xff, b'a'])));
        assert_eq!(
            w.finish(),
            "[{\"message\":null,\"offset\":1},{\"message\":\"\u{fffd}a\",\"offset\":2}]"
        );
    }

    #[test]
    fn v1_record_all_fields_and_encodings() {
        let headers = [("h", Some(&b"v"[..])), ("n", None)];
        let r = RecordView {
            topic: "t",
            partition: 2,
            offset: 9,
            timestamp: Some(1700),
            key: Some(b"k"),
            headers: &headers,
            value: Some(b"{\"a\": 1}"),
        };
        let mut w = BatchWriter::new(Format::V1(Encoding::Json));
        w.push(3, &r);
        assert_eq!(
            w.finish(),
            r#"{"type":"records","batch":3,"records":[{"topic":"t","partition":2,"offset":9,"timestamp":1700,"key":"k","headers":[{"key":"h","value":"v"},{"key":"n","value":null}],"value":{"a": 1}}]}"#
        );
        let mut w = BatchWriter::new(Format::V1(Encoding::Base64));
        w.push(
            4,
            &RecordView {
                value: Some(&[0, 255]),
                headers: &[],
                ..r
            },
        );
        let s = w.finish();
        assert!(s.contains(r#""key":"aw==""#), "{s}");
        assert!(s.contains(r#""value":"AP8=""#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["records"][0]["offset"], 9);
    }

    #[test]
    fn seed_params() {
        let r = parse_seed(
            &q(&[("topic", "t"), ("consumerGroup", "g"), ("offset", "0")]),
            None,
        )
        .unwrap();
        assert_eq!(r.start, StartAt::Offset(0));
        assert_eq!(r.assignment, Assignment::Group);
        let r = parse_seed(&q(&[("topic", "t"), ("consumerGroup", "g")]), Some(3)).unwrap();
        assert_eq!(r.assignment, Assignment::Partitions(vec![3]));
        assert_eq!(r.start, StartAt::Committed);
        for bad in [
            q(&[("consumerGroup", "g")]),
            q(&[("topic", "t")]),
            q(&[("topic", "t"), ("consumerGroup", "g"), ("offset", "-1")]),
            q(&[("topic", "t"), ("consumerGroup", "g"), ("offset", "x")]),
            q(&[("topic", "t"), ("consumerGroup", "g"), ("partition", "-2")]),
            q(&[("topic", "bad topic"), ("consumerGroup", "g")]),
        ] {
            assert_eq!(
                parse_seed(&bad, None).unwrap_err().code,
                ErrorCode::BadRequest
            );
        }
    }

    #[test]
    fn v1_params() {
        let r = parse_v1(&q(&[("topic", "a,b"), ("group", "g"), ("commit", "ack")])).unwrap();
        assert_eq!(r.topics, vec!["a", "b"]);
        assert_eq!(r.commit, CommitMode::Ack);
        let r = parse_v1(&q(&[
            ("topic", "a"),
            ("partition", "0,1"),
            ("offset", "0:5,1:7"),
        ]))
        .unwrap();
        assert_eq!(r.start, StartAt::Offsets(vec![(0, 5), (1, 7)]));
        assert_eq!(r.commit, CommitMode::None);
        assert!(parse_v1(&q(&[("topic", "a")])).is_err());
        assert!(parse_v1(&q(&[("topic", "a"), ("partition", "0")])).is_err());
        assert!(parse_v1(&q(&[("topic", "a"), ("group", "g"), ("bogus", "1")])).is_err());
        assert!(parse_v1(&q(&[("topic", "a"), ("group", "g"), ("from", "x")])).is_err());
        assert!(parse_v1(&q(&[("topic", "a"), ("group", "g"), ("window", "0")])).is_err());
        assert!(parse_v1(&q(&[("topic", "a"), ("group", "g"), ("timestamp", "-5")])).is_err());
        assert!(parse_v1(&q(&[
            ("topic", "a"),
            ("partition", "0,0"),
            ("from", "earliest")
        ]))
        .is_err());
        assert!(parse_v1(&q(&[
            ("topic", "a"),
            ("group", "g"),
            ("from", "earliest"),
            ("offset", "3")
        ]))
        .is_err());
    }

    #[test]
    fn client_frames() {
        assert_eq!(
            parse_client_frame(r#"{"type":"ack","batch":4}"#).unwrap(),
            ClientFrame::AckBatch(4)
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"ack","topic":"t","partition":1,"offset":9}"#).unwrap(),
            ClientFrame::AckOffset {
                topic: "t".into(),
                partition: 1,
                offset: 9
            }
        );
        assert!(parse_client_frame("nope").is_err());
        assert!(parse_client_frame(r#"{"type":"ack"}"#).is_err());
        assert!(parse_client_frame(r#"{"type":"dance"}"#).is_err());
        assert!(
            parse_client_frame(r#"{"type":"ack","topic":"t","partition":0,"offset":-1}"#).is_err()
        );
    }

    #[test]
    fn partitions_frame_shape() {
        assert_eq!(
            partitions_frame("assigned", &[("t".into(), 0), ("t".into(), 1)]),
            r#"{"type":"assigned","partitions":[{"topic":"t","partition":0},{"topic":"t","partition":1}]}"#
        );
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    #[test]
    fn string_and_integer_fast_paths_match_serde_json_and_display() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}x",
            "tab\t",
            "é ünï",
            "\u{7f}",
        ] {
            let mut b = Vec::new();
            write_str(&mut b, s);
            assert_eq!(b, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // Longer than one 32-byte block, with the special byte in a later block.
        let long = "x".repeat(70);
        for s in [
            long.clone(),
            format!("{long}\"{long}"),
            format!("{long}é{long}"),
            format!("{}\n", "y".repeat(64)),
        ] {
            let mut b = Vec::new();
            write_text(&mut b, s.as_bytes());
            assert_eq!(b, serde_json::to_vec(&s).unwrap(), "{s:?}");
            let mut b = Vec::new();
            write_str(&mut b, &s);
            assert_eq!(b, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        for v in [0, 7, -1, 10, i64::MIN, i64::MAX, 1_234_567_890] {
            let mut b = Vec::new();
            write_int(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap(), v.to_string());
        }
        let mut b = Vec::new();
        write_text(&mut b, b"ok\xff");
        assert_eq!(b, "\"ok\u{fffd}\"".as_bytes());
    }
}

#[cfg(test)]
mod strict_json_tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether a JSON text holds a `\u` escape of a surrogate that is not part of a pair. Walks
    /// escapes properly, so `\\ud800` (an escaped backslash, then text) is not one.
    fn has_lone_surrogate_escape(json: &str) -> bool {
        let b = json.as_bytes();
        let hex = |i: usize| {
            b.get(i..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u16::from_str_radix(h, 16).ok())
        };
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                i += 1;
                continue;
            }
            if b.get(i + 1) != Some(&b'u') {
                i += 2;
                continue;
            }
            let Some(n) = hex(i + 2) else { return true };
            match n {
                0xD800..=0xDBFF => {
                    let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                        .then(|| hex(i + 8))
                        .flatten();
                    match low {
                        Some(0xDC00..=0xDFFF) => i += 12,
                        _ => return true,
                    }
                }
                0xDC00..=0xDFFF => return true,
                _ => i += 6,
            }
        }
        false
    }

    fn frame(format: Format, key: &[u8], value: &[u8], headers: &[(String, Vec<u8>)]) -> String {
        let hs: Vec<(&str, Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
            .collect();
        let r = RecordView {
            topic: "t",
            partition: 0,
            offset: 1,
            timestamp: None,
            key: Some(key),
            headers: &hs,
            value: Some(value),
        };
        let mut w = BatchWriter::new(format);
        w.push(1, &r);
        w.push(2, &r);
        w.finish()
    }

    fn assert_strict(f: &str) {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(f) {
            panic!("frame does not parse strictly ({e}): {f}");
        }
        assert!(!has_lone_surrogate_escape(f), "lone surrogate escape: {f}");
    }

    const FORMATS: [Format; 4] = [
        Format::Seed,
        Format::V1(Encoding::Text),
        Format::V1(Encoding::Json),
        Format::V1(Encoding::Base64),
    ];

    #[test]
    fn the_scanner_finds_lone_surrogates_only() {
        assert!(has_lone_surrogate_escape(r#""\ud800""#));
        assert!(has_lone_surrogate_escape(r#""\udc00\ud800""#));
        assert!(has_lone_surrogate_escape(r#""\ud800\u0041""#));
        assert!(!has_lone_surrogate_escape(r#""\ud83d\ude00""#));
        assert!(!has_lone_surrogate_escape(r#""\\ud800""#));
        assert!(!has_lone_surrogate_escape(r#""\u00e9 \n""#));
    }

    #[test]
    fn json_that_strict_parsers_refuse_is_sent_as_text() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        let cases: &[&[u8]] = &[
            br#""\ud800""#,
            br#"{"a":"\udfff"}"#,
            br#"["\ud800\u0041"]"#,
            br#"{"\ud800":1}"#,
            b"\"\xff\xfe\"",
            b"[\"ok\", \"\xc3\"]",
            b"{\"\xed\xa0\x80\":1}",
            b"1e400",
            b"[-1e999]",
            b"123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345",
            deep.as_bytes(),
        ];
        for bytes in cases {
            assert!(
                !embeddable_json(bytes),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            let f = frame(
                Format::V1(Encoding::Json),
                bytes,
                bytes,
                &[("h".into(), bytes.to_vec())],
            );
            assert_strict(&f);
            let v: serde_json::Value = serde_json::from_str(&f).unwrap();
            // Sent as the text form: a JSON string (lossy for invalid UTF-8).
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(
                v["records"][0]["value"],
                serde_json::Value::from(text.as_ref())
            );
            assert_eq!(
                v["records"][0]["key"],
                serde_json::Value::from(text.as_ref())
            );
            assert_eq!(
                v["records"][0]["headers"][0]["value"],
                serde_json::Value::from(text.as_ref())
            );
        }
    }

    #[test]
    fn strict_json_is_still_embedded_verbatim() {
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        let cases: &[&[u8]] = &[
            br#""\ud83d\ude00""#,
            br#"{"a": [1, 2.5e10, -0, true, null, "x\"y"]}"#,
            "\"é\"".as_bytes(),
            b"1e308",
            b"18446744073709551616",
            b" \t[1]\r\n",
            at_limit.as_bytes(),
        ];
        for bytes in cases {
            assert!(embeddable_json(bytes), "{}", String::from_utf8_lossy(bytes));
            let f = frame(Format::V1(Encoding::Json), b"k", bytes, &[]);
            assert_strict(&f);
            let raw = std::str::from_utf8(bytes.trim_ascii()).unwrap();
            assert!(f.contains(&format!("\"value\":{raw}}}")), "{f}");
        }
    }

    /// Fragments that make JSON-looking bytes likely: escapes, surrogates, numbers at the edge of
    /// f64, nesting, invalid UTF-8.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"\\ud800".to_vec()),
            Just(b"\\udc00".to_vec()),
            Just(b"\\ud83d\\ude00".to_vec()),
            Just(b"\\u0041".to_vec()),
            Just(b"\\\\".to_vec()),
            Just(b"\\n".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b"{\"k\":".to_vec()),
            Just(b"}".to_vec()),
            Just(b",".to_vec()),
            Just(b"1e400".to_vec()),
            Just(b"-0.5e-400".to_vec()),
            Just(b"12".to_vec()),
            Just(b"null".to_vec()),
            Just(vec![0xff]),
            Just(vec![0xed, 0xa0, 0x80]),
            Just(vec![0xc3]),
            Just("é".as_bytes().to_vec()),
            Just(vec![0x01]),
            Just(b" ".to_vec()),
            "[a-z]{0,3}".prop_map(String::into_bytes),
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat()),
            // A string with one fragment inside: valid JSON syntax around the odd bit.
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|v| {
                let mut s = b"[\"".to_vec();
                s.extend(v);
                s.extend_from_slice(b"\"]");
                s
            }),
            (1usize..140).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_bytes_make_a_strict_frame_in_every_format(
            key in jsonish(),
            value in jsonish(),
            headers in proptest::collection::vec((any::<String>(), jsonish()), 0..3),
        ) {
            for format in FORMATS {
                assert_strict(&frame(format, &key, &value, &headers));
            }
        }
    }
}
