//! Faults of issue 10, each against the real broker and the real `kafka-proxy` binary.
//!
//! The proxy runs as a subprocess so that SIGTERM and the process's exit are the real ones. The
//! binary is `KP_BIN` when set (e.g. `KP_BIN=/tmp/kp-before` to show a test fails on the previous
//! architecture), otherwise the one this crate builds.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// Time allowed for any one expected frame.
const T: Duration = Duration::from_secs(20);

fn kp_bin() -> String {
    std::env::var("KP_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kafka-proxy").to_string())
}

/// A `kafka-proxy` process on a free port.
struct Bin {
    child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Bin {
    async fn start(extra: &[&str]) -> Bin {
        require_kafka().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("{}.log", unique("kp-faults")));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(kp_bin());
        // Only the options this test gives: nothing from the environment it runs in.
        for (k, _) in std::env::vars() {
            if k.starts_with("KAFKA_PROXY_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(["--host", "127.0.0.1", "--ws-port", &port.to_string()])
            .args(["--kafka", &bootstrap()])
            .args(extra)
            .env("KAFKA_PROXY_LOG", "info,kafka_proxy=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kp_bin()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "proxy did not listen on {addr}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Bin { child, addr, log }
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

    /// A socket whose client never reads: a tiny receive buffer, so the proxy's writes to it
    /// block as soon as the kernel's buffers are full.
    async fn connect_unread(&self, path: &str) -> Ws {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = sock.connect(self.addr).await.expect("connect");
        tokio_tungstenite::client_async(self.url(path), MaybeTlsStream::Plain(stream))
            .await
            .unwrap_or_else(|e| panic!("connect {path}: {e}"))
            .0
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("proxy still running");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "SIGTERM to {pid}");
    }

    /// Waits for the process to exit; panics after `within`.
    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!(
                "proxy still running {within:?} after SIGTERM; log tail:\n{}",
                self.log_tail()
            ),
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// The next JSON frame; an error saying why when a close frame, the end or the deadline comes first.
async fn next_json(ws: &mut Ws, within: Duration) -> Result<Value, String> {
    // One deadline for all frames read: pings must not extend it.
    let until = tokio::time::Instant::now() + within;
    loop {
        let m = match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return Err(format!("no frame within {within:?}")),
            Ok(None) => return Err("socket ended".into()),
            Ok(Some(Err(e))) => return Err(format!("socket error: {e}")),
            Ok(Some(Ok(m))) => m,
        };
        match m {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str()).expect("JSON frame")),
            Message::Close(f) => return Err(format!("closed: {f:?}")),
            _ => continue,
        }
    }
}

/// Frames until one of type `kind`, panicking with `why` when none comes within `within`.
async fn next_of(ws: &mut Ws, kind: &str, within: Duration, why: &str) -> Value {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match next_json(ws, left).await {
            Ok(v) if v["type"] == kind => return v,
            Ok(_) => continue,
            Err(e) => panic!("{why}: no {kind:?} frame ({e})"),
        }
    }
}

fn partitions(frame: &Value) -> Vec<i64> {
    let mut ps: Vec<i64> = frame["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["partition"].as_i64().expect("partition"))
        .collect();
    ps.sort();
    ps
}

/// Produces `n` records of `size` bytes to each partition in `parts`, all in flight at once.
async fn produce_sized(topic: &str, parts: &[i32], n: usize, size: usize) {
    let records = parts
        .iter()
        .flat_map(|&part| (0..n).map(move |_| (part, vec![b'v'; size])));
    common::produce_all(topic, records).await
}

/// Kernel queues of a connection, from /proc/net/tcp: (bytes the proxy has written that the
/// client has not yet taken, bytes waiting unread in the client's receive buffer).
fn tcp_queues(proxy: SocketAddr, client: SocketAddr) -> Option<(u64, u64)> {
    fn hex(a: SocketAddr) -> String {
        match a {
            SocketAddr::V4(a) => format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
            SocketAddr::V6(_) => String::new(),
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (p, c) = (hex(proxy), hex(client));
    let queue = |local: &str, remote: &str, rx: bool| {
        table.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 4 && f[1] == local && f[2] == remote {
                let (tx_q, rx_q) = f[4].split_once(':')?;
                u64::from_str_radix(if rx { rx_q } else { tx_q }, 16).ok()
            } else {
                None
            }
        })
    };
    Some((queue(&p, &c, false)?, queue(&c, &p, true)?))
}

fn local_addr(ws: &Ws) -> SocketAddr {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().expect("local addr"),
        _ => unreachable!("plain TCP"),
    }
}

/// Waits until the proxy's writes to the socket `ws` are blocked: its kernel send queue holds at
/// least 64 KiB the client has not taken. Returns the queues seen.
async fn wait_blocked(bin: &Bin, ws: &Ws, within: Duration) -> (u64, u64) {
    let client = local_addr(ws);
    let until = Instant::now() + within;
    loop {
        let q = tcp_queues(bin.addr, client);
        if let Some(q) = q.filter(|q| q.0 >= 64 * 1024) {
            return q;
        }
        assert!(
            Instant::now() < until,
            "the proxy's writes to {client} never blocked: queues {q:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn admin() -> AdminClient<DefaultClientContext> {
    client_config().create().expect("admin client")
}

/// Fault 2: a shared live-tail reader that failed (its topic was deleted) stayed in the hub;
/// later sockets joined it, got `assigned` and then nothing. Now its sockets close with
/// `unknown_topic` (4404) and the next socket starts a fresh reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault2_failed_tail_reader_closes_its_sockets_and_the_next_socket_gets_a_fresh_reader() {
    let topic = topic("faults-tail", 1).await;
    let bin = Bin::start(&[]).await;
    let path = format!("/v1/tail?topic={topic}");
    let mut first = bin.connect(&path).await;
    next_of(&mut first, "assigned", T, "first tail socket").await;
    produce(&topic, 0, &[b"before"]).await;
    let f = next_of(&mut first, "records", T, "first tail socket").await;
    assert_eq!(f["records"][0]["value"], "before");

    let deleted = Instant::now();
    let res = admin()
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("delete topic");
    for r in res {
        r.expect("topic deleted");
    }
    // The failure reaches the socket: an error frame, then the close code with a reason, within
    // seconds (the topic watch, `kafka::watch`).
    let err = next_of(
        &mut first,
        "error",
        Duration::from_secs(15),
        "after the topic was deleted",
    )
    .await;
    assert_eq!(err["code"], "unknown_topic", "{err}");
    let (code, reason) = expect_close(&mut first, T).await;
    let close_secs = deleted.elapsed().as_secs_f64();
    assert_eq!(
        code, 4404,
        "close code after the topic was deleted ({reason})"
    );
    assert!(
        reason.starts_with("unknown_topic"),
        "close reason: {reason:?}"
    );
    eprintln!("fault2: first socket closed {code} {reason:?} {close_secs:.1}s after the delete");

    // The same topic again: a new socket must be served by a new reader.
    let recreated = Instant::now();
    loop {
        let res = admin()
            .create_topics(
                &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic");
        match res.into_iter().next().expect("one result") {
            Ok(_) => break,
            // The deletion may still be in progress.
            Err((_, e)) if recreated.elapsed() < Duration::from_secs(30) => {
                eprintln!("recreate: {e:?}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err((_, e)) => panic!("cannot recreate {topic}: {e:?}"),
        }
    }
    // Until the new topic's leader is known, joining may be refused (404/503): retry then.
    let mut second = loop {
        match tokio_tungstenite::connect_async(bin.url(&path)).await {
            Ok((ws, _)) => break ws,
            Err(e) if recreated.elapsed() < Duration::from_secs(30) => {
                eprintln!("tail connect: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("tail socket on the recreated topic: {e}"),
        }
    };
    next_of(
        &mut second,
        "assigned",
        T,
        "tail socket on the recreated topic",
    )
    .await;
    produce(&topic, 0, &[b"after"]).await;
    let f = next_of(
        &mut second,
        "records",
        T,
        "tail socket on the recreated topic (the failed reader was reused)",
    )
    .await;
    assert_eq!(f["records"][0]["value"], "after", "{f}");
    close(second).await;
}

/// Fault 4: the session loop awaited each socket write, so a client that does not read stopped
/// its session from polling Kafka, rebalance callbacks included: a second member of the group
/// waited until the stuck one was dropped. Now the rebalance completes while the first socket
/// still reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault4_stuck_consume_writer_does_not_stall_the_group_rebalance() {
    const BOUND: Duration = Duration::from_secs(20);
    let topic = topic("faults-rebalance", 4).await;
    let group = unique("faults-rebalance-g");
    // 20 MB in records of 200 KB: far more than the kernel's socket buffers and the session's.
    produce_sized(&topic, &[0, 1, 2, 3], 25, 200 * 1024).await;
    // Pings every 30 s: a silent or stalled peer is dropped only after 90 s, well after BOUND.
    let mut bin = Bin::start(&["--ping-interval", "30", "--shutdown-grace", "3"]).await;
    let path = format!("/v1/consume?topic={topic}&group={group}");
    let mut stuck = bin.connect_unread(&path).await;
    let before = wait_blocked(&bin, &stuck, T).await;
    // Let the session settle into its blocked state (the old loop sat in a write here).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let joined = Instant::now();
    let mut second = bin.connect(&path).await;
    let assigned = next_of(&mut second, "assigned", BOUND, "second member of the group").await;
    let assigned_secs = joined.elapsed().as_secs_f64();
    let mine = partitions(&assigned);
    assert!(
        !mine.is_empty() && mine.len() < 4,
        "the second member shares the partitions: {assigned}"
    );
    let left = BOUND.saturating_sub(joined.elapsed());
    let f = next_of(&mut second, "records", left, "second member of the group").await;
    let records_secs = joined.elapsed().as_secs_f64();
    assert!(mine.contains(&f["records"][0]["partition"].as_i64().unwrap_or(-1)));
    // The first socket still had not read anything: its writes were blocked all along.
    let after = tcp_queues(bin.addr, local_addr(&stuck)).expect("stuck socket still open");
    assert!(
        after.0 > 0,
        "the proxy's writes to the stuck socket are still pending: {after:?}"
    );
    eprintln!(
        "fault4: rebalance done (assigned) {assigned_secs:.2}s, first records {records_secs:.2}s \
         after the second socket joined; stuck socket queues (proxy send, client unread) \
         before {before:?}, after {after:?}"
    );

    // A third member: the stuck member must take part in a second rebalance too.
    let joined3 = Instant::now();
    let mut third = bin.connect(&path).await;
    let a3 = next_of(&mut third, "assigned", BOUND, "third member of the group").await;
    let third_secs = joined3.elapsed().as_secs_f64();
    let share3 = partitions(&a3);
    assert!(!share3.is_empty(), "{a3}");
    let a2 = next_of(
        &mut second,
        "assigned",
        T,
        "second member, second rebalance",
    )
    .await;
    let share2 = partitions(&a2);
    for p in 0..4 {
        produce(&topic, p, &[b"fresh"]).await;
    }
    let f = next_of(&mut third, "records", T, "third member").await;
    assert!(share3.contains(&f["records"][0]["partition"].as_i64().unwrap_or(-1)));
    let after3 = tcp_queues(bin.addr, local_addr(&stuck)).expect("stuck socket still open");
    assert!(
        after3.0 > 0,
        "the stuck socket still reads nothing: {after3:?}"
    );
    eprintln!("fault4: second rebalance done {third_secs:.2}s after the third socket joined");

    // Now the stuck socket reads: its first assignment, then a revoke and a share per rebalance.
    let first = next_of(&mut stuck, "assigned", T, "stuck socket, first assignment").await;
    assert_eq!(partitions(&first), vec![0, 1, 2, 3], "{first}");
    let mut share1 = Vec::new();
    for round in 1..=2 {
        let revoked = next_of(&mut stuck, "revoked", T, "stuck socket, a rebalance").await;
        assert!(!partitions(&revoked).is_empty(), "round {round}: {revoked}");
        let share = next_of(&mut stuck, "assigned", T, "stuck socket, its new share").await;
        share1 = partitions(&share);
    }
    let mut all: Vec<i64> = [share1, share2, share3].concat();
    all.sort();
    assert_eq!(
        all,
        vec![0, 1, 2, 3],
        "the three members split the partitions"
    );
    close(third).await;
    drop(stuck);
    close(second).await;
    bin.sigterm();
    bin.exited(Duration::from_secs(10)).await;
}

/// Fault 5: on SIGTERM the process could exit before sessions committed, and a stuck writer
/// could hold the shutdown. Now it exits within `shutdownGrace`, closes every socket that reads
/// with 1001, and commits what was delivered (`auto`) or acknowledged (`ack`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault5_sigterm_commits_delivered_and_acked_offsets_within_the_grace() {
    const GRACE: Duration = Duration::from_secs(3);
    let auto_topic = topic("faults-sd-auto", 1).await;
    let ack_topic = topic("faults-sd-ack", 1).await;
    let big_topic = topic("faults-sd-big", 1).await;
    let (ga, gb) = (unique("faults-sd-ga"), unique("faults-sd-gb"));
    let (gs1, gs2) = (unique("faults-sd-gs1"), unique("faults-sd-gs2"));
    produce_sized(&big_topic, &[0], 60, 200 * 1024).await;
    let values: Vec<Vec<u8>> = (0..10).map(|i| format!("r{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    produce(&auto_topic, 0, &refs).await;
    produce(&ack_topic, 0, &refs).await;
    let mut bin = Bin::start(&["--ping-interval", "30", "--shutdown-grace", "3"]).await;

    // Two sessions whose clients never read, one per commit mode, both blocked in writes.
    let stuck_auto = bin
        .connect_unread(&format!("/v1/consume?topic={big_topic}&group={gs1}"))
        .await;
    let stuck_ack = bin
        .connect_unread(&format!(
            "/v1/consume?topic={big_topic}&group={gs2}&commit=ack"
        ))
        .await;
    wait_blocked(&bin, &stuck_auto, T).await;
    wait_blocked(&bin, &stuck_ack, T).await;

    // A reading client in each mode.
    let mut auto = bin
        .connect(&format!("/v1/consume?topic={auto_topic}&group={ga}"))
        .await;
    let mut ack = bin
        .connect(&format!(
            "/v1/consume?topic={ack_topic}&group={gb}&commit=ack"
        ))
        .await;
    let mut n = 0;
    while n < 10 {
        let f = next_of(&mut auto, "records", T, "auto socket").await;
        n += f["records"].as_array().map_or(0, Vec::len);
    }
    let mut n = 0;
    while n < 10 {
        let f = next_of(&mut ack, "records", T, "ack socket").await;
        n += f["records"].as_array().map_or(0, Vec::len);
    }
    // Past the periodic commit: what follows is committed only by the shutdown itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    produce(&auto_topic, 0, &[b"last-1", b"last-2", b"last-3"]).await;
    let mut n = 0;
    while n < 3 {
        let f = next_of(&mut auto, "records", T, "auto socket, last records").await;
        n += f["records"].as_array().map_or(0, Vec::len);
    }
    // Acknowledge offsets 0..=5 of 0..=9; a bad ack behind it proves the proxy read the first.
    let ack_frame = serde_json::json!({"type":"ack","topic":ack_topic,"partition":0,"offset":5});
    ack.send(Message::Text(ack_frame.to_string().into()))
        .await
        .unwrap();
    ack.send(Message::Text(
        r#"{"type":"ack","batch":999999}"#.to_string().into(),
    ))
    .await
    .unwrap();
    let e = next_of(&mut ack, "error", T, "ack socket, bad ack answer").await;
    assert_eq!(e["code"], "bad_ack", "{e}");

    let term = Instant::now();
    bin.sigterm();
    let (auto_close, ack_close) = tokio::join!(
        expect_close(&mut auto, Duration::from_secs(10)),
        expect_close(&mut ack, Duration::from_secs(10))
    );
    let status = bin.exited(Duration::from_secs(30)).await;
    let exit_secs = term.elapsed().as_secs_f64();
    eprintln!(
        "fault5: exit {status} {exit_secs:.2}s after SIGTERM (grace {GRACE:?}); closes \
         auto {auto_close:?}, ack {ack_close:?}"
    );
    assert_eq!(auto_close.0, 1001, "auto socket: {auto_close:?}");
    assert_eq!(ack_close.0, 1001, "ack socket: {ack_close:?}");
    assert!(status.success(), "exit status {status}");
    assert!(
        exit_secs < GRACE.as_secs_f64(),
        "exited {exit_secs:.2}s after SIGTERM, grace {GRACE:?}: it waited on the stuck writers"
    );
    // Every session closed its consumer, the stuck ones too: no member is left behind to hold
    // its partitions until the group's session timeout.
    for g in [&ga, &gb, &gs1, &gs2] {
        let members = group_members(g).await;
        assert_eq!(
            members, 0,
            "group {g} still has {members} member(s) after the exit"
        );
    }

    // Committed offsets as Kafka reports them, next offset to read.
    let c = committed(&ga, &auto_topic, 1).await;
    assert_eq!(c.get(&0), Some(&13), "group {ga}: all 13 delivered records");
    let c = committed(&gb, &ack_topic, 1).await;
    assert_eq!(
        c.get(&0),
        Some(&6),
        "group {gb}: acknowledged offsets 0..=5"
    );
    let c = committed(&gs2, &big_topic, 1).await;
    assert_eq!(c.get(&0), None, "group {gs2} acknowledged nothing: {c:?}");
    // The stuck auto socket: whatever is committed was delivered (nothing skipped).
    let received = drain_offsets(stuck_auto).await;
    let c = committed(&gs1, &big_topic, 1).await;
    if let Some(&next) = c.get(&0) {
        assert!(
            received.is_some_and(|last| next <= last + 1),
            "group {gs1} committed {next} but the client received up to {received:?}"
        );
    }
    eprintln!("fault5: stuck auto socket received up to {received:?}, committed {c:?}");
    drop(stuck_ack);
}

/// Reads a socket until it ends; the last record offset received in a complete frame.
async fn drain_offsets(mut ws: Ws) -> Option<i64> {
    let mut last = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
            for r in v["records"].as_array().into_iter().flatten() {
                last = last.max(r["offset"].as_i64());
            }
        }
    }
    last
}

/// Fault 9: every socket without a group used the group id `kafka-proxy-unused`, so they shared
/// its committed offsets (a partition without a start position began where anyone had
/// committed for that group). Now each such consumer has a group id of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault9_sockets_without_a_group_use_a_private_group_id() {
    const SHARED: &str = "kafka-proxy-unused";
    let topic = topic("faults-private", 2).await;
    let values: Vec<Vec<u8>> = (0..6).map(|i| format!("v{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    produce(&topic, 0, &refs).await;
    produce(&topic, 1, &refs).await;
    // Start from a broker without that group (an earlier run may have left one).
    let _ = admin().delete_groups(&[SHARED], &AdminOptions::new()).await;
    let bin = Bin::start(&[]).await;

    // A socket without a group neither joins nor creates the shared group.
    let mut ws = bin
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0&from=earliest"
        ))
        .await;
    let mut n = 0;
    while n < 6 {
        let f = next_of(&mut ws, "records", T, "groupless socket").await;
        n += f["records"].as_array().map_or(0, Vec::len);
    }
    let groups = list_groups().await;
    assert!(
        !groups.iter().any(|g| g == SHARED),
        "a groupless socket created group {SHARED}"
    );
    close(ws).await;

    // Someone commits to the old shared id. A groupless socket's partition without a start
    // position must not begin there: its consumer's group is its own, with no commits.
    let planted = 4;
    commit_as(SHARED, &topic, 1, planted).await;
    let mut ws = bin
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0,1&offset=0:0"
        ))
        .await;
    let mut p1 = Vec::new();
    let mut n = 0;
    while n < 12 - planted as usize {
        let f = next_of(&mut ws, "records", T, "groupless socket on two partitions").await;
        for r in f["records"].as_array().into_iter().flatten() {
            n += 1;
            if r["partition"] == 1 {
                p1.push(r["offset"].as_i64().expect("offset"));
            }
        }
    }
    // Anything still coming (it would if partition 1 started at 0).
    while let Ok(f) = next_json(&mut ws, Duration::from_secs(2)).await {
        for r in f["records"].as_array().into_iter().flatten() {
            if r["partition"] == 1 {
                p1.push(r["offset"].as_i64().expect("offset"));
            }
        }
    }
    close(ws).await;
    let _ = admin().delete_groups(&[SHARED], &AdminOptions::new()).await;
    assert_eq!(
        p1,
        (0..6).collect::<Vec<i64>>(),
        "partition 1 (no start given) starts at offsetReset (earliest), not at {planted} \
         committed to {SHARED}"
    );
}

/// Every consumer group the broker knows (Kafka's ListGroups).
async fn list_groups() -> Vec<String> {
    let c: BaseConsumer = client_config().create().expect("consumer");
    tokio::task::spawn_blocking(move || {
        c.fetch_group_list(None, Duration::from_secs(10))
            .expect("list groups")
            .groups()
            .iter()
            .map(|g| g.name().to_string())
            .collect()
    })
    .await
    .expect("list groups task")
}

/// Members of a consumer group, as the broker reports them.
async fn group_members(group: &str) -> usize {
    let c: BaseConsumer = client_config().create().expect("consumer");
    let group = group.to_string();
    tokio::task::spawn_blocking(move || {
        c.fetch_group_list(Some(&group), Duration::from_secs(10))
            .expect("describe group")
            .groups()
            .iter()
            .map(|g| g.members().len())
            .sum()
    })
    .await
    .expect("describe group task")
}

/// Commits `next` for `topic`/`partition` as group `group`, without joining it.
async fn commit_as(group: &str, topic: &str, partition: i32, next: i64) {
    let c: BaseConsumer = client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(next))
        .expect("tpl");
    tokio::task::spawn_blocking(move || {
        c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit")
    })
    .await
    .expect("commit task");
}

/// A member of `group` that speaks only the `cooperative-sticky` assignment protocol, which the
/// proxy's sessions (librdkafka's default `range,roundrobin`) do not: Kafka refuses any session
/// that tries to join beside it (INCONSISTENT_GROUP_PROTOCOL). Polled on its own thread until
/// dropped; returns once it owns the topic's partitions.
struct ForeignMember {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForeignMember {
    async fn join(group: &str, topic: &str) -> ForeignMember {
        let c: BaseConsumer = client_config()
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .expect("foreign member");
        c.subscribe(&[topic]).expect("subscribe");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut tx = Some(tx);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
                if c.assignment().is_ok_and(|a| a.count() > 0) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            c.unsubscribe();
        });
        tokio::time::timeout(T, rx)
            .await
            .expect("the foreign member owns the topic in time")
            .expect("foreign member thread");
        ForeignMember {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ForeignMember {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fault 7, a group error: Kafka refusing a session's group join (here: another member of the
/// group uses an assignment protocol the proxy does not) reached the session as a consumer
/// error that was logged at debug, and the socket waited for an assignment forever. Now the
/// client gets `kafka_error` (4502) naming the refusal, and the operator a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault7_a_refused_group_join_closes_the_socket_and_warns() {
    let topic = topic("faults-join", 1).await;
    let group = unique("faults-join-g");
    let member = ForeignMember::join(&group, &topic).await;
    let bin = Bin::start(&[]).await;
    let asked = Instant::now();
    for path in [
        format!("/v1/consume?topic={topic}&group={group}"),
        format!("/?topic={topic}&consumerGroup={group}"),
    ] {
        let mut ws = bin.connect(&path).await;
        if path.starts_with("/v1") {
            let err = match next_json(&mut ws, T).await {
                Ok(v) => v,
                Err(e) => panic!("{path}: no error frame ({e}); log:\n{}", bin.log_tail()),
            };
            assert_eq!(
                (err["type"].as_str(), err["code"].as_str()),
                (Some("error"), Some("kafka_error")),
                "{err}"
            );
        }
        let (code, reason) = expect_close(&mut ws, T).await;
        assert_eq!(code, 4502, "{path}: {reason}");
        assert!(
            reason.starts_with("kafka_error") && reason.contains("nconsistent group protocol"),
            "{path}: close reason {reason:?}"
        );
        eprintln!(
            "fault7 join: {path} closed {code} {reason:?} after {:.1}s",
            asked.elapsed().as_secs_f64()
        );
    }
    let log = std::fs::read_to_string(&bin.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("nconsistent group protocol")),
        "no warning for the operator; log:\n{}",
        bin.log_tail()
    );
    drop(member);
}

/// A topic deleted while sessions read it: librdkafka reports the loss of a partition it was
/// told to read only in its log, after its topic metadata propagation time (30 s from the
/// client's start) and a refresh, so sockets waited up to a minute on a topic that was gone. Now
/// every socket on it, consume (group, partitions, seed) and tail, gets `unknown_topic` (4404)
/// with a reason within a few seconds, and the operator a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_deleted_topic_closes_every_socket_on_it_within_seconds() {
    const WITHIN: Duration = Duration::from_secs(12);
    let topic = topic("faults-deleted", 2).await;
    let group = unique("faults-deleted-g");
    let bin = Bin::start(&[]).await;
    let paths = [
        format!("/v1/consume?topic={topic}&group={group}"),
        format!("/v1/consume?topic={topic}&partition=0&from=earliest"),
        format!("/?topic={topic}&consumerGroup={group}-seed"),
        format!("/v1/tail?topic={topic}"),
    ];
    let mut sockets = Vec::new();
    for path in &paths {
        let mut ws = bin.connect(path).await;
        if !path.starts_with("/?") {
            next_of(&mut ws, "assigned", T, path).await;
        }
        sockets.push(ws);
    }
    // The seed socket says nothing until records come: one record shows it reads.
    produce(&topic, 0, &[b"before"]).await;
    let seed = &mut sockets[2];
    match tokio::time::timeout(T, seed.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => {}
        other => panic!("seed socket: no records ({other:?})"),
    }

    let deleted = Instant::now();
    for r in admin()
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("delete topic")
    {
        r.expect("topic deleted");
    }
    let closes =
        futures::future::join_all(sockets.iter_mut().zip(&paths).map(|(ws, path)| async move {
            if !path.starts_with("/?") {
                let err = match next_of_until(ws, "error", WITHIN).await {
                    Ok(v) => v,
                    Err(e) => return Err(format!("{path}: no error frame ({e})")),
                };
                if err["code"] != "unknown_topic" {
                    return Err(format!("{path}: {err}"));
                }
            }
            let (code, reason) = close_of(ws, WITHIN)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            Ok((path.clone(), code, reason, deleted.elapsed()))
        }))
        .await;
    for c in closes {
        let (path, code, reason, after) = c.unwrap_or_else(|e| {
            panic!(
                "{e} {:.1}s after the delete; log:\n{}",
                deleted.elapsed().as_secs_f64(),
                bin.log_tail()
            )
        });
        eprintln!(
            "deleted topic: {path} closed {code} {reason:?} after {:.1}s",
            after.as_secs_f64()
        );
        assert_eq!(code, 4404, "{path}: {reason}");
        assert!(reason.starts_with("unknown_topic"), "{path}: {reason:?}");
        assert!(after < WITHIN, "{path}: closed {after:?} after the delete");
    }
    let log = std::fs::read_to_string(&bin.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&topic) && l.contains("is gone")),
        "no warning naming the deleted topic; log:\n{}",
        bin.log_tail()
    );
}

/// Frames until one of type `kind`; an error saying why when none comes within `within`.
async fn next_of_until(ws: &mut Ws, kind: &str, within: Duration) -> Result<Value, String> {
    let until = Instant::now() + within;
    loop {
        let v = next_json(ws, until.saturating_duration_since(Instant::now())).await?;
        if v["type"] == kind {
            return Ok(v);
        }
    }
}

/// The close frame's code and reason; an error saying why when none comes within `within`.
async fn close_of(ws: &mut Ws, within: Duration) -> Result<(u16, String), String> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return Err(format!("no close within {within:?}")),
            Ok(None) => return Err("socket ended without a close frame".into()),
            Ok(Some(Err(e))) => return Err(format!("socket error: {e}")),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return Ok((f.code.into(), f.reason.to_string()))
            }
            Ok(Some(Ok(Message::Close(None)))) => return Err("close without a code".into()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}
