//! kp-bench: runs kafka-proxy (the release binary, as a subprocess) against the local broker and
//! prints each figure next to a baseline measured in the same run (direct librdkafka).
//!
//! Usage: `kp-bench [--smoke] [--only consume,produce,latency,tail,groups,slow] [--kafka HOST:PORT]
//! [--proxy-bin PATH] [--tail-sockets N] [--group-sessions N] [--slow-secs S]`

use std::borrow::Cow;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The proxy's per-session consumer settings (src/kafka.rs, default sessionBufferBytes), for the
/// second consume baseline.
const SESSION_PROPS: &str = "queued.max.messages.kbytes=1024,queued.min.messages=10000,\
fetch.queue.backoff.ms=5,fetch.max.bytes=1048576,max.partition.fetch.bytes=1048576,\
fetch.wait.max.ms=100,enable.auto.offset.store=false";

/// Record value size of every scenario.
const VALUE_BYTES: usize = 100;

struct Opts {
    smoke: bool,
    kafka: String,
    proxy_bin: String,
    only: Option<Vec<String>>,
    consume_records: usize,
    produce_records: usize,
    latency_secs: u64,
    latency_rate: u64,
    tail_sockets: usize,
    group_sessions: usize,
    slow_secs: u64,
    slow_rate: u64,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = args.iter().any(|a| a == "--smoke");
        let mut o = Opts {
            smoke,
            kafka: "127.0.0.1:9092".into(),
            proxy_bin: "target/release/kafka-proxy".into(),
            only: None,
            consume_records: if smoke { 20_000 } else { 1_000_000 },
            produce_records: if smoke { 5_000 } else { 1_000_000 },
            latency_secs: if smoke { 2 } else { 20 },
            latency_rate: 1000,
            tail_sockets: if smoke { 200 } else { 10_000 },
            group_sessions: if smoke { 10 } else { 1000 },
            slow_secs: if smoke { 4 } else { 60 },
            slow_rate: if smoke { 50_000 } else { 300_000 },
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{a} needs a value"))
            };
            match a.as_str() {
                "--smoke" => {}
                "--kafka" => o.kafka = val()?,
                "--proxy-bin" => o.proxy_bin = val()?,
                "--only" => o.only = Some(val()?.split(',').map(str::to_string).collect()),
                "--consume-records" => o.consume_records = val()?.parse()?,
                "--produce-records" => o.produce_records = val()?.parse()?,
                "--latency-secs" => o.latency_secs = val()?.parse()?,
                "--tail-sockets" => o.tail_sockets = val()?.parse()?,
                "--group-sessions" => o.group_sessions = val()?.parse()?,
                "--slow-secs" => o.slow_secs = val()?.parse()?,
                "--slow-rate" => o.slow_rate = val()?.parse()?,
                "-h" | "--help" => {
                    println!(
                        "{}",
                        include_str!("main.rs")
                            .lines()
                            .take(5)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}"),
            }
        }
        Ok(o)
    }

    fn wants(&self, s: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s))
    }
}

/// One line of the results table.
struct Row {
    figure: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
}

fn row(figure: &str, value: String, baseline: String, ratio: String, target: &str) -> Row {
    Row {
        figure: figure.into(),
        value,
        baseline,
        ratio,
        target: target.into(),
    }
}

fn note(msg: impl AsRef<str>) {
    eprintln!("kp-bench: {}", msg.as_ref());
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ proxy subprocess

struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    async fn start(o: &Opts, extra: &[&str]) -> Result<Proxy> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("target/kp-bench-proxy.log")?;
        let child = Command::new(&o.proxy_bin)
            .args(["--host", "127.0.0.1", "--ws-port", &port.to_string()])
            .args(["--kafka", &o.kafka, "--max-connections", "30000"])
            .args(extra)
            // For profiling runs: extra proxy flags and log filter from the environment.
            .args(
                std::env::var("KP_BENCH_PROXY_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env(
                "KAFKA_PROXY_LOG",
                std::env::var("KP_BENCH_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo build --release)",
                    o.proxy_bin
                )
            })?;
        let p = Proxy { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if p.http_get("/healthz").await.is_ok_and(|b| b.contains("ok")) {
                return Ok(p);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("proxy did not answer /healthz within 30 s (see target/kp-bench-proxy.log)")
    }

    fn url(&self, pq: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, pq)
    }

    async fn http_get(&self, path: &str) -> Result<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }

    fn status_field(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory in KiB.
    fn rss_kb(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    /// CPU seconds (user + system) the proxy has used so far.
    fn cpu_secs(&self) -> f64 {
        cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }

    /// With KP_BENCH_PERF set, records a CPU profile of the proxy until `stop_perf`
    /// (target/perf-NAME.data).
    fn perf(&self, name: &str) -> Option<Child> {
        std::env::var_os("KP_BENCH_PERF")?;
        Command::new("perf")
            .args([
                "record",
                "-F",
                "999",
                "-g",
                "-o",
                &format!("target/perf-{name}.data"),
            ])
            .args(["-p", &self.child.id().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..150 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ Kafka helpers

fn client(o: &Opts) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &o.kafka);
    c
}

async fn create_topic(o: &Opts, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(o).create()?;
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in res {
        r.map_err(|(t, e)| anyhow!("create topic {t}: {e}"))?;
    }
    let c: BaseConsumer = client(o).create()?;
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            let ok = c
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .map(|md| {
                    md.topics().first().is_some_and(|t| {
                        t.error().is_none() && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("topic {name} never became ready")
    })
    .await?
}

fn value(fill: u8) -> Vec<u8> {
    vec![fill; VALUE_BYTES]
}

/// Produces `n` records as fast as the producer takes them, or at `rate` records/s; stops early
/// when `stop` is set. Blocking: call from a blocking thread.
fn produce_blocking(
    o: &Opts,
    topic: &str,
    n: u64,
    rate: Option<u64>,
    stop: Option<&AtomicBool>,
) -> Result<u64> {
    let p: BaseProducer = client(o)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("acks", "1")
        .create()?;
    let v = value(b'x');
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        if stop.is_some_and(|s| s.load(Relaxed)) {
            break;
        }
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                p.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        match p.send(BaseRecord::<(), [u8]>::to(topic).payload(&v)) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => bail!("produce: {e}"),
        }
        if sent.is_multiple_of(1024) {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(60))?;
    Ok(sent)
}

async fn preload(o: &Opts, topic: &str, n: u64) -> Result<()> {
    let t = Instant::now();
    let (oo, topic) = (o.kafka.clone(), topic.to_string());
    let sent = tokio::task::spawn_blocking(move || {
        let o = Opts {
            kafka: oo,
            ..blank()
        };
        produce_blocking(&o, &topic, n, None, None)
    })
    .await??;
    note(format!(
        "preloaded {sent} records in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Opts carrying only what the Kafka helpers need, for moving into blocking threads.
fn blank() -> Opts {
    Opts {
        smoke: false,
        kafka: String::new(),
        proxy_bin: String::new(),
        only: None,
        consume_records: 0,
        produce_records: 0,
        latency_secs: 0,
        latency_rate: 0,
        tail_sockets: 0,
        group_sessions: 0,
        slow_secs: 0,
        slow_rate: 0,
    }
}

fn kafka_only(o: &Opts) -> Opts {
    Opts {
        kafka: o.kafka.clone(),
        ..blank()
    }
}

// ------------------------------------------------------------------ WebSocket client

async fn ws_connect(url: &str, read_buffer: usize) -> Result<Ws> {
    ws_connect_with(url, read_buffer, 0).await
}

/// `write_buffer` 0 writes every frame at once (the readers send almost nothing); a sender of
/// many frames gathers them until its flush, one `send` for many frames.
async fn ws_connect_with(url: &str, read_buffer: usize, write_buffer: usize) -> Result<Ws> {
    let cfg = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(write_buffer);
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    // To measure the request gate with a credential (e.g. a JWT and ACL rules passed to the
    // proxy with KP_BENCH_PROXY_ARGS): every socket sends this `Authorization` header.
    if let Ok(auth) = std::env::var("KP_BENCH_AUTH") {
        req.headers_mut().insert("authorization", auth.parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true).await?;
    Ok(ws)
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    records: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Rec<'a> {
    offset: i64,
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
}

/// A records frame, parsed in one pass (the proxy writes `type` first).
#[derive(Deserialize)]
struct RecordsFrame<'a> {
    #[serde(borrow)]
    records: Vec<Rec<'a>>,
}

/// What a frame carried: records (handed to `each`), a skip count, or a control frame.
fn parse_frame(text: &str, mut each: impl FnMut(&Rec<'_>)) -> Result<(u64, u64, String)> {
    if text.starts_with("{\"type\":\"records\"") {
        let f: RecordsFrame<'_> = serde_json::from_str(text)?;
        for r in &f.records {
            each(r);
        }
        return Ok((f.records.len() as u64, 0, String::new()));
    }
    let f: Frame<'_> = serde_json::from_str(text)?;
    match f.kind {
        "records" => {
            let raw = f
                .records
                .ok_or_else(|| anyhow!("records frame without records"))?;
            let recs: Vec<Rec<'_>> = serde_json::from_str(raw.get())?;
            for r in &recs {
                each(r);
            }
            Ok((recs.len() as u64, 0, String::new()))
        }
        "skipped" => {
            let n = f.records.and_then(|r| r.get().parse().ok()).unwrap_or(0);
            Ok((0, n, String::new()))
        }
        "error" => bail!("error frame: {text}"),
        other => Ok((0, 0, other.to_string())),
    }
}

/// Reads until a control frame of `kind` arrives.
async fn wait_for(ws: &mut Ws, kind: &str, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no {kind} frame within {within:?}"))?
            .ok_or_else(|| anyhow!("socket closed before {kind}"))??;
        match m {
            Message::Text(t) => {
                let (_, _, k) = parse_frame(t.as_str(), |_| {})?;
                if k == kind {
                    return Ok(());
                }
            }
            Message::Close(c) => bail!("closed before {kind}: {c:?}"),
            _ => {}
        }
    }
}

// ------------------------------------------------------------------ scenarios

async fn consume(o: &Opts, run: &str, rows: &mut Vec<Row>) -> Result<()> {
    let n = o.consume_records as u64;
    let topic = format!("kpb-consume-{run}");
    create_topic(o, &topic, 1).await?;
    preload(o, &topic, n).await?;

    // Baseline: a direct librdkafka consumer, payloads touched, run with librdkafka's defaults
    // and with the proxy's per-session settings (src/kafka.rs); the better run is the baseline.
    let mut direct_runs = Vec::new();
    for (label, props) in [("defaults", ""), ("session settings", SESSION_PROPS)] {
        let (ko, t2) = (kafka_only(o), topic.clone());
        let run = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
            let c = client(&ko)
                .set("group.id", format!("kpb-direct-{}", now_ns()))
                .set("enable.auto.commit", "false")
                .clone();
            // Extra properties (KEY=VALUE,...), also from the environment for experiments.
            let mut c = c;
            let extra = std::env::var("KP_BENCH_DIRECT_PROPS").unwrap_or_default();
            for kv in props.split(',').chain(extra.split(',')) {
                if let Some((k, v)) = kv.split_once('=') {
                    c.set(k, v);
                }
            }
            let c: BaseConsumer = c.create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&t2, 0, Offset::Beginning)?;
            let start = Instant::now();
            c.assign(&tpl)?;
            let (mut got, mut bytes) = (0u64, 0u64);
            let mut first = None;
            while got < n {
                if let Some(m) = c.poll(Duration::from_millis(100)) {
                    let m = m?;
                    first.get_or_insert_with(Instant::now);
                    bytes += m.payload().map_or(0, |p| p.len() as u64);
                    got += 1;
                }
                if start.elapsed() > Duration::from_secs(300) {
                    bail!("direct consumer got {got} of {n}");
                }
            }
            std::hint::black_box(bytes);
            let steady = first.map_or(0.0, |f| (n - 1) as f64 / f.elapsed().as_secs_f64());
            Ok((steady, n as f64 / start.elapsed().as_secs_f64()))
        })
        .await??;
        note(format!(
        "consume: direct librdkafka ({label}) {:.0} records/s first to last record ({:.0} including start-up)",
        run.0, run.1
    ));
        direct_runs.push(run.0);
    }
    let direct = direct_runs.iter().copied().fold(0.0, f64::max);

    let proxy = Proxy::start(o, &[]).await?;
    let url = proxy.url(&format!(
        "/v1/consume?topic={topic}&group=kpb-c-{run}&from=earliest"
    ));
    let perf = proxy.perf("consume");
    let cpu0 = proxy.cpu_secs();
    let client_cpu0 = cpu_secs("/proc/self/stat");
    let start = Instant::now();
    let mut ws = ws_connect(&url, 128 * 1024).await?;
    let (mut got, mut last_offset, mut frames) = (0u64, -1i64, 0u64);
    let mut first: Option<Instant> = None;
    while got < n {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| anyhow!("consume socket stalled at {got} of {n}"))?
            .ok_or_else(|| anyhow!("consume socket closed at {got}"))??;
        if let Message::Text(t) = m {
            let (k, _, _) = parse_frame(t.as_str(), |r| {
                debug_assert!(r.offset > last_offset);
                last_offset = r.offset;
                std::hint::black_box(r.value.as_ref().map(|v| v.len()));
            })?;
            if k > 0 {
                first.get_or_insert_with(Instant::now);
            }
            got += k;
            frames += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let with_startup = n as f64 / secs;
    // Same measure as the baseline: first record to last (the first frame holds many records,
    // so count from the records after it).
    let via = first.map_or(0.0, |f| (n - 1) as f64 / f.elapsed().as_secs_f64());
    let rss = proxy.rss_kb();
    let cpu = proxy.cpu_secs() - cpu0;
    let client_cpu = cpu_secs("/proc/self/stat") - client_cpu0;
    stop_perf(perf);
    drop(ws);
    proxy.stop().await;
    note(format!(
        "consume: proxy {via:.0} records/s first to last ({with_startup:.0} including connect and group join; {frames} frames, {:.0} records/frame, proxy RSS {} MB, proxy CPU {cpu:.2} s, client CPU {client_cpu:.2} s, in {secs:.2} s)",
        n as f64 / frames as f64,
        rss / 1024
    ));
    rows.push(row(
        &format!("consume, 1 socket, {n} x {VALUE_BYTES} B, records/s"),
        format!("{via:.0}"),
        format!("{direct:.0} (direct librdkafka, better of defaults and session settings)"),
        format!("{:.2}", via / direct),
        ">= 0.8",
    ));
    Ok(())
}

/// Counts delivery reports of the baseline producer.
struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
}
impl ClientContext for Counting {}
impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
    }
}

/// Rounds of the produce comparison in full mode. The direct producer's rate swings by a third
/// between moments on this shared machine, so each round measures the baseline right before the
/// proxy rows, and the table gives medians and the median of the per-round ratios.
const PRODUCE_ROUNDS: usize = 3;

async fn produce(o: &Opts, run: &str, rows: &mut Vec<Row>) -> Result<()> {
    let n = o.produce_records as u64;
    let modes = [
        (false, 1, "each", "produce with acks"),
        (
            true,
            1,
            "batch",
            "produce with batched acks (answers=batch)",
        ),
        (
            true,
            ARRAY_RECORDS,
            "array",
            "produce 100 records per frame (JSON array), batched acks",
        ),
    ];
    let rounds = if o.smoke { 1 } else { PRODUCE_ROUNDS };
    let mut directs = Vec::new();
    // Per mode: (proxy rate, ratio to this round's baseline) per round.
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let direct_topic = format!("kpb-produce-direct-{run}-{round}");
        create_topic(o, &direct_topic, 1).await?;
        // Baseline: the proxy's own producer settings (src/kafka.rs), driven directly.
        let ko = kafka_only(o);
        let (direct, direct_cpu) =
            tokio::task::spawn_blocking(move || direct_produce(&ko, &direct_topic, n)).await??;
        note(format!(
            "produce round {}: direct librdkafka {direct:.0} records/s, CPU {direct_cpu:.2} s",
            round + 1
        ));
        directs.push(direct);
        // The same records through the proxy: one ack frame per record (the default), then with
        // `answers=batch`, each against a fresh proxy and topic. Last, a client that sends its
        // records 100 to a frame (a JSON array) with batched answers.
        for (i, (batch, per_frame, mode, label)) in modes.iter().enumerate() {
            let topic = format!("kpb-produce-{mode}-{run}-{round}");
            create_topic(o, &topic, 1).await?;
            let (via, cpu, client_cpu) =
                produce_via_proxy(o, &topic, n, *batch, *per_frame).await?;
            note(format!(
                "produce round {} ({label}): proxy {via:.0} acked records/s ({:.2} of direct), proxy CPU {cpu:.2} s, client CPU {client_cpu:.2} s",
                round + 1,
                via / direct
            ));
            results[i].push((via, via / direct));
        }
    }
    let direct = median(&directs);
    for ((_, _, _, label), r) in modes.iter().zip(&results) {
        let via = median(&r.iter().map(|x| x.0).collect::<Vec<_>>());
        let ratios: Vec<f64> = r.iter().map(|x| x.1).collect();
        let spread = if ratios.len() > 1 {
            let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().cloned().fold(0.0, f64::max);
            format!(" ({lo:.2}-{hi:.2})")
        } else {
            String::new()
        };
        let of = if rounds > 1 {
            format!("median of {rounds} rounds, ")
        } else {
            String::new()
        };
        rows.push(row(
            &format!("{label}, 1 socket, {n} x {VALUE_BYTES} B, records/s"),
            format!("{via:.0}"),
            format!("{direct:.0} ({of}direct librdkafka)"),
            format!("{:.2}{spread}", median(&ratios)),
            ">= 0.7",
        ));
    }
    Ok(())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The baseline: `n` records through a `ThreadedProducer` with the proxy's producer settings,
/// warmed up first; records per second from the first send to the last delivery report.
fn direct_produce(ko: &Opts, direct_topic: &str, n: u64) -> Result<(f64, f64)> {
    let ctx = Counting {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let p: rdkafka::producer::ThreadedProducer<Counting> = client(ko)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.timeout.ms", "30000")
        .create_with_context(ctx)?;
    let v = value(b'p');
    // Warm up (idempotent producer id, metadata) as the proxy's long-lived producer is.
    p.send(BaseRecord::<(), [u8]>::to(direct_topic).payload(&v))
        .map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(10))?;
    let n0 = p.context().ok.load(Relaxed);
    let cpu0 = cpu_secs("/proc/self/stat");
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        match p.send(BaseRecord::<(), [u8]>::to(direct_topic).payload(&v)) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err((e, _)) => bail!("direct produce: {e}"),
        }
    }
    let ctx = p.context();
    while ctx.ok.load(Relaxed) + ctx.failed.load(Relaxed) < n + n0 {
        std::thread::sleep(Duration::from_micros(200));
        if start.elapsed() > Duration::from_secs(300) {
            bail!("direct producer: deliveries missing");
        }
    }
    if ctx.failed.load(Relaxed) > 0 {
        bail!("direct producer: {} failed", ctx.failed.load(Relaxed));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok((rate, cpu_secs("/proc/self/stat") - cpu0))
}

/// Records per frame of the JSON-array produce row.
const ARRAY_RECORDS: u64 = 100;

/// An `acks` frame of `answers=batch`, parsed in one pass.
#[derive(Deserialize)]
struct AcksFrame {
    first: u64,
    last: u64,
    /// `[partition, first offset, records]`.
    runs: Vec<(i32, i64, u64)>,
}

/// Sends `n` records over one `/v1/produce` socket with up to 10,000 unanswered, `per_frame`
/// records to a frame (a plain text frame, or a JSON array of `{"value":...}` records), and
/// counts the answers (checking that `acks` frames follow each other and cover every record);
/// returns (acked records/s, proxy CPU s, this process's CPU s).
async fn produce_via_proxy(
    o: &Opts,
    topic: &str,
    n: u64,
    batch: bool,
    per_frame: u64,
) -> Result<(f64, f64, f64)> {
    let proxy = Proxy::start(o, &[]).await?;
    // Stopped on every path: a proxy left running would hold the benchmark lock (it inherits
    // flock's descriptor) and its port.
    let r = drive_produce(&proxy, topic, n, batch, per_frame).await;
    proxy.stop().await;
    r
}

/// Records the produce client keeps unanswered (the socket's `window`): enough to hide the
/// acks=all round trip, as a producer's `buffer.memory` does.
const WINDOW: u64 = 50_000;

/// Window credits the produce client waits for at once when its window is full.
const REFILL: u64 = 1000;

/// The client side of `produce_via_proxy`.
async fn drive_produce(
    proxy: &Proxy,
    topic: &str,
    n: u64,
    batch: bool,
    per_frame: u64,
) -> Result<(f64, f64, f64)> {
    let answers = if batch { "&answers=batch" } else { "" };
    // The client keeps as many records unanswered as it asks the proxy to accept.
    let answers = format!("{answers}&window={WINDOW}");
    let ws = ws_connect_with(
        &proxy.url(&format!("/v1/produce?topic={topic}{answers}")),
        128 * 1024,
        64 * 1024,
    )
    .await?;
    let (mut sink, mut stream) = ws.split();
    // Records in flight (sent, not acked): the pipelining window.
    let window = Arc::new(Semaphore::new(WINDOW as usize));
    let perf = proxy.perf(match (batch, per_frame) {
        (false, _) => "produce",
        (true, 1) => "produce-batch",
        _ => "produce-array",
    });
    let cpu0 = proxy.cpu_secs();
    let client0 = cpu_secs("/proc/self/stat");
    let start = Instant::now();
    let w2 = window.clone();
    let sender = tokio::spawn(async move {
        let v = String::from_utf8(value(b'w')).unwrap_or_default();
        let array = |records: u64| {
            let one = serde_json::json!({ "value": v }).to_string();
            format!("[{}]", vec![one; records as usize].join(","))
        };
        let frame = if per_frame == 1 {
            v.clone()
        } else {
            array(per_frame)
        };
        // Whole frames, then the rest of `n` in one shorter frame.
        let rest = n % per_frame;
        let last = if rest > 0 { Some(array(rest)) } else { None };
        let frames = (0..n / per_frame)
            .map(|_| (per_frame, &frame))
            .chain(last.iter().map(|l| (rest, l)));
        // Credits taken from the window but not yet used. When they run out the client flushes
        // and waits for a refill of many at once, as a pipelining producer does: taking them
        // one answer at a time would cost a wake-up and a flush (a syscall) per record on both
        // sides once the window is full.
        let mut credits: u64 = 0;
        for (i, (records, frame)) in frames.enumerate() {
            if credits < records {
                let want = u32::try_from(records.max(REFILL))?;
                match w2.try_acquire_many(want) {
                    Ok(p) => p.forget(),
                    Err(_) => {
                        sink.flush().await?;
                        w2.acquire_many(want).await?.forget();
                    }
                }
                credits += u64::from(want);
            }
            credits -= records;
            sink.feed(Message::Text(frame.clone().into())).await?;
            if i % 256 == 255 {
                sink.flush().await?;
            }
        }
        sink.flush().await?;
        Ok::<_, anyhow::Error>(sink)
    });
    let (mut acks, mut errors) = (0u64, 0u64);
    let mut first_error = String::new();
    while acks + errors < n {
        let m = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .map_err(|_| anyhow!("produce socket stalled at {acks} acks"))?
            .ok_or_else(|| anyhow!("produce socket closed after {acks} acks"))??;
        if let Message::Text(t) = m {
            let t = t.as_str();
            let answered = if t.starts_with("{\"type\":\"acks\"") {
                let f: AcksFrame = serde_json::from_str(t)?;
                let count = (f.last + 1)
                    .checked_sub(f.first)
                    .ok_or_else(|| anyhow!("acks frame with last before first: {t}"))?;
                if f.first != acks + errors + 1 || f.runs.iter().map(|r| r.2).sum::<u64>() != count
                {
                    bail!("acks frame does not follow or cover its records: {t}");
                }
                acks += count;
                count
            } else if t.contains("\"type\":\"ack\"") {
                acks += 1;
                1
            } else if t.contains("\"type\":\"error\"") {
                errors += 1;
                if first_error.is_empty() {
                    first_error = t.to_string();
                }
                1
            } else {
                continue;
            };
            window.add_permits(answered as usize);
        }
    }
    let via = n as f64 / start.elapsed().as_secs_f64();
    let cpu = proxy.cpu_secs() - cpu0;
    let client_cpu = cpu_secs("/proc/self/stat") - client0;
    stop_perf(perf);
    let _ = sender.await;
    if errors > 0 {
        bail!("produce: {errors} errors, first: {first_error}");
    }
    Ok((via, cpu, client_cpu))
}

/// CPU seconds (user + system) of the process whose `stat` file this is.
fn cpu_secs(stat: &str) -> f64 {
    let s = std::fs::read_to_string(stat).unwrap_or_default();
    // After the parenthesised command name come fields 3 onwards; utime and stime are fields 14
    // and 15, i.e. the 12th and 13th after the name.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

fn stop_perf(perf: Option<Child>) {
    if let Some(mut p) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

/// Latency of one record from its send-time stamp (ns, the value's first 20 digits).
fn stamp_latency(v: &[u8], now: u64) -> Option<u64> {
    let s = std::str::from_utf8(v.get(..20)?).ok()?;
    Some(now.saturating_sub(s.parse::<u64>().ok()?))
}

async fn socket_latencies(mut ws: Ws, stop: Arc<AtomicBool>) -> Result<Vec<u64>> {
    let mut lat = Vec::new();
    while !stop.load(Relaxed) {
        let m = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(m)) => m?,
        };
        if let Message::Text(t) = m {
            let now = now_ns();
            parse_frame(t.as_str(), |r| {
                if let Some(l) = r
                    .value
                    .as_ref()
                    .and_then(|v| stamp_latency(v.as_bytes(), now))
                {
                    lat.push(l);
                }
            })?;
        }
    }
    Ok(lat)
}

async fn latency(o: &Opts, run: &str, rows: &mut Vec<Row>) -> Result<()> {
    let topic = format!("kpb-latency-{run}");
    create_topic(o, &topic, 1).await?;
    let proxy = Proxy::start(o, &[]).await?;
    let mut consume_ws = ws_connect(
        &proxy.url(&format!(
            "/v1/consume?topic={topic}&group=kpb-l-{run}&from=latest"
        )),
        16 * 1024,
    )
    .await?;
    wait_for(&mut consume_ws, "assigned", Duration::from_secs(30)).await?;
    let mut tail_ws = ws_connect(&proxy.url(&format!("/v1/tail?topic={topic}")), 16 * 1024).await?;
    wait_for(&mut tail_ws, "assigned", Duration::from_secs(30)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let consume_task = tokio::spawn(socket_latencies(consume_ws, stop.clone()));
    let tail_task = tokio::spawn(socket_latencies(tail_ws, stop.clone()));

    // Baseline: a direct consumer positioned at the end, polled on its own thread.
    let (ko, t2, s2) = (kafka_only(o), topic.clone(), stop.clone());
    let direct_task = tokio::task::spawn_blocking(move || -> Result<Vec<u64>> {
        let c: BaseConsumer = client(&ko)
            .set("group.id", format!("kpb-ldirect-{}", now_ns()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let (_, high) = c.fetch_watermarks(&t2, 0, Duration::from_secs(5))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t2, 0, Offset::Offset(high))?;
        c.assign(&tpl)?;
        let mut lat = Vec::new();
        while !s2.load(Relaxed) {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m?;
                if let Some(l) = m.payload().and_then(|v| stamp_latency(v, now_ns())) {
                    lat.push(l);
                }
            }
        }
        Ok(lat)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (ko, t3, rate, secs) = (kafka_only(o), topic.clone(), o.latency_rate, o.latency_secs);
    let produced = tokio::task::spawn_blocking(move || -> Result<u64> {
        let p: BaseProducer = client(&ko)
            .set("linger.ms", "0")
            .set("acks", "1")
            .create()?;
        let n = rate * secs;
        let start = Instant::now();
        let mut v = value(b' ');
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let stamp = format!("{:020}", now_ns());
            v[..20].copy_from_slice(stamp.as_bytes());
            let _ = p.send(BaseRecord::<(), [u8]>::to(&t3).payload(&v));
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(10))?;
        Ok(n)
    })
    .await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Relaxed);
    let mut via = consume_task.await??;
    let mut tail = tail_task.await??;
    let mut direct = direct_task.await??;
    proxy.stop().await;
    for v in [&mut via, &mut tail, &mut direct] {
        v.sort_unstable();
    }
    note(format!(
        "latency: produced {produced}, received consume {} tail {} direct {}",
        via.len(),
        tail.len(),
        direct.len()
    ));
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let d = percentile(&direct, p);
        for (what, v) in [("consume socket", &via), ("tail socket", &tail)] {
            let x = percentile(v, p);
            rows.push(row(
                &format!("latency {name}, {what}, {} rec/s, ms", o.latency_rate),
                format!("{x:.2}"),
                format!("{d:.2} (direct librdkafka)"),
                format!("{:.2}", x / d),
                if name == "p99" { "<= 5 ms" } else { "" },
            ));
        }
    }
    Ok(())
}

/// Opens `n` sockets to `url(i)` with at most `parallel` handshakes at once; each waits for the
/// `assigned` frame and is then handed to `keep`.
async fn open_many(
    n: usize,
    parallel: usize,
    url: impl Fn(usize) -> String,
    read_buffer: usize,
    within: Duration,
) -> (Vec<Ws>, usize) {
    let sem = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let u = url(i);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.ok()?;
            let mut ws = ws_connect(&u, read_buffer).await.ok()?;
            wait_for(&mut ws, "assigned", within).await.ok()?;
            Some(ws)
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Some(ws)) => out.push(ws),
            _ => failed += 1,
        }
    }
    (out, failed)
}

async fn tail_sockets(o: &Opts, run: &str, rows: &mut Vec<Row>) -> Result<()> {
    let n = o.tail_sockets;
    let topic = format!("kpb-tail-{run}");
    create_topic(o, &topic, 1).await?;
    let proxy = Proxy::start(o, &[]).await?;
    let url = proxy.url(&format!("/v1/tail?topic={topic}"));
    // The first socket starts the shared reader; the rest are the per-socket cost.
    let (mut first, _) = open_many(1, 1, |_| url.clone(), 4096, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = proxy.rss_kb();
    let t = Instant::now();
    let (socks, failed) =
        open_many(n - 1, 256, |_| url.clone(), 4096, Duration::from_secs(60)).await;
    note(format!(
        "tail: {} sockets open in {:.1} s ({failed} failed)",
        socks.len() + first.len(),
        t.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = proxy.rss_kb();

    // Every socket must receive every record of a few bursts.
    let bursts = if o.smoke { 2 } else { 5 };
    let per_burst = 10u64;
    let expect = bursts * per_burst;
    let complete = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for mut ws in socks.into_iter().chain(first.drain(..)) {
        let (complete, stop) = (complete.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut got = 0u64;
            while !stop.load(Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                    Err(_) => continue,
                    Ok(Some(Ok(Message::Text(t)))) => {
                        if let Ok((k, _, _)) = parse_frame(t.as_str(), |_| {}) {
                            got += k;
                            if got == expect {
                                complete.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => break,
                }
            }
            ws
        }));
    }
    let t = Instant::now();
    for _ in 0..bursts {
        let (ko, t2) = (kafka_only(o), topic.clone());
        tokio::task::spawn_blocking(move || produce_blocking(&ko, &t2, per_burst, None, None))
            .await??;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let total = n as u64;
    while complete.load(Relaxed) < total && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = complete.load(Relaxed);
    let rss_recv = proxy.rss_kb();
    let threads = proxy.threads();
    stop.store(true, Relaxed);
    for r in readers {
        let _ = r.await;
    }
    proxy.stop().await;
    let per_open = (rss_open.saturating_sub(rss1)) as f64 * 1024.0 / (n - 1).max(1) as f64;
    let per_recv = (rss_recv.saturating_sub(rss1)) as f64 * 1024.0 / (n - 1).max(1) as f64;
    note(format!(
        "tail: RSS with 1 socket {} MB, {n} open {} MB, after {expect} records each {} MB, {threads} threads",
        rss1 / 1024,
        rss_open / 1024,
        rss_recv / 1024
    ));
    rows.push(row(
        "live-tail sockets receiving every record",
        format!("{all} of {n}"),
        String::new(),
        String::new(),
        ">= 10,000",
    ));
    rows.push(row(
        "RSS per live-tail socket, after receiving, bytes",
        format!("{per_recv:.0}"),
        format!("{per_open:.0} (idle, before records)"),
        String::new(),
        "<= 20 KB",
    ));
    Ok(())
}

async fn group_sessions(o: &Opts, run: &str, rows: &mut Vec<Row>) -> Result<()> {
    let n = o.group_sessions;
    let topic = format!("kpb-groups-{run}");
    create_topic(o, &topic, 1).await?;
    let proxy = Proxy::start(o, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = proxy.rss_kb();
    let threads0 = proxy.threads();
    let t = Instant::now();
    let (socks, failed) = open_many(
        n,
        32,
        |i| {
            proxy.url(&format!(
                "/v1/consume?topic={topic}&group=kpb-g-{run}-{i}&from=latest"
            ))
        },
        4096,
        Duration::from_secs(120),
    )
    .await;
    let opened = socks.len();
    note(format!(
        "groups: {opened} sessions assigned in {:.1} s ({failed} failed)",
        t.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = proxy.rss_kb();
    let threads = proxy.threads();
    // One record to every session, to count those that receive.
    let complete = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for mut ws in socks {
        let complete = complete.clone();
        readers.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
                if let Message::Text(t) = m {
                    if parse_frame(t.as_str(), |_| {}).is_ok_and(|(k, _, _)| k > 0) {
                        complete.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
            ws
        }));
    }
    let (ko, t2) = (kafka_only(o), topic.clone());
    tokio::task::spawn_blocking(move || produce_blocking(&ko, &t2, 1, None, None)).await??;
    let mut socks = Vec::new();
    for r in readers {
        if let Ok(ws) = r.await {
            socks.push(ws);
        }
    }
    let rss_recv = proxy.rss_kb();
    drop(socks);
    proxy.stop().await;
    let per = rss_recv.saturating_sub(rss0) as f64 / opened.max(1) as f64;
    note(format!(
        "groups: RSS {} MB -> {} MB -> {} MB after a record; threads {threads0} -> {threads}",
        rss0 / 1024,
        rss / 1024,
        rss_recv / 1024
    ));
    rows.push(row(
        "group sessions assigned and receiving",
        format!("{} of {n}", complete.load(Relaxed)),
        String::new(),
        String::new(),
        ">= 1,000",
    ));
    rows.push(row(
        "RSS per group session, KB",
        format!("{per:.0}"),
        format!("{} threads for {opened}", threads.saturating_sub(threads0)),
        String::new(),
        "bounded",
    ));
    Ok(())
}

async fn slow_client(
    o: &Opts,
    run: &str,
    rows: &mut Vec<Row>,
) -> Result<(Vec<(u64, u64)>, String)> {
    let topic = format!("kpb-slow-{run}");
    create_topic(o, &topic, 1).await?;
    let proxy = Proxy::start(o, &[]).await?;
    // Slow group session: reads one frame every 500 ms.
    let mut slow = ws_connect(
        &proxy.url(&format!(
            "/v1/consume?topic={topic}&group=kpb-s-{run}&from=latest"
        )),
        4096,
    )
    .await?;
    wait_for(&mut slow, "assigned", Duration::from_secs(30)).await?;
    // Slow tail socket: never reads after "assigned".
    let mut slow_tail = ws_connect(&proxy.url(&format!("/v1/tail?topic={topic}")), 4096).await?;
    wait_for(&mut slow_tail, "assigned", Duration::from_secs(30)).await?;
    // A fast tail socket alongside: it must keep up.
    let mut fast = ws_connect(&proxy.url(&format!("/v1/tail?topic={topic}")), 128 * 1024).await?;
    wait_for(&mut fast, "assigned", Duration::from_secs(30)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let s1 = stop.clone();
    let slow_task = tokio::spawn(async move {
        while !s1.load(Relaxed) {
            let _ = tokio::time::timeout(Duration::from_millis(100), slow.next()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        slow
    });
    // The fast reader stops a second after the producer, so records still in flight when the
    // producer stops are counted.
    let fast_stop = Arc::new(AtomicBool::new(false));
    let s2 = fast_stop.clone();
    let fast_task = tokio::spawn(async move {
        let (mut got, mut skipped) = (0u64, 0u64);
        while !s2.load(Relaxed) {
            if let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout(Duration::from_millis(200), fast.next()).await
            {
                if let Ok((k, s, _)) = parse_frame(t.as_str(), |_| {}) {
                    got += k;
                    skipped += s;
                }
            }
        }
        (got, skipped)
    });
    let (ko, t2, s3, rate) = (kafka_only(o), topic.clone(), stop.clone(), o.slow_rate);
    let producer = tokio::task::spawn_blocking(move || {
        produce_blocking(&ko, &t2, u64::MAX, Some(rate), Some(&s3))
    });

    let start = Instant::now();
    let mut samples = Vec::new();
    let rss_start = proxy.rss_kb();
    while start.elapsed() < Duration::from_secs(o.slow_secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((start.elapsed().as_secs(), proxy.rss_kb()));
    }
    stop.store(true, Relaxed);
    let produced = producer.await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fast_stop.store(true, Relaxed);
    let (fast_got, fast_skipped) = fast_task.await?;
    drop(slow_task.await?);
    drop(slow_tail);
    proxy.stop().await;
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last = samples.last().map_or(0, |s| s.1);
    let growth = max.saturating_sub(rss_start) as f64 / 1024.0;
    let series = samples
        .iter()
        .filter(|(t, _)| *t % 10 == 0 || o.smoke)
        .map(|(t, r)| format!("{t}s:{}MB", r / 1024))
        .collect::<Vec<_>>()
        .join(" ");
    note(format!("slow: RSS over time {series}"));
    rows.push(row(
        &format!(
            "slow clients for {} s at {} rec/s: proxy RSS growth, MB",
            o.slow_secs, o.slow_rate
        ),
        format!("{growth:.1}"),
        format!(
            "start {} MB, max {} MB, end {} MB",
            rss_start / 1024,
            max / 1024,
            last / 1024
        ),
        String::new(),
        "<= +32 MB",
    ));
    rows.push(row(
        "  fast tail socket beside them: records received / produced",
        format!("{fast_got} / {produced}"),
        format!("{fast_skipped} skipped"),
        format!("{:.3}", fast_got as f64 / produced.max(1) as f64),
        "unaffected",
    ));
    Ok((samples, series))
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    format!("{cores} cores ({model}), {} GB RAM", mem / 1024 / 1024)
}

fn broker() -> String {
    let version = std::fs::read_dir(".cache/kafka")
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .find(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        })
        .unwrap_or_else(|| "unknown".into());
    let props =
        std::fs::read_to_string(".cache/kafka/run-9092/server.properties").unwrap_or_default();
    let keep = [
        "num.network.threads",
        "num.io.threads",
        "log.flush",
        "group.initial.rebalance.delay.ms",
    ];
    let settings: Vec<&str> = props
        .lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .collect();
    format!(
        "Apache Kafka {version}, single KRaft node on the same machine, heap {}, {}",
        std::env::var("KAFKA_HEAP_OPTS").unwrap_or_else(|_| "-Xmx768m".into()),
        settings.join(", ")
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = Opts::parse()?;
    let run = format!("{}", now_ns() / 1_000_000);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    type Scenario = for<'a> fn(
        &'a Opts,
        &'a str,
        &'a mut Vec<Row>,
    ) -> futures::future::BoxFuture<'a, Result<()>>;
    let scenarios: [(&str, Scenario); 6] = [
        ("consume", |o, r, rows| Box::pin(consume(o, r, rows))),
        ("produce", |o, r, rows| Box::pin(produce(o, r, rows))),
        ("latency", |o, r, rows| Box::pin(latency(o, r, rows))),
        ("tail", |o, r, rows| Box::pin(tail_sockets(o, r, rows))),
        ("groups", |o, r, rows| Box::pin(group_sessions(o, r, rows))),
        ("slow", |o, r, rows| {
            Box::pin(async move { slow_client(o, r, rows).await.map(|_| ()) })
        }),
    ];
    for (name, f) in scenarios {
        if !o.wants(name) {
            continue;
        }
        note(format!("--- {name}"));
        let t = Instant::now();
        if let Err(e) = f(&o, &run, &mut rows).await {
            note(format!("{name} FAILED: {e:#}"));
            failures.push(format!("{name}: {e:#}"));
        }
        note(format!("{name} took {:.1} s", t.elapsed().as_secs_f64()));
    }
    println!();
    println!(
        "kafka-proxy benchmark{} ({:.0} s)",
        if o.smoke { " (smoke)" } else { "" },
        started.elapsed().as_secs_f64()
    );
    println!("- machine: {}", machine());
    println!("- broker: {}", broker());
    println!(
        "- values: {VALUE_BYTES} bytes; each ratio is against a baseline measured in this run"
    );
    println!();
    println!("| figure | value | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.figure, r.value, r.baseline, r.ratio, r.target
        );
    }
    if !failures.is_empty() {
        println!();
        for f in &failures {
            println!("FAILED {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}
