//! Kafka-side security for real: a broker of the test's own with a SASL_SSL listener
//! (SCRAM-SHA-512, certificates made by `scripts/kafka` with openssl) and Kafka's
//! StandardAuthorizer (KRaft), at 127.0.0.1:19392 (`KAFKA_SASL=1 scripts/kafka`), never the shared
//! broker. The proxy binary logs in as `kafka-proxy`, whose ACLs allow some topics and not others:
//!
//! - a topic it may read and write is produced to (WebSocket and HTTP) and consumed;
//! - a topic it may not even describe is `forbidden` on every endpoint; one it may describe but
//!   not read is `forbidden` to consume, one it may not write `forbidden` to produce;
//! - a wrong password warns the operator and gives clients `kafka_unavailable`, never a hang;
//! - no password reaches the proxy's log: not with librdkafka's debug output on, not in a wrong
//!   login, not in librdkafka's refusal of a property (which rust-rdkafka quotes verbatim).

mod common;
mod procs;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use procs::{Broker, ProxyProc};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

const PORT: u16 = 19392;
/// The proxy's Kafka user (created by `scripts/kafka` with KAFKA_SASL=1).
const USER: &str = "kafka-proxy";
const T: Duration = Duration::from_secs(20);

fn parse(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

/// The `-X` options that log the proxy in to the SASL_SSL broker.
fn login(password: &str, ca: &str) -> Vec<String> {
    [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanism=SCRAM-SHA-512".to_string(),
        format!("sasl.username={USER}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={ca}"),
    ]
    .into_iter()
    .flat_map(|p| ["-X".to_string(), p])
    .collect()
}

/// How a socket ended before it served.
#[derive(Debug)]
enum Refusal {
    /// Status and body before the upgrade.
    Http(u16, String),
    /// Close code, reason and the frames before it.
    Close(u16, String, Vec<String>),
}

/// Opens `url` and waits up to `within` for a refusal; fails on a record, a stall or a socket
/// that ends without a close frame.
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
            Ok(Some(Ok(Message::Text(t)))) => {
                let v = parse(&t);
                assert_ne!(v["type"], "records", "{url}: records delivered: {v}");
                frames.push(t.to_string());
            }
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

/// Asserts a refusal carries `code`: `status` before the upgrade, or (v1 sockets) an error frame
/// with it and close `4000 + status` after. Returns the message the client got.
fn assert_refusal(what: &str, r: &Refusal, code: &str, status: u16) -> String {
    eprintln!("{what}: {r:?}");
    match r {
        Refusal::Http(s, body) => {
            assert_eq!(*s, status, "{what}: {body}");
            let v = parse(body);
            assert_eq!(v["error"]["code"], code, "{what}: {body}");
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        Refusal::Close(close, reason, frames) => {
            assert_eq!(*close, 4000 + status, "{what}: {reason} {frames:?}");
            assert!(reason.starts_with(code), "{what}: reason {reason:?}");
            let last = frames
                .last()
                .map(|f| parse(f))
                .unwrap_or_else(|| panic!("{what}: no error frame before the close"));
            assert_eq!(last["type"], "error", "{what}: {last}");
            assert_eq!(last["code"], code, "{what}: {last}");
            last["message"].as_str().unwrap_or_default().to_string()
        }
    }
}

/// Sends one text record on a produce socket and returns its answer (an `ack` or `error`).
async fn produce_one(ws: &mut common::Ws, value: &str) -> Value {
    ws.send(Message::text(value)).await.expect("send a record");
    // Produce answers come within message.timeout.ms (30 s).
    let v = parse(&common::next_text(ws, Duration::from_secs(40)).await);
    assert!(
        v["type"] == "ack" || v["type"] == "error",
        "unexpected frame {v}"
    );
    v
}

/// Reads `n` record values from a consume socket at `url`, sorted, then closes it.
async fn read_values(url: &str, n: usize) -> Vec<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("consume socket");
    let mut values = Vec::new();
    while values.len() < n {
        let v = parse(&common::next_text(&mut ws, T).await);
        match v["type"].as_str() {
            Some("assigned") | Some("revoked") => {}
            Some("records") => values.extend(
                v["records"]
                    .as_array()
                    .expect("records")
                    .iter()
                    .map(|r| r["value"].as_str().unwrap_or_default().to_string()),
            ),
            _ => panic!("{url}: unexpected frame {v}"),
        }
    }
    values.sort();
    common::close(ws).await;
    values
}

async fn http_produce(proxy: &ProxyProc, topic: &str, value: &str) -> (u16, Value) {
    let (status, body) = common::http_request(
        proxy.addr,
        "POST",
        &format!("/v1/topics/{topic}/records"),
        &[("Content-Type", "text/plain")],
        value.as_bytes(),
    )
    .await;
    (status, parse(&body))
}

/// Reads the proxy's whole log (stderr).
fn log_of(proxy: &ProxyProc) -> String {
    std::fs::read_to_string(&proxy.log).expect("proxy log")
}

/// Fails when `text` holds any of `secrets`, naming which, without printing the secret itself.
fn assert_no_secret(what: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        assert!(!secret.is_empty(), "{name} is empty");
        if let Some(line) = text.lines().position(|l| l.contains(secret)) {
            panic!("{what}: line {} holds the {name}", line + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_logs_in_with_sasl_ssl_and_kafka_acls_decide_what_clients_get() {
    let started = Instant::now();
    let broker = Broker::sasl_on(PORT);
    broker.start().await;
    let password = broker.password(USER);
    let admin_password = broker.password("admin");
    let ca = broker.ca();
    let wrong = format!("wrong-{}", common::unique("pw"));

    // ok: read and write; ro: read only; wo: write only; hidden: no ACL at all.
    let (ok, ro, wo, hidden) = tokio::join!(
        broker.topic("sasl-ok", 2),
        broker.topic("sasl-ro", 1),
        broker.topic("sasl-wo", 1),
        broker.topic("sasl-hidden", 1),
    );
    let principal = format!("User:{USER}");
    // Read: this group, and the private group ids of sockets without a group (librdkafka asks
    // their coordinator even for explicit partitions; docs/SECURITY.md). Prefixed patterns, so
    // one (slow) AclCommand run covers the private ids too; the other names are unique.
    let group = common::unique("sasl-g");
    let denied_group = common::unique("sasl-denied");
    let read = [
        "--add",
        "--allow-principal",
        &principal,
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--resource-pattern-type",
        "prefixed",
        "--topic",
        &ok,
        "--topic",
        &ro,
        "--group",
        &group,
        "--group",
        "kafka-proxy-private-",
    ];
    let write = [
        "--add",
        "--allow-principal",
        &principal,
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--topic",
        &ok,
        "--topic",
        &wo,
    ];
    tokio::join!(broker.kafka("acls", &read), broker.kafka("acls", &write));

    let good_args = {
        let mut a = login(&password, &ca);
        // librdkafka's own debug output too (its configuration dump included), logged by the
        // proxy at debug level: none of it may hold a password.
        a.extend(["-X".into(), "debug=security,conf".into()]);
        a
    };
    let good_args: Vec<&str> = good_args.iter().map(String::as_str).collect();
    let bad_args = login(&wrong, &ca);
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let bootstrap = broker.bootstrap();
    let (good, bad) = tokio::join!(
        ProxyProc::start_logged(&bootstrap, &good_args, Some("debug")),
        ProxyProc::start_logged(&bootstrap, &bad_args, Some("info")),
    );
    assert!(
        procs::readyz_becomes(good.addr, 200, T).await.is_some(),
        "the proxy never got ready through SASL_SSL; log: {}",
        good.log.display()
    );

    // The wrong-password proxy's clients wait for Kafka's refusal (about 5 s each) while the
    // good proxy's checks run.
    let good_side = async {
        // 1. Allowed topic: HTTP and WebSocket produce, then consume both records.
        let (status, body) = http_produce(&good, &ok, "via-http").await;
        assert_eq!(status, 200, "{body}");
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/v1/produce?topic={ok}", good.addr))
                .await
                .expect("produce socket");
        let ack = produce_one(&mut ws, "via-ws").await;
        assert_eq!(ack["type"], "ack", "{ack}");
        common::close(ws).await;
        for path in [
            format!("/v1/consume?topic={ok}&group={group}&from=earliest"),
            format!("/v1/consume?topic={ok}&partition=0,1&from=earliest"),
        ] {
            assert_eq!(
                read_values(&format!("ws://{}{path}", good.addr), 2).await,
                ["via-http", "via-ws"],
                "{path}"
            );
        }

        // 2. A topic the proxy's user may not describe: forbidden everywhere, never unknown_topic or
        //    a stall.
        let url = |path: String| format!("ws://{}{path}", good.addr);
        for path in [
            format!("/v1/consume?topic={hidden}&group={group}"),
            format!("/v1/consume?topic={hidden}&partition=0&from=earliest"),
            format!("/v1/produce?topic={hidden}"),
            format!("/v1/tail?topic={hidden}"),
        ] {
            let r = refused(&url(path.clone()), T).await;
            assert_refusal(&path, &r, "forbidden", 403);
        }
        // The seed endpoint has no error frames: just the close code.
        let r = refused(&url(format!("/?topic={hidden}&consumerGroup={group}")), T).await;
        assert!(
            matches!(&r, Refusal::Close(4403, _, _) | Refusal::Http(403, _)),
            "seed consume of a forbidden topic: {r:?}"
        );
        let (status, body) = http_produce(&good, &hidden, "x").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );

        // 3. Describe without Read: consuming is forbidden (after the upgrade, once Kafka refuses
        //    the fetch or the group's offsets), by group and by partition; so is a group the
        //    proxy's user may not join.
        for path in [
            format!("/v1/consume?topic={wo}&group={group}"),
            format!("/v1/consume?topic={wo}&partition=0&from=earliest"),
            format!("/v1/consume?topic={ok}&group={denied_group}"),
        ] {
            let r = refused(&url(path.clone()), T).await;
            assert_refusal(&path, &r, "forbidden", 403);
        }

        // 4. Describe without Write: producing is forbidden per record; the socket stays usable.
        let (status, body) = http_produce(&good, &ro, "x").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/v1/produce?topic={ro}", good.addr))
                .await
                .expect("produce socket");
        for _ in 0..2 {
            let e = produce_one(&mut ws, "denied").await;
            assert_eq!(
                (e["type"].as_str(), e["code"].as_str()),
                (Some("error"), Some("forbidden")),
                "{e}"
            );
        }
        common::close(ws).await;
    };
    let bad_side = async {
        // 5. A wrong password: clients get kafka_unavailable naming the refused login, in bounded
        //    time; the operator gets a warning.
        let asked = Instant::now();
        let r = refused(
            &format!("ws://{}/v1/consume?topic={ok}&group={group}", bad.addr),
            T,
        )
        .await;
        let msg = assert_refusal(
            "consume with a wrong password",
            &r,
            "kafka_unavailable",
            503,
        );
        assert!(msg.contains("login"), "{msg}");
        let (status, body) = http_produce(&bad, &ok, "x").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("kafka_unavailable")),
            "{body}"
        );
        assert!(asked.elapsed() < T, "refusals took {:?}", asked.elapsed());
    };
    tokio::join!(good_side, bad_side);
    let bad_log = log_of(&bad);
    assert!(
        bad_log.lines().any(|l| l.contains("WARN")
            && l.contains("Kafka refuses the proxy")
            && l.contains("SASL authentication")),
        "no warning for the operator in {}",
        bad.log.display()
    );

    // 6. No password in either log. The good proxy's log holds librdkafka's configuration dump
    //    (so the check saw where a password would be).
    let good_log = log_of(&good);
    assert!(
        good_log.contains("sasl.password = [redacted]"),
        "librdkafka's configuration dump is missing from {}",
        good.log.display()
    );
    let secrets = [
        ("proxy's password", password.as_str()),
        ("wrong password", wrong.as_str()),
        ("admin's password", admin_password.as_str()),
    ];
    assert_no_secret("the proxy's log", &good_log, &secrets);
    assert_no_secret("the wrong-password proxy's log", &bad_log, &secrets);

    drop((good, bad));
    broker.stop().await;
    eprintln!("SASL_SSL test took {:?}", started.elapsed());
}

/// librdkafka refuses these properties when the proxy creates its clients; rust-rdkafka's error
/// quotes the refused value verbatim. The proxy must stop with a message naming the property and
/// never the value. No broker is needed: the clients are refused before they connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_kafka_properties_are_named_without_their_secrets() {
    let secret = common::unique("s3cret");
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            // The Java client's way to log in, copied into -X: librdkafka refuses it.
            "sasl.jaas.config".into(),
            vec![format!(
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
                 required username=\"{USER}\" password=\"{secret}\";"
            )],
        ),
        // A typo: not a property librdkafka knows, so not recognised as a secret either.
        ("sasl.passwd".into(), vec![format!("sasl.passwd={secret}")]),
        (
            "ssl.key.location".into(),
            vec![
                "security.protocol=SSL".into(),
                "ssl.key.location=/nonexistent/key.pem".into(),
                format!("ssl.key.password={secret}"),
            ],
        ),
        (
            "security.protocol".into(),
            vec![
                format!("security.protocol={secret}"),
                format!("sasl.password={secret}"),
            ],
        ),
    ];
    for (property, props) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"));
        cmd.args([
            "--host",
            "127.0.0.1",
            "--ws-port",
            "0",
            "--kafka",
            "127.0.0.1:1",
        ])
        .env("KAFKA_PROXY_LOG", "debug")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for p in &props {
            cmd.args(["-X", p]);
        }
        let child = cmd.spawn().expect("start the proxy binary");
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .unwrap_or_else(|_| panic!("{property}: the proxy did not stop on refused properties"))
        .expect("wait task")
        .expect("proxy output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{property}: the proxy ran on: {text}"
        );
        assert!(
            text.contains(&property),
            "{property}: the message does not name the property: {text}"
        );
        assert_no_secret(&property, &text, &[("secret value", secret.as_str())]);
    }
}
