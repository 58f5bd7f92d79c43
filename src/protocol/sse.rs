//! Server-Sent Events side of the wire protocol: `/v1/sse` parameters, the event framing, and
//! the stream position every record event carries in its `id` (docs/PROTOCOL.md, "Server-Sent
//! Events").
//!
//! An id is self-contained: a browser's `EventSource` sends the last one back as `Last-Event-ID`
//! when it reconnects, possibly to another proxy process, so it must hold every position the
//! stream needs to continue: per partition, the offset of the next record to send.

use std::collections::HashMap;
use std::io::Write;

use super::consume::{
    parse_v1, write_record, Assignment, CommitMode, ConsumeRequest, Encoding, Format, RecordView,
    StartAt, DEFAULT_WINDOW,
};
use super::json::write_int;
use super::tail::parse_tail;
use super::{ErrorCode, ProtocolError};

/// Milliseconds a browser waits before reconnecting, sent as `retry:` when a stream starts.
pub const RETRY_MS: u64 = 2000;

/// Milliseconds a browser is told to wait before reconnecting after an operator closed its
/// stream (`closed_by_admin`). An `EventSource` reconnects by itself, with no page code involved,
/// so with `RETRY_MS` an unattended tab would undo the close within 2 s; five minutes make the
/// close stick for a while without leaving a forgotten page dead for good.
pub const CLOSED_RETRY_MS: u64 = 300_000;

/// Most partitions one stream may read: its ids name each of them, so this bounds their length.
pub const MAX_STREAM_PARTITIONS: usize = 256;

/// Longest `Last-Event-ID` (or `lastEventId`) accepted. Ids the proxy writes stay below it:
/// 11 bytes of prefix, and per partition at most 34 (`;`, a two-digit topic index, `:`, a
/// 10-digit partition, `=`, a 19-digit offset), 256 partitions: 8715 bytes. Real ids are far
/// shorter (about 4 + the offset's digits per partition).
pub const MAX_ID_BYTES: usize = 9216;

/// The query parameter that stands in for the `Last-Event-ID` header (EventSource polyfills).
pub const LAST_EVENT_ID_PARAM: &str = "lastEventId";

/// The query parameter that asks for the live tail.
pub const LIVE_PARAM: &str = "live";

/// Version tag at the start of every id.
const ID_VERSION: &str = "1";

/// The comment sent every `pingInterval` while a stream has nothing else to send.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// A validated `/v1/sse` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseRequest {
    /// A consume stream with `/v1/consume`'s parameters. `resume` holds the positions of a
    /// `Last-Event-ID` (topic, partition, next offset); empty for a fresh stream. `live` marks a
    /// live stream resumed this way (it needs the `tail` permission, not `consume`).
    Consume {
        req: ConsumeRequest,
        resume: Vec<(String, i32, i64)>,
        live: bool,
    },
    /// `live` without a position: the topic's shared live tail.
    Live { topic: String, encoding: Encoding },
}

/// Parses `/v1/sse` parameters. `header_id` is the `Last-Event-ID` header; it wins over the
/// `lastEventId` parameter. An empty id is no id (what a stream that sent none yet leaves).
pub fn parse_sse(
    q: &HashMap<String, String>,
    header_id: Option<&str>,
) -> Result<SseRequest, ProtocolError> {
    let mut q = q.clone();
    let param_id = q.remove(LAST_EVENT_ID_PARAM);
    let id = header_id
        .or(param_id.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let live = match q.remove(LIVE_PARAM).as_deref() {
        None => false,
        Some("" | "true" | "1") => true,
        Some(other) => {
            return Err(ProtocolError::bad_request(format!(
                "live takes no value (or true), got {other:?}"
            )))
        }
    };
    if live {
        let (topic, encoding) = parse_tail(&q)
            .map_err(|e| ProtocolError::bad_request(format!("with live: {}", e.message)))?;
        let Some(id) = id else {
            return Ok(SseRequest::Live { topic, encoding });
        };
        // A live stream resumed: exactly the partitions its ids named, from their positions.
        let topics = vec![topic];
        let resume = parse_id(id, &topics)?;
        let partitions = resume.iter().map(|(_, p, _)| *p).collect();
        let req = ConsumeRequest {
            topics,
            group: None,
            assignment: Assignment::Partitions(partitions),
            start: StartAt::Latest,
            commit: CommitMode::None,
            format: Format::Sse(encoding),
            window: DEFAULT_WINDOW,
        };
        return Ok(SseRequest::Consume {
            req,
            resume,
            live: true,
        });
    }
    let mut req = parse_v1(&q)?;
    if req.commit == CommitMode::Ack {
        return Err(ProtocolError::bad_request(
            "commit=ack needs acknowledgements, and an EventSource cannot send any: use \
             commit=auto (with a group) or commit=none here, or /v1/consume for commit=ack",
        ));
    }
    if let Format::V1(enc) = req.format {
        req.format = Format::Sse(enc);
    }
    let resume = match id {
        Some(id) => parse_id(id, &req.topics)?,
        None => Vec::new(),
    };
    if let Assignment::Partitions(ps) = &req.assignment {
        if let Some((t, p, _)) = resume.iter().find(|(_, p, _)| !ps.contains(p)) {
            return Err(foreign(format!(
                "it names partition {t}/{p}, which this request does not read"
            )));
        }
    }
    if !resume.is_empty() && req.group.is_some() {
        // The group's committed offsets are its position; the id corrects them only for the
        // partitions this stream had sent records of.
        req.start = StartAt::Committed;
    }
    Ok(SseRequest::Consume {
        req,
        resume,
        live: false,
    })
}

/// A `Last-Event-ID` that is not a position of this stream.
fn foreign(reason: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::bad_request(format!(
        "Last-Event-ID is not a position of this stream: {reason}; it must be an id this \
         endpoint sent for the same topic list (reconnect without it to start afresh)"
    ))
}

/// FNV-1a (32 bits) of the topic list: an id sent for other topics is refused, not misread.
fn fingerprint(topics: &[String]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, t) in topics.iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b"," };
        for &b in sep.iter().chain(t.as_bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Parses an id into (topic, partition, next offset) entries. The format:
/// `1.<fingerprint>.<topic index>:<partition>=<offset>[,<partition>=<offset>...][;<topic index>:...]`
/// where the topic index is the topic's place in the request's `topic` list.
pub fn parse_id(id: &str, topics: &[String]) -> Result<Vec<(String, i32, i64)>, ProtocolError> {
    if id.len() > MAX_ID_BYTES {
        return Err(foreign(format!(
            "it is {} bytes long; ids are at most {MAX_ID_BYTES}",
            id.len()
        )));
    }
    let mut parts = id.splitn(3, '.');
    let (Some(version), Some(fp), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(foreign(
            "it does not have the form 1.<fingerprint>.<positions>",
        ));
    };
    if version != ID_VERSION {
        return Err(foreign(format!("unknown id version {version:?}")));
    }
    if u32::from_str_radix(fp, 16).ok() != Some(fingerprint(topics)) || fp.len() != 8 {
        return Err(foreign("it was sent for another topic list"));
    }
    let mut out: Vec<(String, i32, i64)> = Vec::new();
    for group in body.split(';') {
        let (index, entries) = group
            .split_once(':')
            .ok_or_else(|| foreign("a position group lacks its topic index"))?;
        let topic = index
            .parse::<usize>()
            .ok()
            .and_then(|i| topics.get(i))
            .ok_or_else(|| foreign(format!("topic index {index:?} is not in the topic list")))?;
        for entry in entries.split(',') {
            let parsed = entry.split_once('=').and_then(|(p, o)| {
                let p = p.parse::<i32>().ok().filter(|p| *p >= 0)?;
                let o = o.parse::<i64>().ok().filter(|o| *o >= 0)?;
                Some((p, o))
            });
            let (p, o) =
                parsed.ok_or_else(|| foreign(format!("{entry:?} is not partition=offset")))?;
            if out.iter().any(|(t, op, _)| t == topic && *op == p) {
                return Err(foreign(format!("it names {topic}/{p} twice")));
            }
            out.push((topic.clone(), p, o));
        }
    }
    if out.len() > MAX_STREAM_PARTITIONS {
        return Err(foreign(format!(
            "it names {} partitions; streams read at most {MAX_STREAM_PARTITIONS}",
            out.len()
        )));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    topic: u16,
    partition: i32,
    next: i64,
}

/// A stream's position: per partition it holds, the offset of the next record to send. Written
/// as the `id` of every record event.
#[derive(Debug, Clone)]
pub struct Positions {
    topics: Vec<String>,
    /// `1.<fingerprint>.`
    prefix: String,
    /// Sorted by (topic, partition).
    entries: Vec<Entry>,
    /// Whether the first assignment was seen (it prunes positions of partitions not assigned).
    assigned_once: bool,
}

impl Positions {
    pub fn new(topics: &[String]) -> Positions {
        Positions {
            prefix: format!("{ID_VERSION}.{:08x}.", fingerprint(topics)),
            topics: topics.to_vec(),
            entries: Vec::new(),
            assigned_once: false,
        }
    }

    fn index(&self, topic: &str) -> Option<u16> {
        let i = self.topics.iter().position(|t| t == topic)?;
        u16::try_from(i).ok()
    }

    /// Sets the next offset of a partition (after a record, or where it starts).
    pub fn set(&mut self, topic: &str, partition: i32, next: i64) {
        let Some(topic) = self.index(topic) else {
            return;
        };
        let key = (topic, partition);
        match self
            .entries
            .binary_search_by_key(&key, |e| (e.topic, e.partition))
        {
            Ok(i) => self.entries[i].next = next,
            Err(i) => self.entries.insert(
                i,
                Entry {
                    topic,
                    partition,
                    next,
                },
            ),
        }
    }

    /// The partitions of an assignment. Start positions apply to the first assignment only
    /// (later ones continue from the group's commit): the first one drops the positions of
    /// partitions it did not assign, so ids never name a partition another member reads.
    pub fn assigned(&mut self, parts: &[(String, i32)]) {
        if std::mem::replace(&mut self.assigned_once, true) {
            return;
        }
        let keep: Vec<(u16, i32)> = parts
            .iter()
            .filter_map(|(t, p)| Some((self.index(t)?, *p)))
            .collect();
        self.entries
            .retain(|e| keep.contains(&(e.topic, e.partition)));
    }

    /// Revoked partitions are no longer named: the next owner continues from the group's commit.
    pub fn revoked(&mut self, parts: &[(String, i32)]) {
        for (t, p) in parts {
            if let Some(topic) = self.index(t) {
                self.entries
                    .retain(|e| !(e.topic == topic && e.partition == *p));
            }
        }
    }

    /// Partitions named.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the id.
    pub fn write_id(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.prefix.as_bytes());
        let mut topic = None;
        for e in &self.entries {
            if topic != Some(e.topic) {
                if topic.is_some() {
                    buf.push(b';');
                }
                write_int(buf, i64::from(e.topic));
                buf.push(b':');
                topic = Some(e.topic);
            } else {
                buf.push(b',');
            }
            write_int(buf, i64::from(e.partition));
            buf.push(b'=');
            write_int(buf, e.next);
        }
    }

    /// The id as a string.
    pub fn id(&self) -> String {
        let mut buf = Vec::new();
        self.write_id(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Appends one record event: `id:` (the position after this record, when the stream has
/// positions) and `data:` (the record as in a v1 `records` frame).
pub fn write_record_event(
    buf: &mut Vec<u8>,
    positions: Option<&mut Positions>,
    r: &RecordView<'_>,
    enc: Encoding,
) {
    if let Some(p) = positions {
        p.set(r.topic, r.partition, r.offset.saturating_add(1));
        buf.extend_from_slice(b"id: ");
        p.write_id(buf);
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    let start = buf.len();
    write_record(buf, r, enc);
    if enc == Encoding::Json {
        // Embedded JSON keeps its own whitespace, and a line break would end the data line.
        // Outside strings (inside them JSON escapes it) CR and LF are only whitespace.
        for b in &mut buf[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
    }
    buf.extend_from_slice(b"\n\n");
}

/// A named event whose data is one line of JSON (the proxy's frames are compact).
pub fn event(kind: &str, json: &str) -> String {
    let mut out = Vec::with_capacity(json.len() + kind.len() + 16);
    let _ = write!(out, "event: {kind}\ndata: ");
    out.extend(
        json.bytes()
            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\n\n");
    String::from_utf8_lossy(&out).into_owned()
}

/// How a stream that cannot continue ends: an `error` event with the error frame's JSON, after
/// a `retry:` of [`CLOSED_RETRY_MS`] when an operator closed it.
pub fn error_end(e: &ProtocolError) -> String {
    let error = event("error", &e.frame());
    match e.code {
        ErrorCode::ClosedByAdmin => format!("retry: {CLOSED_RETRY_MS}\n\n{error}"),
        _ => error,
    }
}

/// What a stream starts with: the reconnection delay a browser should use.
pub fn preamble() -> String {
    format!("retry: {RETRY_MS}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::query as q;
    use crate::protocol::ErrorCode;

    fn topics(ts: &[&str]) -> Vec<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn ids_round_trip() {
        let ts = topics(&["a", "b"]);
        let mut p = Positions::new(&ts);
        p.set("b", 3, 9);
        p.set("a", 1, 27);
        p.set("a", 0, 15);
        p.set("a", 1, 28);
        p.set("nope", 0, 1);
        let id = p.id();
        assert_eq!(id, format!("1.{:08x}.0:0=15,1=28;1:3=9", fingerprint(&ts)));
        assert_eq!(
            parse_id(&id, &ts).unwrap(),
            vec![("a".into(), 0, 15), ("a".into(), 1, 28), ("b".into(), 3, 9)]
        );
    }

    #[test]
    fn fingerprints_match_the_documented_examples() {
        // docs/PROTOCOL.md, "Server-Sent Events", shows these.
        assert_eq!(Positions::new(&topics(&["orders"])).prefix, "1.325e96ec.");
        assert_eq!(
            Positions::new(&topics(&["orders", "payments"])).prefix,
            "1.f2196b87."
        );
    }

    #[test]
    fn foreign_or_malformed_ids_are_refused() {
        let ts = topics(&["a"]);
        let mut p = Positions::new(&ts);
        p.set("a", 0, 5);
        let good = p.id();
        let other = Positions::new(&topics(&["b"]));
        let fp = &good[2..10];
        for bad in [
            "garbage".to_string(),
            format!("2.{fp}.0:0=5"),
            format!("{}0:0=5", other.prefix),
            format!("1.{fp}.1:0=5"),
            format!("1.{fp}.0:0=-5"),
            format!("1.{fp}.0:x=5"),
            format!("1.{fp}.0:0=5,0=6"),
            format!("1.{fp}.0:"),
            format!("1.{fp}.0"),
            format!("1.{fp}."),
            "x".repeat(MAX_ID_BYTES + 1),
        ] {
            let e = parse_id(&bad, &ts).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
            assert!(e.message.starts_with("Last-Event-ID"), "{}", e.message);
        }
        assert!(parse_id(&good, &ts).is_ok());
    }

    #[test]
    fn the_longest_id_fits_the_limit() {
        let ts: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let mut p = Positions::new(&ts);
        for i in 0..MAX_STREAM_PARTITIONS {
            let t = &ts[i % ts.len()];
            p.set(t, i32::MAX - i as i32, i64::MAX);
        }
        let id = p.id();
        assert!(id.len() <= MAX_ID_BYTES, "{}", id.len());
        assert_eq!(parse_id(&id, &ts).unwrap().len(), MAX_STREAM_PARTITIONS);
    }

    #[test]
    fn first_assignment_prunes_later_ones_do_not() {
        let ts = topics(&["a"]);
        let mut p = Positions::new(&ts);
        p.set("a", 0, 5);
        p.set("a", 1, 7);
        p.assigned(&[("a".into(), 1)]);
        assert_eq!(p.id(), format!("{}0:1=7", p.prefix));
        p.set("a", 2, 3);
        p.assigned(&[("a".into(), 0)]);
        assert_eq!(p.len(), 2);
        p.revoked(&[("a".into(), 1)]);
        assert_eq!(p.id(), format!("{}0:2=3", p.prefix));
    }

    #[test]
    fn record_events_are_one_line_of_data() {
        let ts = topics(&["t"]);
        let mut p = Positions::new(&ts);
        let r = RecordView {
            topic: "t",
            partition: 2,
            offset: 9,
            timestamp: Some(1),
            key: None,
            headers: &[],
            value: Some(b"{\r\n \"a\": \"x\\ny\"\n}"),
        };
        let mut buf = Vec::new();
        write_record_event(&mut buf, Some(&mut p), &r, Encoding::Json);
        let text = String::from_utf8(buf).unwrap();
        let (id, rest) = text.split_once('\n').unwrap();
        assert_eq!(id, format!("id: {}0:2=10", p.prefix));
        let data = rest.strip_prefix("data: ").unwrap();
        assert!(data.ends_with("\n\n"));
        let data = data.trim_end_matches('\n');
        assert!(!data.contains('\n') && !data.contains('\r'), "{data:?}");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["value"]["a"], "x\ny");
        assert_eq!(v["offset"], 9);
        assert_eq!(
            event("error", "{\"type\":\"error\"}"),
            "event: error\ndata: {\"type\":\"error\"}\n\n"
        );
    }

    #[test]
    fn params() {
        let r = parse_sse(&q(&[("topic", "a"), ("group", "g")]), None).unwrap();
        let SseRequest::Consume { req, resume, .. } = r else {
            panic!("consume")
        };
        assert_eq!(req.format, Format::Sse(Encoding::Text));
        assert_eq!(req.commit, CommitMode::Auto);
        assert!(resume.is_empty());

        let e = parse_sse(
            &q(&[("topic", "a"), ("group", "g"), ("commit", "ack")]),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("EventSource"), "{}", e.message);

        assert_eq!(
            parse_sse(&q(&[("topic", "a"), ("live", "")]), None).unwrap(),
            SseRequest::Live {
                topic: "a".into(),
                encoding: Encoding::Text
            }
        );
        assert!(parse_sse(&q(&[("topic", "a"), ("live", "no")]), None).is_err());
        assert!(parse_sse(&q(&[("topic", "a"), ("live", ""), ("group", "g")]), None).is_err());

        // Header beats parameter; group resumes start at the commit elsewhere.
        let ts = topics(&["a"]);
        let mut p = Positions::new(&ts);
        p.set("a", 1, 40);
        let id = p.id();
        let r = parse_sse(
            &q(&[
                ("topic", "a"),
                ("group", "g"),
                ("from", "earliest"),
                ("lastEventId", "junk"),
            ]),
            Some(&id),
        )
        .unwrap();
        let SseRequest::Consume { req, resume, .. } = r else {
            panic!("consume")
        };
        assert_eq!(resume, vec![("a".into(), 1, 40)]);
        assert_eq!(req.start, StartAt::Committed);
        assert!(parse_sse(
            &q(&[("topic", "a"), ("group", "g"), ("lastEventId", "junk")]),
            None
        )
        .is_err());
        // An empty id is no id.
        assert!(parse_sse(&q(&[("topic", "a"), ("group", "g")]), Some("")).is_ok());

        // Explicit partitions: the id may only name those.
        let ok = parse_sse(
            &q(&[("topic", "a"), ("partition", "1"), ("from", "earliest")]),
            Some(&id),
        )
        .unwrap();
        assert!(
            matches!(ok, SseRequest::Consume { ref req, .. } if req.start == StartAt::Earliest)
        );
        let e = parse_sse(
            &q(&[("topic", "a"), ("partition", "0"), ("from", "earliest")]),
            Some(&id),
        )
        .unwrap_err();
        assert!(e.message.contains("a/1"), "{}", e.message);

        // A live stream resumed reads the partitions its id names.
        let r = parse_sse(&q(&[("topic", "a"), ("live", "")]), Some(&id)).unwrap();
        let SseRequest::Consume { req, live, .. } = r else {
            panic!("consume")
        };
        assert!(live);
        assert_eq!(req.assignment, Assignment::Partitions(vec![1]));
        assert_eq!(req.commit, CommitMode::None);
    }
}
