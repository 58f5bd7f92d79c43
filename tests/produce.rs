//! Produce over WebSocket and HTTP against the real broker, read back by an independent consumer.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use rdkafka::message::{Headers, Message as _, OwnedMessage};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

fn parse(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

/// Reads `n` answers (acks or errors), failing on anything else.
async fn answers(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = parse(&next_text(ws, T).await);
        assert!(
            v["type"] == "ack" || v["type"] == "error",
            "unexpected frame {v}"
        );
        out.push(v);
    }
    out
}

fn at(msgs: &[OwnedMessage], partition: i64, offset: i64) -> &OwnedMessage {
    msgs.iter()
        .find(|m| i64::from(m.partition()) == partition && m.offset() == offset)
        .unwrap_or_else(|| panic!("no record at {partition}/{offset} in Kafka"))
}

fn headers_of(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The Java client's default partition for a key: murmur2, made positive, modulo partitions.
fn java_partition(key: &[u8], partitions: u32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let len = key.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    for c in key.chunks_exact(4) {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = &key[len & !3..];
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions) as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_lines_and_binary_frames_become_records() {
    let topic = topic("produce-lines", 1).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    ws.send(Message::text("first line")).await.unwrap();
    ws.send(Message::text("second \"line\" é")).await.unwrap();
    ws.send(Message::binary(vec![0u8, 1, 255, 128]))
        .await
        .unwrap();
    let acks = answers(&mut ws, 3).await;
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a["type"], "ack", "{a}");
        assert_eq!(a["id"], json!(i + 1), "plain frames are numbered 1, 2, 3");
        assert_eq!(a["partition"], 0);
    }
    let msgs = read_back(&topic, 1, 3, T).await;
    assert_eq!(msgs.len(), 3);
    let expected: [&[u8]; 3] = [
        b"first line",
        "second \"line\" é".as_bytes(),
        &[0, 1, 255, 128],
    ];
    for (a, want) in acks.iter().zip(expected) {
        let m = at(&msgs, 0, a["offset"].as_i64().unwrap());
        assert_eq!(m.payload(), Some(want));
        assert_eq!(m.key(), None);
    }
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_keep_key_headers_value_partition_and_timestamp() {
    let topic = topic("produce-json", 3).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    let batch = json!([
        {"id": "a", "key": "k1", "value": "v1", "partition": 2,
         "headers": [{"key": "h1", "value": "x"}, {"key": "h2", "value": null}]},
        {"id": "b", "encoding": "base64", "key": "AAE=", "value": "AP+A", "partition": 1,
         "headers": {"bin": "/w=="}},
        {"id": "c", "encoding": "json", "value": {"n": 1, "s": "é"}, "partition": 0,
         "timestamp": 1_700_000_000_000_i64},
    ]);
    ws.send(Message::text(batch.to_string())).await.unwrap();
    ws.send(Message::text(
        r#"{"id": 99, "key": "k1", "value": "keyed"}"#,
    ))
    .await
    .unwrap();
    let acks = answers(&mut ws, 4).await;
    let ids: Vec<&Value> = acks.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!("a"), &json!("b"), &json!("c"), &json!(99)]);
    assert!(acks.iter().all(|a| a["type"] == "ack"), "{acks:?}");
    let msgs = read_back(&topic, 3, 4, T).await;
    assert_eq!(msgs.len(), 4);
    let off = |a: &Value| {
        (
            a["partition"].as_i64().unwrap(),
            a["offset"].as_i64().unwrap(),
        )
    };

    let (p, o) = off(&acks[0]);
    assert_eq!(p, 2);
    let m = at(&msgs, p, o);
    assert_eq!(m.key(), Some(&b"k1"[..]));
    assert_eq!(m.payload(), Some(&b"v1"[..]));
    assert_eq!(
        headers_of(m),
        vec![("h1".into(), Some(b"x".to_vec())), ("h2".into(), None)]
    );

    let (p, o) = off(&acks[1]);
    assert_eq!(p, 1);
    let m = at(&msgs, p, o);
    assert_eq!(m.key(), Some(&[0u8, 1][..]));
    assert_eq!(m.payload(), Some(&[0u8, 255, 128][..]));
    assert_eq!(headers_of(m), vec![("bin".into(), Some(vec![255u8]))]);

    let (p, o) = off(&acks[2]);
    assert_eq!(p, 0);
    let m = at(&msgs, p, o);
    assert_eq!(
        serde_json::from_slice::<Value>(m.payload().unwrap()).unwrap(),
        json!({"n": 1, "s": "é"})
    );
    assert_eq!(m.timestamp().to_millis(), Some(1_700_000_000_000));

    // Same key, Kafka's partitioner: lands where the key hashes, and the ack says where.
    let (p, o) = off(&acks[3]);
    let m = at(&msgs, p, o);
    assert_eq!(m.payload(), Some(&b"keyed"[..]));
    assert_eq!(m.key(), Some(&b"k1"[..]));
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_key_and_partition_apply_unless_the_record_overrides_them() {
    let topic = topic("produce-defaults", 2).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!("/v1/produce?topic={topic}&key=dk&partition=1"))
        .await;
    ws.send(Message::text("x")).await.unwrap();
    ws.send(Message::text(r#"{"value":"y"}"#)).await.unwrap();
    ws.send(Message::text(r#"{"value":"z","key":null,"partition":0}"#))
        .await
        .unwrap();
    let acks = answers(&mut ws, 3).await;
    let msgs = read_back(&topic, 2, 3, T).await;
    let got: Vec<(i64, Option<Vec<u8>>, Vec<u8>)> = acks
        .iter()
        .map(|a| {
            let p = a["partition"].as_i64().unwrap();
            let m = at(&msgs, p, a["offset"].as_i64().unwrap());
            (
                p,
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(b"dk".to_vec()), b"x".to_vec()),
            (1, Some(b"dk".to_vec()), b"y".to_vec()),
            (0, None, b"z".to_vec()),
        ]
    );
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_records_are_each_acked_once_in_order() {
    const N: usize = 10_000;
    const KEYS: usize = 8;
    let topic = topic("produce-pipelined", 4).await;
    let proxy = Proxy::start().await;
    let ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    let (mut tx, mut rx) = ws.split();
    let started = Instant::now();
    // The sender never waits for acks: everything is pipelined.
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            let key = format!("key-{}", i % KEYS);
            let frame = json!({"id": i, "key": key, "value": format!("{key}:{i}")});
            tx.feed(Message::text(frame.to_string())).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    let mut acked: Vec<(i64, i64)> = Vec::with_capacity(N);
    while acked.len() < N {
        let m = tokio::time::timeout(T, rx.next())
            .await
            .expect("acks keep coming")
            .expect("socket open")
            .expect("no socket error");
        let Message::Text(t) = m else { continue };
        let a = parse(&t);
        assert_eq!(a["type"], "ack", "{a}");
        // Answers come in the order records were sent, so each id exactly once, in sequence.
        assert_eq!(a["id"], json!(acked.len() + 1), "{a}");
        acked.push((
            a["partition"].as_i64().unwrap(),
            a["offset"].as_i64().unwrap(),
        ));
    }
    let elapsed = started.elapsed();
    println!(
        "{N} pipelined records acked in {:.0} ms ({:.0} records/s)",
        elapsed.as_secs_f64() * 1000.0,
        N as f64 / elapsed.as_secs_f64()
    );
    let mut ws = sender.await.unwrap().reunite(rx).unwrap();
    // No extra answer follows.
    let extra = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(Message::Text(_))))),
        "an extra frame: {extra:?}"
    );

    let msgs = read_back(&topic, 4, N, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), N, "every record stored exactly once");
    let by_pos: HashMap<(i64, i64), &OwnedMessage> = msgs
        .iter()
        .map(|m| ((i64::from(m.partition()), m.offset()), m))
        .collect();
    assert_eq!(
        acked.iter().collect::<HashSet<_>>().len(),
        N,
        "acks name distinct offsets"
    );
    for (i, pos) in acked.iter().enumerate() {
        let m = by_pos.get(pos).expect("acked offset is in Kafka");
        let key = format!("key-{}", (i + 1) % KEYS);
        assert_eq!(m.payload(), Some(format!("{key}:{}", i + 1).as_bytes()));
        assert_eq!(m.key(), Some(key.as_bytes()));
    }
    // Per-key order: one partition per key, values in send order.
    let mut per_key: HashMap<Vec<u8>, (i32, u64)> = HashMap::new();
    for m in &msgs {
        let key = m.key().unwrap().to_vec();
        let value = std::str::from_utf8(m.payload().unwrap()).unwrap();
        let n: u64 = value.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(
            m.partition(),
            java_partition(&key, 4),
            "keys are partitioned like the Java client"
        );
        if let Some((p, last)) = per_key.get(&key) {
            assert_eq!(*p, m.partition(), "one key, one partition");
            assert!(n > *last, "per-key order broken: {n} after {last}");
        }
        per_key.insert(key, (m.partition(), n));
    }
    assert_eq!(per_key.len(), KEYS);
    close(ws).await;
    proxy.stop().await;
}

/// What an `answers=batch` socket said about one record: its id, and where it was stored or
/// the error code.
type Answer = (Value, Result<(i64, i64), String>);

/// Reads answers of an `answers=batch` socket until `n` records are answered, expanding each
/// `acks` frame into its records; returns them in order with the largest `acks` frame seen.
async fn batched_answers<S>(rx: &mut S, n: usize) -> (Vec<Answer>, usize)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut got: Vec<Answer> = Vec::with_capacity(n);
    let mut largest = 0;
    while got.len() < n {
        let m = tokio::time::timeout(T, rx.next())
            .await
            .expect("answers keep coming")
            .expect("socket open")
            .expect("no socket error");
        let Message::Text(t) = m else { continue };
        let v = parse(&t);
        match v["type"].as_str() {
            Some("acks") => {
                let first = v["first"].as_u64().expect("first");
                let last = v["last"].as_u64().expect("last");
                // Frames follow each other: this one starts at the next record.
                assert_eq!(first, got.len() as u64 + 1, "{v}");
                assert!(last >= first, "{v}");
                let count = (last - first + 1) as usize;
                let ids = v.get("ids").map(|ids| ids.as_array().expect("ids").clone());
                if let Some(ids) = &ids {
                    assert_eq!(ids.len(), count, "one id per record: {v}");
                }
                let mut k = 0;
                for run in v["runs"].as_array().expect("runs") {
                    let run: Vec<i64> = run
                        .as_array()
                        .expect("run")
                        .iter()
                        .map(|x| x.as_i64().expect("integer"))
                        .collect();
                    let [p, o, len] = run[..] else {
                        panic!("a run is [partition, offset, count]: {v}")
                    };
                    assert!(len >= 1, "{v}");
                    for j in 0..len {
                        let id = match &ids {
                            Some(ids) => ids[k].clone(),
                            None => json!(first + k as u64),
                        };
                        got.push((id, Ok((p, o + j))));
                        k += 1;
                    }
                }
                assert_eq!(k, count, "runs cover first..=last exactly: {v}");
                largest = largest.max(count);
            }
            Some("error") => got.push((
                v["id"].clone(),
                Err(v["code"].as_str().expect("code").to_string()),
            )),
            _ => panic!("unexpected frame with answers=batch: {v}"),
        }
    }
    assert_eq!(got.len(), n, "no frame answers more records than were sent");
    (got, largest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_name_every_record_in_order_and_errors_stay_single() {
    const N: u64 = 5_000;
    let topic = topic("produce-batched", 3).await;
    let proxy = Proxy::start().await;
    let ws = proxy
        .connect(&format!("/v1/produce?topic={topic}&answers=batch"))
        .await;
    // Plain lines (numbered by the proxy), arrays of records with client ids, and now and then
    // a frame that is not JSON: each gets an answer at its place.
    let mut frames = Vec::new();
    let mut expected: Vec<(Value, Option<String>)> = Vec::new();
    let mut seq = 1;
    while seq <= N {
        if seq % 1000 == 500 {
            frames.push(Message::text("{\"value\":"));
            expected.push((json!(seq), None));
            seq += 1;
        } else if seq % 100 == 0 && seq + 5 <= N {
            let recs: Vec<Value> = (seq..seq + 5)
                .map(|s| json!({"id": format!("id-{s}"), "key": format!("k{}", s % 7), "value": format!("arr-{s}")}))
                .collect();
            frames.push(Message::text(Value::from(recs).to_string()));
            for s in seq..seq + 5 {
                expected.push((json!(format!("id-{s}")), Some(format!("arr-{s}"))));
            }
            seq += 5;
        } else {
            frames.push(Message::text(format!("v{seq}")));
            expected.push((json!(seq), Some(format!("v{seq}"))));
            seq += 1;
        }
    }
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for f in frames {
            tx.feed(f).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    let (got, largest) = batched_answers(&mut rx, expected.len()).await;
    assert!(largest > 1, "stored records ready together share a frame");
    let mut stored = Vec::new();
    for (i, ((id, outcome), (want_id, want_value))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(id, want_id, "answer {} names its record", i + 1);
        match (outcome, want_value) {
            (Ok(pos), Some(value)) => stored.push((*pos, value.clone())),
            (Err(code), None) => assert_eq!(code, "bad_request"),
            _ => panic!("answer {} is {outcome:?}, expected {want_value:?}", i + 1),
        }
    }
    assert_eq!(
        stored
            .iter()
            .map(|(pos, _)| pos)
            .collect::<HashSet<_>>()
            .len(),
        stored.len(),
        "acks name distinct offsets"
    );
    let mut ws = sender.await.unwrap().reunite(rx).unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(Message::Text(_))))),
        "an extra frame: {extra:?}"
    );
    let msgs = read_back(&topic, 3, stored.len(), Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), stored.len(), "every record stored exactly once");
    for ((p, o), value) in &stored {
        assert_eq!(at(&msgs, *p, *o).payload(), Some(value.as_bytes()));
    }
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_error_answers_and_the_socket_stays_usable() {
    let topic = topic("produce-bad", 2).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    let cases: Vec<(Message, Value, &str)> = vec![
        (Message::text("{\"value\":"), json!(1), "bad_request"),
        (
            Message::text(r#"{"id":"b64","value":"%%%","encoding":"base64"}"#),
            json!("b64"),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":"enc","value":"x","encoding":"hex"}"#),
            json!("enc"),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":"type","value":{"a":1}}"#),
            json!("type"),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":"field","valeu":"x"}"#),
            json!("field"),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":"part","value":"x","partition":7}"#),
            json!("part"),
            "unknown_partition",
        ),
        // Under maxFrameBytes (1 MiB) but over the producer's message.max.bytes (1,000,000).
        (
            Message::binary(vec![b'x'; 1_000_100]),
            json!(7),
            "too_large",
        ),
        (Message::text("[1, 2]"), json!(8), "bad_request"),
    ];
    let n = cases.len();
    let mut expected = Vec::new();
    for (frame, id, code) in cases {
        ws.send(frame).await.unwrap();
        expected.push((id, code));
    }
    // An array with one bad element: only that element fails.
    ws.send(Message::text(
        r#"[{"id":"ok1","value":"fine"},{"id":"bad","value":"x","partition":-3},{"id":"ok2","value":"fine too"}]"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text("still works")).await.unwrap();
    let got = answers(&mut ws, n + 5).await;
    for (g, (id, code)) in got.iter().zip(&expected) {
        assert_eq!(g["type"], "error", "{g}");
        assert_eq!(&g["id"], id, "{g}");
        assert_eq!(g["code"], *code, "{g}");
        assert!(!g["message"].as_str().unwrap().is_empty());
    }
    // `[1, 2]` is two bad elements (ids 8 and 9); then the mixed array, then the plain line.
    let tail: Vec<(&str, Value)> = got[n..]
        .iter()
        .map(|g| (g["type"].as_str().unwrap(), g["id"].clone()))
        .collect();
    assert_eq!(
        tail,
        vec![
            ("error", json!(9)),
            ("ack", json!("ok1")),
            ("error", json!("bad")),
            ("ack", json!("ok2")),
            ("ack", json!(13)),
        ]
    );
    assert!(got[n + 2]["message"]
        .as_str()
        .unwrap()
        .contains("partition"));
    let msgs = read_back(&topic, 2, 3, T).await;
    let mut values: Vec<&[u8]> = msgs.iter().filter_map(|m| m.payload()).collect();
    values.sort();
    assert_eq!(
        values,
        vec![&b"fine"[..], &b"fine too"[..], &b"still works"[..]]
    );
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_or_partition_and_bad_parameters_are_refused() {
    let topic = topic("produce-refused", 2).await;
    let proxy = Proxy::start().await;

    let mut ws = proxy
        .connect(&format!("/v1/produce?topic={}", unique("no-such-topic")))
        .await;
    let e = parse(&next_text(&mut ws, T).await);
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "unknown_topic");
    let (code, reason) = expect_close(&mut ws, T).await;
    assert_eq!(code, 4404);
    assert!(reason.starts_with("unknown_topic"), "{reason}");

    let mut ws = proxy
        .connect(&format!("/v1/produce?topic={topic}&partition=5"))
        .await;
    assert_eq!(
        parse(&next_text(&mut ws, T).await)["code"],
        "unknown_partition"
    );
    let (code, reason) = expect_close(&mut ws, T).await;
    assert_eq!(code, 4405);
    assert!(reason.contains("partition 5"), "{reason}");

    // Invalid UTF-8 in a text frame breaks RFC 6455: closed with 1007, no error frame.
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    use tokio_tungstenite::tungstenite::protocol::frame::{coding, Frame};
    let bad = Frame::message(
        vec![b'a', 0xff, 0xfe],
        coding::OpCode::Data(coding::Data::Text),
        true,
    );
    ws.send(Message::Frame(bad)).await.unwrap();
    let (code, reason) = expect_close(&mut ws, T).await;
    assert_eq!(code, 1007, "{reason}");

    for q in [
        "",
        "topic=a%20b",
        "topic=t&partition=-1",
        "topic=t&encoding=hex",
        "topic=t&format=xml",
        "topic=t&bogus=1",
    ] {
        let err = tokio_tungstenite::connect_async(proxy.url(&format!("/v1/produce?{q}")))
            .await
            .expect_err("refused before the upgrade");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status(), 400, "{q}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("bad_request"), "{q}: {body}");
            }
            other => panic!("{q}: expected HTTP 400, got {other}"),
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_closes_4413_naming_the_limit() {
    let topic = topic("produce-oversize", 1).await;
    let proxy = Proxy::start_with(|c| c.max_frame_bytes = 64 * 1024).await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    ws.send(Message::text("before")).await.unwrap();
    ws.send(Message::text("x".repeat(100 * 1024)))
        .await
        .unwrap();
    // The record sent before is still answered, then the error, then the close.
    let a = parse(&next_text(&mut ws, T).await);
    assert_eq!(
        (a["type"].as_str(), a["id"].as_i64()),
        (Some("ack"), Some(1))
    );
    let e = parse(&next_text(&mut ws, T).await);
    assert_eq!(e["code"], "too_large", "{e}");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("maxFrameBytes (65536"));
    let (code, reason) = expect_close(&mut ws, T).await;
    assert_eq!(code, 4413);
    assert!(reason.contains("maxFrameBytes"), "{reason}");
    let msgs = read_back(&topic, 1, 1, T).await;
    assert_eq!(msgs.len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_records_in_flight_loses_no_acked_record() {
    const N: usize = 3000;
    let topic = topic("produce-close", 2).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    for i in 1..=N {
        ws.feed(Message::text(format!("r-{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    // Close at once, with most records unanswered; keep what answers still arrive.
    ws.send(Message::Close(None)).await.unwrap();
    let mut acked = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(T, ws.next()).await {
        if let Message::Text(t) = m {
            let a = parse(&t);
            assert_eq!(a["type"], "ack", "{a}");
            acked.push(a);
        }
    }
    println!(
        "client close: {} of {N} acks arrived before the close",
        acked.len()
    );
    // Every record read before the close reaches Kafka, whether or not its ack got out.
    let msgs = read_back(&topic, 2, N, T).await;
    assert_eq!(msgs.len(), N);
    let values: HashSet<Vec<u8>> = msgs.iter().map(|m| m.payload().unwrap().to_vec()).collect();
    assert_eq!(values.len(), N, "no duplicates");
    for a in &acked {
        let m = at(
            &msgs,
            a["partition"].as_i64().unwrap(),
            a["offset"].as_i64().unwrap(),
        );
        assert_eq!(m.payload(), Some(format!("r-{}", a["id"]).as_bytes()));
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_records_in_flight_then_closes_1001() {
    const N: usize = 3000;
    let topic = topic("produce-shutdown", 1).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={topic}")).await;
    for i in 1..=N {
        ws.feed(Message::text(format!("s-{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    // Wait for the first answer so records are surely in flight, then stop the proxy.
    let first = parse(&next_text(&mut ws, T).await);
    let stopping = tokio::spawn(proxy.stop());
    let mut answered = vec![first];
    let close = loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Text(t))) => answered.push(parse(&t)),
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("socket ended without close: {other:?}"),
        }
    };
    assert_eq!(close, Some(1001));
    stopping.await.unwrap();
    // Answers are in order, each record once; acks first, then `shutting_down` refusals.
    let mut acked = 0;
    for (i, a) in answered.iter().enumerate() {
        assert_eq!(a["id"], json!(i + 1), "{a}");
        if a["type"] == "ack" {
            assert_eq!(acked, i, "an ack after a refusal: {a}");
            acked += 1;
        } else {
            assert_eq!(a["code"], "shutting_down", "{a}");
        }
    }
    assert!(acked >= 1);
    println!(
        "shutdown: {acked} acked, {} refused, {} unanswered of {N}",
        answered.len() - acked,
        N - answered.len()
    );
    let msgs = read_back(&topic, 1, acked, T).await;
    assert_eq!(msgs.len(), acked, "exactly the acked records are in Kafka");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.payload(), Some(format!("s-{}", i + 1).as_bytes()));
        assert_eq!(Some(m.offset()), answered[i]["offset"].as_i64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_produces_single_records_and_batches() {
    let topic = topic("produce-http", 2).await;
    let proxy = Proxy::start().await;
    let path = format!("/v1/topics/{topic}/records");
    let post = |path: String, ct: &'static str, body: Vec<u8>| {
        let addr = proxy.addr;
        async move { http_request(addr, "POST", &path, &[("Content-Type", ct)], &body).await }
    };

    let (status, body) = post(
        path.clone(),
        "application/json",
        br#"{"key":"k","value":"hello","headers":{"h":"v"},"partition":1}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"partition": 1, "offset": 0}));

    // curl -d sends application/x-www-form-urlencoded; the body is still read as JSON.
    let (status, body) = post(
        format!("{path}?partition=1"),
        "application/x-www-form-urlencoded",
        br#"{"id":"x","value":"form"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"id": "x", "partition": 1, "offset": 1})
    );

    let (status, body) = post(
        format!("{path}?key=pk&partition=0"),
        "text/plain",
        b"{not json, just text".to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"partition": 0, "offset": 0}));

    let (status, body) = post(
        path.clone(),
        "application/json",
        br#"[{"id":1,"value":"a","partition":0},{"id":2,"value":"b","partition":9},{"id":3,"value":"%","encoding":"base64"}]"#.to_vec(),
    )
    .await;
    assert_eq!(status, 207, "{body}");
    let v = parse(&body);
    assert_eq!(
        v["records"][0],
        json!({"id": 1, "partition": 0, "offset": 1})
    );
    assert_eq!(v["records"][1]["error"]["code"], "unknown_partition");
    assert_eq!(v["records"][2]["error"]["code"], "bad_request");

    let (status, body) = post(
        path.clone(),
        "application/json",
        br#"[{"value":"c","partition":0},{"value":"d","partition":0}]"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"records": [{"partition": 0, "offset": 2}, {"partition": 0, "offset": 3}]})
    );

    // Whole-request errors.
    let cases: Vec<(String, &str, Vec<u8>, u16, &str)> = vec![
        (
            path.clone(),
            "application/json",
            b"{\"value\":".to_vec(),
            400,
            "bad_request",
        ),
        (
            path.clone(),
            "application/json",
            b"[]".to_vec(),
            400,
            "bad_request",
        ),
        (
            path.clone(),
            "application/json",
            br#"{"value":"%","encoding":"base64"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            path.clone(),
            "application/json",
            br#"{"value":"x","partition":9}"#.to_vec(),
            404,
            "unknown_partition",
        ),
        (
            format!("{path}?partition=9"),
            "text/plain",
            b"x".to_vec(),
            404,
            "unknown_partition",
        ),
        (
            format!("/v1/topics/{}/records", unique("no-such-topic")),
            "text/plain",
            b"x".to_vec(),
            404,
            "unknown_topic",
        ),
        (
            format!("{path}?bogus=1"),
            "text/plain",
            b"x".to_vec(),
            400,
            "bad_request",
        ),
        (
            path.clone(),
            "text/plain",
            vec![b'x'; 1_000_100],
            413,
            "too_large",
        ),
        (
            path.clone(),
            "text/plain",
            vec![b'x'; 2 << 20],
            413,
            "too_large",
        ),
    ];
    for (p, ct, body, want, code) in cases {
        let (status, resp) = post(p.clone(), ct, body).await;
        assert_eq!(status, want, "{p}: {resp}");
        assert_eq!(parse(&resp)["error"]["code"], code, "{p}: {resp}");
    }

    let msgs = read_back(&topic, 2, 6, T).await;
    assert_eq!(
        msgs.len(),
        6,
        "the six records answered with an offset, nothing else"
    );
    let m = at(&msgs, 1, 0);
    assert_eq!(m.key(), Some(&b"k"[..]));
    assert_eq!(m.payload(), Some(&b"hello"[..]));
    assert_eq!(headers_of(m), vec![("h".into(), Some(b"v".to_vec()))]);
    let m = at(&msgs, 0, 0);
    assert_eq!(m.key(), Some(&b"pk"[..]));
    assert_eq!(m.payload(), Some(&b"{not json, just text"[..]));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_requires_the_same_auth_as_consume() {
    let topic = topic("produce-auth", 1).await;
    let proxy = Proxy::start_with(|c| {
        c.auth = Some(kafka_proxy::config::Secret::new("s3cret"));
    })
    .await;
    let url = proxy.url(&format!("/v1/produce?topic={topic}"));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let path = format!("/v1/topics/{topic}/records");
    let (status, _) = http_request(proxy.addr, "POST", &path, &[], b"{\"value\":\"x\"}").await;
    assert_eq!(status, 401);
    let (status, _) = http_request(
        proxy.addr,
        "POST",
        &path,
        &[("Authorization", "basic wrong")],
        b"{\"value\":\"x\"}",
    )
    .await;
    assert_eq!(status, 401);

    let (status, body) = http_request(
        proxy.addr,
        "POST",
        &path,
        &[("Authorization", "basic s3cret")],
        b"{\"value\":\"over http\"}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "basic s3cret".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("over ws")).await.unwrap();
    assert_eq!(answers(&mut ws, 1).await[0]["offset"], 1);
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_is_503() {
    let proxy = Proxy::start_with(|c| c.kafka = "127.0.0.1:1".into()).await;
    let (status, body) = http_request(
        proxy.addr,
        "POST",
        "/v1/topics/anything/records",
        &[("Content-Type", "text/plain")],
        b"x",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(parse(&body)["error"]["code"], "kafka_unavailable");
    let mut ws = proxy.connect("/v1/produce?topic=anything").await;
    assert_eq!(
        parse(&next_text(&mut ws, T).await)["code"],
        "kafka_unavailable"
    );
    assert_eq!(expect_close(&mut ws, T).await.0, 4503);
    proxy.stop().await;
}
