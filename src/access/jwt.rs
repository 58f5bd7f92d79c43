//! JWT bearer tokens: HS256 (secret from `jwtSecretFile`), RS256, ES256 and EdDSA (keys from a
//! JWKS, `jwks`). Checks the signature with the key the header's `kid` names, whose algorithm the
//! header's `alg` must match (no `none`, no algorithm confusion); `exp` (required) and `nbf`
//! with `jwtLeeway`; `iss` and `aud` when configured. The principal is `sub`, with roles and
//! grants from the configured claims.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::authn::AccessError;
use super::jwks::{self, KeyMap, KeySet, Remote};
use super::{Action, Kind, Principal};
use crate::config::security::{check_pattern, read_secret_file, Jwt};
use crate::protocol::{ErrorCode, ProtocolError};

/// The algorithms accepted.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Shortest HS256 secret (RFC 7518 3.2: at least the hash's size, 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Verifies JWTs against the configured keys and claims.
pub struct JwtCheck {
    settings: Jwt,
    secret: Option<RwLock<Arc<DecodingKey>>>,
    keys: KeySet,
}

fn unauthorized(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unauthorized, message)
}

fn read_secret(path: &Path) -> Result<DecodingKey, AccessError> {
    let bad = |message: String| AccessError::Key {
        option: "jwtSecretFile",
        from: path.display().to_string(),
        message,
    };
    let secret = read_secret_file("jwtSecretFile", path).map_err(|e| bad(e.to_string()))?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(bad(format!(
            "the HS256 secret is shorter than {MIN_SECRET_BYTES} bytes"
        )));
    }
    DecodingKey::from_secret(secret.as_bytes()).map_err(|e| bad(e.to_string()))
}

fn read_jwks(path: &Path) -> Result<KeyMap, AccessError> {
    jwks::read_file(path).map_err(|message| AccessError::Key {
        option: "jwtJwksFile",
        from: path.display().to_string(),
        message,
    })
}

/// Whether a bearer token has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl JwtCheck {
    /// Reads the secret and the JWKS file; prepares the URL (fetched by [`JwtCheck::remote`]'s
    /// task, not here).
    pub fn new(settings: &Jwt) -> Result<JwtCheck, AccessError> {
        let secret = match &settings.secret_file {
            Some(p) => Some(RwLock::new(Arc::new(read_secret(p)?))),
            None => None,
        };
        let file = match &settings.jwks_file {
            Some(p) => Some(RwLock::new(Arc::new(read_jwks(p)?))),
            None => None,
        };
        let remote = match &settings.jwks_url {
            Some(url) => Some(Arc::new(Remote::new(url, settings.jwks_refresh).map_err(
                |message| AccessError::Key {
                    option: "jwtJwksUrl",
                    from: url.clone(),
                    message,
                },
            )?)),
            None => None,
        };
        Ok(JwtCheck {
            settings: settings.clone(),
            secret,
            keys: KeySet { file, remote },
        })
    }

    /// The JWKS URL's keys, whose refresh task `authn` starts.
    pub fn remote(&self) -> Option<Arc<Remote>> {
        self.keys.remote.clone()
    }

    /// The files to watch for a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        let s = &self.settings;
        s.jwks_file.iter().chain(&s.secret_file).cloned().collect()
    }

    /// Reads the JWKS file and the secret again; what fails to load keeps its previous keys.
    pub fn reload(&self, why: &str) {
        if let (Some(path), Some(slot)) = (&self.settings.jwks_file, &self.keys.file) {
            match read_jwks(path) {
                Ok(map) => {
                    tracing::info!(file = %path.display(), keys = map.len(), why, "JWKS file reloaded");
                    *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
                }
                Err(error) => {
                    tracing::warn!(%error, why, "JWKS file reload failed; keeping the previous keys")
                }
            }
        }
        if let (Some(path), Some(slot)) = (&self.settings.secret_file, &self.secret) {
            match read_secret(path) {
                Ok(key) => {
                    tracing::info!(file = %path.display(), why, "JWT secret reloaded");
                    *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                }
                Err(error) => {
                    tracing::warn!(%error, why, "JWT secret reload failed; keeping the previous one")
                }
            }
        }
    }

    /// Verifies `token` and returns its principal, or why it is refused (the client holds the
    /// token, so the reason may be precise).
    pub async fn verify(&self, token: &str) -> Result<Principal, ProtocolError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| unauthorized(header_problem(token)))?;
        let alg = header.alg;
        if !ALGORITHMS.contains(&alg) {
            return Err(unauthorized(format!(
                "JWT alg {alg:?} is not accepted; use HS256, RS256, ES256 or EdDSA"
            )));
        }
        let validation = self.validation(alg);
        let decoded = if alg == Algorithm::HS256 {
            let slot = self.secret.as_ref().ok_or_else(|| {
                unauthorized("HS256 tokens are not accepted here (no jwtSecretFile)")
            })?;
            let key = slot.read().unwrap_or_else(|e| e.into_inner()).clone();
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        } else {
            let k = self
                .keys
                .find(header.kid.as_deref(), alg)
                .await
                .map_err(unauthorized)?;
            jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation)
        };
        let data = decoded.map_err(|e| unauthorized(claim_problem(e.kind())))?;
        self.principal(data.claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let s = &self.settings;
        let mut v = Validation::new(alg);
        v.leeway = s.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &s.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &s.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            // Without a configured audience, a token's `aud` is not checked.
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn principal(&self, claims: Map<String, Value>) -> Result<Principal, ProtocolError> {
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(unauthorized("JWT has no sub claim (the principal's name)")),
        };
        let mut p = Principal::named(Kind::Jwt, &sub);
        p.expires = claims.get("exp").and_then(Value::as_u64);
        p.roles = roles(claim(&claims, &self.settings.roles_claim));
        if let Some(name) = &self.settings.grants_claim {
            p.grants = grants(claim(&claims, name));
        }
        Ok(p)
    }
}

/// Why the header did not decode, without echoing it.
fn header_problem(token: &str) -> String {
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_string));
    match alg.as_deref() {
        Some(a) if a.eq_ignore_ascii_case("none") => "JWT alg none is not accepted".into(),
        Some(_) => "JWT alg is not accepted; use HS256, RS256, ES256 or EdDSA".into(),
        None => "malformed JWT: the header is not base64url JSON with an alg".into(),
    }
}

fn claim_problem(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "JWT expired (exp)".into(),
        ErrorKind::ImmatureSignature => "JWT not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "JWT issuer (iss) is not the one expected".into(),
        ErrorKind::InvalidAudience => "JWT audience (aud) is not the one expected".into(),
        ErrorKind::InvalidSignature => "JWT signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "JWT alg does not match its key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("JWT lacks the {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("JWT claim {c} is malformed"),
        _ => "malformed JWT".into(),
    }
}

/// A claim by its exact name, or else by a dotted path into nested objects
/// (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// Roles: an array of strings, or one space-separated string.
fn roles(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(other) => {
            tracing::debug!(kind = ?other, "JWT roles claim is neither an array nor a string");
            Vec::new()
        }
        None => Vec::new(),
    }
}

/// Grants: `{"action": ["pattern", ...]}`; entries that do not parse are skipped.
fn grants(v: Option<&Value>) -> Vec<(Action, String)> {
    let Some(v) = v else {
        return Vec::new();
    };
    let Some(obj) = v.as_object() else {
        tracing::debug!("JWT grants claim is not an object; ignored");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (action, patterns) in obj {
        let Some(a) = Action::from_name(action) else {
            tracing::debug!(action, "JWT grant names an unknown action; ignored");
            continue;
        };
        let Some(list) = patterns.as_array() else {
            tracing::debug!(action, "JWT grant is not a list of patterns; ignored");
            continue;
        };
        for p in list {
            match p.as_str().map(|s| (s, check_pattern(s))) {
                Some((s, Ok(()))) => out.push((a, s.to_string())),
                _ => tracing::debug!(action, "JWT grant pattern is not a valid pattern; ignored"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::process::Command;
    use std::time::Duration;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kp-jwt-unit-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A private key made by `openssl genpkey`, as a signing key and its public JWK.
    fn keypair(dir: &Path, alg: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
        let args: &[&str] = match alg {
            Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::EdDSA => &["-algorithm", "ed25519"],
            other => panic!("no key for {other:?}"),
        };
        let out = dir.join(format!("{kid}.pem"));
        let st = Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .arg("-out")
            .arg(&out)
            .output()
            .expect("openssl is installed (Debian package openssl)");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let pem = std::fs::read(&out).unwrap();
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

    const SECRET: &str = "0123456789abcdef0123456789abcdef-hs256";

    struct Fixture {
        check: JwtCheck,
        keys: Vec<(Algorithm, &'static str, EncodingKey)>,
        dir: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = dir();
        let mut keys = Vec::new();
        let mut set = JwkSet { keys: Vec::new() };
        for (alg, kid) in [
            (Algorithm::RS256, "rsa-1"),
            (Algorithm::ES256, "ec-1"),
            (Algorithm::EdDSA, "ed-1"),
        ] {
            let (k, jwk) = keypair(&dir, alg, kid);
            keys.push((alg, kid, k));
            set.keys.push(jwk);
        }
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, serde_json::to_vec(&set).unwrap()).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let settings = Jwt {
            jwks_file: Some(jwks),
            jwks_url: None,
            secret_file: Some(secret),
            issuer: Some("https://issuer.example".into()),
            audience: Some("kafka-proxy".into()),
            leeway: Duration::from_secs(30),
            roles_claim: "roles".into(),
            grants_claim: Some("kp".into()),
            jwks_refresh: Duration::from_secs(300),
        };
        Fixture {
            check: JwtCheck::new(&settings).unwrap(),
            keys,
            dir,
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> Value {
        json!({
            "sub": "svc-1",
            "iss": "https://issuer.example",
            "aud": "kafka-proxy",
            "exp": now() + 600,
            "roles": ["reader", "writer"],
            "kp": {"consume": ["orders", "prefix:app-", 7], "bogus": ["x"], "group": "not-a-list"},
        })
    }

    impl Fixture {
        fn key(&self, alg: Algorithm) -> (&'static str, &EncodingKey) {
            let (_, kid, k) = self.keys.iter().find(|(a, _, _)| *a == alg).unwrap();
            (kid, k)
        }

        fn sign(&self, alg: Algorithm, claims: &Value) -> String {
            if alg == Algorithm::HS256 {
                let k = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
                return jsonwebtoken::encode(&Header::new(alg), claims, &k).unwrap();
            }
            let (kid, k) = self.key(alg);
            let mut h = Header::new(alg);
            h.kid = Some(kid.to_string());
            jsonwebtoken::encode(&h, claims, k).unwrap()
        }

        async fn refused(&self, token: &str) -> String {
            let e = self.check.verify(token).await.expect_err("refused");
            assert_eq!(e.code, ErrorCode::Unauthorized);
            e.message
        }
    }

    #[tokio::test]
    async fn every_algorithm_verifies_and_names_its_principal() {
        let f = fixture();
        for alg in ALGORITHMS {
            let token = f.sign(alg, &claims());
            let p = f
                .check
                .verify(&token)
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(p.kind, Kind::Jwt);
            assert_eq!(p.name, "svc-1");
            assert_eq!(p.roles, vec!["reader", "writer"]);
            assert_eq!(
                p.grants,
                vec![
                    (Action::Consume, "orders".to_string()),
                    (Action::Consume, "prefix:app-".to_string())
                ]
            );
            assert!(p.expires.is_some_and(|e| e as i64 > now()));
        }
    }

    #[tokio::test]
    async fn claims_are_checked_with_leeway() {
        let f = fixture();
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            c
        };
        let cases = [
            (with("exp", json!(now() - 100)), "expired"),
            (with("nbf", json!(now() + 100)), "not valid yet"),
            (with("iss", json!("https://other.example")), "issuer"),
            (with("aud", json!("someone-else")), "audience"),
            (with("sub", json!("")), "no sub"),
        ];
        for alg in ALGORITHMS {
            for (c, want) in &cases {
                let m = f.refused(&f.sign(alg, c)).await;
                assert!(m.contains(want), "{alg:?}: {m} lacks {want}");
            }
        }
        // Within the leeway both ways.
        let c = with("exp", json!(now() - 10));
        assert!(f.check.verify(&f.sign(Algorithm::ES256, &c)).await.is_ok());
        let c = with("nbf", json!(now() + 10));
        assert!(f.check.verify(&f.sign(Algorithm::ES256, &c)).await.is_ok());
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        let m = f.refused(&f.sign(Algorithm::RS256, &c)).await;
        assert!(m.contains("lacks the exp claim"), "{m}");
        // Roles as one space-separated string.
        let c = with("roles", json!("a b"));
        let p = f.check.verify(&f.sign(Algorithm::EdDSA, &c)).await.unwrap();
        assert_eq!(p.roles, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn signatures_keys_and_algorithms_are_enforced() {
        let f = fixture();
        // Signed by another key under a known kid.
        let (other, _) = keypair(&f.dir, Algorithm::ES256, "intruder");
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec-1".into());
        let forged = jsonwebtoken::encode(&h, &claims(), &other).unwrap();
        assert!(f
            .refused(&forged)
            .await
            .contains("signature does not verify"));
        // A kid nobody knows.
        h.kid = Some("ec-9".into());
        let unknown = jsonwebtoken::encode(&h, &claims(), &other).unwrap();
        assert!(f
            .refused(&unknown)
            .await
            .contains("unknown key id \"ec-9\""));
        // A kid of an RSA key with alg ES256: alg confusion.
        h.kid = Some("rsa-1".into());
        let confused = jsonwebtoken::encode(&h, &claims(), &other).unwrap();
        let m = f.refused(&confused).await;
        assert!(m.contains("does not match its key"), "{m}");
        // HS256 signed with the wrong secret.
        let k = EncodingKey::from_secret(b"not-the-secret-not-the-secret-xx").unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &k).unwrap();
        assert!(f.refused(&t).await.contains("signature does not verify"));
        // alg none, and an alg not accepted.
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims()));
        assert!(f.refused(&none).await.contains("alg none is not accepted"));
        let k = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims(), &k).unwrap();
        assert!(f.refused(&t).await.contains("HS512 is not accepted"));
        assert!(f.refused("a.b.c").await.contains("malformed JWT"));
        // The refusal never echoes the token.
        assert!(!f.refused(&forged).await.contains(&forged[..20]));
    }

    #[tokio::test]
    async fn without_a_secret_hs256_is_refused_and_a_kidless_token_needs_one_key() {
        let f = fixture();
        let settings = Jwt {
            secret_file: None,
            ..f.check.settings.clone()
        };
        let check = JwtCheck::new(&settings).unwrap();
        let t = f.sign(Algorithm::HS256, &claims());
        let e = check.verify(&t).await.unwrap_err();
        assert!(e.message.contains("no jwtSecretFile"), "{}", e.message);
        // One key per algorithm in the set: a token without kid finds it.
        let (_, k) = f.key(Algorithm::RS256);
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), k).unwrap();
        assert!(check.verify(&t).await.is_ok());
    }

    #[test]
    fn bad_key_files_are_startup_errors() {
        let d = dir();
        let short = d.join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let jwks = d.join("jwks");
        std::fs::write(&jwks, "{\"not\":\"a jwks\"}").unwrap();
        let base = Jwt {
            jwks_file: None,
            jwks_url: None,
            secret_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            roles_claim: "roles".into(),
            grants_claim: None,
            jwks_refresh: Duration::from_secs(300),
        };
        let e = JwtCheck::new(&Jwt {
            secret_file: Some(short),
            ..base.clone()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("jwtSecretFile") && e.contains("shorter than 32"),
            "{e}"
        );
        assert!(!e.contains("tooshort"), "{e}");
        let e = JwtCheck::new(&Jwt {
            jwks_file: Some(jwks),
            ..base.clone()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("jwtJwksFile") && e.contains("not a JWKS"), "{e}");
        let e = JwtCheck::new(&Jwt {
            jwks_url: Some("ftp://x/jwks".into()),
            ..base
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("jwtJwksUrl"), "{e}");
    }
}
