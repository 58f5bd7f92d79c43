//! A reconnect storm on the live tail: hundreds of sockets open at once on a topic no reader
//! follows yet. One reader starts (single-flight), not one librdkafka client per socket, and every
//! socket receives what is produced next.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{next_text, produce, topic, Proxy};
use futures::future::join_all;

/// librdkafka clients alive in this process: each has exactly one `rdk:main` thread.
fn rdkafka_clients() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        panic!("/proc/self/task is needed to count librdkafka clients");
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "rdk:main")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_storm_starts_one_reader_and_every_socket_receives() {
    const SOCKETS: usize = 300;
    let topic = topic("tail-storm", 2).await;
    let proxy = Proxy::start().await;
    // The proxy's own clients (metadata, producer) exist before the storm: it answers /readyz
    // through them. (A fixed sleep was too short on a loaded machine.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reqwest_like_get(&proxy, "/readyz").await.split(' ').nth(1) != Some("200") {
        assert!(std::time::Instant::now() < deadline, "proxy never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = rdkafka_clients();
    let most = Arc::new(AtomicUsize::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (most, sampling) = (most.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                most.fetch_max(rdkafka_clients(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let url = format!("/v1/tail?topic={topic}");
    let mut sockets = join_all((0..SOCKETS).map(|_| proxy.connect(&url))).await;
    for ws in &mut sockets {
        let hello = next_text(ws, Duration::from_secs(30)).await;
        assert!(hello.contains("\"assigned\""), "{hello}");
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let started = most.load(Ordering::Relaxed) - before;
    assert!(
        started <= 1,
        "{started} librdkafka clients were started for one topic's tail ({SOCKETS} sockets)"
    );

    produce(&topic, 1, &[b"after the storm"]).await;
    let got = join_all(sockets.iter_mut().map(|ws| async move {
        loop {
            let t = next_text(ws, Duration::from_secs(30)).await;
            if t.contains("\"records\"") {
                return t.contains("after the storm");
            }
        }
    }))
    .await;
    assert!(got.iter().all(|ok| *ok), "every socket gets the record");
    let admin = reqwest_like_get(&proxy, "/admin/tail").await;
    assert!(admin.contains(&format!("\"sockets\":{SOCKETS}")), "{admin}");
    drop(sockets);
    proxy.stop().await;
}

/// GET over a raw connection (the tests carry no HTTP client).
async fn reqwest_like_get(proxy: &Proxy, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
