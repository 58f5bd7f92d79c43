//! Shared integration-test harness: a real proxy on port 0 against the real local broker.
//!
//! Tests never skip: if Kafka is unreachable they fail with a message saying how to start it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kafka_proxy::config::Config;
use kafka_proxy::shutdown::{self, ShutdownTrigger};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A unique name per test and run, so tests never share topics or groups.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

pub fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap());
    c
}

/// Fails loudly when the broker is down: tests that need Kafka never skip.
pub async fn require_kafka() {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let ok = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .is_ok()
    })
    .await
    .unwrap();
    assert!(
        ok,
        "Kafka is not reachable at {}: start it with `scripts/kafka start` (make test does this)",
        bootstrap()
    );
}

/// Creates a topic with a unique name and waits until its metadata is visible.
pub async fn topic(prefix: &str, partitions: i32) -> String {
    require_kafka().await;
    let name = unique(prefix);
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    for r in res {
        r.expect("topic created");
    }
    // Wait until every partition has a leader.
    use rdkafka::consumer::Consumer;
    for _ in 0..100 {
        let n = name.clone();
        let c: rdkafka::consumer::BaseConsumer = client_config().create().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&n), Duration::from_secs(5))
                .map(|md| {
                    md.topics().first().is_some_and(|t| {
                        t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false)
        })
        .await
        .unwrap();
        if ready {
            return name;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {name} never became ready");
}

pub fn producer() -> FutureProducer {
    client_config()
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces `values` to one partition and returns their offsets.
pub async fn produce(topic: &str, partition: i32, values: &[&[u8]]) -> Vec<i64> {
    let p = producer();
    let mut offsets = Vec::new();
    for v in values {
        let d = p
            .send(
                FutureRecord::<(), [u8]>::to(topic)
                    .partition(partition)
                    .payload(v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        offsets.push(d.offset);
    }
    offsets
}

/// Produces `records` (partition, value), every send in flight at once; returns once all are
/// stored.
pub async fn produce_all(topic: &str, records: impl IntoIterator<Item = (i32, Vec<u8>)>) {
    let p = producer();
    let mut futs = Vec::new();
    for (partition, value) in records {
        futs.push(
            p.send_result(
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queue record"),
        );
    }
    for f in futs {
        f.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// Runs `openssl ARGS` in `dir`, failing the test unless it succeeds; returns its standard
/// output.
pub fn openssl(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    trigger: Option<ShutdownTrigger>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Proxy {
        require_kafka().await;
        let mut config = Config {
            kafka: bootstrap(),
            ..Config::default()
        };
        f(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, sd) = shutdown::channel();
        let handle = tokio::spawn(async move {
            kafka_proxy::run(listener, config, sd)
                .await
                .expect("proxy run");
        });
        Proxy {
            addr,
            trigger: Some(trigger),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self, path_and_query: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(path_and_query))
            .await
            .expect("websocket connect");
        ws
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("proxy stops within 30 s")
                .unwrap();
        }
    }
}

/// Next text frame, failing the test on timeout, close or error.
pub async fn next_text(ws: &mut Ws, within: Duration) -> String {
    loop {
        let m = tokio::time::timeout(within, ws.next())
            .await
            .expect("a frame within the time limit")
            .expect("socket open")
            .expect("no socket error");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next frame as JSON (v1 frames), within 20 s.
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&next_text(ws, Duration::from_secs(20)).await).expect("v1 frames are JSON")
}

/// The next frame of type `kind`, skipping others (assigned/revoked notices).
pub async fn next_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Waits for the close frame and returns (code, reason).
pub async fn expect_close(ws: &mut Ws, within: Duration) -> (u16, String) {
    loop {
        let m = tokio::time::timeout(within, ws.next())
            .await
            .expect("close within the time limit");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

/// Reads seed frames until `n` records arrived; returns (message, offset) pairs in order.
pub async fn read_seed(ws: &mut Ws, n: usize, within: Duration) -> Vec<(Option<String>, i64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let t = next_text(ws, within).await;
        let arr: Vec<serde_json::Value> =
            serde_json::from_str(&t).expect("seed frame is a JSON array");
        for r in arr {
            out.push((
                r["message"].as_str().map(str::to_string),
                r["offset"].as_i64().expect("offset"),
            ));
        }
    }
    out
}

pub async fn close(mut ws: Ws) {
    let _ = ws.send(Message::Close(None)).await;
    // Drain until the server's close arrives so the session ends cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Committed offsets of a group for a topic, read independently of the proxy.
pub async fn committed(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client_config().set("group.id", group).create().unwrap();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let res = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        res.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// A minimal HTTP/1.1 request (no client crate needed): returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time")
        .expect("read HTTP answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, body)
}

/// Reads a topic from the beginning with an independent consumer (no group) until `n` records
/// arrived, then a little longer to catch duplicates. Records come in per-partition order.
pub async fn read_back(
    topic: &str,
    partitions: i32,
    n: usize,
    within: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client_config()
        .set("group.id", unique("readback"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("read-back consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        let mut extra_until: Option<std::time::Instant> = None;
        loop {
            if let Some(t) = extra_until {
                if std::time::Instant::now() >= t {
                    break;
                }
            } else if start.elapsed() > within {
                panic!("read back only {} of {n} records", out.len());
            }
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(m.detach()),
                Some(Err(e)) => panic!("read-back error: {e}"),
                None => {}
            }
            if out.len() >= n && extra_until.is_none() {
                extra_until = Some(std::time::Instant::now() + Duration::from_millis(500));
            }
        }
        out
    })
    .await
    .unwrap()
}

/// A directory of the test's own (credential files, keys), removed at the end.
pub struct Dir(pub std::path::PathBuf);

impl Dir {
    pub fn new(prefix: &str) -> Dir {
        let d = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
    /// Writes a file whole, by renaming a complete file over it (a new inode, as deploys do).
    pub fn put(&self, name: &str, text: &str) -> std::path::PathBuf {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
        self.path(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// JWT settings that require `issuer` and `audience`, with no key source yet (the test adds
/// one) and the defaults otherwise.
pub fn jwt_settings(issuer: &str, audience: &str) -> kafka_proxy::config::security::Jwt {
    kafka_proxy::config::security::Jwt {
        jwks_file: None,
        jwks_url: None,
        secret_file: None,
        issuer: Some(issuer.into()),
        audience: Some(audience.into()),
        leeway: Duration::from_secs(30),
        roles_claim: "roles".into(),
        grants_claim: None,
        jwks_refresh: Duration::from_secs(300),
    }
}
