//! At-least-once under chaos (`commit=ack`), against the real proxy binary and a broker of the
//! test's own (127.0.0.1:19092, so the shared broker is never restarted).
//!
//! Two consumers of one group read a topic of sequence-numbered records. Each dies abruptly at
//! random moments (the TCP connection dropped with FIN or RST, never a close frame), sometimes
//! between receiving a frame and acknowledging it, and reconnects. The proxy is SIGKILLed and
//! started again mid-run, and the broker is restarted. A record counts as processed when the
//! client sent an ack covering it. Afterwards a last consumer of the group reads what is left.
//! Required: every sequence number processed at least once, no socket ever holding more than
//! `window` unacknowledged records, the group committed to the end, and the duplicates within
//! the bound the window gives (see `duplicate_bound`).
//!
//! `KP_CHAOS_LONG=1` (`make chaos`) runs the long version; `KP_CHAOS_SEED=N` repeats a run's
//! random choices (timings still vary).

mod common;
mod procs;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use procs::{Broker, ProxyProc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

const BROKER_PORT: u16 = 19092;
const PARTITIONS: i32 = 4;

/// A fault and when it happens.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL the proxy and start it again on the same port.
    KillProxy,
    /// `scripts/kafka stop`, then `start` on the test's own port.
    RestartBroker,
}

#[derive(Clone, Copy, Debug)]
enum When {
    /// Once this fraction of the sequence numbers was processed.
    Progress(f64),
    /// This long after the previous fault ended.
    After(Duration),
}

struct Plan {
    records: u32,
    window: usize,
    /// Simulated processing time per record, so the run lasts long enough for the faults.
    work_per_record: Duration,
    /// A consumer session lives this many ms (uniformly) after it connects, then dies.
    life_ms: (u64, u64),
    faults: Vec<(When, Fault)>,
    /// The chaos phase must be over by then (a silent stall fails here).
    deadline: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        use Fault::*;
        use When::*;
        if std::env::var("KP_CHAOS_LONG").is_ok_and(|v| v == "1") {
            Plan {
                records: 200_000,
                window: 500,
                work_per_record: Duration::from_micros(200),
                life_ms: (500, 6000),
                faults: vec![
                    (Progress(0.15), KillProxy),
                    (Progress(0.3), RestartBroker),
                    (Progress(0.45), KillProxy),
                    (Progress(0.6), RestartBroker),
                    (Progress(0.7), KillProxy),
                    (After(Duration::from_secs(3)), RestartBroker),
                    (Progress(0.85), KillProxy),
                ],
                deadline: Duration::from_secs(1200),
            }
        } else {
            // Members whose session ended without a LeaveGroup reaching Kafka (the SIGKILLed
            // proxy's, and those that died while the broker was down) hold the group's next
            // rebalance until their session timeout (6 s here, `-X session.timeout.ms`). The kill follows the broker restart
            // closely so the two waits overlap and the run stays near a minute.
            Plan {
                records: 20_000,
                window: 200,
                work_per_record: Duration::from_micros(800),
                life_ms: (300, 2500),
                faults: vec![
                    (Progress(0.25), RestartBroker),
                    (After(Duration::from_secs(3)), KillProxy),
                ],
                deadline: Duration::from_secs(240),
            }
        }
    }
}

/// What the clients saw, shared by all of them.
#[derive(Default)]
struct Tally {
    /// Times each sequence number was processed (an ack covering it was sent).
    processed: Vec<u32>,
    /// When each sequence number was first processed.
    first: Vec<Option<Instant>>,
    distinct: usize,
    sessions: usize,
    /// Sockets that ended for any reason; each may leave up to `window` records unacknowledged.
    session_ends: usize,
    crashes: BTreeMap<String, usize>,
    revokes: usize,
    max_unacked: usize,
    window_violations: Vec<String>,
    closes: BTreeMap<u16, usize>,
    close_reasons: Vec<String>,
    error_frames: BTreeMap<String, usize>,
    refusals: BTreeMap<String, usize>,
}

impl Tally {
    fn process(&mut self, seqs: &[u32]) {
        let now = Instant::now();
        for &s in seqs {
            let c = &mut self.processed[s as usize];
            if *c == 0 {
                self.distinct += 1;
                self.first[s as usize] = Some(now);
            }
            *c += 1;
        }
    }
}

type Shared = Arc<Mutex<Tally>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug)]
enum Crash {
    /// After a frame was received and processed, before its ack.
    BeforeAck,
    /// Right after acknowledging everything received.
    AfterAck,
    /// After acknowledging one partition by offset, the rest not.
    PartialAck,
    /// Whatever is pending stays unacknowledged.
    Idle,
}

#[derive(Clone, Copy, Debug)]
enum AckStyle {
    /// Every frame, by batch number.
    Each,
    /// Every k-th frame, by batch number.
    Every(usize),
    /// When no frame came for 150 ms: a client that lets the window fill.
    Lazy,
    /// Every frame, one offset ack per partition.
    Offsets,
}

struct Pending {
    batch: u64,
    /// (partition, offset, sequence number)
    records: Vec<(i32, i64, u32)>,
}

struct Client {
    ws: common::Ws,
    topic: String,
    window: usize,
    assigned: HashSet<i32>,
    pending: VecDeque<Pending>,
    tally: Shared,
}

enum Ended {
    Crashed,
    Closed,
    Broken,
}

impl Client {
    fn unacked(&self) -> usize {
        self.pending.iter().map(|p| p.records.len()).sum()
    }

    async fn send(&mut self, text: String) -> bool {
        self.ws.send(Message::Text(text.into())).await.is_ok()
    }

    /// Acks every frame received so far; counts their records processed once the ack is sent.
    async fn ack_all(&mut self) -> bool {
        let Some(last) = self.pending.back().map(|p| p.batch) else {
            return true;
        };
        if !self
            .send(format!(r#"{{"type":"ack","batch":{last}}}"#))
            .await
        {
            return false;
        }
        let seqs: Vec<u32> = self
            .pending
            .drain(..)
            .flat_map(|p| p.records.into_iter().map(|r| r.2))
            .collect();
        lock(&self.tally).process(&seqs);
        true
    }

    /// Acks partition `p` up to its highest offset received, by offset.
    async fn ack_partition(&mut self, p: i32) -> bool {
        let Some(max) = self
            .pending
            .iter()
            .flat_map(|f| f.records.iter())
            .filter(|r| r.0 == p)
            .map(|r| r.1)
            .max()
        else {
            return true;
        };
        let frame = format!(
            r#"{{"type":"ack","topic":"{}","partition":{p},"offset":{max}}}"#,
            self.topic
        );
        if !self.send(frame).await {
            return false;
        }
        let mut seqs = Vec::new();
        for f in &mut self.pending {
            f.records.retain(|r| {
                let covered = r.0 == p && r.1 <= max;
                if covered {
                    seqs.push(r.2);
                }
                !covered
            });
        }
        self.pending.retain(|f| !f.records.is_empty());
        lock(&self.tally).process(&seqs);
        true
    }

    async fn ack_offsets(&mut self) -> bool {
        let mut parts: Vec<i32> = self
            .pending
            .iter()
            .flat_map(|f| f.records.iter().map(|r| r.0))
            .collect();
        parts.sort_unstable();
        parts.dedup();
        for p in parts {
            if !self.ack_partition(p).await {
                return false;
            }
        }
        // Frames left with no records of assigned partitions need no ack.
        self.pending.clear();
        true
    }

    /// Takes one server frame; returns the records frame's size, if it was one.
    fn on_text(&mut self, text: &str) -> Option<usize> {
        let v: serde_json::Value = serde_json::from_str(text).expect("frames are JSON");
        let parts = |v: &serde_json::Value| -> Vec<i32> {
            v["partitions"]
                .as_array()
                .expect("partitions")
                .iter()
                .map(|p| p["partition"].as_i64().expect("partition") as i32)
                .collect()
        };
        match v["type"].as_str() {
            Some("assigned") => {
                self.assigned.extend(parts(&v));
                None
            }
            Some("revoked") => {
                let gone = parts(&v);
                for p in &gone {
                    self.assigned.remove(p);
                }
                // The proxy stops counting these and ignores their acks: the next owner gets
                // them again, so they are not counted as processed here.
                for f in &mut self.pending {
                    f.records.retain(|r| !gone.contains(&r.0));
                }
                lock(&self.tally).revokes += 1;
                None
            }
            Some("records") => {
                let batch = v["batch"].as_u64().expect("batch");
                let mut records = Vec::new();
                for r in v["records"].as_array().expect("records") {
                    let p = r["partition"].as_i64().expect("partition") as i32;
                    // A frame built before a revoke may still carry records of a partition no
                    // longer assigned; the proxy neither counts nor commits them.
                    if !self.assigned.contains(&p) {
                        continue;
                    }
                    let seq: u32 = r["value"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("a sequence number");
                    records.push((p, r["offset"].as_i64().expect("offset"), seq));
                }
                let n = records.len();
                self.pending.push_back(Pending { batch, records });
                let unacked = self.unacked();
                let mut t = lock(&self.tally);
                t.max_unacked = t.max_unacked.max(unacked);
                if unacked > self.window {
                    t.window_violations.push(format!(
                        "{unacked} records unacknowledged on one socket, window {}",
                        self.window
                    ));
                }
                Some(n)
            }
            Some("error") => {
                let code = v["code"].as_str().unwrap_or("?").to_string();
                *lock(&self.tally).error_frames.entry(code).or_default() += 1;
                None
            }
            other => panic!("unexpected frame type {other:?}: {text}"),
        }
    }

    /// Drops the connection without a close frame; with `rst` the peer gets a reset.
    fn die(self, rst: bool) {
        if rst {
            if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
                // Linger 0 makes the close a reset; it does not block.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        }
        drop(self.ws);
    }

    /// Acks what is pending, closes with a close frame and waits for the proxy's answer.
    async fn close(mut self) {
        let _ = self.ack_all().await;
        let _ = self.ws.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// One consumer of the group: sessions that die at random and reconnect until `stop`.
async fn consumer(
    id: u64,
    seed: u64,
    url: String,
    topic: String,
    plan: Arc<Plan>,
    tally: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    while !stop.load(Ordering::Relaxed) {
        let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                let why = match &e {
                    tokio_tungstenite::tungstenite::Error::Http(r) => {
                        format!("HTTP {}", r.status())
                    }
                    _ => "connect failed".to_string(),
                };
                *lock(&tally).refusals.entry(why).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        lock(&tally).sessions += 1;
        let life = Duration::from_millis(rng.random_range(plan.life_ms.0..plan.life_ms.1));
        let crash = match rng.random_range(0..10) {
            0..=2 => Crash::BeforeAck,
            3..=5 => Crash::AfterAck,
            6..=7 => Crash::PartialAck,
            _ => Crash::Idle,
        };
        let style = match rng.random_range(0..8) {
            0..=2 => AckStyle::Each,
            3 => AckStyle::Every(rng.random_range(2..5)),
            4..=5 => AckStyle::Lazy,
            _ => AckStyle::Offsets,
        };
        let rst = rng.random_bool(0.5);
        let client = Client {
            ws,
            topic: topic.clone(),
            window: plan.window,
            assigned: HashSet::new(),
            pending: VecDeque::new(),
            tally: tally.clone(),
        };
        let ended = session(client, &plan, crash, life, style, rst, &stop, &mut rng).await;
        {
            let mut t = lock(&tally);
            t.session_ends += 1;
            if let Ended::Crashed = ended {
                let how = format!("{crash:?}/{}", if rst { "rst" } else { "fin" });
                *t.crashes.entry(how).or_default() += 1;
            }
        }
        if let Ended::Broken | Ended::Closed = ended {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    mut c: Client,
    plan: &Plan,
    crash: Crash,
    life: Duration,
    style: AckStyle,
    rst: bool,
    stop: &AtomicBool,
    rng: &mut StdRng,
) -> Ended {
    let mut last_frame = Instant::now();
    // A session's life counts from its first records: a client dies while it is processing,
    // not while the group waits for a rebalance (a member that joins and dies then holds the
    // group's next rebalance for its session timeout, and churn there only stalls the run).
    let mut crash_at: Option<Instant> = None;
    loop {
        // A before-ack crash waits for a frame; without one it happens a little later anyway.
        let timer_at = crash_at.map(|at| match crash {
            Crash::BeforeAck => at + Duration::from_secs(3),
            _ => at,
        });
        if stop.load(Ordering::Relaxed) {
            c.close().await;
            return Ended::Closed;
        }
        let lazy_due = matches!(style, AckStyle::Lazy) && !c.pending.is_empty();
        let lazy_at = last_frame + Duration::from_millis(150);
        tokio::select! {
            m = c.ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let Some(n) = c.on_text(t.as_str()) else { continue };
                    last_frame = Instant::now();
                    let crash_at = *crash_at.get_or_insert(last_frame + life);
                    tokio::time::sleep(plan.work_per_record * n as u32).await;
                    if matches!(crash, Crash::BeforeAck) && Instant::now() >= crash_at {
                        c.die(rst);
                        return Ended::Crashed;
                    }
                    let ok = match style {
                        AckStyle::Each => c.ack_all().await,
                        AckStyle::Every(k) if c.pending.len() >= k => c.ack_all().await,
                        AckStyle::Offsets => c.ack_offsets().await,
                        _ => true,
                    };
                    if !ok {
                        return Ended::Broken;
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let mut t = lock(&c.tally);
                    let (code, reason) = f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                    *t.closes.entry(code).or_default() += 1;
                    t.close_reasons.push(format!("{code} {reason}"));
                    return Ended::Closed;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Broken,
            },
            _ = tokio::time::sleep_until(lazy_at.into()), if lazy_due => {
                if !c.ack_all().await {
                    return Ended::Broken;
                }
            }
            _ = tokio::time::sleep_until(timer_at.unwrap_or(last_frame).into()), if timer_at.is_some() => {
                let ok = match crash {
                    Crash::AfterAck => c.ack_all().await,
                    Crash::PartialAck => {
                        let parts: Vec<i32> = c.assigned.iter().copied().collect();
                        match parts.get(rng.random_range(0..parts.len().max(1))) {
                            Some(&p) => c.ack_partition(p).await,
                            None => true,
                        }
                    }
                    Crash::BeforeAck | Crash::Idle => true,
                };
                let _ = ok;
                c.die(rst);
                return Ended::Crashed;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The last consumer of the group: reads and acks what is left until nothing more comes (3 s
/// once every sequence number was seen, 10 s otherwise); returns how many records it received.
async fn final_consumer(url: &str, topic: &str, plan: &Plan, tally: &Shared) -> usize {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the final consumer connects");
    let mut c = Client {
        ws,
        topic: topic.to_string(),
        window: plan.window,
        assigned: HashSet::new(),
        pending: VecDeque::new(),
        tally: tally.clone(),
    };
    let start = Instant::now();
    let mut received = 0;
    let mut last = Instant::now();
    loop {
        let all = lock(tally).distinct == plan.records as usize;
        let settled = c.assigned.len() == PARTITIONS as usize
            && last.elapsed() > Duration::from_secs(if all { 3 } else { 10 });
        if settled || start.elapsed() > Duration::from_secs(90) {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), c.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Some(n) = c.on_text(t.as_str()) {
                    received += n;
                    last = Instant::now();
                    assert!(c.ack_all().await, "the final consumer acks");
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("the final consumer was closed: {f:?}"),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(Some(Err(e))) => panic!("the final consumer's socket failed: {e}"),
            Ok(None) => panic!("the final consumer's socket ended"),
        }
    }
    c.close().await;
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_under_consumer_crashes_proxy_kill_and_broker_restart() {
    let plan = Arc::new(Plan::from_env());
    let seed: u64 = std::env::var("KP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!(
        "chaos seed {seed} (KP_CHAOS_SEED={seed} repeats the choices); {} records, window {}",
        plan.records, plan.window
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = Broker::on(BROKER_PORT);
    broker.start().await;
    let topic = broker.topic("chaos", PARTITIONS).await;
    let group = common::unique("chaos-group");
    broker
        .produce_seq(&topic, PARTITIONS, 0, plan.records)
        .await;
    let high = broker.high_watermarks(&topic, PARTITIONS).await;
    assert_eq!(high.iter().sum::<i64>(), plan.records as i64, "{high:?}");

    // A member that died without leaving (the proxy killed) holds its partitions for the session
    // timeout: the broker's minimum keeps the test short.
    let mut proxy = ProxyProc::start(&broker.bootstrap(), &["-X", "session.timeout.ms=6000"]).await;
    println!("proxy log: {}", proxy.log.display());
    let url = proxy.url(&format!(
        "/v1/consume?topic={topic}&group={group}&commit=ack&window={}",
        plan.window
    ));
    let tally: Shared = Arc::new(Mutex::new(Tally {
        processed: vec![0; plan.records as usize],
        first: vec![None; plan.records as usize],
        ..Tally::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..2)
        .map(|id| {
            tokio::spawn(consumer(
                id,
                seed,
                url.clone(),
                topic.clone(),
                plan.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The faults, at fixed points of progress.
    let started = Instant::now();
    let mut faults = plan.faults.iter().peekable();
    let mut last_fault = Instant::now();
    let mut kill_times = Vec::new();
    let mut outages = Vec::new();
    let mut report_at = Instant::now();
    loop {
        let progress = lock(&tally).distinct as f64 / plan.records as f64;
        if progress >= 1.0 {
            break;
        }
        let at = started.elapsed().as_secs_f64();
        if report_at.elapsed() >= Duration::from_secs(5) {
            report_at = Instant::now();
            {
                let t = lock(&tally);
                println!(
                    "{at:>6.1}s {:.0}% processed, {} sessions, {} revokes",
                    progress * 100.0,
                    t.sessions,
                    t.revokes
                );
            }
            // The group committed everything, yet records were never processed: nothing will
            // bring them back, the final consumer reports them lost.
            if faults.peek().is_none() {
                let c = procs::committed(&broker.bootstrap(), &group, &topic, PARTITIONS).await;
                if c.iter().zip(&high).all(|(c, h)| *c == Some(*h)) {
                    println!("{at:>6.1}s the group committed every partition to its end");
                    break;
                }
            }
        }
        assert!(
            started.elapsed() < plan.deadline,
            "chaos phase not done within {:?}: {:.1}% processed; proxy log {}",
            plan.deadline,
            progress * 100.0,
            proxy.log.display()
        );
        let due = faults.next_if(|(when, _)| match when {
            When::Progress(f) => progress >= *f,
            When::After(d) => last_fault.elapsed() >= *d,
        });
        match due {
            Some((_, Fault::KillProxy)) => {
                proxy.sigkill();
                kill_times.push(Instant::now());
                println!("{at:>6.1}s proxy SIGKILLed at {:.0}%", progress * 100.0);
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
                proxy.spawn().await;
                last_fault = Instant::now();
            }
            Some((_, Fault::RestartBroker)) => {
                let from = Instant::now();
                println!("{at:>6.1}s broker restart at {:.0}%", progress * 100.0);
                broker.stop().await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
                broker.start().await;
                println!(
                    "{:>6.1}s broker back after {:.1}s",
                    started.elapsed().as_secs_f64(),
                    from.elapsed().as_secs_f64()
                );
                outages.push((from, Instant::now()));
                last_fault = Instant::now();
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chaos_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in consumers {
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("consumers stop within 30 s")
            .expect("consumer task");
    }
    assert!(
        faults.peek().is_none(),
        "every planned fault happened: {:?} left",
        faults.collect::<Vec<_>>()
    );
    let final_received = final_consumer(&url, &topic, &plan, &tally).await;

    // The group's commits reach the end of every partition.
    let mut committed = Vec::new();
    for _ in 0..50 {
        committed = procs::committed(&broker.bootstrap(), &group, &topic, PARTITIONS).await;
        if committed.iter().zip(&high).all(|(c, h)| *c == Some(*h)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let t = lock(&tally);
    let lost: Vec<usize> = (0..plan.records as usize)
        .filter(|&s| t.processed[s] == 0)
        .collect();
    // Each socket that ends and each revoke may hand at most `window` unacknowledged records to
    // the next owner. Beyond that, a SIGKILLed proxy loses acknowledged offsets not committed
    // yet (commits run every second), and commits fail while the broker is down: records first
    // processed just before a kill or around a broker restart may come again too. Each
    // duplicate is put down to one of those by when its record was first processed.
    let margin = Duration::from_secs(2);
    let near_kill = |at: Instant| kill_times.iter().any(|&k| at >= k - margin && at <= k);
    let near_outage = |at: Instant| {
        outages
            .iter()
            .any(|&(a, b)| at >= a - margin && at <= b + Duration::from_secs(5))
    };
    let (mut dup_kill, mut dup_outage, mut dup_other) = (0usize, 0usize, 0usize);
    for (s, &n) in t.processed.iter().enumerate() {
        let extra = n.saturating_sub(1) as usize;
        match t.first[s] {
            _ if extra == 0 => {}
            Some(at) if near_kill(at) => dup_kill += extra,
            Some(at) if near_outage(at) => dup_outage += extra,
            _ => dup_other += extra,
        }
    }
    let duplicates = dup_kill + dup_outage + dup_other;
    let ends = t.session_ends + t.revokes;
    let window_bound = plan.window * ends;
    let crashes: usize = t.crashes.values().sum();
    println!(
        "chaos phase {:.1}s; {} sessions, {} ended ({crashes} client crashes: {:?}), {} revokes",
        chaos_time.as_secs_f64(),
        t.sessions,
        t.session_ends,
        t.crashes,
        t.revokes
    );
    println!(
        "closes from the proxy {:?}, error frames {:?}, refused connects {:?}",
        t.closes, t.error_frames, t.refusals
    );
    println!("final consumer received {final_received}; committed {committed:?}, high watermarks {high:?}");
    println!(
        "RESULT lost {} of {}; duplicates {duplicates}: {dup_other} after client crashes and revokes ({:.1} per socket end or revoke, window {}, bound {window_bound}), {dup_kill} first processed in the {}s before a proxy kill, {dup_outage} around a broker restart; most unacknowledged records on a socket {}",
        lost.len(),
        plan.records,
        dup_other as f64 / ends.max(1) as f64,
        plan.window,
        margin.as_secs(),
        t.max_unacked
    );
    assert!(
        lost.is_empty(),
        "lost {} records, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        t.window_violations.is_empty(),
        "{:?}",
        &t.window_violations[..t.window_violations.len().min(5)]
    );
    assert!(
        committed.iter().zip(&high).all(|(c, h)| *c == Some(*h)),
        "committed {committed:?}, high watermarks {high:?}"
    );
    assert_eq!(
        t.closes.get(&1000),
        None,
        "the proxy never closes with 1000: {:?}",
        t.close_reasons
    );
    for code in t.closes.keys() {
        assert!(
            (4500..4600).contains(code) || *code == 1001,
            "close {code}: {:?}",
            t.close_reasons
        );
    }
    for code in t.error_frames.keys() {
        assert!(
            code == "kafka_unavailable" || code == "kafka_error",
            "error frame {code}"
        );
    }
    assert!(
        dup_other <= window_bound,
        "{dup_other} duplicates after crashes and revokes, over window x {ends} = {window_bound}"
    );
    assert!(
        crashes >= 4,
        "too few client crashes to mean anything: {crashes}"
    );
}
