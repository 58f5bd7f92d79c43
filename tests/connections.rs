//! Connection-level limits, before HTTP (docs/PROTOCOL.md, "Limits"): half-sent requests are
//! dropped after the header-read timeout, and sockets beyond `maxConnections` + headroom are
//! refused with 429 `limit_reached` while the proxy keeps serving the ones it holds.

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use kafka_proxy::transport::listen::{HEADER_READ_TIMEOUT, SOCKET_HEADROOM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a whole GET request on a fresh connection and returns the whole answer.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_dropped_after_the_header_timeout() {
    let proxy = Proxy::start().await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    // Headers that never end (slowloris).
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // A whole request beside it is answered at once.
    assert!(get(proxy.addr, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        HEADER_READ_TIMEOUT + Duration::from_secs(5),
        slow.read_to_end(&mut buf),
    )
    .await
    .expect("the proxy drops a half-sent request");
    // Closed (EOF, or a reset), with no 2xx answer.
    assert!(
        read.is_err() || !String::from_utf8_lossy(&buf).contains(" 200 "),
        "{buf:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "dropped after {took:?}, before the timeout"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_the_cap_are_refused_with_429_then_accepted_again() {
    const MAX: usize = 4;
    let proxy = Proxy::start_with(|c| c.max_connections = MAX).await;
    let cap = MAX + SOCKET_HEADROOM;
    // Kept-alive connections, each after one whole request: they hold their sockets until the
    // header-read timeout, and unlike sockets still waiting for a first request (which a newer
    // socket may replace after FIRST_REQUEST_GRACE; tests/hostile.rs) nothing takes their place.
    let mut idle = Vec::with_capacity(cap);
    for _ in 0..cap {
        let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .expect("write request");
        idle.push(tcp);
    }
    for tcp in &mut idle {
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 200", "kept-alive request");
    }
    // The accept loop takes them asynchronously: probe until one is refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let answer = get(proxy.addr, "/healthz").await;
        if answer.starts_with("HTTP/1.1 429") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "never refused with {cap} sockets open: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.contains("\"limit_reached\""), "{refused}");
    assert!(refused.contains("maxConnections"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // The sockets it holds are still served.
    let mut held = idle.pop().expect("a held socket");
    held.write_all(b"GET /healthz HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    held.read_to_end(&mut answer).await.unwrap();
    // The rest of its first answer, then the second one.
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("HTTP/1.1 200"), "{answer}");
    // Once they leave, new sockets are accepted again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get(proxy.addr, "/healthz").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

/// The status line of an upgrade attempt that the proxy answers without upgrading, or 101.
async fn upgrade_status(proxy: &Proxy, path: &str) -> (u16, String) {
    use tokio_tungstenite::tungstenite::Error;
    match tokio_tungstenite::connect_async(proxy.url(path)).await {
        Ok((ws, resp)) => {
            drop(ws);
            (resp.status().as_u16(), String::new())
        }
        Err(Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("upgrade of {path} failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_are_reserved_from_one_budget_of_unacknowledged_records() {
    let topic = common::topic("budget", 1).await;
    let proxy = Proxy::start_with(|c| c.max_unacked_records = 1500).await;
    let path = |g: &str| format!("/v1/consume?topic={topic}&group={g}&commit=ack&window=1000");
    let first = proxy.connect(&path("b1")).await;
    // 1000 of 1500 are reserved: another window of 1000 does not fit.
    let (status, body) = upgrade_status(&proxy, &path("b2")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("maxUnackedRecords = 1500"), "{body}");
    // Neither does a produce socket (it reserves at least one frame's 1000 records).
    let (status, _) = upgrade_status(&proxy, &format!("/v1/produce?topic={topic}")).await;
    assert_eq!(status, 429);
    // A smaller window fits, and sockets without a window never count.
    let (status, _) = upgrade_status(
        &proxy,
        &format!("/v1/consume?topic={topic}&group=b3&commit=ack&window=400"),
    )
    .await;
    assert_eq!(status, 101);
    let (status, _) = upgrade_status(&proxy, &format!("/v1/tail?topic={topic}")).await;
    assert_eq!(status, 101);
    // Closing the first socket gives its window back.
    common::close(first).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = upgrade_status(&proxy, &path("b4")).await;
        if status == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "window never given back: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.stop().await;
}

/// `maxTailReaders`: with 3 topics followed, a socket on a 4th is refused with 429 while more
/// sockets on a followed topic still join its reader; once a topic's last socket leaves, its
/// reader ends and the 4th topic can be followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_readers_are_capped_by_max_tail_readers() {
    const MOST: usize = 3;
    let mut topics = Vec::new();
    for _ in 0..=MOST {
        topics.push(common::topic("tail-cap", 1).await);
    }
    let proxy = Proxy::start_with(|c| c.max_tail_readers = MOST).await;
    let tail = |t: &str| format!("/v1/tail?topic={t}");
    let assigned = |mut ws: common::Ws| async move {
        let v: serde_json::Value =
            serde_json::from_str(&common::next_text(&mut ws, Duration::from_secs(20)).await)
                .expect("JSON frame");
        assert_eq!(v["type"], "assigned", "{v}");
        ws
    };
    let mut followed = Vec::new();
    for t in &topics[..MOST] {
        followed.push(assigned(proxy.connect(&tail(t)).await).await);
    }
    // Joining a running reader takes no new one.
    let (status, body) = upgrade_status(&proxy, &tail(&topics[1])).await;
    assert_eq!(status, 101, "{body}");
    for path in [
        tail(&topics[MOST]),
        // Another encoding of a followed topic is a reader of its own.
        format!("{}&encoding=base64", tail(&topics[1])),
    ] {
        let (status, body) = upgrade_status(&proxy, &path).await;
        assert_eq!(status, 429, "{path}: {body}");
        assert!(
            body.contains("limit_reached") && body.contains("maxTailReaders = 3"),
            "{body}"
        );
    }
    // The first topic's only socket leaves: its reader stops and frees its place.
    common::close(followed.remove(0)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let fourth = loop {
        match tokio_tungstenite::connect_async(proxy.url(&tail(&topics[MOST]))).await {
            Ok((ws, _)) => break ws,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the reader's place was never freed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut fourth = assigned(fourth).await;
    common::produce(&topics[MOST], 0, &[b"fourth"]).await;
    let v: serde_json::Value =
        serde_json::from_str(&common::next_text(&mut fourth, Duration::from_secs(20)).await)
            .expect("JSON frame");
    assert_eq!(v["records"][0]["value"], "fourth", "{v}");
    common::close(fourth).await;
    for ws in followed {
        common::close(ws).await;
    }
    proxy.stop().await;
}
