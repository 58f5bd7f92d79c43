//! ACLs and quotas through a real proxy against the real broker: allowed requests work, denied
//! ones get 403 `forbidden` before the upgrade; a producer over its rate is slowed, not failed;
//! HTTP produce over the rate, a session beyond the per-principal limit and an address that
//! failed authentication too often get 429 (with `Retry-After` where the client should wait).
//!
//! Until identities land, the principals that exist are `password` (the shared password) and
//! `anonymous` (no authentication), so the rules here name those.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use kafka_proxy::config::{AclRule, Config, Secret};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);
const PW: &str = "basic s3cret";

fn rule(principals: &[&str], allow: &[&str], topics: &[&str], groups: &[&str]) -> AclRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    AclRule {
        principals: v(principals),
        allow: v(allow),
        topics: v(topics),
        groups: v(groups),
    }
}

fn with_password(c: &mut Config) {
    c.auth = Some(Secret::new("s3cret"));
}

/// What a refused request got: status, headers (lower-case names) and body.
#[derive(Debug)]
struct Refused {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Refused {
    fn code(&self) -> String {
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.body));
        v["error"]["code"].as_str().unwrap_or("").to_string()
    }

    fn message(&self) -> String {
        let v: Value = serde_json::from_str(&self.body).unwrap_or_default();
        v["error"]["message"].as_str().unwrap_or("").to_string()
    }

    fn retry_after(&self) -> Option<u64> {
        self.headers.get("retry-after").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("Retry-After is whole seconds: {v:?}"))
        })
    }
}

/// Opens a WebSocket with an optional `Authorization`; a refusal before the upgrade comes back
/// as its HTTP answer.
async fn ws(proxy: &Proxy, path: &str, auth: Option<&str>) -> Result<Ws, Refused> {
    let mut req = proxy.url(path).into_client_request().unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", a.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            headers: resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap(),
        }),
        Err(e) => panic!("{path}: neither an upgrade nor an HTTP answer: {e}"),
    }
}

/// A WebSocket the proxy must refuse before the upgrade.
async fn refused(proxy: &Proxy, path: &str, auth: Option<&str>) -> Refused {
    match ws(proxy, path, auth).await {
        Ok(_) => panic!("{path}: upgraded, expected a refusal"),
        Err(r) => r,
    }
}

/// A plain HTTP/1.1 request: the answer with its headers.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Refused {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut raw))
        .await
        .expect("an HTTP answer in time")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    let body = if chunked {
        let (mut out, mut rest) = (String::new(), rest);
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Refused {
        status,
        headers,
        body,
    }
}

async fn metric(proxy: &Proxy, name: &str) -> u64 {
    let m = http(proxy.addr, "GET", "/metrics", None, "").await;
    assert_eq!(m.status, 200);
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{}", m.body))
}

fn parse(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = parse(&next_text(ws, T).await);
        if v["type"] == kind {
            return v;
        }
        assert_ne!(v["type"], "error", "{v}");
    }
}

/// Forbidden before the upgrade, naming the action and the resource.
fn assert_forbidden(r: &Refused, what: &str) {
    assert_eq!(r.status, 403, "{what}: {r:?}");
    assert_eq!(r.code(), "forbidden", "{what}: {r:?}");
    assert!(r.message().contains(what), "{what}: {}", r.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rules_allow_what_they_name_and_deny_the_rest_before_the_upgrade() {
    let ok = topic("acl-ok", 1).await;
    let other = topic("acl-other", 1).await;
    let groups = unique("acl-g");
    let rules = vec![
        rule(&["password"], &["consume", "produce", "tail"], &[&ok], &[]),
        rule(
            &["password"],
            &["group"],
            &[],
            &[&format!("prefix:{groups}-")],
        ),
        rule(&["password"], &["admin"], &[], &[]),
        // A Basic user name sent with the shared password proves nothing: name rules never
        // match it, nor do rules for anonymous.
        rule(&["alice"], &["consume", "produce", "tail"], &[&other], &[]),
        rule(
            &["anonymous"],
            &["consume", "produce", "tail"],
            &[&other],
            &[],
        ),
    ];
    let proxy = Proxy::start_with(|c| {
        with_password(c);
        c.security.acl = rules;
    })
    .await;
    let alice = {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        format!("Basic {token}")
    };

    // Allowed: produce over WebSocket and HTTP, consume with an allowed group, tail, admin.
    let mut p = ws(&proxy, &format!("/v1/produce?topic={ok}"), Some(PW))
        .await
        .expect("produce allowed");
    p.send(Message::text("over ws")).await.unwrap();
    let ack = parse(&next_text(&mut p, T).await);
    assert_eq!(ack["type"], "ack", "{ack}");
    close(p).await;
    let r = http(
        proxy.addr,
        "POST",
        &format!("/v1/topics/{ok}/records"),
        Some(&alice),
        r#"{"value":"over http"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let path = format!("/v1/consume?topic={ok}&group={groups}-1");
    let mut c = ws(&proxy, &path, Some(PW)).await.expect("consume allowed");
    let frame = next_of(&mut c, "records").await;
    assert_eq!(frame["records"][0]["value"], "over ws", "{frame}");
    close(c).await;
    let t = ws(&proxy, &format!("/v1/tail?topic={ok}"), Some(PW))
        .await
        .expect("tail allowed");
    close(t).await;
    let r = http(proxy.addr, "GET", "/admin/sessions", Some(PW), "").await;
    assert_eq!(r.status, 200, "{r:?}");

    // Denied, before the upgrade: the other topic by every action, whatever Basic user name.
    let topic_other = format!("topic {other:?}");
    for auth in [PW, alice.as_str()] {
        for (path, action) in [
            (
                format!("/v1/consume?topic={other}&group={groups}-1"),
                "consume",
            ),
            (
                format!("/?topic={other}&consumerGroup={groups}-1"),
                "consume",
            ),
            (
                format!("/v1/consume?topic={other}&partition=0&from=earliest"),
                "consume",
            ),
            (format!("/v1/produce?topic={other}"), "produce"),
            (format!("/v1/tail?topic={other}"), "tail"),
        ] {
            let r = refused(&proxy, &path, Some(auth)).await;
            assert_forbidden(&r, &format!("{action} {topic_other}"));
        }
        let r = http(
            proxy.addr,
            "POST",
            &format!("/v1/topics/{other}/records"),
            Some(auth),
            r#"{"value":"x"}"#,
        )
        .await;
        assert_forbidden(&r, &format!("produce {topic_other}"));
    }
    // An allowed topic with a group no rule names: both are needed.
    let r = refused(
        &proxy,
        &format!("/v1/consume?topic={ok}&group=stranger"),
        Some(PW),
    )
    .await;
    assert_forbidden(&r, "group group \"stranger\"");
    // A topic list is allowed only when every topic is.
    let r = refused(
        &proxy,
        &format!("/v1/consume?topic={ok},{other}&group={groups}-2"),
        Some(PW),
    )
    .await;
    assert_forbidden(&r, &format!("consume {topic_other}"));
    // Authentication still comes first.
    let r = refused(&proxy, &format!("/v1/tail?topic={ok}"), Some("basic wrong")).await;
    assert_eq!(r.status, 401, "{r:?}");

    assert_eq!(metric(&proxy, "kafka_proxy_denied_total").await, 14);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_only_rules_for_anonymous_apply() {
    let open = topic("acl-anon", 1).await;
    let proxy = Proxy::start_with(|c| {
        c.security.acl = vec![
            rule(&["anonymous"], &["tail"], &[&open], &[]),
            // `*` is any authenticated principal: never anonymous.
            rule(&["*"], &["consume", "produce"], &["*"], &[]),
            rule(&["*", "password"], &["admin"], &[], &[]),
        ];
    })
    .await;
    let t = ws(&proxy, &format!("/v1/tail?topic={open}"), None)
        .await
        .expect("tail allowed to anonymous");
    close(t).await;
    let topic_open = format!("topic {open:?}");
    for (path, what) in [
        (
            format!("/v1/consume?topic={open}&partition=0&from=earliest"),
            "consume",
        ),
        (format!("/v1/produce?topic={open}"), "produce"),
    ] {
        let r = refused(&proxy, &path, None).await;
        assert_forbidden(&r, &format!("{what} {topic_open}"));
    }
    let r = http(proxy.addr, "GET", "/admin/sessions", None, "").await;
    assert_forbidden(&r, "admin the proxy");
    let r = http(proxy.addr, "GET", "/admin/tail", None, "").await;
    assert_forbidden(&r, "admin the proxy");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_over_its_rate_is_slowed_not_failed() {
    const RATE: u64 = 200;
    const N: usize = 4 * RATE as usize;
    let topic = topic("acl-rate", 1).await;
    let proxy = Proxy::start_with(|c| {
        with_password(c);
        c.security.quotas.produce_records_per_sec = RATE;
    })
    .await;
    let ws = ws(&proxy, &format!("/v1/produce?topic={topic}"), Some(PW))
        .await
        .expect("produce socket");
    let (mut tx, mut rx) = ws.split();
    // The client sends as fast as it can; the proxy paces it.
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            tx.send(Message::text(format!("r{i}"))).await.unwrap();
        }
        tx
    });
    let mut acked_at = Vec::with_capacity(N);
    let mut throttled_seen = 0;
    while acked_at.len() < N {
        let m = tokio::time::timeout(T, rx.next())
            .await
            .expect("an answer in time")
            .expect("socket open")
            .expect("no socket error");
        let Message::Text(t) = m else { continue };
        let v = parse(&t);
        assert_eq!(v["type"], "ack", "every record is acked, no error: {v}");
        assert_eq!(v["id"], acked_at.len() + 1, "in order: {v}");
        acked_at.push(Instant::now());
        if acked_at.len() == N / 2 {
            throttled_seen = metric(&proxy, "kafka_proxy_throttled_sessions").await;
        }
    }
    // The first second's worth is the burst; after it, the records come at the rate.
    let burst = RATE as usize;
    let span = acked_at[N - 1] - acked_at[burst - 1];
    let measured = (N - burst) as f64 / span.as_secs_f64();
    println!(
        "RESULT produceRecordsPerSec = {RATE}: {} records after the burst in {span:?} = \
         {measured:.1} records/s",
        N - burst
    );
    assert!(
        (measured - RATE as f64).abs() <= 0.3 * RATE as f64,
        "measured {measured:.1}/s against a limit of {RATE}/s"
    );
    assert_eq!(
        throttled_seen, 1,
        "the socket shows as throttled while paced"
    );
    assert!(metric(&proxy, "kafka_proxy_produce_throttled_total").await >= 1);
    let tx = sender.await.unwrap();
    let mut ws = tx.reunite(rx).unwrap();
    let _ = ws.send(Message::Close(None)).await;
    let read = read_back(&topic, 1, N, T).await;
    assert_eq!(read.len(), N, "every acked record is in Kafka, once");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_produce_over_the_rate_gets_429_with_retry_after() {
    let topic = topic("acl-http-rate", 1).await;
    let proxy = Proxy::start_with(|c| {
        with_password(c);
        c.security.quotas.produce_records_per_sec = 5;
    })
    .await;
    let path = format!("/v1/topics/{topic}/records");
    let batch: Vec<Value> = (0..10)
        .map(|i| serde_json::json!({ "value": format!("v{i}") }))
        .collect();
    let batch = Value::from(batch).to_string();
    // Ten records against five a second: taken, and the rate is two seconds in debt.
    let r = http(proxy.addr, "POST", &path, Some(PW), &batch).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(proxy.addr, "POST", &path, Some(PW), r#"{"value":"more"}"#).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.code(), "limit_reached");
    assert!(
        r.message().contains("produceRecordsPerSec"),
        "{}",
        r.message()
    );
    let wait = r.retry_after().expect("Retry-After on a rate 429");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // After waiting as told, the request is taken.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(50)).await;
    let r = http(proxy.addr, "POST", &path, Some(PW), r#"{"value":"later"}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
    let refused = metric(
        &proxy,
        "kafka_proxy_quota_refused_total{kind=\"produce_rate\"}",
    )
    .await;
    assert_eq!(refused, 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_beyond_the_principals_limit_gets_429() {
    let topic = topic("acl-sessions", 1).await;
    let proxy = Proxy::start_with(|c| {
        with_password(c);
        c.security.quotas.sessions_per_principal = 1;
    })
    .await;
    let path = format!("/v1/tail?topic={topic}");
    let first = ws(&proxy, &path, Some(PW)).await.expect("first session");
    let r = refused(&proxy, &path, Some(PW)).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.code(), "limit_reached");
    assert!(
        r.message().contains("maxSessionsPerPrincipal = 1"),
        "{}",
        r.message()
    );
    // HTTP produce requests are sessions too; admin reads are not.
    let r = http(
        proxy.addr,
        "POST",
        &format!("/v1/topics/{topic}/records"),
        Some(PW),
        r#"{"value":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    let r = http(proxy.addr, "GET", "/admin/sessions", Some(PW), "").await;
    assert_eq!(r.status, 200, "{r:?}");
    // The slot is free again once the first session ended.
    close(first).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        match ws(&proxy, &path, Some(PW)).await {
            Ok(ws) => break ws,
            Err(r) if r.status == 429 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(r) => panic!("the slot was not given back: {r:?}"),
        }
    };
    close(second).await;
    let refused = metric(&proxy, "kafka_proxy_quota_refused_total{kind=\"sessions\"}").await;
    assert!(refused >= 2, "{refused}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_get_429_before_authentication() {
    let topic = topic("acl-brute", 1).await;
    let proxy = Proxy::start_with(|c| {
        with_password(c);
        c.security.quotas.auth_failures_per_minute = 3;
    })
    .await;
    let path = format!("/v1/tail?topic={topic}");
    for i in 0..3 {
        let r = refused(&proxy, &path, Some("basic wrong")).await;
        assert_eq!(r.status, 401, "attempt {i}: {r:?}");
        assert_eq!(r.retry_after(), None);
    }
    let r = refused(&proxy, &path, Some("basic wrong")).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.code(), "limit_reached");
    let wait = r.retry_after().expect("Retry-After on the back-off 429");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // The right password gets the same answer: the address is not even asked for one.
    let r = refused(&proxy, &path, Some(PW)).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.retry_after().is_some());
    let r = http(proxy.addr, "GET", "/admin/sessions", Some(PW), "").await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(!r.headers.contains_key("www-authenticate"));
    assert_eq!(metric(&proxy, "kafka_proxy_auth_failures_total").await, 3);
    let blocked = metric(
        &proxy,
        "kafka_proxy_quota_refused_total{kind=\"auth_failures\"}",
    )
    .await;
    assert_eq!(blocked, 3);
    proxy.stop().await;
}
