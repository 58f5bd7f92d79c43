//! Consume side of the wire protocol: socket parameters, record frames and client control frames.

use std::collections::HashMap;
use std::io::Write;

use serde::Deserialize;

use super::json::{write_bytes, write_int, write_str};
use super::sse::{write_record_event, Positions};
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
    /// Server-Sent Events: one event per record, its data a v1 record (`protocol::sse`).
    Sse(Encoding),
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
/// Most topics one consume request may name: each is looked up in Kafka before reading starts.
pub const MAX_TOPICS: usize = 100;
/// Most partitions one consume request may list in `partition` or `offset=P:N,...`.
pub const MAX_PARTITIONS: usize = 1000;

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

/// `list` when its comma-separated entries are at most `MAX_PARTITIONS`.
fn within_partition_limit<'a>(name: &str, list: &'a str) -> Result<&'a str, ProtocolError> {
    let n = list.split(',').count();
    if n > MAX_PARTITIONS {
        return Err(ProtocolError::bad_request(format!(
            "{name} lists {n} partitions; at most {MAX_PARTITIONS} per request"
        )));
    }
    Ok(list)
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
    // Refused before the upgrade: every topic costs a metadata look-up after it.
    if topics.len() > MAX_TOPICS {
        return Err(ProtocolError::bad_request(format!(
            "topic names {} topics; at most {MAX_TOPICS} per request",
            topics.len()
        )));
    }
    for t in &topics {
        validate_topic(t)?;
    }
    if (1..topics.len()).any(|i| topics[..i].contains(&topics[i])) {
        return Err(ProtocolError::bad_request("topic lists a topic twice"));
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
            within_partition_limit("partition", p)?
                .split(',')
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
            for pair in within_partition_limit("offset", o)?.split(',') {
                let (p, off) = pair.split_once(':').ok_or_else(|| {
                    ProtocolError::bad_request("offset takes N or PARTITION:OFFSET,...")
                })?;
                per.push((parse_partition(p)?, parse_offset(off)?));
            }
            // Two offsets for one partition: only one could be used, so the request is refused.
            let mut named: Vec<i32> = per.iter().map(|(p, _)| *p).collect();
            named.sort_unstable();
            named.dedup();
            if named.len() != per.len() {
                return Err(ProtocolError::bad_request("offset names a partition twice"));
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
    /// The stream position written as each SSE record event's id (`Format::Sse` only).
    positions: Option<Positions>,
}

impl BatchWriter {
    pub fn new(format: Format) -> Self {
        BatchWriter {
            format,
            buf: Vec::with_capacity(16 * 1024),
            count: 0,
            positions: None,
        }
    }

    /// A writer whose SSE record events carry `positions` as their id, updated per record.
    pub fn with_positions(format: Format, positions: Positions) -> Self {
        BatchWriter {
            positions: Some(positions),
            ..BatchWriter::new(format)
        }
    }

    /// The stream position, for a writer made `with_positions`.
    pub fn positions_mut(&mut self) -> Option<&mut Positions> {
        self.positions.as_mut()
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
                Format::Sse(_) => {}
            }
        } else if !matches!(self.format, Format::Sse(_)) {
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
            Format::V1(enc) => write_record(&mut self.buf, r, enc),
            Format::Sse(enc) => write_record_event(&mut self.buf, self.positions.as_mut(), r, enc),
        }
    }

    /// Closes the frame and hands it out; the writer is ready for the next batch.
    pub fn finish(&mut self) -> String {
        match self.format {
            Format::Seed => self.buf.push(b']'),
            Format::V1(_) => self.buf.extend_from_slice(b"]}"),
            Format::Sse(_) => {}
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

/// Appends one record as v1 frames show it: `{"topic","partition","offset","timestamp","key",
/// "headers","value"}`.
pub(crate) fn write_record(buf: &mut Vec<u8>, r: &RecordView<'_>, enc: Encoding) {
    buf.extend_from_slice(b"{\"topic\":");
    write_str(buf, r.topic);
    buf.extend_from_slice(b",\"partition\":");
    write_int(buf, i64::from(r.partition));
    buf.extend_from_slice(b",\"offset\":");
    write_int(buf, r.offset);
    buf.extend_from_slice(b",\"timestamp\":");
    match r.timestamp {
        Some(ts) => write_int(buf, ts),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"key\":");
    write_bytes(buf, r.key, enc);
    buf.extend_from_slice(b",\"headers\":[");
    for (i, (k, v)) in r.headers.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"key\":");
        write_str(buf, k);
        buf.extend_from_slice(b",\"value\":");
        write_bytes(buf, *v, enc);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"],\"value\":");
    write_bytes(buf, r.value, enc);
    buf.push(b'}');
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
    fn v1_bounds_topics_and_partitions() {
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let nums = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let pairs = |n: usize| {
            (0..n)
                .map(|i| format!("{i}:0"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let ok = names(MAX_TOPICS);
        assert_eq!(
            parse_v1(&q(&[("topic", &ok), ("group", "g")]))
                .unwrap()
                .topics
                .len(),
            MAX_TOPICS
        );
        let many = names(MAX_TOPICS + 1);
        let e = parse_v1(&q(&[("topic", &many), ("group", "g")])).unwrap_err();
        assert!(e.message.contains("at most 100"), "{}", e.message);
        assert!(parse_v1(&q(&[("topic", "a,b,a"), ("group", "g")])).is_err());

        let ok = nums(MAX_PARTITIONS);
        let r = parse_v1(&q(&[
            ("topic", "a"),
            ("partition", &ok),
            ("from", "earliest"),
        ]))
        .unwrap();
        assert_eq!(
            r.assignment,
            Assignment::Partitions((0..MAX_PARTITIONS as i32).collect())
        );
        let many = nums(MAX_PARTITIONS + 1);
        let e = parse_v1(&q(&[
            ("topic", "a"),
            ("partition", &many),
            ("from", "earliest"),
        ]))
        .unwrap_err();
        assert!(e.message.contains("at most 1000"), "{}", e.message);
        let many = pairs(MAX_PARTITIONS + 1);
        let e = parse_v1(&q(&[("topic", "a"), ("group", "g"), ("offset", &many)])).unwrap_err();
        assert!(e.message.starts_with("offset lists 1001"), "{}", e.message);
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
