//! Every endpoint, times every credential form, times ACL allow and deny: each row expects one
//! exact HTTP status (101 for an accepted WebSocket upgrade), against one proxy configured with
//! every credential source at once and `[[acl]]` rules (issue 11's table test).
//!
//! Credentials: none; wrong; the seed's `basic <password>`; RFC 7617 Basic of a users-file user;
//! a static bearer token; JWTs (valid, expired, wrong audience, bad signature, signed with a key
//! rotated out of the JWKS); tickets (valid, reused, expired, for another path); a JWT offered as
//! the `bearer.<token>` WebSocket subprotocol. Keys and certificates come from `openssl`.

mod common;

use common::openssl;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use kafka_proxy::config::AclRule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "seed-shared-password";
const ALICE_PW: &str = "alice-password";
const SVC_TOKEN: &str = "svc-token-0123456789abcdef";
const AUDIENCE: &str = "kafka-proxy-test";
const ISSUER: &str = "https://issuer.test/";

/// An RSA key pair in `dir`: (private key PEM path, JWK of the public key with `kid`).
fn rsa_key(dir: &Path, name: &str, kid: &str) -> (PathBuf, serde_json::Value) {
    let pem = dir.join(format!("{name}.pem"));
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            pem.to_str().unwrap(),
        ],
    );
    let modulus = openssl(
        dir,
        &["rsa", "-in", pem.to_str().unwrap(), "-noout", "-modulus"],
    );
    let hex = String::from_utf8(modulus).unwrap();
    let hex = hex.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwk = serde_json::json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(bytes), "e": "AQAB",
    });
    (pem, jwk)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(key_pem: &Path, kid: &str, claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key_pem).unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(sub: &str, aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "aud": aud, "iss": ISSUER, "exp": exp, "nbf": now() - 10,
        "roles": ["readers"],
    })
}

/// One request's answer: status and headers (lower-cased names).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the answer's head (and a short body); the connection is dropped
/// right after, so an accepted upgrade (101) ends at once.
async fn probe(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &str,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("an answer within 20 s")
            .expect("read");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if n == 0 || head.starts_with("HTTP/1.1 101") || rest.len() >= len {
                let mut lines = head.lines();
                let status = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|c| c.parse().ok())
                    .expect("a status line");
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                return Answer {
                    status,
                    headers,
                    body: rest.to_string(),
                };
            }
        }
        assert!(n > 0, "connection closed before an answer: {text}");
    }
}

fn upgrade_headers() -> Vec<(String, String)> {
    [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The endpoints of the table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Endpoint {
    Seed,
    Consume,
    Tail,
    ProduceWs,
    ProduceHttp,
    Admin,
    Metrics,
    Tickets,
}

impl Endpoint {
    const ALL: [Endpoint; 8] = [
        Endpoint::Seed,
        Endpoint::Consume,
        Endpoint::Tail,
        Endpoint::ProduceWs,
        Endpoint::ProduceHttp,
        Endpoint::Admin,
        Endpoint::Metrics,
        Endpoint::Tickets,
    ];

    fn websocket(self) -> bool {
        matches!(
            self,
            Endpoint::Seed | Endpoint::Consume | Endpoint::Tail | Endpoint::ProduceWs
        )
    }

    /// The path a ticket for this endpoint names (`None`: tickets do not open it).
    fn ticket_path(self) -> Option<&'static str> {
        match self {
            Endpoint::Seed => Some("/"),
            Endpoint::Consume => Some("/v1/consume"),
            Endpoint::Tail => Some("/v1/tail"),
            Endpoint::ProduceWs => Some("/v1/produce"),
            _ => None,
        }
    }

    /// Whether the endpoint names a topic (ACL allow and deny rows differ by topic).
    fn has_topic(self) -> bool {
        !matches!(
            self,
            Endpoint::Admin | Endpoint::Metrics | Endpoint::Tickets
        )
    }

    /// (method, path and query, body) for `topic`.
    fn request(self, topic: &str, group: &str) -> (&'static str, String, String) {
        match self {
            Endpoint::Seed => (
                "GET",
                format!("/?topic={topic}&consumerGroup={group}"),
                String::new(),
            ),
            Endpoint::Consume => (
                "GET",
                format!("/v1/consume?topic={topic}&group={group}"),
                String::new(),
            ),
            Endpoint::Tail => ("GET", format!("/v1/tail?topic={topic}"), String::new()),
            Endpoint::ProduceWs => ("GET", format!("/v1/produce?topic={topic}"), String::new()),
            Endpoint::ProduceHttp => (
                "POST",
                format!("/v1/topics/{topic}/records"),
                "table".to_string(),
            ),
            Endpoint::Admin => ("GET", "/admin/sessions".to_string(), String::new()),
            Endpoint::Metrics => ("GET", "/metrics".to_string(), String::new()),
            Endpoint::Tickets => (
                "POST",
                "/v1/tickets".to_string(),
                r#"{"path":"/v1/consume"}"#.to_string(),
            ),
        }
    }

    /// The status a successful request gets.
    fn ok(self) -> u16 {
        match self {
            _ if self.websocket() => 101,
            Endpoint::Tickets => 201,
            _ => 200,
        }
    }
}

/// Who a credential authenticates as, for the expectations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    /// The shared password (seed clients): consume, group, tail and produce on the allowed topic.
    Password,
    /// A users-file user: consume, group and tail.
    Alice,
    /// A tokens-file service: produce and admin.
    Svc,
    /// A JWT with role `readers`: consume, group and tail.
    Carol,
    /// Refused: 401.
    Nobody,
}

impl Who {
    /// Whether the ACL lets this principal use `e` (on the allowed topic).
    fn allowed(self, e: Endpoint) -> bool {
        use Endpoint::*;
        match self {
            Who::Password => matches!(e, Seed | Consume | Tail | ProduceWs | ProduceHttp),
            Who::Alice | Who::Carol => matches!(e, Seed | Consume | Tail),
            Who::Svc => matches!(e, ProduceWs | ProduceHttp | Admin),
            Who::Nobody => false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_times_every_credential_times_allow_and_deny() {
    let dir = std::env::temp_dir().join(format!("kp-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (k1, jwk1) = rsa_key(&dir, "k1", "k1");
    let (k0, _) = rsa_key(&dir, "k0", "k0"); // rotated out: not in the JWKS
    let (other, _) = rsa_key(&dir, "other", "k1"); // same kid, not the key
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk1] }).to_string()).unwrap();
    let users = dir.join("users");
    let hash = bcrypt::hash(ALICE_PW, 4).unwrap();
    std::fs::write(&users, format!("# test users\nalice:{hash}:staff\n")).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("svc:{SVC_TOKEN}\n")).unwrap();

    let allowed = common::topic("table-ok", 1).await;
    let denied = common::topic("table-no", 1).await;
    let group = common::unique("table-g");
    let rule = |principals: &[&str], allow: &[&str], groups: bool| AclRule {
        principals: principals.iter().map(|s| s.to_string()).collect(),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        topics: if allow.iter().any(|a| *a != "admin" && *a != "group") {
            vec![allowed.clone()]
        } else {
            vec![]
        },
        groups: if groups { vec![group.clone()] } else { vec![] },
    };
    let acl = vec![
        rule(
            &["password"],
            &["consume", "group", "tail", "produce"],
            true,
        ),
        rule(
            &["alice", "role:readers"],
            &["consume", "group", "tail"],
            true,
        ),
        rule(&["svc"], &["produce"], false),
        rule(&["svc"], &["admin"], false),
    ];
    let proxy = common::Proxy::start_with(|c| {
        c.auth = Some(kafka_proxy::config::Secret::new(PASSWORD));
        c.security.users_file = Some(users.clone());
        c.security.tokens_file = Some(tokens.clone());
        c.security.jwt = Some(kafka_proxy::config::security::Jwt {
            jwks_file: Some(jwks.clone()),
            leeway: Duration::from_secs(5),
            ..common::jwt_settings(ISSUER, AUDIENCE)
        });
        c.security.acl = acl;
        c.security.metrics_auth = true;
        c.security.ticket_ttl = Duration::from_secs(5);
        // The table sends hundreds of refused credentials from one address on purpose.
        c.security.quotas.auth_failures_per_minute = 0;
    })
    .await;

    let valid = jwt(&k1, "k1", claims("carol", AUDIENCE, now() + 600));
    let creds: Vec<(&str, Option<String>, Who)> = vec![
        ("none", None, Who::Nobody),
        ("wrong", Some("basic not-the-password".into()), Who::Nobody),
        (
            "seed basic",
            Some(format!("basic {PASSWORD}")),
            Who::Password,
        ),
        (
            "RFC 7617 user",
            Some(format!(
                "Basic {}",
                STANDARD.encode(format!("alice:{ALICE_PW}"))
            )),
            Who::Alice,
        ),
        (
            "RFC 7617 user, wrong password",
            Some(format!("Basic {}", STANDARD.encode("alice:nope"))),
            Who::Nobody,
        ),
        (
            "static bearer",
            Some(format!("Bearer {SVC_TOKEN}")),
            Who::Svc,
        ),
        ("JWT valid", Some(format!("Bearer {valid}")), Who::Carol),
        (
            "JWT expired",
            Some(format!(
                "Bearer {}",
                jwt(&k1, "k1", claims("carol", AUDIENCE, now() - 600))
            )),
            Who::Nobody,
        ),
        (
            "JWT wrong audience",
            Some(format!(
                "Bearer {}",
                jwt(&k1, "k1", claims("carol", "someone-else", now() + 600))
            )),
            Who::Nobody,
        ),
        (
            "JWT bad signature",
            Some(format!(
                "Bearer {}",
                jwt(&other, "k1", claims("carol", AUDIENCE, now() + 600))
            )),
            Who::Nobody,
        ),
        (
            "JWT key rotated out",
            Some(format!(
                "Bearer {}",
                jwt(&k0, "k0", claims("carol", AUDIENCE, now() + 600))
            )),
            Who::Nobody,
        ),
    ];

    let failures = std::cell::RefCell::new(Vec::new());
    let rows = std::cell::Cell::new(0usize);
    let check = |row: String, want: u16, got: &Answer| {
        rows.set(rows.get() + 1);
        if got.status != want {
            failures.borrow_mut().push(format!(
                "{row}: want {want}, got {} {}",
                got.status, got.body
            ));
        }
    };
    let headers_for = |e: Endpoint, auth: &Option<String>| {
        let mut h = if e.websocket() {
            upgrade_headers()
        } else {
            vec![]
        };
        if let Some(a) = auth {
            h.push(("Authorization".into(), a.clone()));
        }
        if matches!(e, Endpoint::Tickets | Endpoint::ProduceHttp) {
            let ct = if e == Endpoint::Tickets {
                "application/json"
            } else {
                "text/plain"
            };
            h.push(("Content-Type".into(), ct.into()));
        }
        h
    };

    // Header credentials.
    for e in Endpoint::ALL {
        for (name, auth, who) in &creds {
            for (acl_case, topic) in [("allow", &allowed), ("deny", &denied)] {
                if !e.has_topic() && acl_case == "deny" {
                    continue;
                }
                let want = match who {
                    Who::Nobody => 401,
                    // Any authenticated principal may read metrics and buy tickets.
                    _ if matches!(e, Endpoint::Metrics | Endpoint::Tickets) => e.ok(),
                    w if w.allowed(e) && acl_case == "allow" => e.ok(),
                    _ => 403,
                };
                let (method, target, body) = e.request(topic, &group);
                let got = probe(proxy.addr, method, &target, &headers_for(e, auth), &body).await;
                check(format!("{e:?} x {name} x {acl_case}"), want, &got);
            }
        }
    }

    // Tickets, bought by alice for each socket path.
    let alice = creds[3].1.clone();
    let buy = |path: &str| {
        let body = format!(r#"{{"path":"{path}"}}"#);
        let headers = vec![
            ("Authorization".to_string(), alice.clone().unwrap()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        let addr = proxy.addr;
        async move {
            let a = probe(addr, "POST", "/v1/tickets", &headers, &body).await;
            assert_eq!(a.status, 201, "{}", a.body);
            let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            v["ticket"].as_str().unwrap().to_string()
        }
    };
    let mut expired = Vec::new();
    for e in Endpoint::ALL {
        for (acl_case, topic) in [("allow", &allowed), ("deny", &denied)] {
            if !e.has_topic() && acl_case == "deny" {
                continue;
            }
            let (method, target, body) = e.request(topic, &group);
            let sep = if target.contains('?') { '&' } else { '?' };
            let headers = headers_for(e, &None);
            // Valid: opens its path as alice; a ticket never opens HTTP endpoints.
            let path = e.ticket_path().unwrap_or("/v1/consume");
            let t = buy(path).await;
            let want = match e.ticket_path() {
                Some(_) if Who::Alice.allowed(e) && acl_case == "allow" => e.ok(),
                Some(_) => 403,
                None => 401,
            };
            let with = format!("{target}{sep}ticket={t}");
            let got = probe(proxy.addr, method, &with, &headers, &body).await;
            check(format!("{e:?} x ticket valid x {acl_case}"), want, &got);
            // Reused.
            let got = probe(proxy.addr, method, &with, &headers, &body).await;
            check(format!("{e:?} x ticket reused x {acl_case}"), 401, &got);
            // For another path.
            let other = if path == "/v1/tail" {
                "/v1/consume"
            } else {
                "/v1/tail"
            };
            let t = buy(other).await;
            let got = probe(
                proxy.addr,
                method,
                &format!("{target}{sep}ticket={t}"),
                &headers,
                &body,
            )
            .await;
            check(format!("{e:?} x ticket wrong path x {acl_case}"), 401, &got);
            expired.push((
                e,
                acl_case,
                method,
                format!("{target}{sep}ticket={}", buy(path).await),
                body.clone(),
            ));
        }
    }
    // Expired: bought above, used after the 5 s ticket lifetime.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (e, acl_case, method, target, body) in expired {
        let got = probe(proxy.addr, method, &target, &headers_for(e, &None), &body).await;
        check(format!("{e:?} x ticket expired x {acl_case}"), 401, &got);
    }

    // A JWT offered as the WebSocket subprotocol; only upgrades take it.
    for e in Endpoint::ALL {
        for (acl_case, topic) in [("allow", &allowed), ("deny", &denied)] {
            if !e.has_topic() && acl_case == "deny" {
                continue;
            }
            let mut headers = headers_for(e, &None);
            headers.push((
                "Sec-WebSocket-Protocol".into(),
                format!("kafka-proxy, bearer.{valid}"),
            ));
            let want = match e {
                _ if !e.websocket() => 401,
                _ if Who::Carol.allowed(e) && acl_case == "allow" => 101,
                _ => 403,
            };
            let (method, target, body) = e.request(topic, &group);
            let got = probe(proxy.addr, method, &target, &headers, &body).await;
            if got.status == 101 && got.header("sec-websocket-protocol") != Some("kafka-proxy") {
                failures.borrow_mut().push(format!(
                    "{e:?} x subprotocol: answered protocol {:?}",
                    got.header("sec-websocket-protocol")
                ));
            }
            check(
                format!("{e:?} x subprotocol token x {acl_case}"),
                want,
                &got,
            );
        }
    }

    let (rows, failures) = (rows.get(), failures.into_inner());
    println!("{rows} rows checked");
    assert!(rows > 200, "only {rows} rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    proxy.stop().await;
}
