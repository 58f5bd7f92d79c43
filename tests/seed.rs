//! Seed-compatible consume against the real broker.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_format_is_byte_exact() {
    let topic = topic("seed-format", 1).await;
    produce(&topic, 0, &[b"hello one", b"hello \"two\"\n"]).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={}", unique("g")))
        .await;
    // Frames may split the records differently; each frame must be exactly the seed's JSON.
    let expected = [
        "{\"message\":\"hello one\",\"offset\":0}",
        "{\"message\":\"hello \\\"two\\\"\\n\",\"offset\":1}",
    ];
    let mut n = 0;
    while n < 2 {
        let t = next_text(&mut ws, T).await;
        let k = serde_json::from_str::<Vec<serde_json::Value>>(&t)
            .unwrap()
            .len();
        assert_eq!(t, format!("[{}]", expected[n..n + k].join(",")));
        n += k;
    }
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_zero_means_zero_and_offset_n_is_first_delivered() {
    let topic = topic("seed-offset", 1).await;
    let vals: Vec<Vec<u8>> = (0..5).map(|i| format!("v{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = vals.iter().map(Vec::as_slice).collect();
    produce(&topic, 0, &refs).await;
    let proxy = Proxy::start().await;
    let group = unique("g");
    // A group that already committed past 0 still gets 0 when it asks for offset=0.
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={group}"))
        .await;
    assert_eq!(read_seed(&mut ws, 5, T).await.len(), 5);
    close(ws).await;
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={group}&offset=0"))
        .await;
    let got = read_seed(&mut ws, 5, T).await;
    assert_eq!(got[0], (Some("v0".into()), 0));
    close(ws).await;
    let mut ws = proxy
        .connect(&format!(
            "/?topic={topic}&consumerGroup={}&offset=3",
            unique("g")
        ))
        .await;
    let got = read_seed(&mut ws, 2, T).await;
    assert_eq!(got, vec![(Some("v3".into()), 3), (Some("v4".into()), 4)]);
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_reconnect_without_skips_or_duplicates_and_commits_follow_kafka() {
    let topic = topic("seed-resume", 1).await;
    let first: Vec<Vec<u8>> = (0..50).map(|i| format!("a{i}").into_bytes()).collect();
    produce(
        &topic,
        0,
        &first.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
    .await;
    let proxy = Proxy::start().await;
    let group = unique("g");
    let url = format!("/?topic={topic}&consumerGroup={group}");
    let mut ws = proxy.connect(&url).await;
    let got = read_seed(&mut ws, 50, T).await;
    assert_eq!(got.last().unwrap().1, 49);
    close(ws).await;
    // Kafka's convention: committed = next offset to read, so lag tools show 0.
    let committed = committed(&group, &topic, 1).await;
    assert_eq!(committed.get(&0), Some(&50), "committed {committed:?}");

    let second: Vec<Vec<u8>> = (0..30).map(|i| format!("b{i}").into_bytes()).collect();
    produce(
        &topic,
        0,
        &second.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
    .await;
    let mut ws = proxy.connect(&url).await;
    let got = read_seed(&mut ws, 30, T).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.1).collect();
    assert_eq!(offsets, (50..80).collect::<Vec<_>>());
    assert_eq!(got[0].0.as_deref(), Some("b0"));
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sockets_in_one_group_share_partitions_without_kicking() {
    let topic = topic("seed-two", 4).await;
    let proxy = Proxy::start().await;
    let group = unique("g");
    let url = format!("/?topic={topic}&consumerGroup={group}");
    let mut a = proxy.connect(&url).await;
    // Let the first member settle before the second joins.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut b = proxy.connect(&url).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for p in 0..4 {
        let vals: Vec<Vec<u8>> = (0..25).map(|i| format!("p{p}-{i}").into_bytes()).collect();
        produce(
            &topic,
            p,
            &vals.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        )
        .await;
    }
    let mut seen = std::collections::BTreeSet::new();
    let (mut na, mut nb) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 100 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            r = read_seed(&mut a, 1, T) => { na += r.len(); for x in r { assert!(seen.insert(x.0.unwrap()), "duplicate"); } }
            r = read_seed(&mut b, 1, T) => { nb += r.len(); for x in r { assert!(seen.insert(x.0.unwrap()), "duplicate"); } }
        }
    }
    assert_eq!(
        seen.len(),
        100,
        "all records delivered once across the group"
    );
    assert!(
        na > 0 && nb > 0,
        "both sockets stay members and receive ({na}, {nb})"
    );
    close(a).await;
    close(b).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_parameter_reads_only_that_partition() {
    let topic = topic("seed-part", 3).await;
    for p in 0..3 {
        produce(&topic, p, &[format!("p{p}").as_bytes()]).await;
    }
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!(
            "/?topic={topic}&consumerGroup={}&partition=2",
            unique("g")
        ))
        .await;
    assert_eq!(read_seed(&mut ws, 1, T).await, vec![(Some("p2".into()), 0)]);
    // Nothing from other partitions follows.
    let more = tokio::time::timeout(Duration::from_secs(2), next_text(&mut ws, T)).await;
    assert!(more.is_err(), "unexpected frame {more:?}");
    close(ws).await;
    // The server's default partition applies when the URL names none.
    let proxy2 = Proxy::start_with(|c| c.partition = Some(1)).await;
    let mut ws = proxy2
        .connect(&format!("/?topic={topic}&consumerGroup={}", unique("g")))
        .await;
    assert_eq!(read_seed(&mut ws, 1, T).await, vec![(Some("p1".into()), 0)]);
    close(ws).await;
    proxy.stop().await;
    proxy2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_multi_partition_topic_through_one_socket() {
    let topic = topic("seed-multi", 3).await;
    for p in 0..3 {
        let vals: Vec<Vec<u8>> = (0..10).map(|i| format!("{p}:{i}").into_bytes()).collect();
        produce(
            &topic,
            p,
            &vals.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        )
        .await;
    }
    let proxy = Proxy::start().await;
    let group = unique("g");
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={group}"))
        .await;
    let got = read_seed(&mut ws, 30, T).await;
    let mut per: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for (m, o) in got {
        let m = m.unwrap();
        let (p, i) = m.split_once(':').unwrap();
        assert_eq!(i.parse::<i64>().unwrap(), o, "offset matches the record");
        per.entry(p.to_string()).or_default().push(o);
    }
    for p in ["0", "1", "2"] {
        assert_eq!(
            per[p],
            (0..10).collect::<Vec<_>>(),
            "partition {p} in order"
        );
    }
    close(ws).await;
    let c = committed(&group, &topic, 3).await;
    assert_eq!(c, [(0, 10), (1, 10), (2, 10)].into_iter().collect());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_binary_and_oversize_values() {
    let topic = topic("seed-values", 1).await;
    let p = producer();
    use rdkafka::producer::FutureRecord;
    p.send(
        FutureRecord::<(), ()>::to(&topic).partition(0),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let big = vec![b'x'; 5000];
    produce(&topic, 0, &[&[0xff, 0xfe, b'a'], &big, b"after"]).await;
    // maxBytes smaller than one record: it is sent alone, the stream never stalls.
    let proxy = Proxy::start_with(|c| c.max_bytes = 2048).await;
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={}", unique("g")))
        .await;
    let got = read_seed(&mut ws, 4, T).await;
    assert_eq!(got[0], (None, 0), "a null value is JSON null");
    assert_eq!(
        got[1],
        (Some("\u{fffd}\u{fffd}a".into()), 1),
        "invalid UTF-8 becomes U+FFFD"
    );
    assert_eq!(got[2].0.as_ref().map(String::len), Some(5000));
    assert_eq!(got[3], (Some("after".into()), 3));
    close(ws).await;
    proxy.stop().await;
}

async fn http_get(proxy: &Proxy, path: &str, auth: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_http_errors_with_json_bodies() {
    let proxy = Proxy::start().await;
    for (path, code) in [
        ("/?consumerGroup=g", "bad_request"),
        ("/?topic=t", "bad_request"),
        ("/?topic=t&consumerGroup=g&offset=-1", "bad_request"),
        ("/?topic=t&consumerGroup=g&offset=abc", "bad_request"),
        ("/?topic=t&consumerGroup=g&partition=x", "bad_request"),
        ("/?topic=bad%20name&consumerGroup=g", "bad_request"),
    ] {
        let (status, body) = http_get(&proxy, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], code, "{path}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_accepts_seed_and_rfc7617_and_rejects_the_rest() {
    use base64::Engine;
    let topic = topic("seed-auth", 1).await;
    let proxy =
        Proxy::start_with(|c| c.auth = Some(kafka_proxy::config::Secret::new("thisisapassword")))
            .await;
    let path = format!("/?topic={topic}&consumerGroup={}", unique("g"));
    let rfc = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("me:thisisapassword")
    );
    for good in [
        "basic thisisapassword",
        "Basic thisisapassword",
        rfc.as_str(),
    ] {
        let (status, _) = http_get(&proxy, &path, Some(good)).await;
        assert_eq!(status, 101, "{good}");
    }
    for bad in [None, Some("basic wrong"), Some("Bearer thisisapassword")] {
        let (status, body) = http_get(&proxy, &path, bad).await;
        assert_eq!(status, 401, "{bad:?}");
        assert!(body.contains("unauthorized"));
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_after_upgrade_have_close_codes() {
    let topic = topic("seed-errs", 2).await;
    produce(&topic, 0, &[b"a", b"b"]).await;
    let proxy = Proxy::start().await;
    let g = unique("g");
    for (path, code, name) in [
        (
            format!("/?topic={}&consumerGroup={g}", unique("nope")),
            4404,
            "unknown_topic",
        ),
        (
            format!("/?topic={topic}&consumerGroup={g}&partition=7"),
            4405,
            "unknown_partition",
        ),
        (
            format!("/?topic={topic}&consumerGroup={g}&partition=0&offset=99"),
            4416,
            "offset_out_of_range",
        ),
    ] {
        let mut ws = proxy.connect(&path).await;
        let (c, reason) = expect_close(&mut ws, T).await;
        assert_eq!(c, code, "{path}: {reason}");
        assert!(reason.starts_with(name), "{reason}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_is_4503_and_readyz_503() {
    // A port nothing listens on: the proxy starts, but Kafka is down.
    let proxy = Proxy::start_with(|c| c.kafka = "127.0.0.1:1".into()).await;
    let mut ws = proxy.connect("/?topic=anything&consumerGroup=g").await;
    let (c, reason) = expect_close(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(c, 4503, "{reason}");
    let (status, _) = http_get(&proxy, "/readyz", None).await;
    assert_eq!(status, 503);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001_and_commits_delivered() {
    let topic = topic("seed-shutdown", 1).await;
    produce(&topic, 0, &[b"1", b"2", b"3"]).await;
    let proxy = Proxy::start().await;
    let (status, _) = http_get(&proxy, "/readyz", None).await;
    assert_eq!(status, 200);
    let group = unique("g");
    let mut ws = proxy
        .connect(&format!("/?topic={topic}&consumerGroup={group}"))
        .await;
    read_seed(&mut ws, 3, T).await;
    let stop = tokio::spawn(proxy.stop());
    let (c, _) = expect_close(&mut ws, T).await;
    assert_eq!(c, 1001);
    stop.await.unwrap();
    assert_eq!(committed(&group, &topic, 1).await.get(&0), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_admin_auth() {
    let topic = topic("seed-limit", 1).await;
    let proxy = Proxy::start_with(|c| {
        c.max_connections = 1;
        c.auth = Some(kafka_proxy::config::Secret::new("pw"));
    })
    .await;
    let path = format!("/?topic={topic}&consumerGroup={}", unique("g"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Hold one session open on a raw connection.
    let addr = proxy.addr;
    let first = {
        let path = path.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: basic pw\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf[9..12], b"101");
            let _ = rx.await;
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = http_get(&proxy, &path, Some("basic pw")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("limit_reached"));
    let (status, _) = http_get(&proxy, "/admin/sessions", None).await;
    assert_eq!(status, 401, "admin needs credentials when auth is set");
    let (status, _) = http_get(&proxy, "/admin/sessions", Some("basic pw")).await;
    assert_eq!(status, 200);
    let _ = tx.send(());
    first.await.unwrap();
    proxy.stop().await;
}
