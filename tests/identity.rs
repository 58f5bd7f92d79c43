//! Identities end to end, with real parts: the real broker, password hashes, JWTs signed with
//! keys `openssl` makes, a JWKS served by a local HTTP server the test runs, client certificates
//! from a CA made in the test. Each credential form against the HTTP produce endpoint and a
//! `/v1/consume` upgrade; JWKS rotation without a restart; a removed user's socket closed with
//! 4401; mTLS; a malformed users file stopping startup.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{expect_close, http_request, openssl, topic, Dir, Proxy};
use futures::StreamExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kafka_proxy::config::security::Jwt;
use kafka_proxy::config::{Secret, TlsFiles};
use kafka_proxy::transport::tls::{ClientAuth, Tls};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "shared-password-1";
const TOKEN: &str = "static-token-0123456789";
const SECRET: &str = "hs256-secret-0123456789abcdef-0123456789";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "kafka-proxy";

fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    // Small parameters keep the test fast; the proxy reads them from the hash.
    let params = argon2::Params::new(4096, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"identity-test-salt").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A private key made by `openssl genpkey`: the signing key and its public JWK with `kid`.
fn keypair(dir: &Path, alg: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
    let args: &[&str] = match alg {
        Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-algorithm", "ed25519"],
    };
    let file = format!("{kid}.key");
    let mut all = vec!["genpkey"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-out", &file]);
    openssl(dir, &all);
    let pem = std::fs::read(dir.join(&file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    (key, jwk)
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "roles": ["reader"]})
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn jwks(keys: &[&Jwk]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| (*k).clone()).collect(),
    })
    .unwrap()
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// `POST /v1/topics/{topic}/records` with one text record: (status, body).
async fn produce(proxy: &Proxy, topic: &str, auth: Option<&str>) -> (u16, String) {
    let mut headers = vec![("Content-Type", "text/plain")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    let path = format!("/v1/topics/{topic}/records");
    http_request(proxy.addr, "POST", &path, &headers, b"hello").await
}

/// A `/v1/consume` upgrade: 101 and the socket, or the refusal's status.
async fn consume(proxy: &Proxy, topic: &str, auth: Option<&str>) -> (u16, Option<common::Ws>) {
    let path = format!("/v1/consume?topic={topic}&partition=0&from=latest");
    upgrade(proxy, &path, auth).await
}

/// A WebSocket upgrade of `path`: 101 and the socket, or the refusal's status.
async fn upgrade(proxy: &Proxy, path: &str, auth: Option<&str>) -> (u16, Option<common::Ws>) {
    let mut req = proxy.url(path).into_client_request().unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => (resp.status().as_u16(), Some(ws)),
        Err(tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

/// The principals of the open sessions, as `/admin/sessions` names them.
async fn principals(proxy: &Proxy) -> Vec<String> {
    let auth = format!("basic {PASSWORD}");
    let (status, body) = http_request(
        proxy.addr,
        "GET",
        "/admin/sessions",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["principal"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn every_credential_form_reaches_produce_and_consume() {
    let dir = Dir::new("kp-ident");
    let t = topic("ident-forms", 1).await;
    let users = dir.put(
        "users",
        &format!(
            "# users of the test\nalice:{}:ops\nbob:{}\n",
            argon2_hash("alice-pw"),
            bcrypt::hash("bob-pw", 4).unwrap()
        ),
    );
    let tokens = dir.put("tokens", &format!("ci:{TOKEN}:deploy\n"));
    let secret = dir.put("secret", &format!("{SECRET}\n"));
    let (rsa, rsa_jwk) = keypair(&dir.0, Algorithm::RS256, "rsa-1");
    let (ec, ec_jwk) = keypair(&dir.0, Algorithm::ES256, "ec-1");
    let (ed, ed_jwk) = keypair(&dir.0, Algorithm::EdDSA, "ed-1");
    let (stranger, _) = keypair(&dir.0, Algorithm::ES256, "stranger");
    let jwks_file = dir.put("jwks.json", &jwks(&[&rsa_jwk, &ec_jwk, &ed_jwk]));
    let proxy = Proxy::start_with(|c| {
        c.auth = Some(Secret::new(PASSWORD));
        c.security.users_file = Some(users);
        c.security.tokens_file = Some(tokens);
        c.security.jwt = Some(Jwt {
            jwks_file: Some(jwks_file),
            secret_file: Some(secret),
            ..common::jwt_settings(ISSUER, AUDIENCE)
        });
    })
    .await;

    let hs = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let with = |k: &str, v: Value| {
        let mut c = claims("svc-1");
        c[k] = v;
        c
    };
    let bearer = |t: String| format!("Bearer {t}");
    let none_alg = format!(
        "Bearer {}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("svc-1").to_string())
    );
    // (what, Authorization header, principal of the session, or the 401 message's start)
    let rows: Vec<(&str, Option<String>, Result<&str, &str>)> = vec![
        ("none", None, Err("send ")),
        (
            "seed basic",
            Some(format!("basic {PASSWORD}")),
            Ok("password"),
        ),
        (
            "RFC 7617, shared password",
            Some(basic(&format!("carol:{PASSWORD}"))),
            Ok("password:carol"),
        ),
        (
            "RFC 7617 user (argon2)",
            Some(basic("alice:alice-pw")),
            Ok("user:alice"),
        ),
        (
            "RFC 7617 user (bcrypt)",
            Some(basic("bob:bob-pw")),
            Ok("user:bob"),
        ),
        (
            "user, wrong password",
            Some(basic("alice:bob-pw")),
            Err("unknown user or wrong password"),
        ),
        ("static bearer", Some(bearer(TOKEN.into())), Ok("token:ci")),
        (
            "unknown bearer",
            Some(bearer("static-token-9999999999".into())),
            Err("unknown bearer token"),
        ),
        (
            "JWT HS256",
            Some(bearer(sign(Algorithm::HS256, &hs, None, &claims("hs-1")))),
            Ok("jwt:hs-1"),
        ),
        (
            "JWT RS256",
            Some(bearer(sign(
                Algorithm::RS256,
                &rsa,
                Some("rsa-1"),
                &claims("rs-1"),
            ))),
            Ok("jwt:rs-1"),
        ),
        (
            "JWT ES256",
            Some(bearer(sign(
                Algorithm::ES256,
                &ec,
                Some("ec-1"),
                &claims("es-1"),
            ))),
            Ok("jwt:es-1"),
        ),
        (
            "JWT EdDSA",
            Some(bearer(sign(
                Algorithm::EdDSA,
                &ed,
                Some("ed-1"),
                &claims("ed-1"),
            ))),
            Ok("jwt:ed-1"),
        ),
        (
            "JWT expired",
            Some(bearer(sign(
                Algorithm::ES256,
                &ec,
                Some("ec-1"),
                &with("exp", json!(now() - 120)),
            ))),
            Err("JWT expired"),
        ),
        (
            "JWT not yet valid",
            Some(bearer(sign(
                Algorithm::ES256,
                &ec,
                Some("ec-1"),
                &with("nbf", json!(now() + 120)),
            ))),
            Err("JWT not valid yet"),
        ),
        (
            "JWT wrong audience",
            Some(bearer(sign(
                Algorithm::RS256,
                &rsa,
                Some("rsa-1"),
                &with("aud", json!("other")),
            ))),
            Err("JWT audience"),
        ),
        (
            "JWT wrong issuer",
            Some(bearer(sign(
                Algorithm::RS256,
                &rsa,
                Some("rsa-1"),
                &with("iss", json!("https://evil.test")),
            ))),
            Err("JWT issuer"),
        ),
        (
            "JWT bad signature",
            Some(bearer(sign(
                Algorithm::ES256,
                &stranger,
                Some("ec-1"),
                &claims("x"),
            ))),
            Err("JWT signature does not verify"),
        ),
        (
            "JWT unknown kid",
            Some(bearer(sign(
                Algorithm::ES256,
                &stranger,
                Some("ec-9"),
                &claims("x"),
            ))),
            Err("JWT names an unknown key id"),
        ),
        (
            "JWT alg none",
            Some(none_alg),
            Err("JWT alg none is not accepted"),
        ),
    ];
    for (what, auth, want) in &rows {
        let (status, body) = produce(&proxy, &t, auth.as_deref()).await;
        let (ws_status, ws) = consume(&proxy, &t, auth.as_deref()).await;
        match want {
            Ok(principal) => {
                assert_eq!(status, 200, "{what}: produce answered {status} {body}");
                assert_eq!(
                    ws_status, 101,
                    "{what}: consume upgrade answered {ws_status}"
                );
                let open = principals(&proxy).await;
                assert!(
                    open.iter().any(|p| p == principal),
                    "{what}: sessions {open:?} lack {principal}"
                );
                common::close(ws.unwrap()).await;
            }
            Err(message) => {
                assert_eq!(status, 401, "{what}: produce answered {status} {body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"]["code"], "unauthorized", "{what}");
                let m = v["error"]["message"].as_str().unwrap();
                assert!(m.starts_with(message), "{what}: message {m:?}");
                assert!(!m.contains(PASSWORD) && !m.contains(TOKEN), "{what}: {m}");
                assert_eq!(
                    ws_status, 401,
                    "{what}: consume upgrade answered {ws_status}"
                );
            }
        }
    }
    proxy.stop().await;
}

/// A JWKS server: answers every GET with the current status and body, after the current delay.
#[derive(Clone)]
struct JwksServer {
    port: u16,
    state: Arc<Mutex<Served>>,
}

struct Served {
    status: u16,
    body: String,
    delay: Duration,
    hits: usize,
    last: Option<Instant>,
}

impl JwksServer {
    async fn start() -> JwksServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(Served {
            status: 503,
            body: "{}".into(),
            delay: Duration::ZERO,
            hits: 0,
            last: None,
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match c.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body, delay) = {
                        let mut st = s.lock().unwrap();
                        st.hits += 1;
                        st.last = Some(Instant::now());
                        (st.status, st.body.clone(), st.delay)
                    };
                    tokio::time::sleep(delay).await;
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = c.write_all(answer.as_bytes()).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        JwksServer { port, state }
    }

    fn serve(&self, status: u16, body: String, delay: Duration) {
        let mut st = self.state.lock().unwrap();
        (st.status, st.body, st.delay) = (status, body, delay);
    }

    fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }

    /// Sleeps until `gap` after the last fetch.
    async fn wait_since_last(&self, gap: Duration) {
        let last = self
            .state
            .lock()
            .unwrap()
            .last
            .expect("fetched at least once");
        tokio::time::sleep_until((last + gap).into()).await;
    }
}

#[tokio::test]
async fn jwks_url_keys_rotate_without_a_restart() {
    let dir = Dir::new("kp-jwks");
    let t = topic("ident-jwks", 1).await;
    let (a, a_jwk) = keypair(&dir.0, Algorithm::RS256, "key-a");
    let (b, b_jwk) = keypair(&dir.0, Algorithm::ES256, "key-b");
    let server = JwksServer::start().await;
    // The identity provider is down when the proxy starts: it starts anyway.
    let url = format!("http://127.0.0.1:{}/.well-known/jwks.json", server.port);
    let proxy = Proxy::start_with(|c| {
        c.security.jwt = Some(Jwt {
            jwks_url: Some(url),
            ..common::jwt_settings(ISSUER, AUDIENCE)
        })
    })
    .await;
    let token_a = format!(
        "Bearer {}",
        sign(Algorithm::RS256, &a, Some("key-a"), &claims("svc-a"))
    );
    let token_b = format!(
        "Bearer {}",
        sign(Algorithm::ES256, &b, Some("key-b"), &claims("svc-b"))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the JWKS was not fetched at start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = produce(&proxy, &t, Some(&token_a)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no JWT signing keys yet"), "{body}");

    // The provider comes up with key A: after the retry gap, tokens of key A work. The checks
    // right after use /admin/sessions (no Kafka on the way), so they fit in the 10 s gap.
    server.serve(200, jwks(&[&a_jwk]), Duration::ZERO);
    server.wait_since_last(Duration::from_secs(10)).await;
    let addr = proxy.addr;
    let admin = |auth: String| async move {
        let headers = [("Authorization", auth.as_str())];
        http_request(addr, "GET", "/admin/sessions", &headers, b"").await
    };
    let (status, body) = admin(token_a.clone()).await;
    assert_eq!(status, 200, "{body}");

    // Key B is not published yet: refused, and the unknown kid fetches at most every 10 s.
    let (status, body) = admin(token_b.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown key id"), "{body}");
    let hits = server.hits();
    for _ in 0..3 {
        assert_eq!(admin(token_b.clone()).await.0, 401);
    }
    assert_eq!(
        server.hits(),
        hits,
        "unknown kids fetched more than once in 10 s"
    );
    let (status, body) = produce(&proxy, &t, Some(&token_a)).await;
    assert_eq!(status, 200, "{body}");

    // The provider rotates to key B (and still lists A). The next token of key B fetches the
    // JWKS at once and waits for it (the provider takes a second to answer): no failed request.
    server.serve(200, jwks(&[&a_jwk, &b_jwk]), Duration::from_secs(1));
    server.wait_since_last(Duration::from_secs(10)).await;
    let started = Instant::now();
    let (status, body) = produce(&proxy, &t, Some(&token_b)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "did not wait for the fetch"
    );
    assert_eq!(server.hits(), hits + 1);
    let (ws_status, ws) = consume(&proxy, &t, Some(&token_b)).await;
    assert_eq!(ws_status, 101);
    common::close(ws.unwrap()).await;
    assert_eq!(produce(&proxy, &t, Some(&token_a)).await.0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn removing_a_user_closes_its_sockets_with_4401() {
    let dir = Dir::new("kp-revoke");
    let t = topic("ident-revoke", 1).await;
    let alice = format!("alice:{}", argon2_hash("alice-pw"));
    let bob = format!("bob:{}", bcrypt::hash("bob-pw", 4).unwrap());
    let users = dir.put("users", &format!("{alice}\n{bob}\n"));
    let proxy = Proxy::start_with(|c| {
        c.auth = Some(Secret::new(PASSWORD));
        c.security.users_file = Some(users);
    })
    .await;
    let (s, alice_ws) = consume(&proxy, &t, Some(&basic("alice:alice-pw"))).await;
    assert_eq!(s, 101);
    let (s, bob_ws) = consume(&proxy, &t, Some(&basic("bob:bob-pw"))).await;
    assert_eq!(s, 101);
    let (mut alice_ws, mut bob_ws) = (alice_ws.unwrap(), bob_ws.unwrap());
    // alice also produces and tails: every kind of socket ends the same way.
    let mut alice_more = Vec::new();
    for path in [
        format!("/v1/produce?topic={t}"),
        format!("/v1/tail?topic={t}"),
    ] {
        let (s, ws) = upgrade(&proxy, &path, Some(&basic("alice:alice-pw"))).await;
        assert_eq!(s, 101, "{path}");
        alice_more.push(ws.unwrap());
    }
    let open = principals(&proxy).await;
    assert!(
        open.contains(&"user:alice".into()) && open.contains(&"user:bob".into()),
        "{open:?}"
    );

    // alice leaves the file; bob's line stays as it was.
    let started = Instant::now();
    dir.put("users", &format!("# alice left\n{bob}\n"));
    let (code, reason) = expect_close(&mut alice_ws, Duration::from_secs(10)).await;
    assert_eq!(
        (code, reason.as_str()),
        (4401, "unauthorized: credential revoked")
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    for mut ws in alice_more {
        let (code, reason) = expect_close(&mut ws, Duration::from_secs(10)).await;
        assert_eq!(
            (code, reason.as_str()),
            (4401, "unauthorized: credential revoked")
        );
    }
    // bob's socket is untouched.
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match bob_ws.next().await {
                Some(Ok(tungstenite::Message::Close(f))) => return Some(f),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "bob's socket ended: {quiet:?}");
    let open = principals(&proxy).await;
    assert!(
        open.contains(&"user:bob".into()) && !open.contains(&"user:alice".into()),
        "{open:?}"
    );
    // alice can no longer connect; bob still can.
    assert_eq!(
        consume(&proxy, &t, Some(&basic("alice:alice-pw"))).await.0,
        401
    );
    assert_eq!(produce(&proxy, &t, Some(&basic("bob:bob-pw"))).await.0, 200);

    // A changed password closes bob's socket too.
    dir.put(
        "users",
        &format!("bob:{}\n", bcrypt::hash("bob-new", 4).unwrap()),
    );
    let (code, _) = expect_close(&mut bob_ws, Duration::from_secs(10)).await;
    assert_eq!(code, 4401);
    assert_eq!(produce(&proxy, &t, Some(&basic("bob:bob-pw"))).await.0, 401);
    assert_eq!(
        produce(&proxy, &t, Some(&basic("bob:bob-new"))).await.0,
        200
    );
    proxy.stop().await;
}

/// A CA for servers and two client CAs (one trusted, one not), made with `openssl`.
struct Pki {
    dir: Dir,
}

impl Pki {
    fn new() -> Pki {
        let dir = Dir::new("kp-mtls");
        for ca in ["server-ca", "client-ca", "rogue-ca"] {
            new_ca(&dir, ca);
        }
        std::fs::write(
            dir.path("server.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            dir.path("client.cnf"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let pki = Pki { dir };
        pki.issue("server", "localhost", "server-ca", "server.cnf");
        pki.issue("device", "device-7", "client-ca", "client.cnf");
        pki.issue("rogue", "device-7", "rogue-ca", "client.cnf");
        pki
    }

    fn issue(&self, name: &str, cn: &str, ca: &str, ext: &str) {
        self.issue_serial(name, cn, ca, ext, 7)
    }

    fn issue_serial(&self, name: &str, cn: &str, ca: &str, ext: &str, serial: u32) {
        let d = &self.dir.0;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// `ca`'s current revocation list (PEM), revoking `name`'s certificate first if given.
    /// Each CA keeps its own `openssl ca` database in the directory.
    fn crl(&self, ca: &str, revoke: Option<&str>) -> String {
        let d = &self.dir.0;
        let cnf = format!("{ca}-ca.cnf");
        if !d.join(&cnf).exists() {
            std::fs::write(d.join(format!("{ca}-index.txt")), "").unwrap();
            std::fs::write(d.join(format!("{ca}-crlnumber")), "01\n").unwrap();
            std::fs::write(
                d.join(&cnf),
                format!(
                    "[ca]\ndefault_ca=d\n[d]\ndatabase={ca}-index.txt\n\
                     crlnumber={ca}-crlnumber\ndefault_md=sha256\ndefault_crl_days=2\n"
                ),
            )
            .unwrap();
        }
        let (key, cert) = (format!("{ca}.key"), format!("{ca}.pem"));
        let signer = ["-config", &cnf, "-keyfile", &key, "-cert", &cert];
        if let Some(name) = revoke {
            let pem = format!("{name}.pem");
            openssl(d, &[&["ca"][..], &signer, &["-revoke", &pem]].concat());
        }
        let out = format!("{ca}.crl");
        openssl(
            d,
            &[&["ca"][..], &signer, &["-gencrl", "-out", &out]].concat(),
        );
        std::fs::read_to_string(d.join(out)).unwrap()
    }

    /// The text of the PEM files named, one after another (a bundle).
    fn cat(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| std::fs::read_to_string(self.dir.path(n)).unwrap())
            .collect()
    }

    /// A TLS client trusting the server CA, presenting `client`'s certificate if given.
    fn connector(&self, client: Option<&str>) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.dir.path("server-ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(name) => {
                let chain =
                    vec![
                        CertificateDer::from_pem_file(self.dir.path(&format!("{name}.pem")))
                            .unwrap(),
                    ];
                let key =
                    PrivateKeyDer::from_pem_file(self.dir.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// A self-signed CA `ca` (`ca.pem`, `ca.key`) in `dir`.
fn new_ca(dir: &Dir, ca: &str) {
    openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
}

/// One HTTP/1.1 request over TLS: the status, or `None` when the server gave no answer (a
/// refused client certificate ends the connection).
async fn https(
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    request: &str,
) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tls.connect(name, tcp).await.ok()?;
    s.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("an answer or a close within 30 s")
        .ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

#[tokio::test]
async fn client_certificates_name_the_principal() {
    let pki = Pki::new();
    let t = topic("ident-mtls", 1).await;
    let proxy = Proxy::start_with(|c| {
        c.tls = Some(TlsFiles {
            cert: pki.dir.path("server.pem"),
            key: pki.dir.path("server.key"),
        });
        c.security.tls_client_ca = Some(pki.dir.path("client-ca.pem"));
        c.security.tokens_file = Some(pki.dir.put("tokens", &format!("ci:{TOKEN}\n")));
    })
    .await;
    let port = proxy.addr.port();
    let post = |auth: &str| {
        format!(
            "POST /v1/topics/{t}/records HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\n\
             content-length: 2\r\nconnection: close\r\n{auth}\r\nhi"
        )
    };
    let device = pki.connector(Some("device"));
    let (status, text) = https(port, &device, &post("")).await.expect("an answer");
    assert_eq!(status, 200, "{text}");
    // Without a certificate: the handshake succeeds, the request needs another credential.
    let anonymous = pki.connector(None);
    let (status, text) = https(port, &anonymous, &post("")).await.expect("an answer");
    assert_eq!(status, 401, "{text}");
    let (status, _) = https(
        port,
        &anonymous,
        &post(&format!("authorization: Bearer {TOKEN}\r\n")),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 200);
    // A header beside a certificate is what counts.
    let (status, text) = https(
        port,
        &device,
        &post("authorization: Bearer wrong-token-000000\r\n"),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 401, "{text}");
    // A certificate from another CA gets no answer at all.
    let rogue = pki.connector(Some("rogue"));
    assert_eq!(https(port, &rogue, &post("")).await, None);

    // A wss session over the certificate carries its CN as the principal.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let s = device.connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{port}/v1/consume?topic={t}&partition=0&from=latest");
    let (mut ws, resp) = tokio_tungstenite::client_async(url, s)
        .await
        .expect("wss upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    let sessions = "GET /admin/sessions HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let (status, text) = https(port, &device, sessions).await.expect("an answer");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"cert:device-7\""), "{text}");
    use futures::SinkExt;
    let _ = ws.send(tungstenite::Message::Close(None)).await;
    proxy.stop().await;
}

/// A CRL revokes a client certificate while the proxy runs, a CA added to the bundle (with its
/// list) is trusted without a restart, and a broken list changes nothing.
#[tokio::test]
async fn revoked_client_certificates_fail_and_the_client_ca_and_crls_reload() {
    let pki = Pki::new();
    pki.issue_serial("device8", "device-8", "client-ca", "client.cnf", 8);
    let d = &pki.dir;
    d.put("bundle.pem", &pki.cat(&["client-ca.pem"]));
    d.put("crls.pem", &pki.crl("client-ca", None));
    let t = topic("ident-crl", 1).await;
    let server = TlsFiles {
        cert: d.path("server.pem"),
        key: d.path("server.key"),
    };
    // At start, a list that is not one is an error naming the file.
    for (name, text) in [
        ("empty.crl", "no PEM here\n"),
        (
            "junk.crl",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        ),
    ] {
        let client = ClientAuth {
            ca: d.path("bundle.pem"),
            crl: Some(d.put(name, text)),
        };
        let e = Tls::with_client_auth(&server, Some(client))
            .err()
            .unwrap_or_else(|| panic!("{name} was taken for a CRL"))
            .to_string();
        assert!(e.contains("client CRL"), "{e}");
        assert!(e.contains(name), "{e}");
    }
    let proxy = Proxy::start_with(|c| {
        c.tls = Some(server.clone());
        c.security.tls_client_ca = Some(d.path("bundle.pem"));
        c.security.tls_client_crl = Some(d.path("crls.pem"));
    })
    .await;
    let port = proxy.addr.port();
    let post = format!(
        "POST /v1/topics/{t}/records HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\n\
         content-length: 2\r\nconnection: close\r\n\r\nhi"
    );
    let status = |who: &'static str| {
        let (tls, post) = (pki.connector(Some(who)), post.clone());
        async move { https(port, &tls, &post).await.map(|(s, _)| s) }
    };
    // Waits up to 10 s (the files are checked every 2 s) for `who` to get `want`.
    let until = |who: &'static str, want: Option<u16>| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = status(who).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{who}: {got:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(status("device").await, Some(200));
    assert_eq!(status("device8").await, Some(200));

    // device-8 is revoked: its handshake fails from the next reload on; device-7 stays in.
    d.put("crls.pem", &pki.crl("client-ca", Some("device8")));
    until("device8", None).await;
    assert_eq!(status("device").await, Some(200));

    // A new CA, with its list, joins the bundle: its clients are trusted without a restart.
    new_ca(d, "second-ca");
    pki.issue_serial("newdev", "new-1", "second-ca", "client.cnf", 9);
    assert_eq!(status("newdev").await, None);
    let second_crl = pki.crl("second-ca", None);
    d.put("bundle.pem", &pki.cat(&["client-ca.pem", "second-ca.pem"]));
    d.put("crls.pem", &(pki.cat(&["client-ca.crl"]) + &second_crl));
    until("newdev", Some(200)).await;
    assert_eq!(status("device8").await, None);

    // A broken list is refused with a warning; the previous checks stay in force.
    d.put(
        "crls.pem",
        "-----BEGIN X509 CRL-----\nnot a list\n-----END X509 CRL-----\n",
    );
    tokio::time::sleep(kafka_proxy::transport::tls::RELOAD_POLL * 2).await;
    assert_eq!(status("device8").await, None);
    assert_eq!(status("newdev").await, Some(200));
    assert_eq!(status("device").await, Some(200));
    proxy.stop().await;
}

#[test]
fn a_malformed_users_file_stops_startup_naming_the_line() {
    let dir = Dir::new("kp-badusers");
    let hash = argon2_hash("pw");
    // The second line's hash has a digest that is not base64.
    let (head, _) = hash.rsplit_once('$').unwrap();
    let users = dir.put(
        "users",
        &format!("alice:{hash}\nbob:{head}$!!not-base64!!\n"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
        .args([
            "--host",
            "127.0.0.1",
            "--ws-port",
            "0",
            "--kafka",
            "127.0.0.1:9",
        ])
        .arg("--users-file")
        .arg(&users)
        .env("KAFKA_PROXY_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the proxy started with a malformed users file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("bad usersFile") && err.contains("line 2:"),
        "{err}"
    );
    let salt = hash.split('$').nth(4).unwrap();
    assert!(!err.contains(salt), "the error shows part of a hash: {err}");
}

/// Serves `body` over TLS (the server certificate of `pki`) to every connection.
async fn https_jwks_server(pki: &Pki, body: String) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_file(pki.dir.path("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.dir.path("server.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// The proxy binary with the system's CA file replaced by the test's (`SSL_CERT_FILE`), so its
/// JWKS client trusts the test's https server; and a SIGHUP that reloads a users file whose
/// change the file check cannot see.
#[tokio::test]
async fn jwks_over_https_and_a_sighup_reload_in_the_binary() {
    let pki = Pki::new();
    let t = topic("ident-https", 1).await;
    let (key, jwk) = keypair(&pki.dir.0, Algorithm::EdDSA, "ed-https");
    let port = https_jwks_server(&pki, jwks(&[&jwk])).await;
    let bob = format!("bob:{}", bcrypt::hash("bob-pw", 4).unwrap());
    let users = pki.dir.put("users", &format!("{bob}\n"));
    let http_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = pki.dir.path("proxy.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
        .args(["--host", "127.0.0.1", "--ws-port", &http_port.to_string()])
        .args(["--kafka", &common::bootstrap()])
        .args(["--jwt-jwks-url", &format!("https://localhost:{port}/jwks")])
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .arg("--users-file")
        .arg(&users)
        .env("SSL_CERT_FILE", pki.dir.path("server-ca.pem"))
        .env("KAFKA_PROXY_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let post = |auth: String| {
        let t = t.clone();
        async move {
            let headers = [
                ("Content-Type", "text/plain"),
                ("Authorization", auth.as_str()),
            ];
            http_request(
                addr,
                "POST",
                &format!("/v1/topics/{t}/records"),
                &headers,
                b"x",
            )
            .await
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = format!(
        "Bearer {}",
        sign(
            Algorithm::EdDSA,
            &key,
            Some("ed-https"),
            &claims("svc-https")
        )
    );
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "the proxy exited ({s}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let child = Kill(child);
    // The JWKS came over https, verified with the CA of SSL_CERT_FILE.
    let (status, body) = post(token).await;
    let log_text = || std::fs::read_to_string(&log).unwrap();
    assert_eq!(status, 200, "{body}\n{}", log_text());
    assert_eq!(post(basic("bob:bob-pw")).await.0, 200);

    // Rename bob to bo2 in place: same size, same inode, modification time put back, so the
    // file check sees no change; SIGHUP reloads it anyway.
    let before = std::fs::metadata(&users).unwrap().modified().unwrap();
    std::fs::write(&users, format!("bo2{}\n", &bob[3..])).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&users)
        .unwrap()
        .set_modified(before)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        post(basic("bob:bob-pw")).await.0,
        200,
        "reloaded without a SIGHUP"
    );
    let st = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while post(basic("bob:bob-pw")).await.0 != 401 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post(basic("bo2:bob-pw")).await.0, 200);
    assert!(log_text().contains("users file reloaded"), "{}", log_text());
    // Nothing secret in the log.
    assert!(!log_text().contains("bob-pw") && !log_text().contains(&bob[4..]));
    drop(child);
}
