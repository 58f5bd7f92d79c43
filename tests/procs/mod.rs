//! Fault-test support: the proxy binary as a subprocess (so a test can SIGKILL or SIGTERM it) and
//! a broker of the test's own on another port (so a test can stop and restart it without touching
//! the shared one at 127.0.0.1:9092).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A local broker of the test's own, run with `scripts/kafka` on `port` (its controller on
/// `port + 1`, its data in `.cache/kafka/run-PORT`). Stopped when dropped, even on a panic.
pub struct Broker {
    pub port: u16,
    /// `KAFKA_SASL=1`: a SASL_SSL listener and Kafka's StandardAuthorizer (see `scripts/kafka`);
    /// this harness's own clients log in as the super user `admin`.
    pub sasl: bool,
}

impl Broker {
    /// The broker on `port`, not started yet (`start` it, or `stop` a leftover one first).
    pub fn on(port: u16) -> Broker {
        Broker { port, sasl: false }
    }

    /// A SASL_SSL broker with ACLs on `port` (data in `.cache/kafka/run-PORT-sasl`).
    pub fn sasl_on(port: u16) -> Broker {
        Broker { port, sasl: true }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, cmd: &str) -> Command {
        let mut c = Command::new(repo().join("scripts/kafka"));
        c.arg(cmd).env("KAFKA_PORT", self.port.to_string());
        if self.sasl {
            c.env("KAFKA_SASL", "1");
        }
        c
    }

    /// Runs `scripts/kafka CMD ARGS...` for this broker; fails the test unless it succeeds.
    /// Returns its standard output.
    pub async fn kafka(&self, cmd: &str, args: &[&str]) -> String {
        let mut c = self.script(cmd);
        c.args(args);
        let what = format!("KAFKA_PORT={} scripts/kafka {cmd} {args:?}", self.port);
        let out = tokio::task::spawn_blocking(move || c.output())
            .await
            .expect("scripts/kafka task")
            .expect("scripts/kafka runs");
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Starts the broker and waits until it answers (`scripts/kafka start`).
    pub async fn start(&self) {
        self.kafka("start", &[]).await;
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 30 s); a no-op when it is not running.
    pub async fn stop(&self) {
        self.kafka("stop", &[]).await;
    }

    /// A one-line answer of `scripts/kafka CMD ARGS` (e.g. `password admin`, `ca`), trimmed.
    fn answer(&self, cmd: &str, args: &[&str]) -> String {
        let out = self
            .script(cmd)
            .args(args)
            .output()
            .expect("scripts/kafka runs");
        assert!(
            out.status.success(),
            "scripts/kafka {cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The SCRAM password of `user` on a SASL broker.
    pub fn password(&self, user: &str) -> String {
        self.answer("password", &[user])
    }

    /// The CA certificate (PEM file) a SASL broker's clients must trust.
    pub fn ca(&self) -> String {
        self.answer("ca", &[])
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        if self.sasl {
            c.set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", "admin")
                .set("sasl.password", self.password("admin"))
                .set("ssl.ca.location", self.ca());
        }
        c
    }

    /// Creates a uniquely named topic and waits until every partition has a leader.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        let name = crate::common::unique(prefix);
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let res = admin
            .create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic");
        for r in res {
            r.expect("topic created");
        }
        for _ in 0..100 {
            if self.leaders(&name).await == Some(partitions as usize) {
                return name;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("topic {name} never became ready");
    }

    /// Partitions of `topic` that have a leader, or `None` when the look-up fails.
    async fn leaders(&self, topic: &str) -> Option<usize> {
        let c: BaseConsumer = self.client_config().create().ok()?;
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let md = c
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()?;
            let t = md.topics().first()?;
            if t.error().is_some() {
                return None;
            }
            Some(t.partitions().iter().filter(|p| p.leader() >= 0).count())
        })
        .await
        .ok()?
    }

    pub fn producer(&self) -> FutureProducer {
        self.client_config()
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer")
    }

    /// Produces values `from..to` as decimal text, value `s` to partition `s % partitions`.
    pub async fn produce_seq(&self, topic: &str, partitions: i32, from: u32, to: u32) {
        let p = self.producer();
        let mut s = from;
        while s < to {
            let end = (s + 2000).min(to);
            let sends: Vec<_> = (s..end)
                .map(|i| {
                    let v = i.to_string();
                    let p = &p;
                    async move {
                        p.send(
                            FutureRecord::<(), str>::to(topic)
                                .partition(i as i32 % partitions)
                                .payload(&v),
                            Duration::from_secs(30),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produce")
                    }
                })
                .collect();
            futures::future::join_all(sends).await;
            s = end;
        }
    }

    /// High watermarks of the topic's partitions 0..partitions.
    pub async fn high_watermarks(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer = self.client_config().create().expect("consumer");
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .expect("watermarks")
                        .1
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Runs on a panic too, so a failed test does not leave a broker behind.
        let _ = self
            .script("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Committed offsets of `group` for partitions 0..partitions of `topic`, read with librdkafka
/// from the broker at `bootstrap`.
pub async fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let res = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|p| {
                res.find_partition(&topic, p)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
            })
            .collect()
    })
    .await
    .unwrap()
}

/// A free port on 127.0.0.1 (bound, then released for the proxy to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The proxy binary run as a subprocess on a fixed port, so it can be killed and started again
/// at the same address. Killed when dropped.
pub struct ProxyProc {
    pub addr: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
    /// The proxy's log filter (`KAFKA_PROXY_LOG`); `KP_PROXY_LOG` or `info` when `None`.
    log_filter: Option<String>,
}

impl ProxyProc {
    /// Starts `kafka-proxy --host 127.0.0.1 --ws-port <free> --kafka <kafka> <extra>` and waits
    /// until `/healthz` answers.
    pub async fn start(kafka: &str, extra: &[&str]) -> ProxyProc {
        Self::start_logged(kafka, extra, None).await
    }

    /// As `start`, with the proxy's log filter `log_filter` (e.g. `debug`) when given.
    pub async fn start_logged(kafka: &str, extra: &[&str], log_filter: Option<&str>) -> ProxyProc {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--ws-port".into(),
            port.to_string(),
            "--kafka".into(),
            kafka.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kafka-proxy-{}-{port}.log", std::process::id()));
        let mut p = ProxyProc {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            args,
            child: None,
            log,
            log_filter: log_filter.map(str::to_string),
        };
        p.spawn().await;
        p
    }

    /// (Re)starts the process on the same port and waits until `/healthz` answers.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the proxy is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("proxy log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
            .args(&self.args)
            // `KP_PROXY_LOG` sets the proxy's log filter when a run needs more (e.g. `debug`).
            .env(
                "KAFKA_PROXY_LOG",
                self.log_filter.clone().unwrap_or_else(|| {
                    std::env::var("KP_PROXY_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the proxy binary");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(self.addr, "/healthz").await.map(|r| r.0) == Some(200) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the proxy exited at start ({status}); log: {}",
                    self.log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not answer /healthz within 20 s; log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy running").id()
    }

    /// SIGKILL: no close frames, no commits, no flush.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM; the process is still owned (wait for it with `wait_exit`).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit; returns its status.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A GET answered within 10 s: (status, body); `None` when the proxy cannot be reached.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}

/// Polls `/readyz` every 100 ms until it answers `want`; returns how long that took, or `None`
/// after `within`.
pub async fn readyz_becomes(addr: SocketAddr, want: u16, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if http_get(addr, "/readyz").await.map(|r| r.0) == Some(want) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
