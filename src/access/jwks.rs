//! JWT verification keys from a JWKS: a file (read at start, reloaded on change and SIGHUP by
//! `authn`) and/or a URL (fetched in the background at start, every `jwtJwksRefresh`, and at once
//! when a token names a key id not known yet, at most every [`UNKNOWN_KID_GAP`]).
//!
//! Each key gets one algorithm, from its `alg` or else from its type and curve (RSA -> RS256,
//! EC P-256 -> ES256, OKP Ed25519 -> EdDSA); a token must name that algorithm. Keys of other
//! types or algorithms, encryption keys and symmetric keys are skipped (HS256 takes its secret
//! from `jwtSecretFile`, not from a JWKS).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::fetch::Fetcher;
use crate::shutdown::Shutdown;

/// Fewest seconds between two fetches of the JWKS URL caused by unknown key ids.
pub const UNKNOWN_KID_GAP: Duration = Duration::from_secs(10);

/// Longest a request waits for the fetch its unknown key id caused.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(5);

/// A verification key.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The keys of one JWKS.
#[derive(Default)]
pub struct KeyMap {
    keys: Vec<Arc<Key>>,
}

/// What a look-up found.
pub enum Found {
    Key(Arc<Key>),
    /// A key with the token's `kid` exists, for another algorithm (alg confusion).
    WrongAlg(Algorithm),
    /// No key fits.
    None,
    /// The token has no `kid` and several keys fit its algorithm.
    Ambiguous(usize),
}

impl KeyMap {
    /// Parses a JWKS (`{"keys":[...]}`). Keys that cannot be used are skipped with a debug
    /// line; a document that is not a JWKS is an error.
    pub fn parse(bytes: &[u8]) -> Result<KeyMap, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS ({{\"keys\":[...]}}): {e}"))?;
        let mut keys = Vec::new();
        for (i, v) in doc.keys.into_iter().enumerate() {
            match key_of(v) {
                Ok(k) => keys.push(Arc::new(k)),
                Err(why) => tracing::debug!(index = i, why, "JWKS key skipped"),
            }
        }
        Ok(KeyMap { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key named by `kid`, or without a `kid` the only key for `alg`.
fn find_in(keys: &[Arc<Key>], kid: Option<&str>, alg: Algorithm) -> Found {
    match kid {
        Some(kid) => match keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            Some(k) if k.alg == alg => Found::Key(k.clone()),
            Some(k) => Found::WrongAlg(k.alg),
            None => Found::None,
        },
        None => {
            let fit: Vec<_> = keys.iter().filter(|k| k.alg == alg).collect();
            match fit.as_slice() {
                [one] => Found::Key((*one).clone()),
                [] => Found::None,
                many => Found::Ambiguous(many.len()),
            }
        }
    }
}

/// One JWK to a key with its one algorithm, or why it is skipped.
fn key_of(v: serde_json::Value) -> Result<Key, &'static str> {
    let jwk: Jwk = serde_json::from_value(v).map_err(|_| "not a JWK this proxy reads")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use=enc)");
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key (use jwtSecretFile)"),
        _ => return Err("a key type or curve other than RSA, EC P-256 and Ed25519"),
    };
    if let Some(alg) = jwk.common.key_algorithm {
        let alg = Algorithm::try_from(alg).map_err(|_| "an algorithm that is not for JWS")?;
        if alg != implied {
            return Err("an alg other than RS256, ES256 or EdDSA, or one its key type cannot do");
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key parameters that do not decode")?;
    Ok(Key {
        kid: jwk.common.key_id,
        alg: implied,
        key,
    })
}

/// Reads a JWKS file.
pub fn read_file(path: &Path) -> Result<KeyMap, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    KeyMap::parse(&bytes)
}

/// The keys at the JWKS URL, as last fetched.
pub struct Remote {
    url: String,
    fetcher: Fetcher,
    refresh: Duration,
    keys: RwLock<Option<Arc<KeyMap>>>,
    /// When a fetch was last started; held during a fetch, so concurrent requests wait for the
    /// one in flight instead of starting their own.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    pub fn new(url: &str, refresh: Duration) -> Result<Remote, String> {
        Ok(Remote {
            url: url.to_string(),
            fetcher: Fetcher::new(url)?,
            refresh,
            keys: RwLock::new(None),
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys as last fetched; `None` until a fetch succeeded.
    pub fn keys(&self) -> Option<Arc<KeyMap>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches unless a fetch started less than `gap` ago (waiting for one in flight). Returns
    /// whether the keys are known afterwards. A failed fetch keeps the keys fetched before.
    pub async fn fetch_unless_recent(&self, gap: Duration) -> bool {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < gap) {
            return self.keys().is_some();
        }
        *last = Some(Instant::now());
        match self
            .fetcher
            .get()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| KeyMap::parse(&b))
        {
            Ok(map) => {
                tracing::info!(url = %self.url, keys = map.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(map));
                true
            }
            Err(error) => {
                let have = self.keys().is_some();
                tracing::warn!(url = %self.url, %error, keeping_previous_keys = have, "JWKS fetch failed");
                have
            }
        }
    }

    /// Fetches at start, then every `refresh`; after a failure, again after 10 s, doubling up
    /// to `refresh`. Until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut backoff = UNKNOWN_KID_GAP;
        let mut wait = Duration::ZERO;
        loop {
            // A fetch that a request's unknown key id caused while this slept counts as this
            // one: the provider is not asked twice within moments.
            wait = if self.fetch_unless_recent(wait).await {
                backoff = UNKNOWN_KID_GAP;
                self.refresh
            } else {
                let w = backoff;
                backoff = (backoff * 2).min(self.refresh);
                w
            };
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Where keys come from: a file, a URL, or both (the file's keys first).
pub struct KeySet {
    pub file: Option<RwLock<Arc<KeyMap>>>,
    pub remote: Option<Arc<Remote>>,
}

/// Why no key was found, as the client is told.
pub fn not_found(kid: Option<&str>, alg: Algorithm, found: &Found, remote_known: bool) -> String {
    match (found, kid) {
        (Found::WrongAlg(want), _) => {
            format!("JWT alg {alg:?} does not match its key's ({want:?})")
        }
        (Found::Ambiguous(n), _) => {
            format!("JWT has no kid and {n} keys fit {alg:?}; the token must name its key")
        }
        _ if !remote_known => {
            "no JWT signing keys yet: the JWKS URL has not been fetched successfully".into()
        }
        (_, Some(kid)) => format!("JWT names an unknown key id {kid:?}"),
        (_, None) => format!("no key for JWT alg {alg:?}"),
    }
}

impl KeySet {
    fn look(&self, kid: Option<&str>, alg: Algorithm) -> Found {
        let mut all: Vec<Arc<Key>> = Vec::new();
        if let Some(f) = &self.file {
            all.extend(
                f.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys
                    .iter()
                    .cloned(),
            );
        }
        if let Some(map) = self.remote.as_ref().and_then(|r| r.keys()) {
            all.extend(map.keys.iter().cloned());
        }
        find_in(&all, kid, alg)
    }

    /// The key for a token's `kid` and `alg`. A key id not known yet fetches the URL at once
    /// (at most every [`UNKNOWN_KID_GAP`]) and waits for it up to [`UNKNOWN_KID_WAIT`].
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, String> {
        let found = self.look(kid, alg);
        if let Found::Key(k) = found {
            return Ok(k);
        }
        let Some(remote) = &self.remote else {
            return Err(not_found(kid, alg, &found, true));
        };
        if matches!(found, Found::None) {
            let fetch = remote.fetch_unless_recent(UNKNOWN_KID_GAP);
            let _ = tokio::time::timeout(UNKNOWN_KID_WAIT, fetch).await;
        }
        match self.look(kid, alg) {
            Found::Key(k) => Ok(k),
            other => Err(not_found(kid, alg, &other, remote.keys().is_some())),
        }
    }
}
