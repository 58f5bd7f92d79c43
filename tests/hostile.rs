//! Hostile clients and connection storms against the real binary (a subprocess, so its resident
//! memory, threads and librdkafka clients are read from `/proc/PID`): each hostile case ends in a
//! documented answer, the proxy's memory stays bounded, and a well-behaved socket beside it keeps
//! being served.
//!
//! The storm runs 1,000 tail + 100 group sockets by default; `KP_STORM_FULL=1` (`make storm`)
//! runs 5,000 + 500. `KP_STORM_BINS=label=PATH,label=PATH` runs the storm once per binary (say,
//! builds with different allocators) and prints one line of figures for each.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bootstrap, client_config, http_request, topic, unique, Ws};
use futures::{SinkExt, StreamExt};
use kafka_proxy::transport::listen::{FIRST_REQUEST_GRACE, HEADER_READ_TIMEOUT, SOCKET_HEADROOM};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

const MB: f64 = 1024.0 * 1024.0;

/// The cases run one at a time. Each measures one proxy's memory and one good socket's latency;
/// side by side on a 2-core machine they measure each other (the storm starved the deaf-producer
/// case's good socket to 31 acks in 6 s on CI), so each case holds this for its whole run.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The proxy binary, run on a free port; killed when dropped.
struct Bin {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Bin {
    async fn start(path: &str, label: &str, args: &[&str]) -> Bin {
        common::require_kafka().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hostile-proxy-{label}-{port}.log"));
        let log = std::fs::File::create(&log).expect("proxy log file");
        let child = Command::new(path)
            .args(["--kafka", &bootstrap(), "--ws-port", &port.to_string()])
            .args(["--host", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start the proxy binary {path}: {e}"));
        let pid = child.id();
        let bin = Bin {
            child,
            pid,
            addr: ([127, 0, 0, 1], port).into(),
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(bin.addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Until Kafka is reachable: the figures start from a working proxy.
        while http_request(bin.addr, "GET", "/readyz", &[], b"").await.0 != 200 {
            assert!(started.elapsed() < Duration::from_secs(30), "never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bin
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    async fn connect(&self, path: &str) -> Ws {
        tokio_tungstenite::connect_async(self.url(path))
            .await
            .unwrap_or_else(|e| panic!("connect {path}: {e}"))
            .0
    }

    fn stats(&self) -> Stats {
        Stats::of(self.pid)
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy process holds: resident memory, threads, librdkafka clients.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    rss: u64,
    threads: u64,
    rdkafka: u64,
}

impl Stats {
    fn of(pid: u32) -> Stats {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        // Each librdkafka client has exactly one `rdk:main` thread.
        let rdkafka = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("/proc/PID/task")
            .filter_map(|t| t.ok())
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "rdk:main")
            })
            .count() as u64;
        Stats {
            rss: field("VmRSS:") * 1024,
            threads: field("Threads:"),
            rdkafka,
        }
    }

    fn max(self, o: Stats) -> Stats {
        Stats {
            rss: self.rss.max(o.rss),
            threads: self.threads.max(o.threads),
            rdkafka: self.rdkafka.max(o.rdkafka),
        }
    }
}

/// Samples the proxy every 10 ms on its own thread, keeping the maxima.
struct Sampler {
    on: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Stats>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let on = Arc::new(AtomicBool::new(true));
        let flag = on.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = Stats::of(pid);
            while flag.load(Relaxed) {
                peak = peak.max(Stats::of(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Sampler { on, handle }
    }

    fn peak(self) -> Stats {
        self.on.store(false, Relaxed);
        self.handle.join().expect("sampler")
    }
}

fn parse(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

/// Produces `n` records of `size` bytes to partition 0 with a direct producer; returns when all
/// are stored.
async fn produce_many(topic: &str, n: usize, size: usize) {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let p: BaseProducer = client_config()
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .expect("producer");
        let value = vec![b'x'; size];
        for _ in 0..n {
            let mut rec = BaseRecord::<(), [u8]>::to(&topic)
                .partition(0)
                .payload(&value);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        p.poll(Duration::from_millis(5));
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60)).expect("flush");
    })
    .await
    .expect("producer task");
}

/// One `/admin/sessions` entry whose JSON mentions `needle` (a group name).
async fn session(bin: &Bin, needle: &str) -> Value {
    let (status, body) = http_request(bin.addr, "GET", "/admin/sessions", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let all = parse(&body);
    all["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s.to_string().contains(needle)).cloned())
        .unwrap_or_else(|| panic!("no session of {needle}: {body}"))
}

/// The well-behaved produce socket beside a hostile case: it produces one record at a time and
/// keeps count of its acks and the slowest of them.
struct Good {
    ws: Ws,
    acked: u64,
    slowest: Duration,
}

impl Good {
    /// Opens it on `topic` and produces one record to warm it up (not counted).
    async fn open(bin: &Bin, topic: &str) -> Good {
        let mut ws = bin.connect(&format!("/v1/produce?topic={topic}")).await;
        ws.send(Message::text("warm")).await.unwrap();
        common::next_text(&mut ws, Duration::from_secs(20)).await;
        Good {
            ws,
            acked: 0,
            slowest: Duration::ZERO,
        }
    }

    /// Produces one record, waits for its ack, then rests `pause`.
    async fn produce_one(&mut self, pause: Duration) {
        let asked = Instant::now();
        self.ws.send(Message::text("good")).await.unwrap();
        let a = parse(&common::next_text(&mut self.ws, Duration::from_secs(20)).await);
        assert_eq!(a["type"], "ack", "{a}");
        self.slowest = self.slowest.max(asked.elapsed());
        self.acked += 1;
        tokio::time::sleep(pause).await;
    }

    /// Asserts it was served throughout: at least `acks`, none slower than 5 s.
    fn assert_served(&self, acks: u64) {
        let (acked, slowest) = (self.acked, self.slowest);
        assert!(acked >= acks, "the good socket got only {acked} acks");
        assert!(slowest < Duration::from_secs(5), "an ack took {slowest:?}");
    }
}

/// Asserts the proxy's peak RSS stayed within `limit` of `before`.
fn assert_peak(before: &Stats, peak: &Stats, limit: u64) {
    assert!(
        peak.rss.saturating_sub(before.rss) < limit,
        "RSS grew from {:.1} MB to {:.1} MB",
        before.rss as f64 / MB,
        peak.rss as f64 / MB
    );
}

/// Case 1: a consume socket with the largest `window` that reads every frame and never acks, on a
/// busy topic. The proxy keeps a few bytes per unacknowledged frame (not the records), and the
/// session's memory budget (`sessionBufferBytes`) bounds the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_a_million_never_acked_keeps_memory_flat() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const RECORDS: usize = 400_000;
    const SIZE: usize = 100;
    // The records it could be made to hold are 40 MB; it holds two sessions' budgets
    // (`sessionBufferBytes`, 4 MiB each), librdkafka's fetch buffers and allocator slack.
    // Measured (debug build): 21 to 32.5 MB of growth for 50,000 to 400,000 records alike, most
    // of it by the first quarter of the records. The sharper check is that growth stops: from
    // the first quarter to the end (30 MB more records) the peak may rise by LATE_GROWTH_LIMIT.
    const GROWTH_LIMIT: u64 = 48 * 1024 * 1024;
    const LATE_GROWTH_LIMIT: u64 = 12 * 1024 * 1024;
    let topic = topic("hostile-window", 1).await;
    let bin = Bin::start(env!("CARGO_BIN_EXE_kafka-proxy"), "window", &[]).await;
    let hostile_group = unique("never-acks");
    let mut hostile = bin
        .connect(&format!(
            "/v1/consume?topic={topic}&group={hostile_group}&commit=ack&window=1000000&from=earliest"
        ))
        .await;
    let mut good = bin
        .connect(&format!(
            "/v1/consume?topic={topic}&group={}&from=earliest",
            unique("good")
        ))
        .await;
    for ws in [&mut hostile, &mut good] {
        let hello = common::next_text(ws, Duration::from_secs(30)).await;
        assert!(hello.contains("\"assigned\""), "{hello}");
    }
    let before = bin.stats();
    let sampler = Sampler::start(bin.pid);
    let producing = tokio::spawn({
        let topic = topic.clone();
        async move { produce_many(&topic, RECORDS, SIZE).await }
    });
    // The hostile client reads as fast as it can and never acknowledges.
    let reading = tokio::spawn(async move {
        let (mut records, mut frames) = (0usize, 0usize);
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_secs(5), hostile.next()).await
        {
            if let Message::Text(t) = m {
                let f = parse(&t);
                assert_eq!(f["type"], "records", "{f}");
                records += f["records"].as_array().map_or(0, Vec::len);
                frames += 1;
            }
        }
        (hostile, records, frames)
    });
    // The well-behaved socket gets every record, in order.
    let started = Instant::now();
    let mut next = 0i64;
    let mut early: Option<Stats> = None;
    let mut sampler = Some(sampler);
    while (next as usize) < RECORDS {
        let f = parse(&common::next_text(&mut good, Duration::from_secs(30)).await);
        for r in f["records"].as_array().expect("records") {
            assert_eq!(r["offset"].as_i64(), Some(next), "good socket: {r}");
            next += 1;
        }
        if early.is_none() && next as usize >= RECORDS / 4 {
            early = sampler.take().map(Sampler::peak);
            sampler = Some(Sampler::start(bin.pid));
        }
    }
    let good_secs = started.elapsed().as_secs_f64();
    producing.await.unwrap();
    let (hostile, records, frames) = reading.await.unwrap();
    let early = early.expect("a quarter of the records");
    let peak = sampler.expect("a sampler").peak().max(early);
    let s = session(&bin, &hostile_group).await;
    eprintln!(
        "window=1000000 never acked: {records} records in {frames} frames delivered unacked \
         (session: unacked {}, buffered_bytes_max {}); good socket: {RECORDS} records in \
         {good_secs:.1} s; proxy RSS before {:.1} MB, peak by a quarter of the records {:.1} \
         MB, peak {:.1} MB",
        s["unacked"],
        s["buffered_bytes_max"],
        before.rss as f64 / MB,
        early.rss as f64 / MB,
        peak.rss as f64 / MB,
    );
    assert_eq!(s["unacked"].as_u64(), Some(records as u64), "{s}");
    assert!(records > 0, "the hostile socket received nothing");
    assert!(
        peak.rss.saturating_sub(early.rss) < LATE_GROWTH_LIMIT,
        "RSS kept growing with the records: {:.1} MB by a quarter of them, {:.1} MB at the end",
        early.rss as f64 / MB,
        peak.rss as f64 / MB
    );
    assert_peak(&before, &peak, GROWTH_LIMIT);
    drop(hostile);
    common::close(good).await;
    rss_after(&bin, "window=1000000 never acked", &before, GROWTH_LIMIT).await;
}

/// The proxy's RSS once the case's clients have left: after the sessions' close and the proxy's
/// own `malloc_trim` (every 5 s once no session is open), so "after" is what it keeps.
async fn rss_after(bin: &Bin, label: &str, before: &Stats, limit: u64) {
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = bin.stats();
    eprintln!(
        "{label}: proxy RSS before {:.1} MB, after the clients left {:.1} MB",
        before.rss as f64 / MB,
        after.rss as f64 / MB
    );
    assert!(
        after.rss.saturating_sub(before.rss) < limit,
        "{label}: RSS stayed at {:.1} MB after the clients left (before {:.1} MB)",
        after.rss as f64 / MB,
        before.rss as f64 / MB
    );
}

/// The next offset of partition 0, from Kafka.
async fn high_watermark(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client_config().create().expect("consumer");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        c.fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .expect("watermarks")
            .1
    })
    .await
    .expect("watermarks task")
}

/// A JSON array of `n` records of `size` bytes.
fn records(n: usize, size: usize) -> String {
    let one = serde_json::json!({ "value": "v".repeat(size) }).to_string();
    format!("[{}]", vec![one; n].join(","))
}

/// Case 2: a produce socket with the largest `window` that sends as fast as it can and never
/// reads its answers. The proxy holds at most `window` answers, then stops reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_never_reads_its_acks_stalls_alone() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const FLOOD: Duration = Duration::from_secs(6);
    // 100,000 answers of a few hundred bytes, the frames being read and TCP buffers.
    const GROWTH_LIMIT: u64 = 64 * 1024 * 1024;
    let topic = topic("hostile-deaf", 1).await;
    let bin = Bin::start(env!("CARGO_BIN_EXE_kafka-proxy"), "deaf", &[]).await;
    let mut good = Good::open(&bin, &topic).await;
    let mut deaf = bin
        .connect(&format!("/v1/produce?topic={topic}&window=100000"))
        .await;
    let before = bin.stats();
    let sampler = Sampler::start(bin.pid);
    let until = Instant::now() + FLOOD;
    let flood = tokio::spawn(async move {
        let frame = records(1000, 100);
        let (mut sent, mut stalled) = (0u64, 0u64);
        while Instant::now() < until {
            let send = deaf.send(Message::text(frame.clone()));
            match tokio::time::timeout(Duration::from_millis(200), send).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("deaf producer: {e}"),
                Err(_) => stalled += 1, // pushed back: the proxy stopped reading
            }
        }
        (deaf, sent, stalled)
    });
    while Instant::now() < until {
        good.produce_one(Duration::from_millis(20)).await;
    }
    let acked = good.acked;
    let (deaf, sent, stalled) = flood.await.unwrap();
    // Records the proxy took from the deaf socket (all but the good socket's). Records it took
    // before it stopped reading may still be on their way to Kafka (acks=all, on a loaded
    // machine for a second or more), so the count is read until it stands still for a second:
    // a stalled socket is not read, so it does within seconds; a socket still read never does.
    let settle = Instant::now() + Duration::from_secs(15);
    let mut taken = high_watermark(&topic).await - 1 - acked as i64;
    let mut taken_later;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        taken_later = high_watermark(&topic).await - 1 - acked as i64;
        if taken_later == taken || Instant::now() > settle {
            break;
        }
        taken = taken_later;
    }
    let peak = sampler.peak();
    eprintln!(
        "produce window=100000 never read: client wrote {sent} frames of 1000 records, pushed \
         back {stalled} times; proxy took {taken} records, {taken_later} a second later; good \
         socket: {acked} acks, slowest {:?}; proxy RSS before {:.1} MB, peak {:.1} MB",
        good.slowest,
        before.rss as f64 / MB,
        peak.rss as f64 / MB
    );
    assert!(sent >= 100, "the flood barely ran: {sent} frames");
    assert!(
        stalled > 0,
        "the proxy never pushed back on a client that reads nothing"
    );
    assert_eq!(
        taken, taken_later,
        "the proxy kept reading a stalled socket (the count never stood still for a second in 15 s)"
    );
    good.assert_served(50);
    assert_peak(&before, &peak, GROWTH_LIMIT);
    drop(deaf);
    common::close(good.ws).await;
    rss_after(
        &bin,
        "produce window=100000 never read",
        &before,
        GROWTH_LIMIT,
    )
    .await;
}

/// How an upgrade attempt ended.
#[derive(Debug)]
enum Outcome {
    /// Upgraded, and the first frame was `assigned`.
    Served(Box<Ws>),
    /// A documented refusal: 429 before the upgrade, or close 4429 after it, with its reason.
    Refused(String),
}

/// Opens `path` and waits for its first frame. Anything but service or a documented refusal
/// (another status, a close without 4429, a hang, a silent close) is an error.
async fn attempt(url: &str, within: Duration) -> Result<Outcome, String> {
    let opened = tokio::time::timeout(within, tokio_tungstenite::connect_async(url)).await;
    let mut ws = match opened {
        Err(_) => return Err(format!("no answer to the upgrade within {within:?}")),
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return if resp.status() == 429 && body.contains("limit_reached") {
                Ok(Outcome::Refused(body))
            } else {
                Err(format!("{} {body}", resp.status()))
            };
        }
        Ok(Err(e)) => return Err(format!("upgrade failed: {e}")),
    };
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => return Err(format!("no first frame within {within:?}")),
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"assigned\"") => {
                return Ok(Outcome::Served(Box::new(ws)))
            }
            Ok(Some(Ok(Message::Close(Some(f))))) if u16::from(f.code) == 4429 => {
                return Ok(Outcome::Refused(f.reason.to_string()))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => return Err(format!("first frame: {other:?}")),
        }
    }
}

/// Case 3: thousands of upgrade requests beyond `maxConnections`: each is answered 429 at once,
/// none hangs, and the sockets the proxy holds keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_flood_beyond_max_connections_is_refused_429() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const MAX: usize = 50;
    const FLOOD: usize = 3000;
    const GROWTH_LIMIT: u64 = 64 * 1024 * 1024;
    let topic = topic("hostile-flood", 1).await;
    let bin = Bin::start(
        env!("CARGO_BIN_EXE_kafka-proxy"),
        "flood",
        &["--max-connections", &MAX.to_string()],
    )
    .await;
    let mut good = Good::open(&bin, &topic).await;
    let tail = format!("/v1/tail?topic={topic}");
    let mut held = Vec::new();
    for _ in 1..MAX {
        held.push(bin.connect(&tail).await);
    }
    let before = bin.stats();
    let sampler = Sampler::start(bin.pid);
    let started = Instant::now();
    // Eight tasks fire their share of the flood all at once.
    let url = bin.url(&tail);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let tries = (0..FLOOD / 8).map(|_| attempt(&url, Duration::from_secs(30)));
                futures::future::join_all(tries).await
            })
        })
        .collect();
    // Meanwhile the good socket produces one record at a time.
    let mut outcomes = Vec::new();
    for t in tasks {
        while !t.is_finished() {
            good.produce_one(Duration::from_millis(10)).await;
        }
        outcomes.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    let peak = sampler.peak();
    let (mut session_cap, mut socket_cap, mut bad) = (0, 0, Vec::new());
    for o in outcomes {
        match o {
            Ok(Outcome::Refused(body)) if body.contains("maxConnections = ") => session_cap += 1,
            Ok(Outcome::Refused(_)) => socket_cap += 1,
            Ok(Outcome::Served(_)) => bad.push("served beyond maxConnections".to_string()),
            Err(e) => bad.push(e),
        }
    }
    eprintln!(
        "{FLOOD} upgrades beyond maxConnections={MAX} in {took:?}: {session_cap} refused by the \
         session cap, {socket_cap} by the socket cap, {} otherwise; good socket: {} acks, \
         slowest {:?}; proxy RSS before {:.1} MB, peak {:.1} MB",
        bad.len(),
        good.acked,
        good.slowest,
        before.rss as f64 / MB,
        peak.rss as f64 / MB
    );
    assert!(
        bad.is_empty(),
        "{} not refused cleanly: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(session_cap + socket_cap, FLOOD / 8 * 8);
    good.assert_served(1);
    assert_peak(&before, &peak, GROWTH_LIMIT);
    // The held sockets still receive.
    common::produce(&topic, 0, &[b"after the flood"]).await;
    for ws in &mut held {
        // The good socket's records came first.
        while !common::next_text(ws, Duration::from_secs(20))
            .await
            .contains("after the flood")
        {}
    }
    drop(held);
    common::close(good.ws).await;
    rss_after(&bin, "upgrade flood", &before, GROWTH_LIMIT).await;
}

/// Sizes of a storm.
struct Storm {
    tail: usize,
    groups: usize,
    tail_topics: usize,
}

/// Figures of one storm run.
#[derive(Debug)]
struct StormFigures {
    served: usize,
    refused: usize,
    open_secs: f64,
    baseline: Stats,
    peak: Stats,
    after: Stats,
}

/// Case 4: `tail` live-tail sockets and `groups` consume sockets (each its own group) opened within
/// about a second, against `max_connections` sessions (some are refused). Every socket is served
/// (its first frame, then the next record) or refused with a documented 429 / 4429; threads and
/// librdkafka clients stay bounded by the sessions, Kafka stays reachable, and once every client
/// left the memory is measured again.
async fn storm(path: &str, label: &str, size: &Storm) -> StormFigures {
    let total = size.tail + size.groups;
    // A tenth of the storm finds the proxy full, so the refusal path runs under load too.
    let max_connections = total - total / 10;
    let mut tail_topics = Vec::new();
    for _ in 0..size.tail_topics {
        tail_topics.push(topic("storm-tail", 1).await);
    }
    let group_topic = topic("storm-group", 1).await;
    let bin = Bin::start(
        path,
        label,
        &["--max-connections", &max_connections.to_string()],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = bin.stats();
    let sampler = Sampler::start(bin.pid);
    let run = unique("storm");
    let mut urls: Vec<String> = (0..size.tail)
        .map(|i| {
            bin.url(&format!(
                "/v1/tail?topic={}",
                tail_topics[i % tail_topics.len()]
            ))
        })
        .collect();
    urls.extend((0..size.groups).map(|i| {
        bin.url(&format!(
            "/v1/consume?topic={group_topic}&group={run}-{i}&from=earliest"
        ))
    }));
    // Interleave the kinds, then split over eight tasks that each open their share at once.
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|&i| (i * 7919) % total);
    let started = Instant::now();
    let opened = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let mine: Vec<String> = order
                .iter()
                .skip(k)
                .step_by(8)
                .map(|&i| urls[i].clone())
                .collect();
            let opened = opened.clone();
            tokio::spawn(async move {
                let tries = mine.iter().map(|u| {
                    let opened = opened.clone();
                    async move {
                        let r = attempt(u, Duration::from_secs(120)).await;
                        opened.fetch_add(1, Relaxed);
                        r
                    }
                });
                futures::future::join_all(tries).await
            })
        })
        .collect();
    let mut served = Vec::new();
    let (mut refused, mut bad) = (0usize, Vec::new());
    for t in tasks {
        for o in t.await.expect("storm task") {
            match o {
                Ok(Outcome::Served(ws)) => served.push(ws),
                Ok(Outcome::Refused(reason)) => {
                    assert!(reason.contains("limit_reached"), "{reason}");
                    refused += 1
                }
                Err(e) => bad.push(e),
            }
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    assert!(
        bad.is_empty(),
        "{} sockets neither served nor refused: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(served.len() + refused, total);
    assert!(
        served.len() >= max_connections / 2,
        "only {} served",
        served.len()
    );

    // Every served socket receives the next record of its topic.
    for t in tail_topics.iter().chain([&group_topic]) {
        common::produce(t, 0, &[b"after the storm"]).await;
    }
    let received = futures::future::join_all(served.iter_mut().map(|ws| async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("after the storm") => return true,
                Ok(Some(Ok(_))) => continue,
                _ => return false,
            }
        }
    }))
    .await;
    let missed = received.iter().filter(|ok| !**ok).count();
    assert_eq!(missed, 0, "{missed} served sockets never got the record");
    let peak = sampler.peak();

    // Kafka connectivity survived: ready, and a new socket works.
    drop(served);
    let (status, body) = http_request(bin.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fresh = loop {
        match attempt(
            &bin.url(&format!(
                "/v1/consume?topic={group_topic}&group={run}-after&from=earliest"
            )),
            Duration::from_secs(30),
        )
        .await
        {
            Ok(Outcome::Served(ws)) => break ws,
            other => assert!(
                Instant::now() < deadline,
                "no new socket after the storm: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let t = common::next_text(&mut fresh, Duration::from_secs(30)).await;
    assert!(t.contains("after the storm"), "{t}");
    common::close(*fresh).await;

    // Every client has left: wait until the sessions' librdkafka clients are gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while bin.stats().rdkafka > baseline.rdkafka + size.tail_topics as u64 {
        assert!(
            Instant::now() < deadline,
            "clients still running: {:?}",
            bin.stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once every session has left, the proxy hands the memory they freed back to the system
    // (glibc's heaps, where librdkafka allocates; checked every 5 s): RSS comes back to within
    // 32 MiB (or a sixth of what the storm added, whichever is larger: the full storm
    // leaves more fragments) of its baseline. Idle runtime threads leave after 10 s.
    let return_bound = (32u64 << 20).max(peak.rss.saturating_sub(baseline.rss) / 6);
    let settle: u64 = std::env::var("KP_STORM_SETTLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    for s in 0..settle {
        if bin.stats().rss <= baseline.rss + return_bound {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if std::env::var("KP_STORM_TRACE").is_ok() {
            eprintln!("[{label}] {}s after: {:?}", s + 1, bin.stats());
        }
    }
    let after = bin.stats();
    if std::env::var("KP_STORM_TRACE").is_ok() {
        let to =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("storm-{label}.smaps"));
        let _ = std::fs::copy(format!("/proc/{}/smaps", bin.pid), &to);
        eprintln!("[{label}] pid {} smaps in {}", bin.pid, to.display());
    }
    let figures = StormFigures {
        served: total - refused,
        refused,
        open_secs,
        baseline,
        peak,
        after,
    };
    // Bounded by sessions, never by sockets: one client per group session and per tail topic,
    // plus the proxy's own; librdkafka runs a handful of threads per client.
    let sessions = (size.groups + size.tail_topics) as u64;
    assert!(
        peak.rdkafka <= baseline.rdkafka + sessions + 1,
        "{label}: {figures:?}"
    );
    assert!(
        peak.threads <= baseline.threads + 8 * sessions,
        "{label}: {figures:?}"
    );
    // Memory follows the per-socket figures of BENCHMARKS.md: at most 20 KiB per live-tail
    // socket and 1 MiB per group session (measured: about 9 KB and 640 KB).
    let bound = size.tail as u64 * 20 * 1024 + size.groups as u64 * 1024 * 1024;
    assert!(
        peak.rss.saturating_sub(baseline.rss) <= bound,
        "{label}: grew by more than {:.0} MB: {figures:?}",
        bound as f64 / MB
    );
    assert!(
        figures.after.rss <= baseline.rss + return_bound,
        "{label}: memory not handed back after the storm: {figures:?}"
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_storm_is_served_or_refused_and_memory_returns() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let full = std::env::var("KP_STORM_FULL").is_ok_and(|v| v == "1");
    let size = if full {
        Storm {
            tail: 5000,
            groups: 500,
            tail_topics: 4,
        }
    } else {
        Storm {
            tail: 1000,
            groups: 100,
            tail_topics: 4,
        }
    };
    let bins = std::env::var("KP_STORM_BINS")
        .unwrap_or_else(|_| format!("default={}", env!("CARGO_BIN_EXE_kafka-proxy")));
    for entry in bins.split(',') {
        let (label, path) = entry.split_once('=').unwrap_or(("bin", entry));
        let f = storm(path, label, &size).await;
        let mb = |b: u64| b as f64 / MB;
        eprintln!(
            "storm [{label}] {} tail + {} group sockets opened in {:.1} s: {} served, {} refused; \
             RSS baseline {:.1} MB, peak {:.1} MB, after {:.1} MB; threads {} -> max {} -> {}; \
             librdkafka clients {} -> max {} -> {}",
            size.tail,
            size.groups,
            f.open_secs,
            f.served,
            f.refused,
            mb(f.baseline.rss),
            mb(f.peak.rss),
            mb(f.after.rss),
            f.baseline.threads,
            f.peak.threads,
            f.after.threads,
            f.baseline.rdkafka,
            f.peak.rdkafka,
            f.after.rdkafka,
        );
    }
}

/// How a half-open socket ended.
#[derive(Debug)]
enum HalfOpenEnd {
    /// Answered 429 at once (the socket cap), after this long.
    Refused(Duration),
    /// Closed with no answer (a header-read timeout, or its place taken by a newer socket).
    Dropped(Duration),
}

/// Opens a socket that sends `kind` of a request (0: nothing, 1: headers that never end, 2: an
/// upgrade whose headers never end) and waits for the proxy to answer or close it. An answer
/// other than 429, or no end within the header-read timeout and 5 s, is an error.
async fn half_open(addr: SocketAddr, kind: usize) -> Result<HalfOpenEnd, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let part: &[u8] = match kind {
        0 => b"",
        1 => b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n",
        _ => {
            b"GET /v1/tail?topic=t HTTP/1.1\r\nhost: proxy\r\nupgrade: websocket\r\n\
               connection: upgrade\r\nsec-websocket-version: 13\r\n"
        }
    };
    s.write_all(part).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(5);
    let read = tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .map_err(|_| format!("kind {kind}: neither answered nor closed in {limit:?}"))?;
    let text = String::from_utf8_lossy(&buf);
    match read {
        _ if text.starts_with("HTTP/1.1 429") => Ok(HalfOpenEnd::Refused(start.elapsed())),
        // Closed with nothing (EOF or a reset), or hyper's own 408 for a timed-out head.
        _ if text.is_empty() || text.starts_with("HTTP/1.1 408") => {
            Ok(HalfOpenEnd::Dropped(start.elapsed()))
        }
        _ => Err(format!("kind {kind}: answered {text:?}")),
    }
}

/// Case 5: thousands of half-open connections, more than the socket cap holds (some send
/// nothing, some headers that never end, some an upgrade that never ends). Each ends in a 429 or
/// is closed by the header-read timeout, or earlier when a newer socket needs its place; a client
/// that sends a whole request once they are past FIRST_REQUEST_GRACE is served, the open socket
/// beside them keeps its acks, and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_open_connections_lock_out_no_one() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const MAX: usize = 100;
    const HALF_OPEN: usize = 3000;
    const GROWTH_LIMIT: u64 = 64 * 1024 * 1024;
    let topic = topic("hostile-halfopen", 1).await;
    let bin = Bin::start(
        env!("CARGO_BIN_EXE_kafka-proxy"),
        "halfopen",
        &["--max-connections", &MAX.to_string()],
    )
    .await;
    let mut good = Good::open(&bin, &topic).await;
    let before = bin.stats();
    let sampler = Sampler::start(bin.pid);
    let started = Instant::now();
    let addr = bin.addr;
    let sockets: Vec<_> = (0..HALF_OPEN)
        .map(|i| tokio::spawn(half_open(addr, i % 3)))
        .collect();
    // Meanwhile the good socket produces, and every half second a newcomer sends a whole request.
    let (mut served, mut locked_out) = (0u32, Vec::new());
    // Newcomers start once the first half-open sockets are past FIRST_REQUEST_GRACE: from then
    // on a newcomer takes the place of one of them (before that, it is refused 429 like the
    // flood beyond the cap).
    let mut next_newcomer = Instant::now() + FIRST_REQUEST_GRACE + Duration::from_secs(1);
    while !sockets.iter().all(|s| s.is_finished()) {
        good.produce_one(Duration::from_millis(20)).await;
        if Instant::now() >= next_newcomer {
            next_newcomer = Instant::now() + Duration::from_millis(500);
            match http_request(addr, "GET", "/healthz", &[], b"").await {
                (200, _) => served += 1,
                (status, body) => locked_out.push(format!(
                    "{status} {body} at {:.1} s",
                    started.elapsed().as_secs_f64()
                )),
            }
        }
    }
    let took = started.elapsed();
    let peak = sampler.peak();
    let (mut refused, mut dropped, mut early, mut bad) = (0, 0, 0, Vec::new());
    let mut slowest_refusal = Duration::ZERO;
    for s in sockets {
        match s.await.expect("half-open task") {
            Ok(HalfOpenEnd::Refused(after)) => {
                refused += 1;
                slowest_refusal = slowest_refusal.max(after);
            }
            Ok(HalfOpenEnd::Dropped(after)) => {
                dropped += 1;
                if after < HEADER_READ_TIMEOUT - Duration::from_secs(1) {
                    early += 1;
                }
            }
            Err(e) => bad.push(e),
        }
    }
    eprintln!(
        "{HALF_OPEN} half-open sockets against maxConnections={MAX} (socket cap {}): {refused} \
         refused 429 (slowest {slowest_refusal:?}), {dropped} closed unanswered ({early} before the header-read timeout, their \
         places taken), {} otherwise, all ended in {took:?}; newcomers: {served} served, {} \
         locked out; good socket: {} acks, slowest {:?}; proxy RSS before {:.1} MB, \
         peak {:.1} MB",
        MAX + SOCKET_HEADROOM,
        bad.len(),
        locked_out.len(),
        good.acked,
        good.slowest,
        before.rss as f64 / MB,
        peak.rss as f64 / MB
    );
    assert!(
        bad.is_empty(),
        "{} half-open sockets did not end cleanly: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        slowest_refusal < Duration::from_secs(3),
        "a refusal took {slowest_refusal:?}"
    );
    // The good socket holds one place of the cap.
    assert!(
        dropped + 1 >= MAX + SOCKET_HEADROOM,
        "only {dropped} held: the flood never filled the socket cap"
    );
    assert!(served >= 5, "only {served} newcomers were tried");
    assert!(
        locked_out.is_empty(),
        "half-open sockets locked out whole requests: {locked_out:?}"
    );
    good.assert_served(50);
    assert_peak(&before, &peak, GROWTH_LIMIT);
    common::close(good.ws).await;
    rss_after(&bin, "half-open sockets", &before, GROWTH_LIMIT).await;
}
