//! The versioned consume protocol (`/v1/consume`) against the real broker.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use futures::SinkExt;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn produce_seq(topic: &str, partitions: i32, n: usize) {
    let p = producer();
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        let payload = format!("{i}");
        let key = format!("k{}", i % 97);
        futs.push(
            p.send_result(
                FutureRecord::to(topic)
                    .partition((i % partitions as usize) as i32)
                    .key(&key)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_records_round_trip_in_every_encoding() {
    let topic = topic("v1-rich", 1).await;
    let p = producer();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc"),
        })
        .insert(Header {
            key: "empty",
            value: None::<&str>,
        });
    p.send(
        FutureRecord::to(&topic)
            .partition(0)
            .key(&[0u8, 1, 2][..])
            .payload(&[0xffu8, 0x00, b'z'][..])
            .timestamp(1_700_000_000_123)
            .headers(headers),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    produce(&topic, 0, &[br#"{"n": [1, 2]}"#]).await;
    let proxy = Proxy::start().await;

    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&group={}&encoding=base64",
            unique("g")
        ))
        .await;
    let assigned = next_of(&mut ws, "assigned").await;
    assert_eq!(assigned["partitions"][0]["partition"], 0);
    let f = next_of(&mut ws, "records").await;
    let r = &f["records"][0];
    assert_eq!(r["topic"], topic.as_str());
    assert_eq!(r["partition"], 0);
    assert_eq!(r["offset"], 0);
    assert_eq!(r["timestamp"], 1_700_000_000_123i64);
    assert_eq!(r["key"], "AAEC");
    assert_eq!(r["value"], "/wB6");
    assert_eq!(r["headers"][0]["key"], "trace");
    assert_eq!(r["headers"][0]["value"], "YWJj");
    assert_eq!(r["headers"][1]["value"], Value::Null);
    assert!(f["batch"].as_u64().unwrap() >= 1);
    close(ws).await;

    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0&from=earliest&encoding=json"
        ))
        .await;
    let mut recs = Vec::new();
    while recs.len() < 2 {
        let f = next_of(&mut ws, "records").await;
        recs.extend(f["records"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        recs[0]["value"], "\u{fffd}\u{0}z",
        "non-JSON falls back to text"
    );
    assert_eq!(
        recs[1]["value"],
        serde_json::json!({"n": [1, 2]}),
        "JSON is embedded"
    );
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_timestamp_latest_and_per_partition_offsets() {
    let topic = topic("v1-seek", 2).await;
    let p = producer();
    for (i, ts) in [1000i64, 2000, 3000, 4000].iter().enumerate() {
        p.send(
            FutureRecord::<(), _>::to(&topic)
                .partition(0)
                .payload(&format!("t{i}"))
                .timestamp(*ts),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    produce(&topic, 1, &[b"x0", b"x1", b"x2"]).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0&timestamp=2500"
        ))
        .await;
    let f = next_of(&mut ws, "records").await;
    assert_eq!(
        f["records"][0]["offset"], 2,
        "first record at or after the timestamp"
    );
    assert_eq!(f["records"][0]["value"], "t2");
    close(ws).await;

    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0,1&offset=0:3,1:1"
        ))
        .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let f = next_of(&mut ws, "records").await;
        for r in f["records"].as_array().unwrap() {
            got.push((
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            ));
        }
    }
    got.sort();
    assert_eq!(got, vec![(0, 3), (1, 1), (1, 2)]);
    close(ws).await;

    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=1&from=latest"
        ))
        .await;
    next_of(&mut ws, "assigned").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    produce(&topic, 1, &[b"new"]).await;
    let f = next_of(&mut ws, "records").await;
    assert_eq!(f["records"][0]["value"], "new");
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_sockets_split_partitions_and_hand_over_on_leave_without_loss() {
    let topic = topic("v1-group", 4).await;
    let proxy = Proxy::start().await;
    let group = unique("g");
    let url = format!("/v1/consume?topic={topic}&group={group}&commit=ack");
    let mut a = proxy.connect(&url).await;
    let first = next_of(&mut a, "assigned").await;
    assert_eq!(first["partitions"].as_array().unwrap().len(), 4);
    let mut b = proxy.connect(&url).await;
    // a is told what it lost and what it keeps; b gets the rest.
    next_of(&mut a, "revoked").await;
    let a2 = next_of(&mut a, "assigned").await;
    let b2 = next_of(&mut b, "assigned").await;
    let na = a2["partitions"].as_array().unwrap().len();
    let nb = b2["partitions"].as_array().unwrap().len();
    assert_eq!((na + nb, na > 0, nb > 0), (4, true, true), "{a2} {b2}");

    produce_seq(&topic, 4, 400).await;
    let mut seen = BTreeSet::new();
    // Read a little from b and ack it, then b leaves without acking the rest.
    let f = next_of(&mut b, "records").await;
    for r in f["records"].as_array().unwrap() {
        seen.insert(r["value"].as_str().unwrap().parse::<u32>().unwrap());
    }
    send(
        &mut b,
        serde_json::json!({"type":"ack","batch": f["batch"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(b);
    // a ends up with all partitions and everything b did not acknowledge.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while seen.len() < 400 && tokio::time::Instant::now() < deadline {
        let f = next_json(&mut a).await;
        if f["type"] == "records" {
            for r in f["records"].as_array().unwrap() {
                seen.insert(r["value"].as_str().unwrap().parse::<u32>().unwrap());
            }
            send(
                &mut a,
                serde_json::json!({"type":"ack","batch": f["batch"]}),
            )
            .await;
        }
    }
    assert_eq!(seen.len(), 400, "no record lost across the hand-over");
    close(a).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_after_a_crash_with_bounded_duplicates() {
    const N: usize = 10_000;
    const WINDOW: usize = 500;
    let topic = topic("v1-alo", 3).await;
    produce_seq(&topic, 3, N).await;
    let proxy = Proxy::start().await;
    let group = unique("g");
    let url = format!("/v1/consume?topic={topic}&group={group}&commit=ack&window={WINDOW}");
    let mut counts: HashMap<u32, u32> = HashMap::new();

    // First client: acks every batch until about 4,000 records, then reads a bit more without
    // acking and dies without a close frame.
    let mut ws = proxy.connect(&url).await;
    let mut delivered = 0;
    let mut unacked_at_crash = 0;
    loop {
        let f = next_json(&mut ws).await;
        if f["type"] != "records" {
            continue;
        }
        let recs = f["records"].as_array().unwrap();
        for r in recs {
            *counts
                .entry(r["value"].as_str().unwrap().parse().unwrap())
                .or_default() += 1;
        }
        delivered += recs.len();
        if delivered < 4000 {
            send(
                &mut ws,
                serde_json::json!({"type":"ack","batch": f["batch"]}),
            )
            .await;
        } else {
            unacked_at_crash += recs.len();
            if unacked_at_crash >= 200 {
                break;
            }
        }
    }
    // The window is a hard cap on unacknowledged records in flight.
    assert!(
        unacked_at_crash <= WINDOW,
        "{unacked_at_crash} unacked > window"
    );
    drop(ws); // TCP closes with no WebSocket close frame.

    // Second client: reads the rest, acking everything.
    let mut ws = proxy.connect(&url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts.len() < N && tokio::time::Instant::now() < deadline {
        let f = next_json(&mut ws).await;
        if f["type"] != "records" {
            continue;
        }
        for r in f["records"].as_array().unwrap() {
            *counts
                .entry(r["value"].as_str().unwrap().parse().unwrap())
                .or_default() += 1;
        }
        send(
            &mut ws,
            serde_json::json!({"type":"ack","batch": f["batch"]}),
        )
        .await;
    }
    assert_eq!(
        counts.len(),
        N,
        "every sequence number arrived at least once"
    );
    let dups: u32 = counts.values().map(|c| c - 1).sum();
    assert!(
        dups as usize <= WINDOW,
        "{dups} duplicates exceed the window {WINDOW}"
    );
    assert!(
        dups as usize >= unacked_at_crash.min(1),
        "unacked records are redelivered"
    );
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_frames_or_close_codes() {
    let topic = topic("v1-errs", 1).await;
    produce(&topic, 0, &[b"a"]).await;
    let proxy = Proxy::start_with(|c| c.max_frame_bytes = 4096).await;
    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&group={}&commit=ack",
            unique("g")
        ))
        .await;
    let f = next_of(&mut ws, "records").await;
    let batch = f["batch"].as_u64().unwrap();
    ws.send(Message::Text("not json".into())).await.unwrap();
    let e = next_of(&mut ws, "error").await;
    assert_eq!(e["code"], "bad_request");
    send(
        &mut ws,
        serde_json::json!({"type":"ack","batch": batch + 100}),
    )
    .await;
    let e = next_of(&mut ws, "error").await;
    assert_eq!(e["code"], "bad_ack");
    send(
        &mut ws,
        serde_json::json!({"type":"ack","topic": topic, "partition": 0, "offset": 50}),
    )
    .await;
    let e = next_of(&mut ws, "error").await;
    assert_eq!(e["code"], "bad_ack");
    // The socket is still usable: a valid ack is taken and new records flow.
    send(
        &mut ws,
        serde_json::json!({"type":"ack","topic": topic, "partition": 0, "offset": 0}),
    )
    .await;
    produce(&topic, 0, &[b"b"]).await;
    let f = next_of(&mut ws, "records").await;
    assert_eq!(f["records"][0]["value"], "b");
    // A frame over maxFrameBytes ends the socket with 4413.
    ws.send(Message::Text("x".repeat(10_000).into()))
        .await
        .unwrap();
    let (code, reason) = expect_close(&mut ws, T).await;
    assert_eq!(code, 4413, "{reason}");
    proxy.stop().await;

    // Bad parameters are refused before the upgrade.
    let proxy = Proxy::start().await;
    for q in [
        "topic=a",
        "topic=a&partition=0",
        "topic=a&group=g&commit=maybe",
        "topic=a&group=g&encoding=hex",
        "topic=a&group=g&window=0",
        "topic=a&group=g&from=earliest&timestamp=5",
        "topic=a,b&partition=0&from=earliest",
        "topic=a&group=g&colour=red",
    ] {
        let r = tokio_tungstenite::connect_async(proxy.url(&format!("/v1/consume?{q}"))).await;
        match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{q}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("bad_request"), "{q}: {body}");
            }
            other => panic!("{q}: expected HTTP 400, got {other:?}"),
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_stays_within_its_buffer_bound_and_others_keep_pace() {
    const BOUND: usize = 256 * 1024;
    let topic = topic("v1-slow", 1).await;
    // About 24 MB of records: far more than the session bound and the kernel's socket buffers.
    const N: usize = 24_000;
    let p = producer();
    let value = vec![b'v'; 1000];
    let mut futs = Vec::new();
    for _ in 0..N {
        futs.push(
            p.send_result(
                FutureRecord::<(), _>::to(&topic)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let proxy = Proxy::start_with(|c| {
        c.session_buffer_bytes = BOUND;
        c.max_bytes = 16 * 1024;
    })
    .await;
    // The slow client connects and then does not read at all for a while; its socket buffers
    // fill and the proxy must pause fetching instead of buffering.
    let slow = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0&from=earliest"
        ))
        .await;
    // A fast client on the same topic reads everything meanwhile.
    let mut fast = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0&from=earliest"
        ))
        .await;
    let mut n = 0;
    let started = std::time::Instant::now();
    while n < N {
        let f = next_of(&mut fast, "records").await;
        n += f["records"].as_array().unwrap().len();
    }
    let fast_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = reqwest_get(&proxy, "/admin/sessions").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let sessions = v["sessions"].as_array().unwrap();
    let slow_peer = match slow.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().unwrap().to_string(),
        _ => unreachable!(),
    };
    let slow_s = sessions
        .iter()
        .find(|s| s["peer"] == slow_peer.as_str())
        .expect("the slow session is listed");
    assert!(
        (slow_s["sent"].as_u64().unwrap() as usize) < N,
        "the slow session is still behind: {slow_s}"
    );
    let max = slow_s["buffered_bytes_max"].as_u64().unwrap() as usize;
    assert!(
        max <= BOUND,
        "slow session held {max} bytes > bound {BOUND}"
    );
    assert_eq!(
        slow_s["paused"], true,
        "fetching paused for the slow session"
    );
    assert!(fast_secs < 20.0, "fast client took {fast_secs:.1}s");
    drop(slow);
    close(fast).await;
    proxy.stop().await;
}

/// Minimal HTTP GET (the tests avoid an HTTP client dependency).
async fn reqwest_get(proxy: &Proxy, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_is_detected_and_its_session_cleaned_up() {
    let topic = topic("v1-dead", 1).await;
    let proxy = Proxy::start_with(|c| c.ping_interval = Duration::from_secs(1)).await;
    // A client that never reads never answers pings: it looks exactly like a dead peer.
    let silent = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&partition=0&from=earliest"
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v: Value = serde_json::from_str(&reqwest_get(&proxy, "/admin/sessions").await).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    let mut gone = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v: Value = serde_json::from_str(&reqwest_get(&proxy, "/admin/sessions").await).unwrap();
        if v["sessions"].as_array().unwrap().is_empty() {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "session of a silent peer is dropped after three ping intervals"
    );
    drop(silent);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_socket_reads_several_topics() {
    let t1 = topic("v1-multi-a", 1).await;
    let t2 = topic("v1-multi-b", 2).await;
    produce(&t1, 0, &[b"a0"]).await;
    produce(&t2, 1, &[b"b1"]).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={t1},{t2}&group={}",
            unique("g")
        ))
        .await;
    let a = next_of(&mut ws, "assigned").await;
    assert_eq!(a["partitions"].as_array().unwrap().len(), 3);
    let mut got = BTreeSet::new();
    while got.len() < 2 {
        let f = next_of(&mut ws, "records").await;
        for r in f["records"].as_array().unwrap() {
            got.insert((
                r["topic"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(got.contains(&(t1.clone(), "a0".into())) && got.contains(&(t2.clone(), "b1".into())));
    close(ws).await;
    proxy.stop().await;
}
