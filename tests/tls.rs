//! TLS on the listener with real parts: certificates made by `openssl` in each test, rustls and
//! curl as clients, the real broker. HTTPS and wss on one port, a certificate reload that keeps
//! open sockets, SIGHUP, the handshake timeout and the startup errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{openssl, produce, topic, unique, Proxy};
use futures::StreamExt;
use kafka_proxy::config::TlsFiles;
use kafka_proxy::transport::listen::SOCKET_HEADROOM;
use kafka_proxy::transport::tls::{HANDSHAKE_TIMEOUT, RELOAD_POLL};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A throwaway CA in its own directory, issuing server certificates for 127.0.0.1 and localhost.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(unique("kp-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kafka-proxy test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        Pki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `<name>.pem` and `<name>.key` (P-256) with subject CN=`name` and `serial`.
    fn issue(&self, name: &str, serial: u32) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                &pem,
            ],
        );
    }

    /// The files the proxy is pointed at.
    fn live(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("live.pem"),
            key: self.dir.join("live.key"),
        }
    }

    /// Puts `name`'s pair in place atomically (rename), as a deploy tool would.
    fn install(&self, name: &str) {
        let live = self.live();
        for (from, to) in [("pem", &live.cert), ("key", &live.key)] {
            let tmp = self.dir.join(format!("tmp.{from}"));
            std::fs::copy(self.dir.join(format!("{name}.{from}")), &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    }

    /// DER of `name`'s certificate, to compare with what a server presented.
    fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.dir.join(format!("{name}.pem")))
            .unwrap()
            .to_vec()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection verified against the test CA, offering h2 and http/1.1.
async fn tls_connect(port: u16, ca: &Path) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(client_config(ca, &[b"h2", b"http/1.1"]))
        .connect(name, tcp)
        .await
}

fn presented(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

/// A wss socket and the certificate the server presented for it.
async fn wss(port: u16, ca: &Path, path: &str) -> (Wss, Vec<u8>) {
    let s = tls_connect(port, ca).await.expect("TLS handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let cert = presented(&s);
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}{path}"), s)
        .await
        .expect("wss upgrade");
    (ws, cert)
}

/// The seed records (message, offset) of the next text frame.
async fn seed_frame(ws: &mut Wss) -> Vec<(String, i64)> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = m {
            let v: Vec<serde_json::Value> = serde_json::from_str(&t).unwrap();
            return v
                .iter()
                .map(|r| {
                    (
                        r["message"].as_str().unwrap().to_string(),
                        r["offset"].as_i64().unwrap(),
                    )
                })
                .collect();
        }
    }
}

async fn close(mut ws: Wss) {
    use futures::SinkExt;
    let _ = ws.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Waits until a new connection is presented `want`; returns how long that took.
async fn until_presented(port: u16, ca: &Path, want: &[u8], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(s) = tls_connect(port, ca).await {
            if presented(&s) == want {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < within,
            "certificate not presented within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn https_and_wss_share_one_port() {
    let pki = Pki::new();
    pki.issue("kp-one", 1);
    pki.install("kp-one");
    let t = topic("tls-share", 1).await;
    produce(&t, 0, &[b"first", b"second"]).await;
    let proxy = Proxy::start_with(|c| c.tls = Some(pki.live())).await;
    let port = proxy.addr.port();

    // curl offers h2 and http/1.1 by ALPN; the proxy takes http/1.1.
    // tokio's Command: the proxy runs on this test's runtime and must not be blocked.
    let out = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--http2",
            "--cacert",
        ])
        .arg(pki.ca())
        .args(["--write-out", " %{http_code} %{http_version}"])
        .arg(format!("https://127.0.0.1:{port}/healthz"))
        .output()
        .await
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n 200 1.1");

    let (mut ws, cert) = wss(
        port,
        &pki.ca(),
        &format!("/?topic={t}&consumerGroup={}", unique("g")),
    )
    .await;
    assert_eq!(cert, pki.der("kp-one"));
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(seed_frame(&mut ws).await);
    }
    assert_eq!(got, [("first".to_string(), 0), ("second".to_string(), 1)]);

    // A client that speaks only h2 is refused in the handshake, not answered in a protocol the
    // proxy does not serve.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let h2_only = TlsConnector::from(client_config(&pki.ca(), &[b"h2"]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    let e = match h2_only {
        Ok(_) => panic!("an h2-only client completed the handshake"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("NoApplicationProtocol"), "{e}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    close(ws).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_keeps_open_sockets() {
    let pki = Pki::new();
    pki.issue("kp-one", 1);
    pki.issue("kp-two", 2);
    pki.install("kp-one");
    let t = topic("tls-reload", 1).await;
    produce(&t, 0, &[b"before"]).await;
    let proxy = Proxy::start_with(|c| c.tls = Some(pki.live())).await;
    let port = proxy.addr.port();
    let (mut old, cert) = wss(
        port,
        &pki.ca(),
        &format!("/?topic={t}&consumerGroup={}", unique("g")),
    )
    .await;
    assert_eq!(cert, pki.der("kp-one"));
    assert_eq!(seed_frame(&mut old).await, [("before".to_string(), 0)]);

    pki.install("kp-two");
    let took = until_presented(port, &pki.ca(), &pki.der("kp-two"), RELOAD_POLL * 3).await;
    eprintln!("new certificate presented {took:?} after the files changed");

    // The socket opened under the old certificate still carries records.
    produce(&t, 0, &[b"after"]).await;
    assert_eq!(seed_frame(&mut old).await, [("after".to_string(), 1)]);

    // A bad file (a half-finished deploy) keeps the certificate in service.
    std::fs::write(pki.live().cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    tokio::time::sleep(RELOAD_POLL * 2 + Duration::from_secs(1)).await;
    let s = tls_connect(port, &pki.ca())
        .await
        .expect("handshake after a bad reload");
    assert_eq!(presented(&s), pki.der("kp-two"));
    produce(&t, 0, &[b"still"]).await;
    assert_eq!(seed_frame(&mut old).await, [("still".to_string(), 2)]);

    close(old).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_silent_tls_client_is_dropped_without_holding_up_others() {
    let pki = Pki::new();
    pki.issue("kp-one", 1);
    pki.install("kp-one");
    let proxy = Proxy::start_with(|c| c.tls = Some(pki.live())).await;
    let port = proxy.addr.port();

    let opened = Instant::now();
    // One client sends nothing; one sends the start of a ClientHello that claims 512 bytes.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut partial = TcpStream::connect(proxy.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    // Meanwhile handshakes of other clients go through at once.
    let start = Instant::now();
    for _ in 0..5 {
        tls_connect(port, &pki.ca()).await.expect("handshake");
    }
    // Half the handshake timeout: an accept loop blocked behind the two stalled clients would
    // take all of it; a loaded CI machine may take a second or two for five debug-build handshakes.
    assert!(
        start.elapsed() < HANDSHAKE_TIMEOUT / 2,
        "{:?}",
        start.elapsed()
    );

    for s in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(3);
        let r = tokio::time::timeout(limit.saturating_sub(opened.elapsed()), s.read(&mut buf))
            .await
            .expect("the proxy closes a stalled handshake");
        // A closed socket reads 0 (or an alert first, then 0, or a reset).
        if let Ok(n) = r {
            if n > 0 {
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
            }
        }
    }
    let held = opened.elapsed();
    assert!(
        held >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "closed after {held:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_the_cap_get_their_429_over_tls() {
    const MAX: usize = 4;
    let pki = Pki::new();
    pki.issue("kp-one", 1);
    pki.install("kp-one");
    let proxy = Proxy::start_with(|c| {
        c.max_connections = MAX;
        c.tls = Some(pki.live());
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..MAX + SOCKET_HEADROOM {
        idle.push(TcpStream::connect(proxy.addr).await.expect("connect"));
    }
    // The accept loop takes them asynchronously: probe until one is refused.
    let start = Instant::now();
    let refused = loop {
        let mut s = tls_connect(proxy.addr.port(), &pki.ca())
            .await
            .expect("the refusal completes the handshake");
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        // rustls reports a peer that closes without close_notify as an error after the data.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
        let answer = String::from_utf8_lossy(&raw).into_owned();
        if answer.starts_with("HTTP/1.1 429") {
            break answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "never refused: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.contains("\"limit_reached\""), "{refused}");
    drop(idle);
    proxy.stop().await;
}

/// The binary, started with TLS; its stderr is collected.
struct Bin {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Bin {
    fn start(args: &[&str]) -> Bin {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
            .args(["--host", "127.0.0.1", "--ws-port", &port.to_string()])
            .args(["--kafka", &common::bootstrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Bin { child, port, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` and returns (exit code, stderr) of a startup that fails.
fn failed_start(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
        .args([
            "--host",
            "127.0.0.1",
            "--ws-port",
            "0",
            "--kafka",
            &common::bootstrap(),
        ])
        .args(args)
        .env("KAFKA_PROXY_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn startup_errors_are_one_clear_line() {
    let pki = Pki::new();
    pki.issue("kp-one", 1);
    pki.issue("kp-two", 2);
    let p = |f: &str| pki.dir.join(f).to_string_lossy().into_owned();
    let garbage = p("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec!["--tls-cert".into(), p("kp-one.pem")],
            "tlsCert is set without tlsKey",
        ),
        (
            vec!["--tls-key".into(), p("kp-one.key")],
            "tlsKey is set without tlsCert",
        ),
        (
            vec![
                "--tls-cert".into(),
                p("missing.pem"),
                "--tls-key".into(),
                p("kp-one.key"),
            ],
            "cannot read TLS certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                garbage.clone(),
                "--tls-key".into(),
                p("kp-one.key"),
            ],
            "bad TLS certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                p("kp-one.pem"),
                "--tls-key".into(),
                p("kp-two.key"),
            ],
            "does not fit certificate",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = failed_start(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_file_is_a_warning() {
    let pki = Pki::new();
    pki.issue("kp-one", 1);
    pki.issue("kp-two", 2);
    pki.install("kp-one");
    let live = pki.live();
    let bin = Bin::start(&[
        "--tls-cert",
        live.cert.to_str().unwrap(),
        "--tls-key",
        live.key.to_str().unwrap(),
    ]);
    until_presented(
        bin.port,
        &pki.ca(),
        &pki.der("kp-one"),
        Duration::from_secs(15),
    )
    .await;

    // First pad the files in place to a fixed length (a change the poll picks up, same
    // certificate), then rewrite them in place with kp-two padded to that length and the
    // modification time put back: the files look unchanged, so only SIGHUP can tell. PEM readers
    // skip the blank padding.
    const LEN: usize = 8192;
    let padded = |from: &Path| {
        let mut b = std::fs::read(from).unwrap();
        assert!(b.len() < LEN);
        b.resize(LEN, b'\n');
        b
    };
    let pairs = [
        (&live.cert, pki.dir.join("kp-two.pem")),
        (&live.key, pki.dir.join("kp-two.key")),
    ];
    for (path, _) in &pairs {
        std::fs::write(path, padded(path)).unwrap();
    }
    tokio::time::sleep(RELOAD_POLL + Duration::from_secs(1)).await;
    for (path, next) in &pairs {
        let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
        std::fs::write(path, padded(next)).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(mtime).unwrap();
    }
    tokio::time::sleep(RELOAD_POLL * 2 + Duration::from_secs(1)).await;
    let s = tls_connect(bin.port, &pki.ca()).await.unwrap();
    assert_eq!(
        presented(&s),
        pki.der("kp-one"),
        "unchanged stamps: no reload without SIGHUP"
    );

    bin.signal("-HUP");
    until_presented(
        bin.port,
        &pki.ca(),
        &pki.der("kp-two"),
        Duration::from_secs(5),
    )
    .await;
    assert!(bin.log().contains("SIGHUP"), "{}", bin.log());

    // A bad file on SIGHUP: a warning, and the certificate stays.
    std::fs::write(&live.key, "not a key\n").unwrap();
    bin.signal("-HUP");
    let start = Instant::now();
    while !bin
        .log()
        .contains("TLS reload failed; keeping the previous certificate")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", bin.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = tls_connect(bin.port, &pki.ca()).await.unwrap();
    assert_eq!(presented(&s), pki.der("kp-two"));
    assert!(bin.log().contains("WARN"), "{}", bin.log());
}
