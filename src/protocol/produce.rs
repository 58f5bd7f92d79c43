//! Produce side of the wire protocol: endpoint parameters, decoding frames into records, acks.
//!
//! Pure: the socket and Kafka live in `crate::produce`. The contract is docs/PROTOCOL.md ("Produce").

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::Bytes;
use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::consume::{parse_encoding, Encoding};
use super::{parse_int, validate_topic, ErrorCode, ProtocolError};

/// How text frames (and HTTP bodies) are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// A text frame whose first non-whitespace character is `{` or `[` is JSON records; any other
    /// text frame is one record's value, verbatim.
    Auto,
    /// Every frame is one record's value, verbatim, whatever it looks like.
    Raw,
    /// Every text frame must be JSON records.
    Json,
}

/// A validated produce request: the target and the defaults records fall back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub topic: String,
    /// Key of records that name none (UTF-8 text of the `key` parameter).
    pub key: Option<Bytes>,
    /// Partition of records that name none; without it Kafka's partitioner picks (by key hash).
    pub partition: Option<i32>,
    /// Encoding of keys, values and header values in JSON records that name none.
    pub encoding: Encoding,
    pub format: FrameFormat,
    /// How a WebSocket answers stored records (HTTP answers a request in one body).
    pub answers: Answers,
    /// Records a WebSocket may have unanswered before the proxy stops reading it (`window`).
    pub window: usize,
}

/// Unanswered records per produce socket unless it asks for another `window`.
pub const DEFAULT_WINDOW: usize = 10_000;

/// Largest `window` a produce socket may ask for: its answers are held in the proxy (a few
/// hundred bytes each at most) and its records in librdkafka's queue, which is shared and bounded.
pub const MAX_WINDOW: usize = 100_000;

/// How a produce socket answers records that were stored (`answers` parameter). Errors are
/// always one frame per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// One `ack` frame per record (the default).
    Each,
    /// Consecutive stored records whose answers are ready together share one `acks` frame.
    Batch,
}

/// Parses `GET /v1/produce` parameters: `topic` plus the shared ones.
pub fn parse_ws(q: &HashMap<String, String>) -> Result<ProduceRequest, ProtocolError> {
    const KNOWN: &[&str] = &[
        "topic",
        "key",
        "partition",
        "encoding",
        "format",
        "answers",
        "window",
    ];
    reject_unknown(q, KNOWN)?;
    let topic = match q.get("topic").map(|t| t.trim()) {
        Some(t) if !t.is_empty() => t,
        _ => {
            return Err(ProtocolError::bad_request(
                "missing required parameter topic; try ws://HOST:PORT/v1/produce?topic=T",
            ))
        }
    };
    let mut req = parse_common(topic, q)?;
    req.answers = match q.get("answers").map(String::as_str) {
        None | Some("each") => Answers::Each,
        Some("batch") => Answers::Batch,
        Some(other) => {
            return Err(ProtocolError::bad_request(format!(
                "answers must be each or batch, got {other:?}"
            )))
        }
    };
    if let Some(w) = q.get("window") {
        let w = parse_int::<usize>("window", w)?;
        if w == 0 || w > MAX_WINDOW {
            return Err(ProtocolError::bad_request(format!(
                "window must be between 1 and {MAX_WINDOW}"
            )));
        }
        req.window = w;
    }
    Ok(req)
}

/// Parses `POST /v1/topics/{topic}/records` parameters; the topic comes from the path.
pub fn parse_http(
    topic: &str,
    q: &HashMap<String, String>,
) -> Result<ProduceRequest, ProtocolError> {
    const KNOWN: &[&str] = &["key", "partition", "encoding", "format"];
    reject_unknown(q, KNOWN)?;
    parse_common(topic, q)
}

fn reject_unknown(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ProtocolError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ProtocolError::bad_request(format!(
            "unknown parameter {k:?}; known: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn parse_common(topic: &str, q: &HashMap<String, String>) -> Result<ProduceRequest, ProtocolError> {
    validate_topic(topic)?;
    let partition = match q.get("partition") {
        Some(p) => {
            let p = parse_int::<i32>("partition", p)?;
            if p < 0 {
                return Err(ProtocolError::bad_request("partition must be >= 0"));
            }
            Some(p)
        }
        None => None,
    };
    let encoding = match q.get("encoding") {
        Some(e) => parse_encoding(e)?,
        None => Encoding::Text,
    };
    let format = match q.get("format").map(String::as_str) {
        None | Some("auto") => FrameFormat::Auto,
        Some("raw") => FrameFormat::Raw,
        Some("json") => FrameFormat::Json,
        Some(other) => {
            return Err(ProtocolError::bad_request(format!(
                "format must be auto, raw or json, got {other:?}"
            )))
        }
    };
    Ok(ProduceRequest {
        topic: topic.to_string(),
        key: q.get("key").map(|k| Bytes::copy_from_slice(k.as_bytes())),
        partition,
        encoding,
        format,
        answers: Answers::Each,
        window: DEFAULT_WINDOW,
    })
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The client's `id`, echoed in the ack.
    pub id: Option<Value>,
    /// Position in the socket (1, 2, 3, ...) or in the HTTP body; the ack's id when `id` is absent.
    pub seq: u64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Explicit partition; `None` lets Kafka's partitioner choose.
    pub partition: Option<i32>,
    /// Create time in ms since the Unix epoch; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

impl Record {
    /// The id acks carry: the client's, or the sequence number.
    pub fn ack_id(&self) -> Value {
        self.id.clone().unwrap_or_else(|| Value::from(self.seq))
    }
}

/// A record that could not be decoded, or a frame that could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub id: Option<Value>,
    pub seq: u64,
    pub error: ProtocolError,
}

impl RecordError {
    pub fn ack_id(&self) -> Value {
        self.id.clone().unwrap_or_else(|| Value::from(self.seq))
    }
}

/// The decoder's answer per record: a record to produce or an error to ack.
pub type Decoded = Result<Record, RecordError>;

/// Turns frames into records, numbering them per socket.
#[derive(Debug, Clone)]
pub struct Decoder {
    key: Option<Bytes>,
    partition: Option<i32>,
    encoding: Encoding,
    format: FrameFormat,
    next_seq: u64,
}

impl Decoder {
    pub fn new(req: &ProduceRequest) -> Self {
        Decoder {
            key: req.key.clone(),
            partition: req.partition,
            encoding: req.encoding,
            format: req.format,
            next_seq: 1,
        }
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// A record whose value is `value`, verbatim, with the request's defaults.
    fn raw(&mut self, value: Bytes) -> Record {
        Record {
            id: None,
            seq: self.seq(),
            key: self.key.clone(),
            value: Some(value),
            headers: Vec::new(),
            partition: self.partition,
            timestamp: None,
        }
    }

    /// A binary frame: always one record's value.
    pub fn binary(&mut self, frame: Bytes) -> Vec<Decoded> {
        vec![Ok(self.raw(frame))]
    }

    /// `binary`, appending to `out` (no list per frame).
    pub fn binary_into(&mut self, frame: Bytes, out: &mut Vec<Decoded>) {
        out.push(Ok(self.raw(frame)));
    }

    /// `text`, appending to `out`; a plain value costs no list of its own.
    pub fn text_into(&mut self, frame: Bytes, out: &mut Vec<Decoded>) {
        let looks_json = matches!(frame.trim_ascii_start().first(), Some(b'{' | b'['));
        match self.format {
            FrameFormat::Raw => out.push(Ok(self.raw(frame))),
            FrameFormat::Auto if !looks_json => out.push(Ok(self.raw(frame))),
            _ => out.extend(self.text(frame)),
        }
    }

    /// A text frame: JSON records or one raw value, by the rule of the request's `format`.
    pub fn text(&mut self, frame: Bytes) -> Vec<Decoded> {
        let looks_json = matches!(frame.trim_ascii_start().first(), Some(b'{' | b'['));
        match self.format {
            FrameFormat::Raw => vec![Ok(self.raw(frame))],
            FrameFormat::Auto if !looks_json => vec![Ok(self.raw(frame))],
            FrameFormat::Auto | FrameFormat::Json => match self.plain_json(&frame) {
                Some(records) => records,
                None => self.json_frame(&frame),
            },
        }
    }

    /// A JSON text frame, parsed into a `Value` tree: the general path, for any frame.
    fn json_frame(&mut self, frame: &Bytes) -> Vec<Decoded> {
        match serde_json::from_slice::<Value>(frame) {
                Ok(v) => self.json(v),
                Err(e) => vec![Err(self.frame_error(ProtocolError::bad_request(format!(
                    "invalid JSON: {e}; a text frame starting with {{ or [ must be a JSON record or array of records (send plain values with format=raw)"
                ))))],
        }
    }

    /// The fast path for the usual JSON frame: a record or an array of records whose fields are
    /// all valid and simple (string or null key and value, no headers, no duplicate fields).
    /// Parses into borrowed fields, with values sliced out of the frame instead of copied.
    /// `None` for anything else, and the frame then takes the general path, which gives the
    /// same records (and the errors): so this path must agree with it wherever it answers.
    fn plain_json(&mut self, frame: &Bytes) -> Option<Vec<Decoded>> {
        let records: Vec<PlainRecord<'_>> = match frame.trim_ascii_start().first() {
            Some(b'{') => vec![serde_json::from_slice(frame).ok()?],
            Some(b'[') => serde_json::from_slice(frame).ok()?,
            _ => return None,
        };
        if records.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.plain_record(frame, r)?);
        }
        // Numbered only once the whole frame took this path, as the general path numbers them.
        Some(
            out.into_iter()
                .map(|mut r| {
                    r.seq = self.seq();
                    Ok(r)
                })
                .collect(),
        )
    }

    /// One record of `plain_json` (its `seq` is set by the caller); `None` when the general path
    /// must decide.
    fn plain_record(&self, frame: &Bytes, r: PlainRecord<'_>) -> Option<Record> {
        let id = match r.id {
            None => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
            Some(_) => return None,
        };
        if r.headers.is_some() {
            return None;
        }
        let encoding = match r.encoding {
            None => self.encoding,
            Some(e) => parse_encoding(e).ok()?,
        };
        let value = match r.value? {
            None => None,
            Some(v) => Some(plain_bytes(frame, v, encoding)?),
        };
        let key = match r.key {
            None => self.key.clone(),
            Some(None) => None,
            Some(Some(k)) => Some(plain_bytes(frame, k, encoding)?),
        };
        let partition = match r.partition {
            None => self.partition,
            Some(None) => None,
            Some(Some(p)) => Some(i32::try_from(p).ok().filter(|p| *p >= 0)?),
        };
        let timestamp = match r.timestamp {
            None => None,
            Some(t) if t >= 0 => Some(t),
            Some(_) => return None,
        };
        Some(Record {
            id,
            seq: 0,
            key,
            value,
            headers: Vec::new(),
            partition,
            timestamp,
        })
    }

    /// An HTTP body. `raw` bodies (text/plain, application/octet-stream or `format=raw`) are one
    /// value; others must be a JSON record or array. Returns whether the body was a single record.
    /// A body that is not JSON fails as a whole.
    pub fn http_body(
        &mut self,
        body: Bytes,
        raw: bool,
    ) -> Result<(Vec<Decoded>, bool), ProtocolError> {
        if raw || self.format == FrameFormat::Raw {
            return Ok((vec![Ok(self.raw(body))], true));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ProtocolError::bad_request(format!(
                "invalid JSON body: {e}; send a record object, an array of records, or a plain value with Content-Type: text/plain"
            ))
        })?;
        match v {
            Value::Object(_) => Ok((self.json(v), true)),
            Value::Array(ref a) if a.is_empty() => {
                Err(ProtocolError::bad_request("empty record array"))
            }
            Value::Array(_) => Ok((self.json(v), false)),
            _ => Err(ProtocolError::bad_request(
                "the body must be a record object or an array of records",
            )),
        }
    }

    fn frame_error(&mut self, error: ProtocolError) -> RecordError {
        RecordError {
            id: None,
            seq: self.seq(),
            error,
        }
    }

    /// A parsed JSON frame: one record object or an array of them.
    fn json(&mut self, v: Value) -> Vec<Decoded> {
        match v {
            Value::Object(m) => vec![self.record(m)],
            Value::Array(items) if items.is_empty() => vec![Err(
                self.frame_error(ProtocolError::bad_request("empty record array"))
            )],
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::Object(m) => self.record(m),
                    other => Err(self.frame_error(ProtocolError::bad_request(format!(
                        "an array element must be a record object, got {}",
                        kind(&other)
                    )))),
                })
                .collect(),
            other => vec![Err(self.frame_error(ProtocolError::bad_request(format!(
                "a JSON frame must be a record object or an array of records, got {}",
                kind(&other)
            ))))],
        }
    }

    fn record(&mut self, mut m: Map<String, Value>) -> Decoded {
        let seq = self.seq();
        // The id is read first so every later error can name the client's record.
        let id = match m.remove("id") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
            Some(other) => {
                return Err(RecordError {
                    id: None,
                    seq,
                    error: ProtocolError::bad_request(format!(
                        "id must be a string or a number, got {}",
                        kind(&other)
                    )),
                })
            }
        };
        let fail = |error: ProtocolError| RecordError {
            id: id.clone(),
            seq,
            error,
        };
        self.record_fields(m, id.clone(), seq).map_err(fail)
    }

    fn record_fields(
        &self,
        mut m: Map<String, Value>,
        id: Option<Value>,
        seq: u64,
    ) -> Result<Record, ProtocolError> {
        const FIELDS: &str = "id, key, value, headers, partition, timestamp, encoding";
        if let Some(k) = m.keys().find(|k| {
            !matches!(
                k.as_str(),
                "key" | "value" | "headers" | "partition" | "timestamp" | "encoding"
            )
        }) {
            return Err(ProtocolError::bad_request(format!(
                "unknown field {k:?} in record (fields: {FIELDS}); to send a JSON document as the value use {{\"value\": DOC, \"encoding\": \"json\"}} or format=raw"
            )));
        }
        let encoding = match m.remove("encoding") {
            None | Some(Value::Null) => self.encoding,
            Some(Value::String(s)) => parse_encoding(&s)?,
            Some(other) => {
                return Err(ProtocolError::bad_request(format!(
                    "encoding must be a string, got {}",
                    kind(&other)
                )))
            }
        };
        let value = match m.remove("value") {
            Some(v) => decode(v, encoding, "value")?,
            None => {
                return Err(ProtocolError::bad_request(
                    "a record needs a value (null for a tombstone)",
                ))
            }
        };
        let key = match m.remove("key") {
            None => self.key.clone(),
            Some(v) => decode(v, encoding, "key")?,
        };
        let headers = match m.remove("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(hs)) => hs
                .into_iter()
                .map(|h| header_entry(h, encoding))
                .collect::<Result<_, _>>()?,
            Some(Value::Object(hs)) => hs
                .into_iter()
                .map(|(k, v)| Ok((k, decode(v, encoding, "header value")?)))
                .collect::<Result<_, ProtocolError>>()?,
            Some(other) => {
                return Err(ProtocolError::bad_request(format!(
                    "headers must be an array of {{\"key\",\"value\"}} or an object, got {}",
                    kind(&other)
                )))
            }
        };
        let partition = match m.remove("partition") {
            None => self.partition,
            Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| {
                        ProtocolError::bad_request(format!(
                            "partition must be an integer >= 0, got {v}"
                        ))
                    })?,
            ),
        };
        let timestamp = match m.remove("timestamp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().filter(|t| *t >= 0).ok_or_else(|| {
                ProtocolError::bad_request(format!(
                    "timestamp must be milliseconds since the Unix epoch, got {v}"
                ))
            })?),
        };
        Ok(Record {
            id,
            seq,
            key,
            value,
            headers,
            partition,
            timestamp,
        })
    }
}

/// A record as `Decoder::plain_json` reads it. Duplicate or unknown fields, and values of other
/// types, fail to parse, and the frame takes the general path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainRecord<'a> {
    #[serde(default)]
    id: Option<Value>,
    /// Absent, `null`, or a string.
    #[serde(default, borrow, deserialize_with = "present")]
    key: Option<Option<Str<'a>>>,
    /// As `key`; absent is refused by the general path.
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<Option<Str<'a>>>,
    #[serde(default, deserialize_with = "present")]
    partition: Option<Option<i64>>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default, borrow)]
    encoding: Option<&'a str>,
    #[serde(default, borrow)]
    headers: Option<&'a RawValue>,
}

/// Tells an absent field (`None`) from a `null` one (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A JSON string, borrowed from the frame when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The bytes of a key or value string of `plain_json`, as the general path's `decode` makes
/// them; `None` for invalid base64 (the general path words the error).
fn plain_bytes(frame: &Bytes, s: Str<'_>, encoding: Encoding) -> Option<Bytes> {
    match (s.0, encoding) {
        (s, Encoding::Base64) => BASE64.decode(s.as_bytes()).ok().map(Bytes::from),
        (Cow::Borrowed(s), Encoding::Text | Encoding::Json) => Some(slice_of(frame, s)),
        (Cow::Owned(s), Encoding::Text | Encoding::Json) => Some(Bytes::from(s)),
    }
}

/// `s` as a slice of `frame` (no copy) when it lies within it, else a copy.
fn slice_of(frame: &Bytes, s: &str) -> Bytes {
    let start = (s.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
    match start.checked_add(s.len()) {
        Some(end) if start <= frame.len() && end <= frame.len() => frame.slice(start..end),
        _ => Bytes::copy_from_slice(s.as_bytes()),
    }
}

fn header_entry(h: Value, encoding: Encoding) -> Result<(String, Option<Bytes>), ProtocolError> {
    let Value::Object(mut h) = h else {
        return Err(ProtocolError::bad_request(format!(
            "a header must be {{\"key\": NAME, \"value\": VALUE}}, got {}",
            kind(&h)
        )));
    };
    let key = match h.remove("key") {
        Some(Value::String(k)) => k,
        _ => {
            return Err(ProtocolError::bad_request(
                "a header needs a string key: {\"key\": NAME, \"value\": VALUE}",
            ))
        }
    };
    let value = match h.remove("value") {
        Some(v) => decode(v, encoding, "header value")?,
        None => None,
    };
    if let Some(k) = h.keys().next() {
        return Err(ProtocolError::bad_request(format!(
            "unknown field {k:?} in header (fields: key, value)"
        )));
    }
    Ok((key, value))
}

/// Base64 with or without padding: clients differ, and both are unambiguous.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a key, value or header value; `null` is an absent value.
fn decode(v: Value, encoding: Encoding, field: &str) -> Result<Option<Bytes>, ProtocolError> {
    match (v, encoding) {
        (Value::Null, _) => Ok(None),
        (Value::String(s), Encoding::Text | Encoding::Json) => Ok(Some(Bytes::from(s))),
        (Value::String(s), Encoding::Base64) => BASE64
            .decode(s.as_bytes())
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| {
                ProtocolError::bad_request(format!("{field} is not valid base64: {e}"))
            }),
        (other, Encoding::Json) => Ok(Some(Bytes::from(other.to_string()))),
        (other, Encoding::Text) => Err(ProtocolError::bad_request(format!(
            "{field} must be a string or null with encoding text, got {}; use \"encoding\": \"json\" to send JSON documents",
            kind(&other)
        ))),
        (other, Encoding::Base64) => Err(ProtocolError::bad_request(format!(
            "{field} must be a base64 string or null with encoding base64, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `{"type":"ack","id":ID,"partition":P,"offset":N}`.
pub fn ack_frame(id: &Value, partition: i32, offset: i64) -> String {
    let mut s = String::with_capacity(64);
    push_ack_frame(&mut s, id, partition, offset);
    s
}

/// `ack_frame`, appended to `s` (so a buffer can be reused).
pub fn push_ack_frame(s: &mut String, id: &Value, partition: i32, offset: i64) {
    s.push_str("{\"type\":\"ack\",\"id\":");
    push_json(s, id);
    s.push_str(",\"partition\":");
    push_int(s, partition.into());
    s.push_str(",\"offset\":");
    push_int(s, offset);
    s.push('}');
}

/// Appends `v` in decimal without `fmt`: a socket writes up to a million acks a second.
fn push_int(s: &mut String, v: i64) {
    let mut digits = [0u8; 20];
    for &d in super::decimal(v, &mut digits) {
        s.push(char::from(d));
    }
}

/// Records one `acks` frame answers at most, so a frame stays small for any client.
pub const MAX_BATCH_RECORDS: u64 = 1000;

/// Bytes of client ids one `acks` frame carries at most (ids are any JSON string or number).
const MAX_BATCH_ID_BYTES: usize = 64 * 1024;

/// One `acks` frame (`answers=batch`): consecutive records, all stored, answered together.
///
/// `{"type":"acks","first":F,"last":L,"runs":[[P,O,N],...]}` answers the records numbered F to
/// L (sequence numbers, as in `ack` frames without a client id). Each run `[P,O,N]` covers the
/// next N of them, stored in partition P at offsets O, O+1, ..., O+N-1; the runs' N add up to
/// L-F+1. When any of the records gave an `id`, `"ids":[...]` lists each record's id (its own,
/// or its sequence number), in order.
#[derive(Debug, Default)]
pub struct AcksBatch {
    first: u64,
    count: u64,
    /// `(partition, first offset, records)`.
    runs: Vec<(i32, i64, u64)>,
    /// The `ids` array's elements so far, comma-separated; `None` until a record has an id.
    ids: Option<String>,
}

impl AcksBatch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records in the batch (at most `MAX_BATCH_RECORDS`).
    pub fn len(&self) -> u32 {
        // Bounded by `MAX_BATCH_RECORDS` through `is_full`; saturates rather than wraps.
        u32::try_from(self.count).unwrap_or(u32::MAX)
    }

    /// Whether the frame should be sent before another record joins it.
    pub fn is_full(&self) -> bool {
        self.count >= MAX_BATCH_RECORDS
            || self
                .ids
                .as_ref()
                .is_some_and(|s| s.len() >= MAX_BATCH_ID_BYTES)
    }

    /// Adds the next record; `false` (and nothing added) when it does not follow the last one,
    /// so the caller sends this frame first.
    pub fn push(&mut self, seq: u64, id: Option<&Value>, partition: i32, offset: i64) -> bool {
        if self.count == 0 {
            self.first = seq;
        } else if seq != self.first + self.count {
            return false;
        }
        match id {
            Some(id) => {
                let ids = self.ids.get_or_insert_with(|| {
                    // Records before the first id are named by their sequence numbers.
                    let mut s = String::new();
                    for k in 0..self.count {
                        let _ = write!(s, "{},", self.first + k);
                    }
                    s
                });
                push_json(ids, id);
                ids.push(',');
            }
            None => {
                if let Some(ids) = &mut self.ids {
                    let _ = write!(ids, "{seq},");
                }
            }
        }
        match self.runs.last_mut() {
            Some((p, o, n)) if *p == partition && o.checked_add(*n as i64) == Some(offset) => {
                *n += 1
            }
            _ => self.runs.push((partition, offset, 1)),
        }
        self.count += 1;
        true
    }

    /// Appends the frame to `s` and empties the batch; nothing when it is empty.
    pub fn take_frame(&mut self, s: &mut String) {
        if self.count == 0 {
            return;
        }
        let _ = write!(
            s,
            "{{\"type\":\"acks\",\"first\":{},\"last\":{},\"runs\":[",
            self.first,
            self.first + self.count - 1
        );
        for (i, (p, o, n)) in self.runs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            push_int(s, (*p).into());
            s.push(',');
            push_int(s, *o);
            s.push(',');
            push_int(s, i64::try_from(*n).unwrap_or(i64::MAX));
            s.push(']');
        }
        s.push(']');
        if let Some(ids) = self.ids.take() {
            s.push_str(",\"ids\":[");
            s.push_str(ids.strip_suffix(',').unwrap_or(&ids));
            s.push(']');
        }
        s.push('}');
        self.runs.clear();
        self.count = 0;
    }
}

/// `{"type":"error","id":ID,"code":"...","message":"..."}`.
pub fn error_frame(id: &Value, error: &ProtocolError) -> String {
    error.frame_with_id(Some(id))
}

fn push_json(s: &mut String, v: &Value) {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => push_int(s, i),
            None => {
                let _ = write!(s, "{n}");
            }
        },
        other => s.push_str(&serde_json::to_string(other).unwrap_or_else(|_| "null".into())),
    }
}

/// One record's result in an HTTP answer: `{"id"?,"partition","offset"}` or `{"id"?,"error"}`.
#[derive(Debug, Serialize)]
pub struct HttpResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<HttpErrorBody<'a>>,
}

#[derive(Debug, Serialize)]
pub struct HttpErrorBody<'a> {
    pub code: &'static str,
    pub message: &'a str,
}

pub fn http_result<'a>(
    id: Option<&'a Value>,
    outcome: &'a Result<(i32, i64), ProtocolError>,
) -> HttpResult<'a> {
    match outcome {
        Ok((p, o)) => HttpResult {
            id,
            partition: Some(*p),
            offset: Some(*o),
            error: None,
        },
        Err(e) => HttpResult {
            id,
            partition: None,
            offset: None,
            error: Some(HttpErrorBody {
                code: e.code.name(),
                message: &e.message,
            }),
        },
    }
}

/// The HTTP status of a batch: 200 when every record was stored, 207 when any failed.
pub fn http_batch_status(outcomes: &[Result<(i32, i64), ProtocolError>]) -> u16 {
    if outcomes.iter().all(Result::is_ok) {
        200
    } else {
        207
    }
}

/// The error for a record naming a partition the topic does not have.
pub fn unknown_partition(topic: &str, partition: i32, count: usize) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UnknownPartition,
        format!("partition {partition} does not exist in topic {topic:?} ({count} partitions)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::query as q;

    fn dec(pairs: &[(&str, &str)]) -> Decoder {
        let mut all = vec![("topic", "t")];
        all.extend_from_slice(pairs);
        Decoder::new(&parse_ws(&q(&all)).unwrap())
    }

    fn text(d: &mut Decoder, s: &str) -> Vec<Decoded> {
        d.text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn one(d: &mut Decoder, s: &str) -> Record {
        let mut v = text(d, s);
        assert_eq!(v.len(), 1);
        v.remove(0).unwrap()
    }

    fn err(d: &mut Decoder, s: &str) -> RecordError {
        let mut v = text(d, s);
        assert_eq!(v.len(), 1);
        v.remove(0).unwrap_err()
    }

    #[test]
    fn appending_decodes_like_text() {
        let frames = [
            "plain",
            " {\"value\":\"a\",\"id\":7}",
            "[{\"value\":\"b\"},{\"value\":\"c\"}]",
            "{not json",
            "[1]",
        ];
        for format in [&[][..], &[("format", "raw")][..], &[("format", "json")][..]] {
            let (mut a, mut b) = (dec(format), dec(format));
            let mut appended = Vec::new();
            let mut listed = Vec::new();
            for f in frames {
                a.text_into(Bytes::copy_from_slice(f.as_bytes()), &mut appended);
                listed.extend(text(&mut b, f));
            }
            a.binary_into(Bytes::from_static(b"\x00bin"), &mut appended);
            listed.extend(b.binary(Bytes::from_static(b"\x00bin")));
            assert_eq!(appended, listed, "{format:?}");
        }
    }

    #[test]
    fn params() {
        let r = parse_ws(&q(&[("topic", "t"), ("key", "k"), ("partition", "2")])).unwrap();
        assert_eq!(r.topic, "t");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.format, FrameFormat::Auto);
        assert_eq!(r.encoding, Encoding::Text);
        assert!(parse_ws(&q(&[])).is_err());
        assert!(parse_ws(&q(&[("topic", "a b")])).is_err());
        assert!(parse_ws(&q(&[("topic", "t"), ("partition", "-1")])).is_err());
        assert!(parse_ws(&q(&[("topic", "t"), ("partition", "x")])).is_err());
        assert!(parse_ws(&q(&[("topic", "t"), ("encoding", "hex")])).is_err());
        assert!(parse_ws(&q(&[("topic", "t"), ("format", "xml")])).is_err());
        let e = parse_ws(&q(&[("topic", "t"), ("grup", "g")])).unwrap_err();
        assert!(e.message.contains("grup"), "{e}");
        assert!(parse_http("t", &q(&[("topic", "t")])).is_err());
        assert_eq!(r.answers, Answers::Each);
        let batch = parse_ws(&q(&[("topic", "t"), ("answers", "batch")])).unwrap();
        assert_eq!(batch.answers, Answers::Batch);
        let e = parse_ws(&q(&[("topic", "t"), ("answers", "all")])).unwrap_err();
        assert!(e.message.contains("each or batch"), "{e}");
        // HTTP answers a request in one body; the parameter is the socket's only.
        assert!(parse_http("t", &q(&[("answers", "batch")])).is_err());
        assert_eq!(r.window, DEFAULT_WINDOW);
        let w = parse_ws(&q(&[("topic", "t"), ("window", "50000")])).unwrap();
        assert_eq!(w.window, 50_000);
        for bad in ["0", "100001", "-1", "many"] {
            let e = parse_ws(&q(&[("topic", "t"), ("window", bad)])).unwrap_err();
            assert!(e.message.contains("window"), "{bad}: {e}");
        }
        assert!(parse_http("t", &q(&[("window", "10")])).is_err());
        assert_eq!(
            parse_http("t", &q(&[("format", "raw")])).unwrap().format,
            FrameFormat::Raw
        );
    }

    #[test]
    fn plain_lines_are_values_with_sequence_numbers() {
        let mut d = dec(&[("key", "k"), ("partition", "1")]);
        let a = one(&mut d, "hello");
        let b = one(&mut d, "");
        let c = d
            .binary(Bytes::from_static(&[0, 159, 255]))
            .remove(0)
            .unwrap();
        assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
        assert_eq!(a.value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(b.value.as_deref(), Some(&b""[..]));
        assert_eq!(c.value.as_deref(), Some(&[0u8, 159, 255][..]));
        assert_eq!(a.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(a.partition, Some(1));
        assert_eq!(a.ack_id(), Value::from(1));
        // Binary frames are values even when they look like JSON.
        let j = d
            .binary(Bytes::from_static(b"{\"value\":1}"))
            .remove(0)
            .unwrap();
        assert_eq!(j.value.as_deref(), Some(&b"{\"value\":1}"[..]));
    }

    #[test]
    fn json_record_full() {
        let mut d = dec(&[("key", "default")]);
        let r = one(
            &mut d,
            r#" {"id":"a-1","key":"k","value":"v","headers":[{"key":"h","value":"x"},{"key":"n","value":null}],"partition":3,"timestamp":1700000000000}"#,
        );
        assert_eq!(r.id, Some(Value::from("a-1")));
        assert_eq!(r.ack_id(), Value::from("a-1"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            r.headers,
            vec![
                ("h".to_string(), Some(Bytes::from_static(b"x"))),
                ("n".to_string(), None)
            ]
        );
        assert_eq!(r.partition, Some(3));
        assert_eq!(r.timestamp, Some(1_700_000_000_000));
        // Defaults apply when fields are absent; null key overrides the default.
        let r = one(&mut d, r#"{"value":null}"#);
        assert_eq!(r.key.as_deref(), Some(&b"default"[..]));
        assert_eq!(r.value, None);
        assert_eq!(r.seq, 2);
        let r = one(&mut d, r#"{"value":"x","key":null,"headers":{"a":"1"}}"#);
        assert_eq!(r.key, None);
        assert_eq!(
            r.headers,
            vec![("a".to_string(), Some(Bytes::from_static(b"1")))]
        );
    }

    #[test]
    fn encodings() {
        let mut d = dec(&[]);
        let r = one(&mut d, r#"{"value":"AJ//","key":"aw","encoding":"base64"}"#);
        assert_eq!(r.value.as_deref(), Some(&[0u8, 159, 255][..]));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        let r = one(&mut d, r#"{"value":{"a":[1,2]},"encoding":"json"}"#);
        assert_eq!(r.value.as_deref(), Some(&br#"{"a":[1,2]}"#[..]));
        let r = one(&mut d, r#"{"value":"plain","encoding":"json"}"#);
        assert_eq!(r.value.as_deref(), Some(&b"plain"[..]));
        let mut d = dec(&[("encoding", "json")]);
        let r = one(&mut d, r#"{"value":42}"#);
        assert_eq!(r.value.as_deref(), Some(&b"42"[..]));
        let mut d = dec(&[("encoding", "base64")]);
        let r = one(
            &mut d,
            r#"{"value":"aGk=","headers":[{"key":"h","value":"aGk"}]}"#,
        );
        assert_eq!(r.value.as_deref(), Some(&b"hi"[..]));
        assert_eq!(r.headers[0].1.as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn arrays_get_one_answer_per_element() {
        let mut d = dec(&[]);
        let v = text(
            &mut d,
            r#"[{"id":7,"value":"a"},{"id":8,"value":1},5,{"value":"c"}]"#,
        );
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].as_ref().unwrap().ack_id(), Value::from(7));
        let e = v[1].as_ref().unwrap_err();
        assert_eq!(e.ack_id(), Value::from(8));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert_eq!(v[2].as_ref().unwrap_err().ack_id(), Value::from(3));
        assert_eq!(v[3].as_ref().unwrap().seq, 4);
        assert_eq!(err(&mut d, "[]").seq, 5);
    }

    #[test]
    fn bad_input_is_a_record_error() {
        let mut d = dec(&[]);
        for bad in [
            "{\"value\":",
            "[1,",
            r#"{"valeu":"x"}"#,
            r#"{"key":"k"}"#,
            r#"{"value":"%%%","encoding":"base64"}"#,
            r#"{"value":"x","encoding":"hex"}"#,
            r#"{"value":{"a":1}}"#,
            r#"{"value":"x","partition":-1}"#,
            r#"{"value":"x","partition":"1"}"#,
            r#"{"value":"x","headers":"h"}"#,
            r#"{"value":"x","headers":[{"value":"x"}]}"#,
            r#"{"value":"x","timestamp":"now"}"#,
            r#"{"id":{},"value":"x"}"#,
            "[INFO] a log line",
        ] {
            let e = err(&mut d, bad);
            assert_eq!(e.error.code, ErrorCode::BadRequest, "{bad}");
        }
        // The client's id is named in the error when it could be read.
        let e = err(&mut d, r#"{"id":"x1","value":"%%","encoding":"base64"}"#);
        assert_eq!(e.ack_id(), Value::from("x1"));
        assert!(e.error.message.contains("base64"), "{}", e.error.message);
    }

    #[test]
    fn formats() {
        let mut d = dec(&[("format", "raw")]);
        let r = one(&mut d, r#"{"value":"x"}"#);
        assert_eq!(r.value.as_deref(), Some(&br#"{"value":"x"}"#[..]));
        let mut d = dec(&[("format", "json")]);
        assert_eq!(err(&mut d, "plain").error.code, ErrorCode::BadRequest);
        assert!(one(&mut d, r#"{"value":"x"}"#).value.is_some());
    }

    #[test]
    fn http_bodies() {
        let req = parse_http("t", &q(&[])).unwrap();
        let mut d = Decoder::new(&req);
        let (v, single) = d
            .http_body(Bytes::from_static(b"{\"value\":\"x\"}"), false)
            .unwrap();
        assert!(single);
        assert_eq!(v.len(), 1);
        let (v, single) = d
            .http_body(
                Bytes::from_static(b"[{\"value\":\"x\"},{\"value\":\"y\"}]"),
                false,
            )
            .unwrap();
        assert!(!single);
        assert_eq!(v.len(), 2);
        let (v, _) = d.http_body(Bytes::from_static(b"not json"), true).unwrap();
        assert_eq!(
            v[0].as_ref().unwrap().value.as_deref(),
            Some(&b"not json"[..])
        );
        assert!(d.http_body(Bytes::from_static(b"not json"), false).is_err());
        assert!(d.http_body(Bytes::from_static(b"[]"), false).is_err());
        assert!(d.http_body(Bytes::from_static(b"3"), false).is_err());
    }

    #[test]
    fn ack_shapes() {
        assert_eq!(
            ack_frame(&Value::from(3), 1, 42),
            r#"{"type":"ack","id":3,"partition":1,"offset":42}"#
        );
        assert_eq!(
            ack_frame(&Value::from(u64::MAX), -1, i64::MIN),
            format!(
                r#"{{"type":"ack","id":{},"partition":-1,"offset":{}}}"#,
                u64::MAX,
                i64::MIN
            )
        );
        assert_eq!(
            ack_frame(&Value::from(-2.5), 7, i64::MAX),
            format!(
                r#"{{"type":"ack","id":-2.5,"partition":7,"offset":{}}}"#,
                i64::MAX
            )
        );
        assert_eq!(
            ack_frame(&Value::from("a\"b"), 0, 0),
            r#"{"type":"ack","id":"a\"b","partition":0,"offset":0}"#
        );
        let e = ProtocolError::new(ErrorCode::TooLarge, "big");
        assert_eq!(
            error_frame(&Value::from(2), &e),
            r#"{"type":"error","id":2,"code":"too_large","message":"big"}"#
        );
        let s = |r: &HttpResult<'_>| serde_json::to_string(r).unwrap();
        assert_eq!(
            s(&http_result(None, &Ok((1, 5)))),
            r#"{"partition":1,"offset":5}"#
        );
        let failed = Err(e.clone());
        assert_eq!(
            s(&http_result(Some(&Value::from("x")), &failed)),
            r#"{"id":"x","error":{"code":"too_large","message":"big"}}"#
        );
        assert_eq!(http_batch_status(&[Ok((0, 1))]), 200);
        assert_eq!(http_batch_status(&[Ok((0, 1)), Err(e)]), 207);
    }

    #[test]
    fn acks_batches() {
        let frame = |b: &mut AcksBatch| {
            let mut s = String::new();
            b.take_frame(&mut s);
            s
        };
        let mut b = AcksBatch::default();
        assert!(b.is_empty());
        assert_eq!(frame(&mut b), "", "an empty batch is no frame");
        // Consecutive offsets of one partition make one run; a gap or another partition a new one.
        for (seq, p, o) in [(5, 0, 40), (6, 0, 41), (7, 0, 42), (8, 1, 7), (9, 0, 50)] {
            assert!(b.push(seq, None, p, o));
        }
        assert!(
            !b.push(11, None, 0, 51),
            "a record that does not follow is refused"
        );
        let f = frame(&mut b);
        assert_eq!(
            f,
            r#"{"type":"acks","first":5,"last":9,"runs":[[0,40,3],[1,7,1],[0,50,1]]}"#
        );
        assert!(serde_json::from_str::<Value>(&f).is_ok());
        assert!(b.is_empty());
        // Once a record has an id, every record gets one: its own or its sequence number.
        assert!(b.push(10, None, 0, 51));
        assert!(b.push(11, Some(&Value::from("a\"b")), 0, 52));
        assert!(b.push(12, None, 0, 53));
        assert!(b.push(13, Some(&Value::from(7)), 2, 0));
        let f = frame(&mut b);
        assert_eq!(
            f,
            r#"{"type":"acks","first":10,"last":13,"runs":[[0,51,3],[2,0,1]],"ids":[10,"a\"b",12,7]}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&f).unwrap()["ids"][1], "a\"b");
        // The next frame starts afresh, without ids.
        assert!(b.push(14, None, 0, 54));
        assert_eq!(
            frame(&mut b),
            r#"{"type":"acks","first":14,"last":14,"runs":[[0,54,1]]}"#
        );
        for seq in 1..=MAX_BATCH_RECORDS {
            assert!(!b.is_full());
            assert!(b.push(seq, None, 0, seq as i64));
        }
        assert!(b.is_full());
    }

    /// The fast path for plain JSON records must decode exactly as the general path wherever
    /// it answers: same records, same numbering, same errors (by leaving those frames alone).
    #[test]
    fn plain_json_agrees_with_the_general_path() {
        let fields: &[&[&str]] = &[
            &[
                r#""id":7"#,
                r#""id":"a\"b""#,
                r#""id":null"#,
                r#""id":1.5"#,
                r#""id":[1]"#,
            ],
            &[
                r#""key":"k""#,
                r#""key":null"#,
                r#""key":"\u00e9\n""#,
                r#""key":"AP8=""#,
                r#""key":3"#,
            ],
            &[
                r#""value":"v""#,
                r#""value":null"#,
                r#""value":"caf\u00e9 \"q\"""#,
                r#""value":"aGk""#,
                r#""value":{"a":1}"#,
                r#""value":"%%""#,
                r#""value":"""#,
            ],
            &[
                r#""partition":1"#,
                r#""partition":null"#,
                r#""partition":-1"#,
                r#""partition":1.0"#,
                r#""partition":3000000000"#,
            ],
            &[
                r#""timestamp":1700000000000"#,
                r#""timestamp":null"#,
                r#""timestamp":-5"#,
            ],
            &[
                r#""encoding":"text""#,
                r#""encoding":"json""#,
                r#""encoding":"base64""#,
                r#""encoding":"hex""#,
                r#""encoding":null"#,
            ],
            &[
                r#""headers":null"#,
                r#""headers":{"h":"x"}"#,
                r#""headers":[]"#,
            ],
            &[r#""valeu":"x""#, r#""value":"again""#],
        ];
        // A fixed xorshift sequence: the same cases every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut frames = vec![
            r#"{"value":"x"}"#.to_string(),
            r#"[{"value":"a"},{"value":"b","key":"k"}]"#.to_string(),
            r#" [ {"value":"a"} , {"value":null} ] "#.to_string(),
            "[]".to_string(),
            "[1]".to_string(),
            r#"[{"value":"a"},2]"#.to_string(),
            r#"{"value":"x"} trailing"#.to_string(),
            r#"{"key":"k"}"#.to_string(),
            "{".to_string(),
        ];
        for _ in 0..4000 {
            let mut record = Vec::new();
            for (i, group) in fields.iter().enumerate() {
                // Each field is left out now and then, the last (bad) group mostly; two times
                // in three it takes one of its first (valid) choices.
                let leave_out = if i == fields.len() - 1 {
                    next(8) > 0
                } else {
                    next(5) == 0
                };
                if !leave_out {
                    let choices = if next(3) > 0 {
                        group.len().min(3)
                    } else {
                        group.len()
                    };
                    record.push(group[next(choices)]);
                }
            }
            let record = format!("{{{}}}", record.join(","));
            frames.push(if next(2) == 0 {
                record
            } else {
                format!("[{record},{{\"value\":\"tail\"}}]")
            });
        }
        let mut fast = 0;
        for params in [
            &[][..],
            &[("encoding", "json")][..],
            &[("encoding", "base64")][..],
            &[("key", "dk"), ("partition", "2")][..],
            &[("format", "json")][..],
        ] {
            for f in &frames {
                let frame = Bytes::from(f.clone());
                let mut a = dec(params);
                let mut b = dec(params);
                // Numbering continues across frames: start both past a first record.
                a.text(Bytes::from_static(b"first"));
                b.text(Bytes::from_static(b"first"));
                let general = b.json_frame(&frame);
                if let Some(plain) = a.plain_json(&frame) {
                    fast += 1;
                    assert_eq!(plain, general, "{f} with {params:?}");
                    assert_eq!(a.next_seq, b.next_seq, "{f}");
                }
                // Whichever path a frame takes, the decoder's answer is the general path's.
                let mut c = dec(params);
                c.text(Bytes::from_static(b"first"));
                assert_eq!(c.text(frame), general, "{f} with {params:?}");
            }
        }
        assert!(fast > 1000, "the fast path took only {fast} frames");
        // Values are sliced out of the frame, not copied.
        let frame = Bytes::from_static(br#"{"value":"sliced"}"#);
        let r = dec(&[]).plain_json(&frame).unwrap().remove(0).unwrap();
        let v = r.value.unwrap();
        assert_eq!(v, &b"sliced"[..]);
        assert!(frame.as_ptr_range().contains(&v.as_ptr()));
    }
}
