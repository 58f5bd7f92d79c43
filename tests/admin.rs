//! The admin API against the real broker, checked against Kafka's own tools: topics with the
//! watermarks of what the test produced; a group only Kafka's console consumer ever read, and one
//! the proxy serves, with the same per-partition lag as `kafka-consumer-groups --describe`;
//! sessions with assignment, delivered and acknowledged counts and lag; the group lag in
//! `/metrics`; the configuration without its secrets; the close action; the admin action.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use kafka_proxy::config::{AclRule, Config, Secret};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// `scripts/kafka CMD ARGS...` against the shared broker; fails the test unless it succeeds.
async fn kafka_cli(cmd: &str, args: &[&str]) -> String {
    let port = bootstrap()
        .rsplit(':')
        .next()
        .expect("bootstrap has a port")
        .to_string();
    let mut c = tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"));
    c.arg(cmd).args(args).env("KAFKA_PORT", &port);
    let what = format!("scripts/kafka {cmd} {args:?}");
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("{what} took over 120 s"))
        .unwrap_or_else(|e| panic!("{what} did not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    committed: Option<i64>,
    log_end: Option<i64>,
    lag: Option<i64>,
    consumer_id: Option<String>,
}

/// `kafka-consumer-groups --describe --group G`, per (topic, partition).
async fn describe(group: &str) -> BTreeMap<(String, i32), Described> {
    let out = kafka_cli("groups", &["--describe", "--group", group]).await;
    let num = |s: &str| s.parse::<i64>().ok();
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 7 || cols[0] != group {
            continue;
        }
        let partition: i32 = cols[2].parse().expect("PARTITION is a number");
        rows.insert(
            (cols[1].to_string(), partition),
            Described {
                committed: num(cols[3]),
                log_end: num(cols[4]),
                lag: num(cols[5]),
                consumer_id: (cols[6] != "-").then(|| cols[6].to_string()),
            },
        );
    }
    assert!(!rows.is_empty(), "no rows for {group} in:\n{out}");
    rows
}

/// The admin API's view of a group in the same shape.
fn from_admin(group: &Value) -> BTreeMap<(String, i32), Described> {
    group["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                (
                    p["topic"].as_str().expect("topic").to_string(),
                    p["partition"].as_i64().expect("partition") as i32,
                ),
                Described {
                    committed: p["committed"].as_i64(),
                    log_end: p["high"].as_i64(),
                    lag: p["lag"].as_i64(),
                    consumer_id: p["member_id"].as_str().map(str::to_string),
                },
            )
        })
        .collect()
}

/// Produces `n` one-byte records to one partition.
async fn produce_n(topic: &str, partition: i32, n: usize) {
    let values: Vec<&[u8]> = vec![b"v"; n];
    produce(topic, partition, &values).await;
}

async fn get(proxy: &Proxy, path: &str, auth: Option<&str>) -> (u16, Value) {
    request(proxy, "GET", path, auth, "").await
}

async fn request(
    proxy: &Proxy,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let (status, text) = http_request(proxy.addr, method, path, &headers, body.as_bytes()).await;
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, v)
}

async fn get_ok(proxy: &Proxy, path: &str) -> Value {
    let (status, v) = get(proxy, path, None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// The open session whose topics include `topic`.
async fn session_of(proxy: &Proxy, topic: &str, kind: &str) -> Value {
    let v = get_ok(proxy, "/admin/sessions").await;
    v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| {
            s["kind"] == kind
                && s["topics"]
                    .as_array()
                    .is_some_and(|t| t.contains(&topic.into()))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} session for {topic} in {v}"))
}

/// Polls `f` until it returns `Some`, for up to `within`.
async fn eventually<F, Fut, R>(within: Duration, what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let start = Instant::now();
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_show_partitions_and_the_watermarks_of_what_was_produced() {
    let topic = topic("admin-topics", 3).await;
    produce_n(&topic, 0, 5).await;
    produce_n(&topic, 1, 2).await;
    let proxy = Proxy::start().await;
    let check = |t: &Value| {
        let ps = t["partitions"].as_array().expect("partitions");
        let marks: Vec<(i64, i64, i64)> = ps
            .iter()
            .map(|p| {
                (
                    p["partition"].as_i64().unwrap(),
                    p["low"].as_i64().expect("low"),
                    p["high"].as_i64().expect("high"),
                )
            })
            .collect();
        assert_eq!(marks, vec![(0, 0, 5), (1, 0, 2), (2, 0, 0)], "{t}");
        assert_eq!(t["internal"], false);
    };
    let all = get_ok(&proxy, "/admin/topics").await;
    let listed = all["topics"].as_array().expect("topics");
    let ours = listed
        .iter()
        .find(|t| t["topic"] == topic.as_str())
        .unwrap_or_else(|| panic!("{topic} not listed"));
    check(ours);
    assert!(
        listed
            .iter()
            .all(|t| !t["topic"].as_str().unwrap().starts_with("__")),
        "internal topics only on request"
    );
    let with_internal = get_ok(&proxy, "/admin/topics?internal=true").await;
    assert!(
        with_internal["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topic"] == "__consumer_offsets" && t["internal"] == true),
        "__consumer_offsets listed with internal=true"
    );
    check(&get_ok(&proxy, &format!("/admin/topics/{topic}")).await);

    let (status, v) = get(&proxy, "/admin/topics/admin-no-such-topic-x", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_topic")),
        "{v}"
    );
    let (status, v) = get(&proxy, "/admin/topics?internal=maybe", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (status, v) = get(&proxy, "/admin/groups/admin-no-such-group-x", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_only_kafkas_console_consumer_read_has_the_lag_kafka_describes() {
    let topic = topic("admin-console", 2).await;
    let group = unique("admin-console-g");
    produce_n(&topic, 0, 10).await;
    produce_n(&topic, 1, 6).await;
    kafka_cli(
        "consume",
        &[
            "--group",
            &group,
            "--topic",
            &topic,
            "--from-beginning",
            "--max-messages",
            "7",
        ],
    )
    .await;
    // Produced after the group's commit: lag the group has for sure.
    produce_n(&topic, 0, 3).await;
    let proxy = Proxy::start().await;

    let kafka = describe(&group).await;
    let v = get_ok(&proxy, &format!("/admin/groups/{group}")).await;
    assert_eq!(from_admin(&v), kafka, "admin: {v}");
    let total: i64 = kafka.values().filter_map(|d| d.lag).sum();
    assert!(
        total >= 3,
        "the records produced after the commit lag: {kafka:?}"
    );
    assert_eq!(v["total_lag"], total, "{v}");
    assert_eq!(v["state"], "Empty", "{v}");
    assert_eq!(v["served_by_proxy"], false, "{v}");
    // Limited to the topic, the same.
    let only = get_ok(&proxy, &format!("/admin/groups/{group}?topic={topic}")).await;
    assert_eq!(from_admin(&only), kafka);

    let list = get_ok(&proxy, "/admin/groups").await;
    let listed = list["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == group.as_str())
        .unwrap_or_else(|| panic!("{group} not in {list}"));
    assert_eq!(listed["state"], "Empty");
    assert_eq!(listed["protocol_type"], "consumer");
    assert_eq!(listed["served_by_proxy"], false);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_proxy_serves_shows_its_lag_in_admin_sessions_and_metrics() {
    let topic = topic("admin-served", 1).await;
    let group = unique("admin-served-g");
    produce_n(&topic, 0, 30).await;
    let proxy = Proxy::start().await;
    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={topic}&group={group}&commit=ack&window=10&from=earliest"
        ))
        .await;
    let assigned = next_of(&mut ws, "assigned").await;
    assert_eq!(assigned["partitions"][0]["partition"], 0, "{assigned}");
    let mut delivered = 0;
    while delivered < 10 {
        let f = next_of(&mut ws, "records").await;
        delivered += f["records"].as_array().expect("records").len();
    }
    assert_eq!(delivered, 10, "the window holds delivery at 10");
    // Acks every record delivered so far: the window takes the next 10.
    let ack = serde_json::json!({"type":"ack","topic":topic,"partition":0,"offset":9});
    ws.send(Message::Text(ack.to_string().into()))
        .await
        .unwrap();
    // Committed within a second or so: offset 10.
    eventually(T, "the ack committed", || async {
        let c = committed(&group, &topic, 1).await;
        (c.get(&0) == Some(&10)).then_some(())
    })
    .await;

    // 20 delivered, 10 acknowledged, 10 records behind the end of the partition.
    let s = eventually(T, "the session's figures", || async {
        let s = session_of(&proxy, &topic, "consume").await;
        (s["acked"] == 10 && s["sent"] == 20 && s["unacked"] == 10).then_some(s)
    })
    .await;
    assert_eq!(s["group"], group.as_str(), "{s}");
    assert_eq!(s["assigned"][0]["topic"], topic.as_str(), "{s}");
    assert_eq!(s["assigned"][0]["position"], 20, "{s}");
    assert_eq!(s["assigned"][0]["lag"], 10, "{s}");
    assert_eq!(s["lag"], 10, "{s}");
    let (_, no_lag) = get(&proxy, "/admin/sessions?lag=false", None).await;
    assert!(no_lag.to_string().contains(&topic), "{no_lag}");

    // The group: what Kafka's tool says, member included.
    let kafka = describe(&group).await;
    let v = get_ok(&proxy, &format!("/admin/groups/{group}")).await;
    assert_eq!(from_admin(&v), kafka, "admin: {v}");
    let row = &kafka[&(topic.clone(), 0)];
    assert_eq!((row.committed, row.lag), (Some(10), Some(20)), "{kafka:?}");
    assert!(
        row.consumer_id.is_some(),
        "the proxy's consumer is a member"
    );
    assert_eq!(v["state"], "Stable", "{v}");
    assert_eq!(v["served_by_proxy"], true, "{v}");
    assert_eq!(v["members_detail"].as_array().map(Vec::len), Some(1), "{v}");

    // The background refresh puts the same lag in /metrics (every 15 s).
    let series = format!("kafka_proxy_group_lag{{group=\"{group}\",topic=\"{topic}\"}} 20");
    eventually(Duration::from_secs(45), "group lag in /metrics", || async {
        let (status, text) = http_request(proxy.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(status, 200);
        text.lines().any(|l| l == series).then_some(())
    })
    .await;
    close(ws).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_is_shown_without_its_secrets() {
    const KAFKA_SECRET: &str = "kafka-pw-never-shown-7";
    const PROXY_SECRET: &str = "proxy-pw-never-shown-7";
    let proxy = Proxy::start_with(|c: &mut Config| {
        c.auth = Some(Secret::new(PROXY_SECRET));
        c.kafka_properties
            .insert("sasl.password".into(), Secret::new(KAFKA_SECRET));
        c.kafka_properties
            .insert("client.rack".into(), Secret::new("rack-7"));
    })
    .await;
    let auth = format!("basic {PROXY_SECRET}");
    let (status, v) = get(&proxy, "/admin/config", None).await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = get(&proxy, "/admin/config", Some(&auth)).await;
    assert_eq!(status, 200, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains(KAFKA_SECRET) && !text.contains(PROXY_SECRET),
        "{text}"
    );
    assert_eq!(v["kafkaProperties"]["sasl.password"], "<redacted>", "{v}");
    assert_eq!(v["kafkaProperties"]["client.rack"], "rack-7", "{v}");
    assert_eq!(v["auth"], "<redacted>", "{v}");
    assert_eq!(v["kafka"], bootstrap().as_str(), "{v}");
    assert_eq!(
        v["maxConnections"],
        Config::default().max_connections,
        "{v}"
    );
    proxy.stop().await;
}

/// Closes the session of `topic` of `kind` through the admin API.
async fn close_session(proxy: &Proxy, topic: &str, kind: &str, reason: &str) {
    let s = eventually(T, "the session is registered", || async {
        let v = get_ok(proxy, "/admin/sessions?lag=false").await;
        v["sessions"].as_array().and_then(|l| {
            l.iter()
                .find(|s| s["kind"] == kind && s["topics"][0] == topic)
                .cloned()
        })
    })
    .await;
    let id = s["id"].as_u64().expect("id");
    let body = serde_json::json!({ "reason": reason }).to_string();
    let (status, v) = request(
        proxy,
        "POST",
        &format!("/admin/sessions/{id}/close"),
        None,
        &body,
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
}

/// The error frame (v1) and the close frame of a socket closed by an operator.
async fn expect_closed_by_admin(ws: &mut Ws, reason: &str, error_frame: bool) {
    if error_frame {
        let e = next_of(ws, "error").await;
        assert_eq!(e["code"], "closed_by_admin", "{e}");
        assert_eq!(e["message"], reason, "{e}");
    }
    let (code, why) = expect_close(ws, T).await;
    assert_eq!(code, 4410);
    assert_eq!(why, format!("closed_by_admin: {reason}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_closes_sessions_with_4410_and_a_reason() {
    let proxy = Proxy::start().await;
    // Consume (v1 and seed), tail and produce sockets, each on its own topic.
    let consume = topic("admin-close-c", 1).await;
    produce_n(&consume, 0, 3).await;
    let mut ws = proxy
        .connect(&format!(
            "/v1/consume?topic={consume}&partition=0&from=earliest"
        ))
        .await;
    next_of(&mut ws, "records").await;
    close_session(&proxy, &consume, "consume", "maintenance window").await;
    expect_closed_by_admin(&mut ws, "maintenance window", true).await;

    let seed = topic("admin-close-s", 1).await;
    let group = unique("admin-close-g");
    let mut ws = proxy
        .connect(&format!("/?topic={seed}&consumerGroup={group}"))
        .await;
    close_session(&proxy, &seed, "seed", "bye").await;
    expect_closed_by_admin(&mut ws, "bye", false).await;

    let tail = topic("admin-close-t", 1).await;
    let mut ws = proxy.connect(&format!("/v1/tail?topic={tail}")).await;
    next_of(&mut ws, "assigned").await;
    close_session(&proxy, &tail, "tail", "tail off").await;
    expect_closed_by_admin(&mut ws, "tail off", true).await;

    let prod = topic("admin-close-p", 1).await;
    let mut ws = proxy.connect(&format!("/v1/produce?topic={prod}")).await;
    ws.send(Message::Text(r#"{"value":"before"}"#.into()))
        .await
        .unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["offset"], 0, "{ack}");
    close_session(&proxy, &prod, "produce", "no more").await;
    expect_closed_by_admin(&mut ws, "no more", true).await;

    // Gone from the list once closed.
    eventually(T, "closed sessions leave the list", || async {
        let v = get_ok(&proxy, "/admin/sessions?lag=false").await;
        v["sessions"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
    for id in ["999999", "abc"] {
        let (status, v) = request(
            &proxy,
            "POST",
            &format!("/admin/sessions/{id}/close"),
            None,
            "",
        )
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{v}"
        );
    }
    let (status, v) = request(
        &proxy,
        "POST",
        "/admin/sessions/1/close",
        None,
        "{\"why\":1}",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let huge = format!("{{\"reason\":\"{}\"}}", "x".repeat(5000));
    let (status, _) = http_request(
        proxy.addr,
        "POST",
        "/admin/sessions/1/close",
        &[],
        huge.as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "a body over 4 KiB");
    proxy.stop().await;
}

fn rule(principals: &[&str], allow: &[&str], topics: &[&str]) -> AclRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    AclRule {
        principals: v(principals),
        allow: v(allow),
        topics: v(topics),
        groups: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_admin_action() {
    let topic = topic("admin-acl", 1).await;
    let allowed = Proxy::start_with(|c: &mut Config| {
        c.auth = Some(Secret::new("pw"));
        c.security.acl = vec![rule(&["password"], &["admin"], &[])];
    })
    .await;
    let denied = Proxy::start_with(|c: &mut Config| {
        c.auth = Some(Secret::new("pw"));
        c.security.acl = vec![rule(&["password"], &["consume", "tail"], &["*"])];
    })
    .await;
    // A session to close on the denied proxy.
    let mut req = denied
        .url(&format!("/v1/tail?topic={topic}"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", "basic pw".parse().unwrap());
    let (mut tail, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("tail allowed");
    let paths = [
        ("GET", "/admin/topics".to_string()),
        ("GET", format!("/admin/topics/{topic}")),
        ("GET", "/admin/groups".to_string()),
        ("GET", "/admin/groups/some-group".to_string()),
        ("GET", "/admin/sessions".to_string()),
        ("GET", "/admin/tail".to_string()),
        ("GET", "/admin/config".to_string()),
        ("POST", "/admin/sessions/1/close".to_string()),
    ];
    for (method, path) in &paths {
        let (status, v) = request(&denied, method, path, Some("basic pw"), "").await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("admin the proxy"),
            "{v}"
        );
        let (status, _) = request(&allowed, method, path, None, "").await;
        assert_eq!(status, 401, "{method} {path} without a credential");
    }
    for (method, path) in &paths[..3] {
        let (status, v) = request(&allowed, method, path, Some("basic pw"), "").await;
        assert_eq!(status, 200, "{method} {path}: {v}");
    }
    // The denied request closed nothing.
    tail.send(Message::Ping(Vec::new().into())).await.unwrap();
    let pong = tokio::time::timeout(T, tail.next())
        .await
        .expect("an answer");
    assert!(
        matches!(
            pong,
            Some(Ok(Message::Pong(_))) | Some(Ok(Message::Text(_)))
        ),
        "{pong:?}"
    );
    close(tail).await;
    allowed.stop().await;
    denied.stop().await;
}
