//! A reconnect storm on the live tail: hundreds of sockets open at once on a topic no reader
//! follows yet. One reader starts (single-flight), not one librdkafka client per socket, and every
//! socket receives what is produced next.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{next_text, produce, topic, Proxy};
use futures::future::join_all;

/// Threads of this process named `rdk:main`, by thread id. Each librdkafka client has exactly
/// one, but a thread that librdkafka's main thread starts (a broker thread) carries that name
/// too until it names itself: see `clients_started`.
fn rdk_main_threads() -> BTreeSet<u64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        panic!("/proc/self/task is needed to count librdkafka clients");
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "rdk:main")
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// librdkafka clients started since `before` among the `rdk:main` threads `seen`: a thread
/// still alive under another name was a broker thread caught before it named itself; one that
/// ended was a client's (started, then thrown away).
fn clients_started(before: &BTreeSet<u64>, seen: &BTreeSet<u64>) -> usize {
    seen.difference(before)
        .filter(
            |tid| match std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")) {
                Ok(name) => name.trim() == "rdk:main",
                Err(_) => true,
            },
        )
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
    let before = rdk_main_threads();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while sampling.load(Ordering::Relaxed) {
                seen.extend(rdk_main_threads());
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    let url = format!("/v1/tail?topic={topic}");
    let mut sockets = join_all((0..SOCKETS).map(|_| proxy.connect(&url))).await;
    for ws in &mut sockets {
        let hello = next_text(ws, Duration::from_secs(30)).await;
        assert!(hello.contains("\"assigned\""), "{hello}");
    }
    sampling.store(false, Ordering::Relaxed);
    let seen = sampler.join().expect("sampler");
    let started = clients_started(&before, &seen);
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
