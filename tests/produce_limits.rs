//! Produce amplification: a frame or request may hold only `MAX_FRAME_RECORDS` records, and a
//! client flooding frames that would become hundreds of thousands of answers cannot grow the
//! proxy's memory. Against the real broker; the memory test runs the real binary as a
//! subprocess so it can read its resident set size.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use kafka_proxy::protocol::produce::MAX_FRAME_RECORDS;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// The default `maxFrameBytes`: the largest frame (and HTTP body) a client may send.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

fn parse(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

/// `[0,0,...,0]` filling `bytes`: each element is a record (an error) to answer.
fn zeros(bytes: usize) -> String {
    let n = (bytes - 2) / 2;
    let mut s = String::with_capacity(bytes);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('0');
    }
    s.push(']');
    s
}

/// A JSON array of `n` valid records.
fn records(n: usize, value: &str) -> String {
    let one = serde_json::json!({ "value": value }).to_string();
    format!("[{}]", vec![one; n].join(","))
}

/// The largest array of `{"value":""}` records that fits in `bytes`.
fn records_filling(bytes: usize) -> String {
    records((bytes - 2) / 13, "")
}

/// Reads the next `n` answers and checks they are acks numbered `first`, `first + 1`, ...
async fn expect_acks(ws: &mut Ws, first: u64, n: usize) {
    for k in 0..n as u64 {
        let a = parse(&next_text(ws, T).await);
        assert_eq!(a["type"], "ack", "answer {} of {n}: {a}", k + 1);
        assert_eq!(a["id"].as_u64(), Some(first + k), "{a}");
    }
}

async fn expect_too_large(ws: &mut Ws, id: u64) {
    let e = parse(&next_text(ws, T).await);
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(e["id"].as_u64(), Some(id), "{e}");
    let limit = MAX_FRAME_RECORDS.to_string();
    assert!(e["message"].as_str().unwrap().contains(&limit), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_record_limit_is_one_too_large_answer() {
    let topic = topic("produce-frame-records", 1).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    // One record over the limit: the whole frame is refused, with one answer.
    ws.send(Message::text(records(MAX_FRAME_RECORDS + 1, "over")))
        .await
        .unwrap();
    expect_too_large(&mut ws, 1).await;
    // At the limit: every record is produced and answered.
    ws.send(Message::text(records(MAX_FRAME_RECORDS, "at")))
        .await
        .unwrap();
    expect_acks(&mut ws, 2, MAX_FRAME_RECORDS).await;
    // Half a million would-be errors in one frame: one answer.
    let next = 2 + MAX_FRAME_RECORDS as u64;
    ws.send(Message::text(zeros(MAX_FRAME_BYTES)))
        .await
        .unwrap();
    expect_too_large(&mut ws, next).await;
    ws.send(Message::text(records_filling(MAX_FRAME_BYTES)))
        .await
        .unwrap();
    expect_too_large(&mut ws, next + 1).await;
    // The socket goes on, numbering on.
    ws.send(Message::text("after")).await.unwrap();
    expect_acks(&mut ws, next + 2, 1).await;
    close(ws).await;
    // Only the frame within the limit and the last record were produced.
    let msgs = read_back(&topic, 1, MAX_FRAME_RECORDS + 1, T).await;
    assert_eq!(msgs.len(), MAX_FRAME_RECORDS + 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_over_the_record_limit_is_413() {
    let topic = topic("produce-http-records", 1).await;
    let proxy = Proxy::start().await;
    let path = format!("/v1/topics/{topic}/records");
    let json = [("Content-Type", "application/json")];
    for body in [
        records(MAX_FRAME_RECORDS + 1, "over"),
        zeros(MAX_FRAME_BYTES),
        records_filling(MAX_FRAME_BYTES),
    ] {
        let (status, text) = http_request(proxy.addr, "POST", &path, &json, body.as_bytes()).await;
        assert_eq!(status, 413, "{}", &text[..text.len().min(300)]);
        let e = parse(&text);
        assert_eq!(e["error"]["code"], "too_large", "{e}");
        let limit = MAX_FRAME_RECORDS.to_string();
        assert!(e["error"]["message"].as_str().unwrap().contains(&limit));
    }
    let body = records(MAX_FRAME_RECORDS, "at");
    let (status, text) = http_request(proxy.addr, "POST", &path, &json, body.as_bytes()).await;
    assert_eq!(status, 200, "{}", &text[..text.len().min(300)]);
    let results = parse(&text)["records"].as_array().unwrap().clone();
    assert_eq!(results.len(), MAX_FRAME_RECORDS);
    assert!(results.iter().all(|r| r["offset"].is_i64()));
    // Nothing of the refused requests was produced.
    let msgs = read_back(&topic, 1, MAX_FRAME_RECORDS, T).await;
    assert_eq!(msgs.len(), MAX_FRAME_RECORDS);
    proxy.stop().await;
}

/// The proxy binary, killed when the test ends however it ends.
struct Subprocess(Child);

impl Drop for Subprocess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident set size of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// What the proxy's resident memory may grow by while clients flood it with frames that hold
/// hundreds of thousands of records each. The proxy's own bound is far lower (a frame of at most
/// `MAX_FRAME_RECORDS` answers, a window of answers per socket, a frame or two being read);
/// the rest is allocator and librdkafka slack. Measured (debug build, 6 s flood): about 10 MB of
/// growth with the limits, about 490 MB without them.
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

/// How long the clients flood the proxy.
const FLOOD: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_amplifying_frames_keeps_memory_flat_and_others_served() {
    let topic = topic("produce-flood", 1).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
        .args(["--kafka", &bootstrap(), "--ws-port", &port.to_string()])
        .args(["--host", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the proxy binary");
    let proxy = Subprocess(child);
    let pid = proxy.0.id();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < T, "the proxy never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("ws://{addr}/v1/produce?topic={topic}");
    let connect = || async {
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("websocket connect")
            .0
    };

    // Warm up every socket and path once, so the baseline is the proxy's working size.
    let mut good = connect().await;
    good.send(Message::text(records(MAX_FRAME_RECORDS, "warm")))
        .await
        .unwrap();
    expect_acks(&mut good, 1, MAX_FRAME_RECORDS).await;
    let mut next_id = 1 + MAX_FRAME_RECORDS as u64;
    let mut deaf = connect().await;
    let reader = connect().await;
    let before = rss(pid);

    let zeros = zeros(MAX_FRAME_BYTES);
    let filling = records_filling(MAX_FRAME_BYTES);
    let valid = records(MAX_FRAME_RECORDS, "v");
    let until = Instant::now() + FLOOD;
    // A client that never reads its answers.
    let deaf_flood = {
        let zeros = zeros.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                let send = deaf.send(Message::text(zeros.clone()));
                match tokio::time::timeout(Duration::from_millis(200), send).await {
                    Ok(Ok(())) => sent += 1,
                    Ok(Err(e)) => panic!("deaf flooder: {e}"),
                    Err(_) => {} // pushed back: the proxy stopped reading
                }
            }
            (deaf, sent)
        })
    };
    // A client that reads its answers as fast as it can and sends as fast as it can.
    let (mut sink, mut stream) = reader.split();
    let drain = tokio::spawn(async move {
        let mut answers = 0u64;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, stream.next()).await {
            answers += 1;
        }
        answers
    });
    let loud_flood = tokio::spawn(async move {
        let mut sent = 0u64;
        let frames = [zeros, filling, valid];
        while Instant::now() < until {
            let frame = &frames[sent as usize % frames.len()];
            let send = sink.send(Message::text(frame.clone()));
            match tokio::time::timeout(Duration::from_millis(200), send).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("reading flooder: {e}"),
                Err(_) => {}
            }
        }
        (sink, sent)
    });
    // Meanwhile: the proxy's memory, and a well-behaved socket producing one record at a time.
    let mut peak = before;
    let mut acked = 0u64;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let asked = Instant::now();
        good.send(Message::text("good")).await.unwrap();
        expect_acks(&mut good, next_id, 1).await;
        slowest = slowest.max(asked.elapsed());
        next_id += 1;
        acked += 1;
        peak = peak.max(rss(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (deaf, deaf_sent) = deaf_flood.await.unwrap();
    let (sink, loud_sent) = loud_flood.await.unwrap();
    peak = peak.max(rss(pid));
    let after = rss(pid);
    const MB: f64 = 1024.0 * 1024.0;
    eprintln!(
        "proxy RSS: before {:.1} MB, peak {:.1} MB, after {:.1} MB (growth {:.1} MB); \
         flood frames taken: {deaf_sent} unread, {loud_sent} read; good socket: {acked} acks, \
         slowest {slowest:?}",
        before as f64 / MB,
        peak as f64 / MB,
        after as f64 / MB,
        peak.saturating_sub(before) as f64 / MB,
    );
    assert!(
        deaf_sent + loud_sent >= 10,
        "the flood barely ran: {deaf_sent} + {loud_sent} frames"
    );
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_LIMIT,
        "RSS grew from {:.1} MB to {:.1} MB (limit {:.0} MB of growth)",
        before as f64 / MB,
        peak as f64 / MB,
        RSS_GROWTH_LIMIT as f64 / MB
    );
    assert!(acked >= 10, "the well-behaved socket got only {acked} acks");
    drain.abort();
    drop((deaf, sink));
    close(good).await;
}
