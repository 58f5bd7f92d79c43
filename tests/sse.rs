//! Server-Sent Events (`GET /v1/sse`) against the real broker, at the protocol level: a raw
//! HTTP client parses the event stream itself. For every mode (explicit partitions, a group with
//! `commit=auto`, the live tail) a stream is read, dropped mid-way (or its proxy restarted) and
//! resumed with the last id: the union of what was received has no gap and no duplicate. Streams
//! also end from outside, as sockets do: a lapsed JWT, a users or tokens file reload, an
//! operator's close; and `/admin/sessions` shows their partitions and figures.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);

/// One parsed block of an event stream.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Comment(String),
    Retry(u64),
    Event {
        /// `message` when the block names none.
        event: String,
        id: Option<String>,
        data: String,
    },
}

/// A raw SSE client: HTTP/1.1, chunked body decoded by hand, events parsed as a browser does.
struct Sse {
    s: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body not yet parsed into events.
    text: Vec<u8>,
    ended: bool,
    /// The last id seen (a browser's "last event ID").
    last_id: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Sse {
    /// Opens a stream; `Err((status, body))` when the answer is not 200.
    async fn open(
        addr: SocketAddr,
        path: &str,
        last_id: Option<&str>,
    ) -> Result<Sse, (u16, String)> {
        Sse::open_with(addr, path, last_id, &[])
            .await
            .map(|(s, _)| s)
    }

    /// `open` with extra request headers; also returns the answer's head (lowercase).
    async fn open_with(
        addr: SocketAddr,
        path: &str,
        last_id: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(Sse, String), (u16, String)> {
        let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        );
        if let Some(id) = last_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(T, s.read(&mut buf))
                .await
                .expect("HTTP head in time")
                .expect("read HTTP head");
            assert!(n > 0, "connection closed before the HTTP head");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let rest = raw[head_end + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("HTTP status");
        if status != 200 {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = rest;
            while body.len() < len {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            return Err((status, String::from_utf8_lossy(&body).into_owned()));
        }
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(head.contains("cache-control: no-cache"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let sse = Sse {
            s,
            raw: rest,
            text: Vec::new(),
            ended: false,
            last_id: None,
        };
        Ok((sse, head))
    }

    /// Moves whole chunks from `raw` to `text`.
    fn dechunk(&mut self) {
        while let Some(i) = find(&self.raw, b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..i])
                .ok()
                .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                .expect("chunk size");
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < i + 2 + size + 2 {
                return;
            }
            self.text.extend_from_slice(&self.raw[i + 2..i + 2 + size]);
            self.raw.drain(..i + 2 + size + 2);
        }
    }

    /// The next block, or `None` once the stream ended. Fails the test after `within`.
    async fn next(&mut self, within: Duration) -> Option<Ev> {
        let deadline = Instant::now() + within;
        loop {
            self.dechunk();
            if let Some(i) = find(&self.text, b"\n\n") {
                let block = String::from_utf8(self.text[..i].to_vec()).expect("UTF-8 events");
                self.text.drain(..i + 2);
                return Some(self.parse(&block));
            }
            if self.ended {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buf = [0u8; 64 * 1024];
            let n = tokio::time::timeout(left, self.s.read(&mut buf))
                .await
                .expect("an event within the time limit")
                .unwrap_or(0);
            if n == 0 {
                self.ended = true;
                assert!(self.text.is_empty(), "stream cut inside an event");
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    fn parse(&mut self, block: &str) -> Ev {
        let (mut event, mut id, mut data) = (None, None, Vec::new());
        for line in block.split('\n') {
            if let Some(c) = line.strip_prefix(':') {
                return Ev::Comment(c.trim().to_string());
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "retry" => return Ev::Retry(value.parse().expect("retry ms")),
                "event" => event = Some(value.to_string()),
                "id" => id = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                other => panic!("unknown field {other:?} in {block:?}"),
            }
        }
        assert_eq!(data.len(), 1, "one data line per event: {block:?}");
        if id.is_some() {
            self.last_id.clone_from(&id);
        }
        Ev::Event {
            event: event.unwrap_or_else(|| "message".into()),
            id,
            data: data.remove(0),
        }
    }

    /// The next event that is not a comment or retry hint.
    async fn event(&mut self, within: Duration) -> Option<(String, Option<String>, Value)> {
        // One deadline for the event: keep-alive comments do not extend it.
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Ev::Event { event, id, data } => {
                    let v = serde_json::from_str(&data).expect("event data is JSON");
                    return Some((event, id, v));
                }
                Ev::Comment(_) | Ev::Retry(_) => continue,
            }
        }
    }

    /// Reads `n` record events; returns each record's (partition, offset, value).
    async fn records(&mut self, n: usize) -> Vec<(i32, i64, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let (event, id, v) = self.event(T).await.expect("stream still open");
            match event.as_str() {
                "message" => {
                    assert!(id.is_some(), "every record event has an id: {v}");
                    out.push((
                        v["partition"].as_i64().unwrap() as i32,
                        v["offset"].as_i64().unwrap(),
                        v["value"].as_str().unwrap().to_string(),
                    ));
                }
                "assigned" | "revoked" => {}
                other => panic!("unexpected {other} event: {v}"),
            }
        }
        out
    }
}

/// Produces records `from..from + n` to each partition, values `p<P>-<seq>`.
async fn produce_seq(topic: &str, partitions: i32, from: usize, n: usize) {
    produce_padded(topic, partitions, from, n, 0).await
}

/// Like `produce_seq`, each value padded with `.` to at least `size` bytes, all in flight at once.
async fn produce_padded(topic: &str, partitions: i32, from: usize, n: usize, size: usize) {
    let records = (0..partitions).flat_map(|part| {
        (from..from + n).map(move |seq| {
            (
                part,
                format!("{:.<size$}", format!("p{part}-{seq}")).into_bytes(),
            )
        })
    });
    common::produce_all(topic, records).await
}

/// Checks that `got` holds every sequence number 0..n of every partition exactly once, each at
/// its offset (one producer, so offset == sequence number).
fn exactly_once(got: &[(i32, i64, String)], partitions: i32, n: usize) {
    exactly_once_from(got, partitions, 0, n)
}

/// Like `exactly_once`, for sequence numbers `from..from + n`.
fn exactly_once_from(got: &[(i32, i64, String)], partitions: i32, from: usize, n: usize) {
    let mut by: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, off, v) in got {
        assert_eq!(v, &format!("p{p}-{off}"), "value matches its offset");
        by.entry(*p).or_default().push(*off);
    }
    for p in 0..partitions {
        let mut offs = by.remove(&p).unwrap_or_default();
        let len = offs.len();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), len, "partition {p}: duplicates received");
        assert_eq!(
            offs,
            (from as i64..(from + n) as i64).collect::<Vec<_>>(),
            "partition {p}: gap in what was received"
        );
    }
    assert!(by.is_empty(), "records of unexpected partitions: {by:?}");
}

async fn http_get(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_request(addr, "GET", path, &[], b"").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_resume_exactly_after_a_drop_by_header_and_by_parameter() {
    const N: usize = 150;
    let topic = topic("sse-parts", 2).await;
    produce_seq(&topic, 2, 0, N).await;
    let proxy = Proxy::start().await;
    let path = format!("/v1/sse?topic={topic}&partition=0,1&from=earliest");

    let mut first = Sse::open(proxy.addr, &path, None).await.expect("stream");
    assert_eq!(
        first.next(T).await,
        Some(Ev::Retry(2000)),
        "retry hint first"
    );
    let mut got = first.records(70).await;
    let id = first.last_id.clone().expect("an id");
    // Both partitions are named from the start: a partition with nothing sent yet resumes at
    // its start, not at a later position.
    let named = id.rsplit('.').next().unwrap();
    assert!(named.starts_with("0:") && named.contains(','), "{id}");
    drop(first); // mid-stream: everything after the 70th event is lost with the connection

    // More records while the client is away.
    produce_seq(&topic, 2, N, 30).await;
    let mut second = Sse::open(proxy.addr, &path, Some(&id))
        .await
        .expect("resumed");
    got.extend(second.records(100).await);
    let id = second.last_id.clone().expect("an id");
    drop(second);

    // EventSource polyfills send the id as a parameter; the header wins when both are given.
    let with_param = format!("{path}&lastEventId={}", urlencode(&id));
    let mut third = Sse::open(proxy.addr, &with_param, None)
        .await
        .expect("resumed");
    let rest = 2 * (N + 30) - got.len();
    got.extend(third.records(rest).await);
    exactly_once(&got, 2, N + 30);
    // Nothing more: the stream idles.
    let more = tokio::time::timeout(Duration::from_millis(1500), third.event(T)).await;
    assert!(more.is_err(), "no record beyond the last one: {more:?}");
    let id = third.last_id.clone().expect("an id");
    let mut fourth = Sse::open(proxy.addr, &format!("{path}&lastEventId=junk"), Some(&id))
        .await
        .expect("header wins over a bad parameter");
    let idle = tokio::time::timeout(Duration::from_millis(1500), fourth.records(1)).await;
    assert!(idle.is_err(), "resumed at the end: nothing repeated");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_latest_a_silent_partition_resumes_where_the_stream_started() {
    let topic = topic("sse-latest", 2).await;
    produce_seq(&topic, 2, 0, 3).await; // before the stream: not sent
    let proxy = Proxy::start().await;
    let path = format!("/v1/sse?topic={topic}&partition=0,1&from=latest");
    let mut first = Sse::open(proxy.addr, &path, None).await.expect("stream");
    let (event, _, _) = first.event(T).await.expect("assigned");
    assert_eq!(event, "assigned");
    // Only partition 0 gets records before the drop.
    produce(&topic, 0, &[b"p0-3", b"p0-4"]).await;
    let mut got = first.records(2).await;
    let id = first.last_id.clone().expect("an id");
    assert!(
        id.ends_with(":0=5,1=3"),
        "partition 1 is named at its start: {id}"
    );
    drop(first);
    // Partition 1's records while the client is away come after that start: none is skipped.
    produce(&topic, 1, &[b"p1-3", b"p1-4", b"p1-5"]).await;
    produce(&topic, 0, &[b"p0-5"]).await;
    let mut second = Sse::open(proxy.addr, &path, Some(&id))
        .await
        .expect("resumed");
    got.extend(second.records(4).await);
    exactly_once_from(&got, 2, 3, 3);
    proxy.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_auto_resumes_exactly_after_a_drop_and_a_proxy_restart() {
    const N: usize = 120;
    let topic = topic("sse-group", 2).await;
    let group = unique("sse-g");
    produce_seq(&topic, 2, 0, N).await;
    let proxy = Proxy::start().await;
    let path = format!("/v1/sse?topic={topic}&group={group}&from=earliest");

    let mut first = Sse::open(proxy.addr, &path, None).await.expect("stream");
    let mut got = first.records(50).await;
    let id = first.last_id.clone().expect("an id");
    drop(first);

    let mut second = Sse::open(proxy.addr, &path, Some(&id))
        .await
        .expect("resumed");
    got.extend(second.records(60).await);
    let id = second.last_id.clone().expect("an id");
    // The proxy restarts: the stream ends cleanly (no error event), its offsets are committed.
    proxy.stop().await;
    loop {
        match second.next(T).await {
            None => break,
            Some(Ev::Event { event, .. }) if event == "error" => panic!("error event on shutdown"),
            Some(_) => {}
        }
    }
    let after_restart = committed(&group, &topic, 2).await;
    assert!(
        !after_restart.is_empty(),
        "commit=auto committed what was written"
    );

    produce_seq(&topic, 2, N, 20).await;
    let proxy = Proxy::start().await;
    let mut third = Sse::open(proxy.addr, &path, Some(&id))
        .await
        .expect("resumed");
    let rest = 2 * (N + 20) - got.len();
    got.extend(third.records(rest).await);
    exactly_once(&got, 2, N + 20);
    let more = tokio::time::timeout(Duration::from_millis(1500), third.records(1)).await;
    assert!(more.is_err(), "nothing repeated: {more:?}");
    drop(third);
    // What the last stream sent is committed when it closes.
    let deadline = Instant::now() + T;
    loop {
        let c = committed(&group, &topic, 2).await;
        if c.get(&0) == Some(&((N + 20) as i64)) && c.get(&1) == Some(&((N + 20) as i64)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "commits after the last stream: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_shares_a_reader_and_resumes_exactly() {
    const N: usize = 40;
    let topic = topic("sse-live", 2).await;
    produce_seq(&topic, 2, 0, 5).await; // before the tail: never sent
    let proxy = Proxy::start().await;
    let path = format!("/v1/sse?topic={topic}&live");
    let mut a = Sse::open(proxy.addr, &path, None).await.expect("stream");
    let mut b = Sse::open(proxy.addr, &path, None).await.expect("stream");
    for s in [&mut a, &mut b] {
        let (event, _, v) = s.event(T).await.expect("assigned");
        assert_eq!(event, "assigned", "{v}");
    }
    let readers = http_get(proxy.addr, "/admin/tail").await;
    let readers = readers["readers"].as_array().unwrap().clone();
    assert_eq!(readers.len(), 1, "one shared reader: {readers:?}");
    assert_eq!(readers[0]["transport"], "sse");
    assert_eq!(readers[0]["sockets"], 2);

    produce_seq(&topic, 2, 5, N).await;
    let all_b = b.records(2 * N).await;
    let mut got = a.records(30).await;
    let id = a.last_id.clone().expect("an id");
    drop(a);
    produce_seq(&topic, 2, 5 + N, 10).await;
    // Resumed: its own reader from the id's positions (a live stream has no group).
    let mut c = Sse::open(proxy.addr, &path, Some(&id))
        .await
        .expect("resumed");
    got.extend(c.records(2 * (N + 10) - 30).await);
    // Offsets 0..5 were produced before the tail started: never sent.
    exactly_once_from(&got, 2, 5, N + 10);
    exactly_once_from(&all_b, 2, 5, N);
    let sessions = http_get(proxy.addr, "/admin/sessions").await;
    let kinds: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert!(
        kinds.iter().filter(|k| **k == "sse-tail").count() >= 2,
        "{kinds:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_and_partition_events() {
    let topic = topic("sse-idle", 1).await;
    let proxy = Proxy::start_with(|c| c.ping_interval = Duration::from_secs(1)).await;
    let path = format!("/v1/sse?topic={topic}&partition=0&from=latest");
    let mut s = Sse::open(proxy.addr, &path, None).await.expect("stream");
    assert_eq!(s.next(T).await, Some(Ev::Retry(2000)));
    let mut keep_alives = Vec::new();
    let mut assigned = false;
    while keep_alives.len() < 3 {
        match s.next(Duration::from_secs(5)).await.expect("open") {
            Ev::Comment(c) => {
                assert_eq!(c, "keep-alive");
                keep_alives.push(Instant::now());
            }
            Ev::Event { event, id, data } => {
                assert_eq!(event, "assigned", "{data}");
                assert_eq!(id, None, "control events carry no id");
                let v: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(v["partitions"][0]["partition"], 0);
                assigned = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(assigned);
    // One per interval (the first may come early: the interval runs from the request).
    let secs = (keep_alives[2] - keep_alives[0]).as_secs_f64();
    assert!(
        (1.5..4.0).contains(&secs),
        "three keep-alives at a 1 s interval spanned {secs:.1} s"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_are_checked_and_answered_with_cors() {
    let topic = topic("sse-origin", 1).await;
    let page = "http://page.example";
    let proxy = Proxy::start_with(|c| c.security.allowed_origins = vec![page.into()]).await;
    let path = format!("/v1/sse?topic={topic}&partition=0&from=earliest");
    let (mut s, head) = Sse::open_with(proxy.addr, &path, None, &[("Origin", page)])
        .await
        .expect("an allowed origin streams");
    assert!(
        head.contains(&format!("access-control-allow-origin: {page}")),
        "{head}"
    );
    assert_eq!(s.next(T).await, Some(Ev::Retry(2000)));
    let refused = Sse::open_with(
        proxy.addr,
        &path,
        None,
        &[("Origin", "http://evil.example")],
    )
    .await;
    match refused {
        Err((403, body)) => assert!(body.contains("allowedOrigins"), "{body}"),
        Err(other) => panic!("expected 403, got {other:?}"),
        Ok(_) => panic!("expected 403, got a stream"),
    }
    // A fetch-based polyfill's preflight for its own Last-Event-ID header.
    let (status, _) = http_request(
        proxy.addr,
        "OPTIONS",
        &path,
        &[
            ("Origin", page),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "last-event-id"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 204);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_a_ticket_opens_one_stream_and_a_resume_takes_a_new_ticket() {
    let topic = topic("sse-ticket", 1).await;
    produce_seq(&topic, 1, 0, 4).await;
    let proxy =
        Proxy::start_with(|c| c.auth = Some(kafka_proxy::config::Secret::new("s3cret"))).await;
    let path = format!("/v1/sse?topic={topic}&partition=0&from=earliest");
    match Sse::open(proxy.addr, &path, None).await {
        Err((401, body)) => assert!(body.contains("unauthorized"), "{body}"),
        Err(other) => panic!("expected 401, got {other:?}"),
        Ok(_) => panic!("expected 401, got a stream"),
    }
    let ticket = || async {
        let (status, body) = http_request(
            proxy.addr,
            "POST",
            "/v1/tickets",
            &[
                ("Authorization", "basic s3cret"),
                ("Content-Type", "application/json"),
            ],
            br#"{"path":"/v1/sse"}"#,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["ticket"].as_str().unwrap().to_string()
    };
    let with_ticket = format!("{path}&ticket={}", urlencode(&ticket().await));
    let mut s = Sse::open(proxy.addr, &with_ticket, None)
        .await
        .expect("a ticket opens a stream");
    let mut got = s.records(2).await;
    let id = s.last_id.clone().unwrap();
    drop(s);
    // What a browser's own reconnect does: the same URL, the used ticket.
    match Sse::open(proxy.addr, &with_ticket, Some(&id)).await {
        Err((401, body)) => assert!(body.contains("already used"), "{body}"),
        Err(other) => panic!("expected 401, got {other:?}"),
        Ok(_) => panic!("a ticket opened a second stream"),
    }
    // What a page does instead: a new ticket, the position as a parameter.
    let resumed = format!(
        "{path}&ticket={}&lastEventId={}",
        urlencode(&ticket().await),
        urlencode(&id)
    );
    let mut s = Sse::open(proxy.addr, &resumed, None)
        .await
        .expect("resumed");
    got.extend(s.records(2).await);
    exactly_once(&got, 1, 4);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_plain_http_errors() {
    let topic = topic("sse-refuse", 2).await;
    produce_seq(&topic, 1, 0, 3).await;
    let proxy = Proxy::start().await;
    // A valid id of this topic, from a real stream.
    let path = format!("/v1/sse?topic={topic}&partition=0&from=earliest");
    let mut s = Sse::open(proxy.addr, &path, None).await.expect("stream");
    s.records(3).await;
    let id = s.last_id.clone().unwrap();
    drop(s);
    let other = topic.clone() + "x";
    let out_of_range = id.replace("0=3", "0=99");
    let cases: Vec<(String, Option<String>, u16, &str)> = vec![
        (
            format!("/v1/sse?topic={topic}&group=g&commit=ack"),
            None,
            400,
            "EventSource cannot send",
        ),
        (path.clone(), Some("garbage".into()), 400, "Last-Event-ID"),
        (
            format!("/v1/sse?topic={topic},{other}&group=g"),
            Some(id.clone()),
            400,
            "another topic list",
        ),
        (
            format!("/v1/sse?topic={topic}&partition=1&from=earliest"),
            Some(id.clone()),
            400,
            "does not read",
        ),
        (path.clone(), Some(out_of_range), 416, "outside its range"),
        (
            format!("/v1/sse?topic={other}&partition=0&from=earliest"),
            None,
            404,
            "unknown_topic",
        ),
        (
            format!("/v1/sse?topic={topic}&live=maybe"),
            None,
            400,
            "live takes",
        ),
        (
            format!("/v1/sse?topic={topic}&partition=0"),
            None,
            400,
            "give from, offset or timestamp",
        ),
    ];
    for (path, id, status, says) in cases {
        let (got, body) = match Sse::open(proxy.addr, &path, id.as_deref()).await {
            Ok(_) => panic!("{path}: expected {status}, got a stream"),
            Err(e) => e,
        };
        assert_eq!(got, status, "{path} {id:?}: {body}");
        assert!(body.contains(says), "{path} {id:?}: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(v["error"]["code"].is_string(), "{body}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_stays_within_its_buffer_bound_then_delivers_everything() {
    const BOUND: usize = 256 * 1024;
    const N: usize = 12_000;
    let topic = topic("sse-slow", 1).await;
    produce_padded(&topic, 1, 0, N, 1000).await;
    let proxy = Proxy::start_with(|c| {
        c.session_buffer_bytes = BOUND;
        c.max_bytes = 16 * 1024;
    })
    .await;
    let path = format!("/v1/sse?topic={topic}&partition=0&from=earliest");
    let mut s = Sse::open(proxy.addr, &path, None).await.expect("stream");
    // Not a byte read for longer than the hold before pausing (5 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let v = http_get(proxy.addr, "/admin/sessions").await;
    let session = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "sse")
        .cloned()
        .expect("the stream is listed");
    let sent = session["sent"].as_u64().unwrap() as usize;
    assert!(sent < N, "the stream is behind: {session}");
    let max = session["buffered_bytes_max"].as_u64().unwrap() as usize;
    assert!(max <= BOUND, "held {max} bytes > bound {BOUND}: {session}");
    assert_eq!(session["paused"], true, "fetching paused: {session}");
    // Reading again resumes it; every record arrives once, in order.
    let mut next = 0i64;
    while (next as usize) < N {
        let (event, _, v) = s.event(T).await.expect("open");
        if event != "message" {
            continue;
        }
        assert_eq!(v["offset"].as_i64(), Some(next));
        next += 1;
    }
    drop(s);
    proxy.stop().await;
}

// --- The session's life from outside: credential lapse, revocation, an operator's close, and
// what /admin/sessions shows of a stream.

const ADMIN_PASSWORD: &str = "sse-admin-password";
const JWT_SECRET: &str = "sse-hs256-secret-0123456789abcdef-0123";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "kafka-proxy";

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 JWT for `sub` that expires at `exp` (seconds since the epoch).
fn jwt(sub: &str, exp: u64) -> String {
    let claims = serde_json::json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

fn basic(user_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// Reads a stream to its end: the `error` event it ended with (its data) and every `retry:`
/// hint seen on the way. Fails when the stream sends no error within `within` or goes on after
/// it.
async fn read_to_error_end(s: &mut Sse, within: Duration) -> (Value, Vec<u64>) {
    let deadline = Instant::now() + within;
    let mut retries = Vec::new();
    let error = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match s.next(left).await {
            None => panic!("the stream ended without an error event"),
            Some(Ev::Retry(ms)) => retries.push(ms),
            Some(Ev::Event { event, data, .. }) if event == "error" => {
                break serde_json::from_str::<Value>(&data).expect("error data is JSON");
            }
            Some(_) => {}
        }
    };
    let after = s.next(Duration::from_secs(10)).await;
    assert_eq!(after, None, "the response ends right after the error event");
    (error, retries)
}

/// Asserts a stream stays open (sends nothing but comments, no end) for `d`.
async fn stays_open(s: &mut Sse, d: Duration) {
    let r = tokio::time::timeout(d, async {
        loop {
            match s.next(T).await {
                Some(Ev::Comment(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(r.is_err(), "the stream should stay open: {r:?}");
}

/// `GET /admin/sessions` as the admin (the shared password), or without auth when `auth` is
/// off.
async fn admin_sessions(addr: SocketAddr, auth: bool) -> Vec<Value> {
    let header = format!("basic {ADMIN_PASSWORD}");
    let headers: Vec<(&str, &str)> = if auth {
        vec![("Authorization", &header)]
    } else {
        vec![]
    };
    let (status, body) = http_request(addr, "GET", "/admin/sessions", &headers, b"").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["sessions"].as_array().unwrap().clone()
}

/// Waits until `/admin/sessions` lists none: an ended stream's session goes once its consumer
/// closed, moments after the response ended.
async fn no_sessions_left(addr: SocketAddr, auth: bool) {
    let deadline = Instant::now() + T;
    loop {
        let open = admin_sessions(addr, auth).await;
        if open.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "sessions still open: {open:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_jwt_ends_the_stream_with_an_unauthorized_error_event() {
    let dir = Dir::new("kp-sse-jwt");
    let topic = topic("sse-jwt", 1).await;
    produce_seq(&topic, 1, 0, 3).await;
    let secret = dir.put("secret", &format!("{JWT_SECRET}\n"));
    let proxy = Proxy::start_with(|c| {
        c.auth = Some(kafka_proxy::config::Secret::new(ADMIN_PASSWORD));
        c.security.jwt = Some(kafka_proxy::config::security::Jwt {
            secret_file: Some(secret),
            ..jwt_settings(ISSUER, AUDIENCE)
        });
    })
    .await;
    let exp = epoch_secs() + 4;
    let bearer = format!("Bearer {}", jwt("svc-sse", exp));
    let path = format!("/v1/sse?topic={topic}&partition=0&from=earliest");
    // The two ways in: a ticket bought with the JWT (a browser), the JWT as a header (others).
    let (status, body) = http_request(
        proxy.addr,
        "POST",
        "/v1/tickets",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        br#"{"path":"/v1/sse"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ticket: Value = serde_json::from_str(&body).unwrap();
    let with_ticket = format!(
        "{path}&ticket={}",
        urlencode(ticket["ticket"].as_str().unwrap())
    );
    let mut by_ticket = Sse::open(proxy.addr, &with_ticket, None)
        .await
        .expect("a ticket opens a stream");
    let (mut by_header, _) = Sse::open_with(proxy.addr, &path, None, &[("Authorization", &bearer)])
        .await
        .expect("a bearer JWT opens a stream");
    for s in [&mut by_ticket, &mut by_header] {
        exactly_once(&s.records(3).await, 1, 3);
    }
    for s in [&mut by_ticket, &mut by_header] {
        let (error, _) = read_to_error_end(s, Duration::from_secs(20)).await;
        let ended = epoch_secs();
        assert_eq!(error["code"], "unauthorized", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("credential expired"), "{message}");
        assert!(
            !message.contains("\"type\":\"auth\""),
            "an event stream cannot renew in-band: {message}"
        );
        assert!(
            ended >= exp && ended <= exp + 3,
            "ended at {ended}, the JWT expired at {exp}"
        );
    }
    no_sessions_left(proxy.addr, true).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_the_user_or_token_ends_its_streams() {
    const TOKEN: &str = "sse-static-token-0123456789";
    let dir = Dir::new("kp-sse-revoke");
    let topic = topic("sse-revoke", 1).await;
    let alice = format!("alice:{}", bcrypt::hash("alice-pw", 4).unwrap());
    let bob_entry = format!("bob:{}", bcrypt::hash("bob-pw", 4).unwrap());
    let users = dir.put("users", &format!("{alice}\n{bob_entry}\n"));
    let tokens = dir.put("tokens", &format!("ci:{TOKEN}\n"));
    let proxy = Proxy::start_with(|c| {
        c.auth = Some(kafka_proxy::config::Secret::new(ADMIN_PASSWORD));
        c.security.users_file = Some(users);
        c.security.tokens_file = Some(tokens);
    })
    .await;
    let consume = format!("/v1/sse?topic={topic}&partition=0&from=latest");
    let live = format!("/v1/sse?topic={topic}&live");
    let open = |path: String, auth: String| {
        let addr = proxy.addr;
        async move {
            let (mut s, _) = Sse::open_with(addr, &path, None, &[("Authorization", &auth)])
                .await
                .expect("stream");
            let (event, _, _) = s.event(T).await.expect("assigned");
            assert_eq!(event, "assigned");
            s
        }
    };
    let alice_auth = basic("alice:alice-pw");
    let mut alice_consume = open(consume.clone(), alice_auth.clone()).await;
    let mut alice_live = open(live.clone(), alice_auth).await;
    let mut bob = open(consume.clone(), basic("bob:bob-pw")).await;
    let mut ci = open(live.clone(), format!("Bearer {TOKEN}")).await;

    // alice leaves the users file; bob's line stays as it was.
    let started = Instant::now();
    dir.put("users", &format!("# alice left\n{bob_entry}\n"));
    for s in [&mut alice_consume, &mut alice_live] {
        let (error, _) = read_to_error_end(s, Duration::from_secs(15)).await;
        assert_eq!(error["code"], "unauthorized", "{error}");
        assert_eq!(error["message"], "credential revoked", "{error}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    stays_open(&mut bob, Duration::from_secs(1)).await;
    stays_open(&mut ci, Duration::from_millis(100)).await;

    // The token leaves the tokens file.
    dir.put("tokens", "# no tokens\n");
    let (error, _) = read_to_error_end(&mut ci, Duration::from_secs(15)).await;
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert_eq!(error["message"], "credential revoked", "{error}");
    stays_open(&mut bob, Duration::from_millis(500)).await;
    let principals: Vec<String> = admin_sessions(proxy.addr, true)
        .await
        .iter()
        .map(|s| s["principal"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(principals, vec!["user:bob".to_string()]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_close_ends_the_stream_with_closed_by_admin_and_a_long_retry() {
    let topic = topic("sse-close", 1).await;
    produce_seq(&topic, 1, 0, 2).await;
    let proxy = Proxy::start().await;
    let consume = format!("/v1/sse?topic={topic}&partition=0&from=earliest");
    let live = format!("/v1/sse?topic={topic}&live");
    let mut a = Sse::open(proxy.addr, &consume, None).await.expect("stream");
    a.records(2).await;
    let mut b = Sse::open(proxy.addr, &live, None).await.expect("stream");
    let (event, _, _) = b.event(T).await.expect("assigned");
    assert_eq!(event, "assigned");
    let sessions = admin_sessions(proxy.addr, false).await;
    for (s, kind) in [(&mut a, "sse"), (&mut b, "sse-tail")] {
        let id = sessions
            .iter()
            .find(|x| x["kind"] == kind)
            .and_then(|x| x["id"].as_u64())
            .unwrap_or_else(|| panic!("a {kind} session in {sessions:?}"));
        let (status, body) = http_request(
            proxy.addr,
            "POST",
            &format!("/admin/sessions/{id}/close"),
            &[("Content-Type", "application/json")],
            br#"{"reason":"maintenance"}"#,
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let (error, retries) = read_to_error_end(s, Duration::from_secs(10)).await;
        assert_eq!(error["code"], "closed_by_admin", "{error}");
        assert_eq!(error["message"], "maintenance", "{error}");
        // An EventSource reconnects by itself: told to wait 5 minutes first.
        assert_eq!(retries, vec![300_000], "{kind}");
    }
    no_sessions_left(proxy.addr, false).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sessions_shows_a_streams_partitions_delivered_and_acknowledged() {
    let topic = topic("sse-figures", 2).await;
    produce_seq(&topic, 2, 0, 5).await;
    let proxy = Proxy::start().await;
    let group = unique("sse-fig-g");
    let by_partition = format!("/v1/sse?topic={topic}&partition=0,1&from=earliest");
    let by_group = format!("/v1/sse?topic={topic}&group={group}&from=earliest");
    let live = format!("/v1/sse?topic={topic}&live");
    let mut a = Sse::open(proxy.addr, &by_partition, None)
        .await
        .expect("stream");
    let mut g = Sse::open(proxy.addr, &by_group, None)
        .await
        .expect("stream");
    exactly_once(&a.records(10).await, 2, 5);
    exactly_once(&g.records(10).await, 2, 5);
    let mut l = Sse::open(proxy.addr, &live, None).await.expect("stream");
    let (event, _, _) = l.event(T).await.expect("assigned");
    assert_eq!(event, "assigned");
    produce_seq(&topic, 2, 5, 2).await;
    exactly_once_from(&l.records(4).await, 2, 5, 2);
    exactly_once_from(&a.records(4).await, 2, 5, 2);
    exactly_once_from(&g.records(4).await, 2, 5, 2);
    // (kind, group, records delivered, partitions with their position, or no positions)
    let want: [(&str, Value, u64, bool); 3] = [
        ("sse", Value::Null, 14, true),
        ("sse", Value::String(group.clone()), 14, true),
        ("sse-tail", Value::Null, 4, false),
    ];
    let deadline = Instant::now() + T;
    loop {
        let sessions = admin_sessions(proxy.addr, false).await;
        let mismatch = want.iter().find_map(|(kind, group, sent, positions)| {
            let s = sessions
                .iter()
                .find(|s| s["kind"] == *kind && s["group"] == *group)?;
            let parts: Vec<(i64, Value, Value)> = s["assigned"]
                .as_array()?
                .iter()
                .map(|a| {
                    (
                        a["partition"].as_i64().unwrap(),
                        a["position"].clone(),
                        a["lag"].clone(),
                    )
                })
                .collect();
            let want_parts: Vec<(i64, Value, Value)> = (0..2)
                .map(|p| {
                    if *positions {
                        (p, Value::from(7), Value::from(0))
                    } else {
                        (p, Value::Null, Value::Null)
                    }
                })
                .collect();
            let ok = s["sent"] == *sent
                && s["acked"] == *sent
                && s["unacked"] == 0
                && parts == want_parts
                && (!*positions || s["lag"] == 0);
            (!ok).then(|| s.clone())
        });
        let listed = want.iter().all(|(kind, group, _, _)| {
            sessions
                .iter()
                .any(|s| s["kind"] == *kind && s["group"] == *group)
        });
        if listed && mismatch.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions do not show the streams' figures: {mismatch:?} in {sessions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.stop().await;
}
