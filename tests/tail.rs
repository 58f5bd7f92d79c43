//! Live tail (`/v1/tail`) against the real broker: shared fan-out, slow sockets skip, reader lifecycle.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use rdkafka::producer::FutureRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// Produces `n` records of `size` bytes with every send in flight at once.
async fn produce_many(topic: &str, n: usize, size: usize, tag: &str) {
    let p = producer();
    let value = format!("{tag}-{}", "x".repeat(size.saturating_sub(tag.len() + 1)));
    let futs: Vec<_> = (0..n)
        .map(|i| {
            let key = i.to_string();
            let p = p.clone();
            let value = value.clone();
            let topic = topic.to_string();
            async move {
                p.send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce")
            }
        })
        .collect();
    futures::future::join_all(futs).await;
}

/// GET `path` over plain HTTP/1.0; returns the body.
async fn http_get(proxy: &Proxy, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

async fn readers(proxy: &Proxy) -> Vec<serde_json::Value> {
    let body = http_get(proxy, "/admin/tail").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("admin/tail JSON");
    v["readers"].as_array().cloned().unwrap_or_default()
}

/// What one tail socket has seen.
#[derive(Default, Debug)]
struct Seen {
    values: Vec<String>,
    skipped: u64,
}

impl Seen {
    fn take(&mut self, frame: &str) {
        let v: serde_json::Value = serde_json::from_str(frame).expect("JSON frame");
        match v["type"].as_str() {
            Some("records") => {
                for r in v["records"].as_array().expect("records array") {
                    self.values
                        .push(r["value"].as_str().unwrap_or_default().to_string());
                }
            }
            Some("skipped") => self.skipped += v["records"].as_u64().expect("skipped count"),
            other => panic!("unexpected frame type {other:?}: {frame}"),
        }
    }
}

async fn assigned(ws: &mut Ws) {
    let hello = next_text(ws, T).await;
    assert!(
        hello.starts_with("{\"type\":\"assigned\""),
        "first frame is assigned: {hello}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_share_one_reader_and_all_receive() {
    let topic = topic("tail-fanout", 2).await;
    let proxy = Proxy::start().await;
    let mut socks = Vec::new();
    for _ in 0..3 {
        let mut ws = proxy.connect(&format!("/v1/tail?topic={topic}")).await;
        assigned(&mut ws).await;
        socks.push(ws);
    }
    let r = readers(&proxy).await;
    assert_eq!(r.len(), 1, "one shared reader: {r:?}");
    assert_eq!(r[0]["sockets"], 3);

    produce_many(&topic, 20, 10, "v").await;
    for ws in socks.iter_mut() {
        let mut seen = Seen::default();
        while seen.values.len() < 20 {
            seen.take(&next_text(ws, T).await);
        }
        assert_eq!(seen.values.len(), 20);
        assert_eq!(seen.skipped, 0);
    }
    // A bad parameter is refused before the upgrade.
    let bad =
        tokio_tungstenite::connect_async(proxy.url(&format!("/v1/tail?topic={topic}&group=g")))
            .await;
    assert!(bad.is_err(), "group is not a tail parameter");

    for ws in socks {
        close(ws).await;
    }
    // The last socket leaving stops the reader.
    let mut left = readers(&proxy).await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = readers(&proxy).await;
    }
    assert!(
        left.is_empty(),
        "reader stopped after the last socket: {left:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_socket_skips_and_never_holds_back_the_others() {
    let topic = topic("tail-slow", 1).await;
    let proxy = Proxy::start().await;

    // The slow socket has a tiny receive buffer and stops reading after "assigned".
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(proxy.addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut slow, _) =
        tokio_tungstenite::client_async(proxy.url(&format!("/v1/tail?topic={topic}")), stream)
            .await
            .expect("slow socket connects");
    assigned(&mut slow).await;

    let mut fast = proxy.connect(&format!("/v1/tail?topic={topic}")).await;
    assigned(&mut fast).await;

    // Far more than the ring plus the kernel's socket buffers: the slow socket must fall behind.
    // Produced in chunks the fast socket reads before the next, so it never lags (even in a
    // debug build on a loaded machine), while the slow socket falls further behind every chunk.
    const N: usize = 16_000;
    const CHUNK: usize = 1_000;
    let progress = Arc::new(AtomicUsize::new(0));
    let p2 = progress.clone();
    let fast_reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        while seen.values.len() < N {
            seen.take(&next_text(&mut fast, T).await);
            p2.store(seen.values.len(), Ordering::Relaxed);
        }
        (seen, fast)
    });
    for chunk in 1..=N / CHUNK {
        produce_many(&topic, CHUNK, 1000, "big").await;
        let deadline = tokio::time::Instant::now() + T;
        while progress.load(Ordering::Relaxed) < chunk * CHUNK {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fast socket stuck at {} of {}",
                progress.load(Ordering::Relaxed),
                chunk * CHUNK
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (seen, fast) = fast_reader.await.unwrap();
    assert_eq!(seen.values.len(), N, "the fast socket got every record");
    assert_eq!(seen.skipped, 0, "the fast socket skipped nothing");

    // Now the slow socket reads: records plus skipped counts add up to everything produced.
    let mut slow_seen = Seen::default();
    while slow_seen.values.len() as u64 + slow_seen.skipped < N as u64 {
        let m = tokio::time::timeout(T, slow.next())
            .await
            .expect("slow socket gets frames")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            slow_seen.take(t.as_str());
        }
    }
    assert!(
        slow_seen.skipped > 0,
        "the slow socket was told it skipped records"
    );
    assert_eq!(slow_seen.values.len() as u64 + slow_seen.skipped, N as u64);
    close(slow).await;
    close(fast).await;
    proxy.stop().await;
}
