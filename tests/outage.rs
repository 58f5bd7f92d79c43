//! Kafka outages and shutdown, against the real proxy binary run as a subprocess.
//!
//! - The broker is down when the proxy starts, then comes up; and it stops under open consume
//!   and produce sockets, then comes back. These use a broker of the test's own
//!   (127.0.0.1:19192), never the shared one, and run one at a time.
//! - SIGTERM with 100 live consume sessions (on the shared broker, which is not restarted):
//!   every socket gets 1001, every delivered (`auto`) or acknowledged (`ack`) offset is committed
//!   and the process exits within `shutdownGrace`.

mod common;
mod procs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use procs::{http_get, readyz_becomes, Broker, ProxyProc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_tungstenite::tungstenite::{self, Message};

const BROKER_PORT: u16 = 19192;

/// The outage tests stop and start the same broker: one at a time.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a socket opened while Kafka is down was refused.
#[derive(Debug)]
enum Refusal {
    Http(u16, String),
    Close(u16, String, Vec<String>),
}

/// Opens `url` and waits up to `within` for a refusal: an HTTP error before the upgrade, or the
/// frames and the close after it. Fails on anything else (a record, a silent stall, a socket
/// that ends without a close frame).
async fn refused(url: &str, within: Duration) -> Refusal {
    let mut ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            return Refusal::Http(r.status().as_u16(), body);
        }
        Err(e) => panic!("{url}: connect failed: {e}"),
    };
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("{url}: no refusal within {within:?}; frames {frames:?}"),
            Ok(Some(Ok(Message::Text(t)))) => frames.push(t.to_string()),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return Refusal::Close(f.code.into(), f.reason.to_string(), frames)
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("{url}: close without a code"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("{url}: socket error before a close: {e}"),
            Ok(None) => panic!("{url}: socket ended without a close frame"),
        }
    }
}

/// Asserts a refusal says `kafka_unavailable`: HTTP 503, or an error frame and close 4503 with
/// a reason.
fn assert_unavailable(what: &str, r: &Refusal) {
    match r {
        Refusal::Http(status, body) => {
            assert_eq!(*status, 503, "{what}: {body}");
            assert!(body.contains("kafka_unavailable"), "{what}: {body}");
        }
        Refusal::Close(code, reason, frames) => {
            assert_eq!(*code, 4503, "{what}: {reason} {frames:?}");
            assert!(
                reason.starts_with("kafka_unavailable: "),
                "{what}: {reason}"
            );
            assert!(
                frames
                    .iter()
                    .any(|f| f.contains(r#""code":"kafka_unavailable""#)),
                "{what}: an error frame before the close: {frames:?}"
            );
        }
    }
}

async fn connect(url: &str) -> common::Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .0
}

/// Reads a v1 consume socket until `want` record values arrived; fails on a close or timeout.
async fn read_values(ws: &mut common::Ws, want: usize, within: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < want {
        let t = common::next_text(ws, within).await;
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "records" {
            for r in v["records"].as_array().unwrap() {
                out.push(r["value"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

/// A produce socket answers `records` within `within`; returns the acks' (partition, offset).
async fn produce_via(proxy: &ProxyProc, topic: &str, records: &[&str], within: Duration) {
    let mut ws = connect(&proxy.url(&format!("/v1/produce?topic={topic}&format=raw"))).await;
    for r in records {
        ws.send(Message::Text((*r).into())).await.unwrap();
    }
    for _ in records {
        let t = common::next_text(&mut ws, within).await;
        assert!(t.contains(r#""type":"ack""#), "{t}");
    }
    common::close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_then_up() {
    let _one = BROKER.lock().await;
    let broker = Broker::on(BROKER_PORT);
    broker.stop().await;
    let proxy = ProxyProc::start(&broker.bootstrap(), &[]).await;
    println!("proxy log: {}", proxy.log.display());

    let t = Instant::now();
    let (status, body) = http_get(proxy.addr, "/readyz")
        .await
        .expect("/readyz answers");
    let first = t.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka_unavailable"), "{body}");
    // /readyz is open: it must not map the network behind the proxy.
    assert!(!body.contains(&broker.bootstrap()), "{body}");
    assert!(first < Duration::from_secs(5), "/readyz took {first:?}");

    // Sockets opened now are refused with the reason, not left waiting.
    let t = Instant::now();
    let consume = refused(
        &proxy.url("/v1/consume?topic=outage-t&group=outage-g"),
        Duration::from_secs(20),
    )
    .await;
    let consume_time = t.elapsed();
    assert_unavailable("consume", &consume);
    let t = Instant::now();
    let seed = refused(
        &proxy.url("/?topic=outage-t&consumerGroup=outage-g"),
        Duration::from_secs(20),
    )
    .await;
    let seed_time = t.elapsed();
    match &seed {
        Refusal::Http(s, b) => assert!(*s == 503 && b.contains("kafka_unavailable"), "{s} {b}"),
        Refusal::Close(code, reason, _) => {
            assert_eq!(*code, 4503, "{reason}");
            assert!(reason.starts_with("kafka_unavailable: "), "{reason}");
        }
    }
    let t = Instant::now();
    let produce = refused(
        &proxy.url("/v1/produce?topic=outage-t"),
        Duration::from_secs(20),
    )
    .await;
    let produce_time = t.elapsed();
    assert_unavailable("produce", &produce);

    // The broker comes up: /readyz turns 200 and new sockets work.
    broker.start().await;
    let flip = readyz_becomes(proxy.addr, 200, Duration::from_secs(60))
        .await
        .expect("/readyz turns 200 within 60 s of the broker answering");
    let topic = broker.topic("outage-start", 2).await;
    let t = Instant::now();
    produce_via(
        &proxy,
        &topic,
        &["one", "two", "three"],
        Duration::from_secs(30),
    )
    .await;
    let mut ws = connect(&proxy.url(&format!(
        "/v1/consume?topic={topic}&group={}",
        common::unique("outage-start")
    )))
    .await;
    let mut got = read_values(&mut ws, 3, Duration::from_secs(30)).await;
    got.sort();
    assert_eq!(got, ["one", "three", "two"]);
    common::close(ws).await;
    println!(
        "RESULT broker down at start: /readyz 503 in {first:?}; consume refused in {consume_time:?} ({consume:?}); seed consume in {seed_time:?}; produce in {produce_time:?} ({produce:?}); /readyz 200 {flip:?} after the broker answered; produce + consume through the proxy {:?}",
        t.elapsed()
    );
}

/// What an open socket saw across the outage.
#[derive(Debug, Default)]
struct Seen {
    /// Record values (consume) or answers (produce) after the outage began.
    frames: Vec<String>,
    close: Option<(u16, String)>,
}

/// Reads `stream` until `done(seen)` or a close, at most until `deadline`.
async fn watch(
    mut stream: SplitStream<common::Ws>,
    deadline: tokio::time::Instant,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(t)))) => seen.frames.push(t.to_string()),
            Ok(Some(Ok(Message::Close(f)))) => {
                seen.close = Some(
                    f.map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())),
                );
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("socket error instead of a close: {e}"),
            Ok(None) => panic!("socket ended without a close frame"),
        }
    }
    seen
}

fn values(frames: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for f in frames {
        let v: serde_json::Value = serde_json::from_str(f).unwrap();
        if v["type"] == "records" {
            for r in v["records"].as_array().unwrap() {
                out.push(r["value"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

/// An open socket either went on after the outage (`went_on`) or was closed with a 45xx code
/// and a reason; never a 1000, never silence.
fn assert_went_on_or_closed(what: &str, seen: &Seen, went_on: bool) {
    match &seen.close {
        Some((code, reason)) => {
            assert!(
                (4500..4600).contains(code) && !reason.is_empty(),
                "{what}: closed {code} {reason:?}"
            );
        }
        None => assert!(went_on, "{what}: silent after the outage: {seen:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stops_under_open_sockets_then_returns() {
    let _one = BROKER.lock().await;
    let broker = Broker::on(BROKER_PORT);
    broker.start().await;
    let topic = broker.topic("outage-mid", 2).await;
    let proxy = ProxyProc::start(&broker.bootstrap(), &[]).await;
    println!("proxy log: {}", proxy.log.display());
    assert_eq!(
        readyz_becomes(proxy.addr, 200, Duration::from_secs(30))
            .await
            .map(|_| ()),
        Some(()),
        "/readyz is 200 with the broker up"
    );

    let group = common::unique("outage-mid");
    let mut consume = connect(&proxy.url(&format!(
        "/v1/consume?topic={topic}&group={group}&commit=auto"
    )))
    .await;
    let produce = connect(&proxy.url(&format!("/v1/produce?topic={topic}&format=raw"))).await;
    let (mut sink, mut answers): (SplitSink<common::Ws, Message>, _) = produce.split();
    let before: Vec<String> = (0..10).map(|i| format!("before-{i}")).collect();
    for r in &before {
        sink.send(Message::Text(r.as_str().into())).await.unwrap();
    }
    for _ in &before {
        let t = tokio::time::timeout(Duration::from_secs(30), answers.next())
            .await
            .expect("an answer")
            .expect("open")
            .expect("no error");
        assert!(t.to_text().unwrap().contains(r#""type":"ack""#), "{t:?}");
    }
    assert_eq!(
        read_values(&mut consume, 10, Duration::from_secs(30))
            .await
            .len(),
        10
    );

    // The broker stops under both sockets.
    let stop_at = Instant::now();
    broker.stop().await;
    let stopped = stop_at.elapsed();
    let down = readyz_becomes(proxy.addr, 503, Duration::from_secs(30))
        .await
        .expect("/readyz turns 503 within 30 s of the broker stopping");
    let during: Vec<String> = (0..5).map(|i| format!("during-{i}")).collect();
    for r in &during {
        sink.send(Message::Text(r.as_str().into())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start_at = Instant::now();
    broker.start().await;
    let started = start_at.elapsed();
    let outage = stop_at.elapsed();
    let up = readyz_becomes(proxy.addr, 200, Duration::from_secs(60))
        .await
        .expect("/readyz turns 200 within 60 s of the broker answering");

    // After it returns: records produced directly must reach the open consume socket, and every
    // record sent during the outage gets its answer (librdkafka gives up after 30 s at most).
    let after: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    let p = broker.producer();
    for (i, v) in after.iter().enumerate() {
        p.send(
            rdkafka::producer::FutureRecord::<(), str>::to(&topic)
                .partition(i as i32 % 2)
                .payload(v),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce after the outage");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let want = after.clone();
    let (mut c_sink, c_stream) = consume.split();
    let consumed = tokio::spawn(watch(c_stream, deadline, move |s| {
        let v = values(&s.frames);
        want.iter().all(|w| v.contains(w))
    }));
    let n_during = during.len();
    let answered = tokio::spawn(watch(answers, deadline, move |s| {
        s.frames.len() >= n_during
    }));
    let consumed = consumed.await.unwrap();
    let answered = answered.await.unwrap();
    let recovered = start_at.elapsed();

    let got = values(&consumed.frames);
    let consume_went_on = after.iter().all(|a| got.contains(a));
    assert_went_on_or_closed("consume", &consumed, consume_went_on);
    let answers_ok = answered
        .frames
        .iter()
        .filter(|f| f.contains(r#""type":"ack""#))
        .count();
    let answers_err: Vec<&String> = answered
        .frames
        .iter()
        .filter(|f| f.contains(r#""type":"error""#))
        .collect();
    for e in &answers_err {
        assert!(e.contains("kafka_unavailable"), "{e}");
    }
    assert_went_on_or_closed(
        "produce",
        &answered,
        answers_ok + answers_err.len() == during.len(),
    );

    // New sockets work.
    let t = Instant::now();
    produce_via(&proxy, &topic, &["fresh"], Duration::from_secs(30)).await;
    let mut fresh = connect(&proxy.url(&format!(
        "/v1/consume?topic={topic}&group={}",
        common::unique("outage-fresh")
    )))
    .await;
    let all = read_values(
        &mut fresh,
        before.len() + answers_ok + after.len() + 1,
        Duration::from_secs(30),
    )
    .await;
    assert!(all.contains(&"fresh".to_string()), "{all:?}");
    common::close(fresh).await;
    let _ = c_sink.send(Message::Close(None)).await;
    let _ = sink.send(Message::Close(None)).await;
    println!(
        "RESULT broker stopped mid-stream (stop took {stopped:?}, down {outage:?} in all, start took {started:?}): /readyz 503 {down:?} after the stop returned, 200 {up:?} after the broker answered; consume socket: {} of the after-outage records{}; produce socket: {answers_ok} acks and {} errors for the {} records sent during the outage{}; everything settled {recovered:?} after the restart began; new sockets {:?}",
        after.iter().filter(|a| got.contains(a)).count(),
        consumed.close.as_ref().map(|c| format!(", closed {c:?}")).unwrap_or_default(),
        answers_err.len(),
        during.len(),
        answered.close.as_ref().map(|c| format!(", closed {c:?}")).unwrap_or_default(),
        t.elapsed()
    );
}

/// What one of the 100 sockets was delivered (`auto`) or acknowledged (`ack`): the next offset
/// per partition, the position its group must have committed.
#[derive(Debug)]
struct Owed {
    group: String,
    ack: bool,
    next: BTreeMap<i32, i64>,
    close: (u16, String),
    records: usize,
}

async fn session(
    url: String,
    group: String,
    ack: bool,
    seed: u64,
    quiet: Arc<AtomicBool>,
    flowing: Arc<AtomicUsize>,
) -> Owed {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ws = connect(&url).await;
    let mut next = BTreeMap::new();
    // ack mode: frames not acknowledged yet, as (batch, [(partition, offset)]).
    let mut pending: Vec<(u64, Vec<(i32, i64)>)> = Vec::new();
    let mut records = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .unwrap_or_else(|_| panic!("{group}: nothing for 60 s"));
        let t = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                let close = f
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Owed {
                    group,
                    ack,
                    next,
                    close,
                    records,
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("{group}: socket error before the close: {e}"),
            None => panic!("{group}: socket ended without a close frame"),
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] != "records" {
            continue;
        }
        let batch = v["batch"].as_u64().unwrap();
        let offsets: Vec<(i32, i64)> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["partition"].as_i64().unwrap() as i32,
                    r["offset"].as_i64().unwrap(),
                )
            })
            .collect();
        if records == 0 {
            flowing.fetch_add(1, Ordering::Relaxed);
        }
        records += offsets.len();
        if !ack {
            for (p, o) in offsets {
                next.insert(p, o + 1);
            }
            continue;
        }
        pending.push((batch, offsets));
        // Some frames are acknowledged (with those before them), some not; none once the
        // test goes quiet before the SIGTERM, so every ack sent has been read by then.
        if quiet.load(Ordering::Relaxed) || rng.random_bool(0.4) {
            continue;
        }
        let frame = format!(r#"{{"type":"ack","batch":{batch}}}"#);
        if ws.send(Message::Text(frame.into())).await.is_err() {
            continue;
        }
        for (_, offsets) in pending.drain(..) {
            for (p, o) in offsets {
                next.insert(p, o + 1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_100_sessions_closes_1001_commits_and_exits_within_grace() {
    const SOCKETS: usize = 100;
    const GRACE: Duration = Duration::from_secs(10);
    let topic = common::topic("outage-sigterm", 2).await;
    let mut proxy = ProxyProc::start(
        &common::bootstrap(),
        &["--shutdown-grace", &GRACE.as_secs().to_string()],
    )
    .await;
    println!("proxy log: {}", proxy.log.display());

    // Records flow the whole time.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (topic, producing) = (topic.clone(), producing.clone());
        tokio::spawn(async move {
            let p = common::producer();
            let mut i = 0u64;
            while producing.load(Ordering::Relaxed) {
                // About 1,000 records a second, 20 in flight at a time.
                let sends: Vec<_> = (i..i + 20)
                    .map(|n| {
                        let (p, topic) = (&p, &topic);
                        async move {
                            let v = format!("r{n}");
                            let _ = p
                                .send(
                                    rdkafka::producer::FutureRecord::<(), str>::to(topic)
                                        .partition((n % 2) as i32)
                                        .payload(&v),
                                    Duration::from_secs(10),
                                )
                                .await;
                        }
                    })
                    .collect();
                futures::future::join_all(sends).await;
                i += 20;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        })
    };

    let quiet = Arc::new(AtomicBool::new(false));
    let flowing = Arc::new(AtomicUsize::new(0));
    let run = common::unique("sigterm");
    let sessions: Vec<_> = (0..SOCKETS)
        .map(|i| {
            let ack = i % 2 == 1;
            let group = format!("{run}-{i}");
            let url = proxy.url(&format!(
                "/v1/consume?topic={topic}&group={group}&commit={}{}",
                if ack { "ack" } else { "auto" },
                if ack { "&window=50" } else { "" }
            ));
            tokio::spawn(session(
                url,
                group,
                ack,
                i as u64,
                quiet.clone(),
                flowing.clone(),
            ))
        })
        .collect();
    let t = Instant::now();
    while flowing.load(Ordering::Relaxed) < SOCKETS {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "only {} of {SOCKETS} sockets received records within 90 s",
            flowing.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // No acks in the last second: every ack sent has been taken by then.
    quiet.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let term = Instant::now();
    proxy.sigterm();
    let status = proxy
        .wait_exit(GRACE + Duration::from_secs(10))
        .await
        .expect("the proxy exits after SIGTERM");
    let exit = term.elapsed();
    producing.store(false, Ordering::Relaxed);
    let produced = producer.await.unwrap();
    let mut owed = Vec::new();
    for s in sessions {
        owed.push(
            tokio::time::timeout(Duration::from_secs(10), s)
                .await
                .expect("every socket closed")
                .unwrap(),
        );
    }

    let closes: BTreeMap<u16, usize> = owed.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o.close.0).or_default() += 1;
        m
    });
    let mut wrong = Vec::new();
    let mut checked = 0;
    for o in &owed {
        let committed = procs::committed(&common::bootstrap(), &o.group, &topic, 2).await;
        for p in 0..2 {
            let want = o.next.get(&p).copied();
            if committed[p as usize] != want {
                wrong.push(format!(
                    "{} ({}): partition {p} committed {:?}, owed {want:?}",
                    o.group,
                    if o.ack { "ack" } else { "auto" },
                    committed[p as usize]
                ));
            }
            checked += usize::from(want.is_some());
        }
    }
    let records: usize = owed.iter().map(|o| o.records).sum();
    println!(
        "RESULT SIGTERM with {SOCKETS} sessions ({records} records delivered, {produced} produced): exit {status} after {exit:?} (shutdownGrace {GRACE:?}); closes {closes:?}; {checked} committed positions checked, {} wrong",
        wrong.len()
    );
    assert_eq!(
        closes.get(&1001),
        Some(&SOCKETS),
        "{closes:?}: {:?}",
        owed.iter().map(|o| &o.close).collect::<Vec<_>>()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(status.success(), "exit status {status}");
    assert!(
        exit <= GRACE,
        "exited {exit:?} after SIGTERM, shutdownGrace {GRACE:?}"
    );
}
