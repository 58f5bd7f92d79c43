//! Decoding produce frames and HTTP bodies into records: raw values, one JSON record, or an
//! array of them, numbered per socket.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::Bytes;
use serde::de::Visitor;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::super::consume::{parse_encoding, Encoding};
use super::super::{ErrorCode, ProtocolError};
use super::bounded::{parse_bounded, Bounded, Parsed};
use super::{Decoded, FrameFormat, ProduceRequest, Record, RecordError, MAX_FRAME_RECORDS};

/// Turns frames into records, numbering them per socket.
#[derive(Debug, Clone)]
pub struct Decoder {
    key: Option<Bytes>,
    partition: Option<i32>,
    encoding: Encoding,
    format: FrameFormat,
    pub(super) next_seq: u64,
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
    pub(super) fn json_frame(&mut self, frame: &Bytes) -> Vec<Decoded> {
        match parse_bounded(frame) {
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
    pub(super) fn plain_json(&mut self, frame: &Bytes) -> Option<Vec<Decoded>> {
        let records: Vec<PlainRecord<'_>> = match frame.trim_ascii_start().first() {
            Some(b'{') => vec![serde_json::from_slice(frame).ok()?],
            // Over the limit the general path words the error.
            Some(b'[') => serde_json::from_slice::<Bounded<_>>(frame).ok()?.0,
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
        let v = parse_bounded(&body).map_err(|e| {
            ProtocolError::bad_request(format!(
                "invalid JSON body: {e}; send a record object, an array of records, or a plain value with Content-Type: text/plain"
            ))
        })?;
        match v {
            Parsed::Object(_) => Ok((self.json(v), true)),
            Parsed::Array(ref a) if a.is_empty() => {
                Err(ProtocolError::bad_request("empty record array"))
            }
            Parsed::Array(_) => Ok((self.json(v), false)),
            Parsed::TooMany => Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "a request holds at most {MAX_FRAME_RECORDS} records; send them in several requests"
                ),
            )),
            Parsed::Other(_) => Err(ProtocolError::bad_request(
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
    fn json(&mut self, v: Parsed) -> Vec<Decoded> {
        match v {
            Parsed::Object(m) => vec![self.record(m)],
            Parsed::Array(items) if items.is_empty() => vec![Err(
                self.frame_error(ProtocolError::bad_request("empty record array"))
            )],
            Parsed::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::Object(m) => self.record(m),
                    other => Err(self.frame_error(ProtocolError::bad_request(format!(
                        "an array element must be a record object, got {}",
                        kind(&other)
                    )))),
                })
                .collect(),
            Parsed::TooMany => vec![Err(self.frame_error(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("a frame holds at most {MAX_FRAME_RECORDS} records; send them in several frames"),
            )))],
            Parsed::Other(kind) => vec![Err(self.frame_error(ProtocolError::bad_request(format!(
                "a JSON frame must be a record object or an array of records, got {kind}"
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
