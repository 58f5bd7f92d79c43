//! Produce side of the wire protocol: endpoint parameters and records (here), decoding frames
//! into records (`decode`; `bounded` caps a frame's records), and the answers (`answer`). Pure:
//! the socket loop is `flow::produce`. The contract is docs/PROTOCOL.md ("Produce").

mod answer;
mod bounded;
mod decode;

pub use answer::*;
pub use decode::*;

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

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

/// Records one WebSocket frame, or one HTTP request, may hold (the elements of a JSON array).
/// Every record gets an answer held until it is written, so without this a 1 MiB frame of
/// `[0,0,...]` would become half a million error answers. A frame with more is refused whole
/// with one `too_large` answer (it counts as one record, like a frame that is not JSON), a request
/// with `413 too_large`; nothing of either is produced. 1000 keeps arrays large enough that the
/// per-frame cost vanishes (the benchmark sends 100 per frame) and a batch's HTTP answer small.
pub const MAX_FRAME_RECORDS: usize = 1000;

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
    fn a_frame_or_body_holds_at_most_max_frame_records() {
        let array = |n: usize, elem: &str| format!("[{}]", vec![elem; n].join(","));
        let mut d = dec(&[]);
        let v = text(&mut d, &array(MAX_FRAME_RECORDS, r#"{"value":"v"}"#));
        assert_eq!(v.len(), MAX_FRAME_RECORDS);
        assert!(v.iter().all(Result::is_ok));
        // One over: the whole frame is one error, numbered as one record.
        for elem in [r#"{"value":"v"}"#, "0", r#"{"value":1}"#] {
            let next = d.next_seq;
            let e = err(&mut d, &array(MAX_FRAME_RECORDS + 1, elem));
            assert_eq!(e.error.code, ErrorCode::TooLarge, "{elem}");
            assert!(e.error.message.contains("1000"), "{}", e.error.message);
            assert_eq!(e.seq, next);
        }
        // Half a million elements in a 1 MiB frame: one answer, nothing kept.
        let e = err(&mut d, &array(500_000, "0"));
        assert_eq!(e.error.code, ErrorCode::TooLarge);
        // Reading stops at the element over the limit, whatever follows it.
        let e = err(&mut d, &format!("{},", &array(MAX_FRAME_RECORDS + 1, "0")));
        assert_eq!(e.error.code, ErrorCode::TooLarge);
        let e = err(&mut d, &format!("{},", &array(MAX_FRAME_RECORDS, "0")));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        // The fast path leaves a long array to the general path.
        let long = Bytes::from(array(MAX_FRAME_RECORDS + 1, r#"{"value":"v"}"#));
        assert!(d.plain_json(&long).is_none());
        let mut h = Decoder::new(&parse_http("t", &q(&[])).unwrap());
        let e = h.http_body(long, false).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert!(e.message.contains("request"), "{}", e.message);
        let (v, _) = h
            .http_body(Bytes::from(array(MAX_FRAME_RECORDS, "{}")), false)
            .unwrap();
        assert_eq!(v.len(), MAX_FRAME_RECORDS);
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
