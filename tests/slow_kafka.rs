//! The proxy against a Kafka that answers slowly: the real broker behind a relay that holds
//! every answer for a set latency (and gives the relay's own address as the broker's, so every
//! client of the proxy goes through it). The relay counts the metadata requests of the proxy's
//! look-up client in flight, which is how concurrency shows from outside:
//!
//! - one consume request's look-ups run concurrently (several in flight), and all of them
//!   together end within their deadline (`kafka_unavailable` after 8 s, not one 5 s look-up
//!   after another);
//! - sessions set their Kafka side up at most `SETUP_CONCURRENCY` (32) at a time.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kafka_proxy::kafka::metadata::RESOLVE_TIMEOUT;
use kafka_proxy::kafka::SETUP_CONCURRENCY;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

/// The client id of the proxy's shared look-up client (`kafka::Kafka`).
const LOOKUP_CLIENT: &[u8] = b"kafka-proxy-meta";

/// Kafka's Metadata request.
const METADATA: i16 = 3;

/// Look-ups of the proxy's look-up client seen by the relay.
#[derive(Default)]
struct Lookups {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    sent: AtomicUsize,
    /// When the first was sent and the last answered since the last `reset`.
    span: Mutex<Option<(Instant, Instant)>>,
}

impl Lookups {
    fn reset(&self) {
        self.peak.store(self.in_flight.load(Relaxed), Relaxed);
        self.sent.store(0, Relaxed);
        *self.span.lock().unwrap() = None;
    }

    fn sent(&self) {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(now, Relaxed);
        self.sent.fetch_add(1, Relaxed);
        let mut span = self.span.lock().unwrap();
        if span.is_none() {
            *span = Some((Instant::now(), Instant::now()));
        }
    }

    fn answered(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        if let Some((_, last)) = self.span.lock().unwrap().as_mut() {
            *last = Instant::now();
        }
    }

    fn took(&self) -> Duration {
        self.span
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |(first, last)| last - first)
    }
}

/// The relay in front of the real broker.
struct SlowKafka {
    addr: SocketAddr,
    latency_ms: Arc<AtomicU64>,
    lookups: Arc<Lookups>,
    accept: tokio::task::JoinHandle<()>,
}

impl SlowKafka {
    async fn start(latency: Duration) -> SlowKafka {
        require_kafka().await;
        let broker: SocketAddr = bootstrap().parse().expect("KAFKA_BOOTSTRAP is ip:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let latency_ms = Arc::new(AtomicU64::new(latency.as_millis() as u64));
        let lookups = Arc::new(Lookups::default());
        let (l, k) = (latency_ms.clone(), lookups.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, broker, addr, l.clone(), k.clone()));
            }
        });
        SlowKafka {
            addr,
            latency_ms,
            lookups,
            accept,
        }
    }

    fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(latency.as_millis() as u64, Relaxed);
    }
}

impl Drop for SlowKafka {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One Kafka frame (its 4-byte size included), or `None` at the end of the stream.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    r.read_exact(&mut size).await.ok()?;
    let n = i32::from_be_bytes(size);
    let mut frame = vec![0u8; 4 + usize::try_from(n).ok()?];
    frame[..4].copy_from_slice(&size);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// Replaces the broker's address with the relay's wherever an answer names it (metadata, group
/// coordinator): the host's bytes followed by the port, whatever the string encoding before it.
fn readdress(frame: &mut [u8], broker: SocketAddr, relay: SocketAddr) {
    let host = broker.ip().to_string();
    let mut needle = host.clone().into_bytes();
    needle.extend_from_slice(&i32::from(broker.port()).to_be_bytes());
    let port = i32::from(relay.port()).to_be_bytes();
    let mut i = 0;
    while i + needle.len() <= frame.len() {
        if frame[i..i + needle.len()] == needle[..] {
            let at = i + host.len();
            frame[at..at + 4].copy_from_slice(&port);
            i += needle.len();
        } else {
            i += 1;
        }
    }
}

/// Relays one connection: requests go to the broker at once, each answer is held for the
/// latency (answers keep their order, as on a slow network).
async fn relay(
    client: TcpStream,
    broker: SocketAddr,
    me: SocketAddr,
    latency_ms: Arc<AtomicU64>,
    lookups: Arc<Lookups>,
) {
    let Ok(upstream) = TcpStream::connect(broker).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = upstream.into_split();
    // Correlation id -> whether it is a look-up being counted.
    let pending: Arc<Mutex<HashMap<i32, bool>>> = Arc::default();
    let p = pending.clone();
    let k = lookups.clone();
    tokio::spawn(async move {
        while let Some(frame) = read_frame(&mut cr).await {
            // Request header: size, api key, api version, correlation id, client id (int16 length).
            let counted = frame.len() >= 14 && {
                let api = i16::from_be_bytes([frame[4], frame[5]]);
                let len = i16::from_be_bytes([frame[12], frame[13]]).max(0) as usize;
                api == METADATA && frame.get(14..14 + len) == Some(LOOKUP_CLIENT)
            };
            if frame.len() >= 12 {
                let corr = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                p.lock().unwrap().insert(corr, counted);
            }
            if counted {
                k.sent();
            }
            if bw.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, bool)>();
    tokio::spawn(async move {
        while let Some(mut frame) = read_frame(&mut br).await {
            let corr = frame
                .get(4..8)
                .map_or(-1, |c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            let counted = pending.lock().unwrap().remove(&corr).unwrap_or(false);
            readdress(&mut frame, broker, me);
            let at = tokio::time::Instant::now() + Duration::from_millis(latency_ms.load(Relaxed));
            if tx.send((at, frame, counted)).is_err() {
                break;
            }
        }
    });
    while let Some((at, frame, counted)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if counted {
            lookups.answered();
        }
        if cw.write_all(&frame).await.is_err() {
            break;
        }
    }
}

/// `n` new topics of one partition each, ready to be read.
async fn topics(prefix: &str, n: usize) -> Vec<String> {
    require_kafka().await;
    let names: Vec<String> = (0..n).map(|_| unique(prefix)).collect();
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    let new: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(T)))
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client_config().create().expect("metadata client");
    let wanted = names.clone();
    let ready = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + T;
        while Instant::now() < until {
            let ok = c
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok_and(|md| {
                    wanted.iter().all(|w| {
                        md.topics().iter().any(|t| {
                            t.name() == w
                                && t.error().is_none()
                                && t.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })
    .await
    .expect("metadata task");
    assert!(ready, "{n} topics never became ready");
    names
}

async fn first_frame(ws: &mut Ws, within: Duration) -> Value {
    serde_json::from_str(&next_text(ws, within).await).expect("JSON frame")
}

/// A proxy on a relay at `latency` whose look-up client is already connected (it connects on
/// the first request), and `n` topics it has not looked up yet.
async fn warmed(prefix: &str, n: usize, latency: Duration) -> (SlowKafka, Proxy, Vec<String>) {
    let names = topics(prefix, n + 1).await;
    let slow = SlowKafka::start(Duration::ZERO).await;
    let proxy = Proxy::start_with(|c| c.kafka = slow.addr.to_string()).await;
    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={}&partition=0&from=latest",
            names[n]
        ))
        .await;
    let v = first_frame(&mut ws, T).await;
    assert_eq!(v["type"], "assigned", "{v}");
    close(ws).await;
    slow.set_latency(latency);
    slow.lookups.reset();
    (slow, proxy, names[..n].to_vec())
}

/// One consume request naming 16 topics, against a Kafka that takes 300 ms per answer: its
/// look-ups overlap (one after another they took 16 x 300 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_lookups_run_concurrently() {
    const N: usize = 16;
    let latency = Duration::from_millis(300);
    let (slow, proxy, names) = warmed("slow-lookups", N, latency).await;
    let group = unique("slow-lookups-g");
    let path = format!("/v1/consume?topic={}&group={group}", names.join(","));
    let asked = Instant::now();
    let mut ws = proxy.connect(&path).await;
    let v = first_frame(&mut ws, T).await;
    assert_eq!(v["type"], "assigned", "{v}");
    let (sent, peak, took) = (
        slow.lookups.sent.load(Relaxed),
        slow.lookups.peak.load(Relaxed),
        slow.lookups.took(),
    );
    // The count includes librdkafka's own metadata requests for topics new to the client.
    println!(
        "{N} topics at {latency:?} per answer: {sent} metadata requests, at most {peak} in \
         flight, {took:?} from the first to the last; assigned after {:?}",
        asked.elapsed()
    );
    assert!(sent >= N, "{sent} look-ups for {N} topics");
    assert!(
        took < latency * N as u32 / 2,
        "the look-ups took {took:?}; one after another they take {:?}",
        latency * N as u32
    );
    close(ws).await;
    proxy.stop().await;
}

/// The same request against a Kafka that takes 4.5 s per answer: every look-up alone is within
/// its own 5 s timeout, together they are not, and they end together with `kafka_unavailable`
/// at the request's 8 s deadline (one after another they took 16 x 4.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_lookups_end_within_their_deadline() {
    const N: usize = 16;
    let (_slow, proxy, names) = warmed("slow-deadline", N, Duration::from_millis(4500)).await;
    let group = unique("slow-deadline-g");
    let path = format!("/v1/consume?topic={}&group={group}", names.join(","));
    let asked = Instant::now();
    let mut ws = proxy.connect(&path).await;
    let bound = RESOLVE_TIMEOUT + Duration::from_secs(3);
    let v = first_frame(&mut ws, bound).await;
    let took = asked.elapsed();
    println!("{N} topics at 4.5 s per answer: answered {v} after {took:?}");
    assert_eq!(v["code"], "kafka_unavailable", "{v}");
    let (code, _) = expect_close(&mut ws, T).await;
    assert_eq!(code, 4503);
    assert!(took < bound, "answered after {took:?}");
    proxy.stop().await;
}

/// Many sockets at once against a Kafka that takes 300 ms per answer: their look-ups, and so
/// their whole Kafka setup, run at most `SETUP_CONCURRENCY` at a time, and every one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_set_up_their_kafka_side_at_most_32_at_a_time() {
    const SOCKETS: usize = 80;
    let latency = Duration::from_millis(300);
    let (slow, proxy, names) = warmed("slow-setup", 1, latency).await;
    let path = format!("/v1/consume?topic={}&partition=0&from=earliest", names[0]);
    // The look-up client knows the topic before the storm (it would look it up on its own).
    let mut ws = proxy.connect(&path).await;
    let v = first_frame(&mut ws, T).await;
    assert_eq!(v["type"], "assigned", "{v}");
    close(ws).await;
    slow.lookups.reset();
    let started = Instant::now();
    let opened = futures::future::join_all((0..SOCKETS).map(|_| async {
        let mut ws = proxy.connect(&path).await;
        let v = first_frame(&mut ws, T * 2).await;
        assert_eq!(v["type"], "assigned", "{v}");
        ws
    }))
    .await;
    let (sent, peak) = (
        slow.lookups.sent.load(Relaxed),
        slow.lookups.peak.load(Relaxed),
    );
    println!(
        "{SOCKETS} sockets at once at {latency:?} per answer: {sent} look-ups, at most {peak} \
         in flight; all assigned after {:?}",
        started.elapsed()
    );
    assert!(sent >= SOCKETS, "{sent} look-ups for {SOCKETS} sockets");
    // One more may be librdkafka's own refresh on the look-up client.
    assert!(
        peak <= SETUP_CONCURRENCY + 1,
        "{peak} sessions were setting up at once (at most {SETUP_CONCURRENCY})"
    );
    assert!(
        peak >= SETUP_CONCURRENCY / 2,
        "only {peak} in flight at once: the sockets did not arrive together"
    );
    for ws in opened {
        close(ws).await;
    }
    proxy.stop().await;
}
