//! Authentication: every credential to a `Principal`. The seed's `Authorization: basic
//! <password>` and RFC 7617 Basic with the shared password (`auth`), users of the users file
//! (Basic `user:password`), static bearer tokens, JWT bearer tokens and verified client
//! certificates (mTLS). Secrets are compared in constant time and never logged or echoed.
//!
//! The users and tokens files and the JWT key files reload when they change and on SIGHUP. A
//! reload bumps a generation (`generation`); a session of a user or token that was removed or
//! whose line changed since the session authenticated is told so by [`Authenticator::revocation`]
//! and closes with 4401.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::jwt::{looks_like_jwt, JwtCheck};
use super::tokens::Tokens;
use super::users::{Users, Verifier};
use super::{Kind, Principal};
use crate::config::watch::Watcher;
use crate::config::{Config, Secret};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;

/// A credential as a request (or an in-band frame) presents it.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// Nothing presented.
    None,
    /// An `Authorization` header value: `Basic ...` (either form) or `Bearer ...`.
    Authorization(&'a [u8]),
    /// A bearer token given elsewhere (a WebSocket subprotocol, an in-band frame): a static
    /// token or a JWT.
    Bearer(&'a str),
    /// The subject CN of a client certificate the TLS layer verified.
    Certificate(&'a str),
}

/// Why the credential sources could not be loaded at startup. Never contains a secret or hash.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {option} {path}: {source}")]
    Read {
        option: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad {option} {path} line {line}: {message}")]
    Line {
        option: &'static str,
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("bad {option} {from}: {message}")]
    Key {
        option: &'static str,
        from: String,
        message: String,
    },
}

/// A session's end once its credential is revoked; see [`Authenticator::revocation`].
pub type Revocation = Pin<Box<dyn Future<Output = ProtocolError> + Send>>;

/// A file-backed credential source and its current contents.
struct Source<T> {
    path: PathBuf,
    now: RwLock<Arc<T>>,
}

impl<T> Source<T> {
    fn new(path: &Path, value: T) -> Source<T> {
        Source {
            path: path.to_path_buf(),
            now: RwLock::new(Arc::new(value)),
        }
    }
    fn get(&self) -> Arc<T> {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, value: T) {
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

/// A credential file that reloads whole: `carry_since` keeps, for each entry whose line did not
/// change, the generation it was first seen at (so that sessions on unchanged lines live on).
trait CredentialFile: Sized {
    /// The file's name in logs: "users" or "tokens".
    const WHAT: &'static str;
    fn load(path: &Path, generation: u64) -> Result<Self, AccessError>;
    fn carry_since(&mut self, old: &Self);
    fn len(&self) -> usize;
}

impl CredentialFile for Users {
    const WHAT: &'static str = "users";
    fn load(path: &Path, generation: u64) -> Result<Self, AccessError> {
        Users::load(path, generation)
    }
    fn carry_since(&mut self, old: &Self) {
        Users::carry_since(self, old)
    }
    fn len(&self) -> usize {
        Users::len(self)
    }
}

impl CredentialFile for Tokens {
    const WHAT: &'static str = "tokens";
    fn load(path: &Path, generation: u64) -> Result<Self, AccessError> {
        Tokens::load(path, generation)
    }
    fn carry_since(&mut self, old: &Self) {
        Tokens::carry_since(self, old)
    }
    fn len(&self) -> usize {
        Tokens::len(self)
    }
}

struct Inner {
    password: Option<Secret>,
    users: Option<Source<Users>>,
    tokens: Option<Source<Tokens>>,
    jwt: Option<JwtCheck>,
    certificates: bool,
    verifier: Verifier,
    /// Bumped by every reload of the users or tokens file.
    generation: watch::Sender<u64>,
    /// Reloads one at a time, so each gets its own generation.
    reloading: Mutex<()>,
}

/// Checks credentials against every configured source. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Authenticator")
            .field("password", &i.password.is_some())
            .field("users", &i.users.as_ref().map(|s| &s.path))
            .field("tokens", &i.tokens.as_ref().map(|s| &s.path))
            .field("jwt", &i.jwt.is_some())
            .field("certificates", &i.certificates)
            .finish()
    }
}

fn unauthorized(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unauthorized, message)
}

impl Authenticator {
    /// Only the shared password (or nothing: everyone is anonymous).
    pub fn new(password: Option<Secret>) -> Self {
        Authenticator::build(password, None, None, None, false)
    }

    fn build(
        password: Option<Secret>,
        users: Option<Source<Users>>,
        tokens: Option<Source<Tokens>>,
        jwt: Option<JwtCheck>,
        certificates: bool,
    ) -> Self {
        Authenticator {
            inner: Arc::new(Inner {
                password,
                users,
                tokens,
                jwt,
                certificates,
                verifier: Verifier::default(),
                generation: watch::channel(0).0,
                reloading: Mutex::new(()),
            }),
        }
    }

    /// Every source the configuration names, read now: a missing or malformed file is an
    /// error naming the file and line (never a secret). The JWKS URL is fetched by
    /// [`Authenticator::start`], not here.
    pub fn from_config(config: &Config) -> Result<Authenticator, AccessError> {
        let sec = &config.security;
        let users = match &sec.users_file {
            Some(p) => Some(Source::new(p, Users::load(p, 0)?)),
            None => None,
        };
        let tokens = match &sec.tokens_file {
            Some(p) => Some(Source::new(p, Tokens::load(p, 0)?)),
            None => None,
        };
        let jwt = match &sec.jwt {
            Some(j) => Some(JwtCheck::new(j)?),
            None => None,
        };
        let certificates = sec.tls_client_ca.is_some() && config.tls.is_some();
        Ok(Authenticator::build(
            config.auth.clone(),
            users,
            tokens,
            jwt,
            certificates,
        ))
    }

    /// Whether any credential is required: without one, everyone is anonymous.
    pub fn enabled(&self) -> bool {
        let i = &self.inner;
        i.password.is_some()
            || i.users.is_some()
            || i.tokens.is_some()
            || i.jwt.is_some()
            || i.certificates
    }

    /// Starts what runs beside the server until `shutdown`: reloads of the users, tokens and
    /// JWT key files (on change and SIGHUP) and the JWKS URL's fetches.
    pub fn start(&self, shutdown: &Shutdown) {
        let i = &self.inner;
        if self.enabled() {
            tracing::info!(
                password = i.password.is_some(),
                users = i.users.as_ref().map(|s| s.get().len()),
                tokens = i.tokens.as_ref().map(|s| s.get().len()),
                jwt = i.jwt.is_some(),
                client_certificates = i.certificates,
                "authentication required"
            );
        }
        if let Some(s) = &i.users {
            let a = self.clone();
            tokio::spawn(reload_on_change(
                vec![s.path.clone()],
                shutdown.clone(),
                move |why| a.reload_users(why),
            ));
        }
        if let Some(s) = &i.tokens {
            let a = self.clone();
            tokio::spawn(reload_on_change(
                vec![s.path.clone()],
                shutdown.clone(),
                move |why| a.reload_tokens(why),
            ));
        }
        if let Some(j) = &i.jwt {
            let files = j.files();
            if !files.is_empty() {
                let a = self.clone();
                tokio::spawn(reload_on_change(files, shutdown.clone(), move |why| {
                    if let Some(j) = &a.inner.jwt {
                        j.reload(why)
                    }
                }));
            }
            if let Some(remote) = j.remote() {
                tokio::spawn(remote.run(shutdown.clone()));
            }
        }
    }

    /// Reads the users file again; a file that fails to load keeps the previous users.
    pub fn reload_users(&self, why: &str) {
        self.reload(self.inner.users.as_ref(), why)
    }

    /// Reads the tokens file again; a file that fails to load keeps the previous tokens.
    pub fn reload_tokens(&self, why: &str) {
        self.reload(self.inner.tokens.as_ref(), why)
    }

    /// One reload of either file, under the reload lock so that generations follow file order.
    fn reload<T: CredentialFile>(&self, src: Option<&Source<T>>, why: &str) {
        let Some(src) = src else { return };
        let _one = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let generation = *self.inner.generation.borrow() + 1;
        match T::load(&src.path, generation) {
            Ok(mut now) => {
                now.carry_since(&src.get());
                let entries = now.len();
                src.set(now);
                self.inner.generation.send_replace(generation);
                tracing::info!(file = %src.path.display(), entries, why, "{} file reloaded", T::WHAT);
            }
            Err(error) => tracing::warn!(
                %error,
                why,
                "{} file reload failed; keeping the previous {}",
                T::WHAT,
                T::WHAT
            ),
        }
    }

    /// The reload generation: bumped by every reload of the users or tokens file.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Whether a principal's user or token still exists. Other kinds stay valid (the shared
    /// password and the certificate CA do not reload; a JWT's end is its `exp`).
    pub fn still_valid(&self, p: &Principal) -> bool {
        self.still_valid_since(p, u64::MAX)
    }

    /// Whether a principal's user or token still exists with the line it had at reload
    /// `generation` (a changed password, token or roles make it invalid).
    pub fn still_valid_since(&self, p: &Principal, generation: u64) -> bool {
        let i = &self.inner;
        match p.kind {
            Kind::User => i
                .users
                .as_ref()
                .is_some_and(|s| s.get().get(&p.name).is_some_and(|u| u.since <= generation)),
            Kind::Token => i.tokens.as_ref().is_some_and(|s| {
                s.get()
                    .named(&p.name)
                    .is_some_and(|t| t.since <= generation)
            }),
            _ => true,
        }
    }

    /// For a user or token principal, a future that resolves with 401 `unauthorized`
    /// "credential revoked" once a reload removed or changed its line; `None` for credentials
    /// that reloads cannot revoke. Create it when the session opens: changes from then on count.
    pub fn revocation(&self, p: &Principal) -> Option<Revocation> {
        if !matches!(p.kind, Kind::User | Kind::Token) {
            return None;
        }
        let mut rx = self.generation();
        let opened = *rx.borrow_and_update();
        let (auth, p) = (self.clone(), p.clone());
        Some(Box::pin(async move {
            let revoked = || unauthorized("credential revoked");
            if !auth.still_valid(&p) {
                return revoked();
            }
            loop {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if !auth.still_valid_since(&p, opened) {
                    tracing::info!(principal = %p, "credential revoked; closing its session");
                    return revoked();
                }
            }
        }))
    }

    /// Checks one credential. Without any source configured everyone is anonymous.
    pub async fn check(&self, c: Credential<'_>) -> Result<Principal, ProtocolError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        match c {
            Credential::None => Err(unauthorized(format!("send {}", self.expected()))),
            Credential::Authorization(h) => self.authorization(h).await,
            Credential::Bearer(t) => self.bearer(t).await,
            Credential::Certificate(cn) if self.inner.certificates => {
                Ok(Principal::named(Kind::Certificate, cn))
            }
            Credential::Certificate(_) => Err(unauthorized(format!(
                "client certificates are not accepted here; send {}",
                self.expected()
            ))),
        }
    }

    /// The credential forms this proxy accepts, for error messages.
    fn expected(&self) -> String {
        let i = &self.inner;
        let mut forms = Vec::new();
        if i.password.is_some() {
            forms.push("Authorization: basic <password>");
        }
        if i.users.is_some() || i.password.is_some() {
            forms.push("RFC 7617 Basic credentials");
        }
        if i.tokens.is_some() || i.jwt.is_some() {
            forms.push("Authorization: Bearer <token>");
        }
        if i.certificates {
            forms.push("a client certificate");
        }
        forms.join(" or ")
    }

    async fn authorization(&self, header: &[u8]) -> Result<Principal, ProtocolError> {
        let header = std::str::from_utf8(header)
            .map_err(|_| unauthorized("the Authorization header is not UTF-8"))?
            .trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            self.basic(rest.trim()).await
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(rest.trim()).await
        } else {
            Err(unauthorized(format!(
                "unsupported Authorization scheme; send {}",
                self.expected()
            )))
        }
    }

    async fn basic(&self, token: &str) -> Result<Principal, ProtocolError> {
        let i = &self.inner;
        // The seed's `basic <password>` and RFC 7617 are both evaluated, so timing does not
        // reveal which form matched.
        let seed_ok = i
            .password
            .as_ref()
            .is_some_and(|p| ct_eq(token.as_bytes(), p.expose().as_bytes()));
        let rfc = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|d| {
                let colon = d.iter().position(|&b| b == b':')?;
                let user = String::from_utf8(d[..colon].to_vec()).ok()?;
                Some((user, d[colon + 1..].to_vec()))
            });
        if seed_ok {
            return Ok(Principal::named(Kind::Password, ""));
        }
        let Some((user, password)) = rfc else {
            return Err(unauthorized(format!(
                "malformed Basic credentials; send {}",
                self.expected()
            )));
        };
        if let Some(src) = &i.users {
            let users = src.get();
            // A name of the users file is checked only against its own hash; other names
            // fall back to the shared password when there is one.
            if users.get(&user).is_some() || i.password.is_none() {
                if !i.verifier.check(&users, &user, &password).await {
                    return Err(unauthorized("unknown user or wrong password"));
                }
                let mut p = Principal::named(Kind::User, &user);
                p.roles = users
                    .get(&user)
                    .map(|u| u.roles.clone())
                    .unwrap_or_default();
                return Ok(p);
            }
        }
        match &i.password {
            Some(want) if ct_eq(&password, want.expose().as_bytes()) => {
                Ok(Principal::named(Kind::Password, &user))
            }
            _ => Err(unauthorized("wrong user or password")),
        }
    }

    async fn bearer(&self, token: &str) -> Result<Principal, ProtocolError> {
        let i = &self.inner;
        if token.is_empty() {
            return Err(unauthorized("the bearer token is empty"));
        }
        if let Some(src) = &i.tokens {
            if let Some(t) = src.get().find(token.as_bytes()) {
                let mut p = Principal::named(Kind::Token, &t.name);
                p.roles = t.roles.clone();
                return Ok(p);
            }
        }
        match &i.jwt {
            Some(jwt) if looks_like_jwt(token) => jwt.verify(token).await,
            _ if i.tokens.is_none() && i.jwt.is_none() => Err(unauthorized(format!(
                "bearer tokens are not accepted here; send {}",
                self.expected()
            ))),
            _ => Err(unauthorized("unknown bearer token")),
        }
    }
}

/// Calls `reload` whenever one of `paths` changes or on SIGHUP, until `shutdown`.
async fn reload_on_change(
    paths: Vec<PathBuf>,
    mut shutdown: Shutdown,
    reload: impl Fn(&str) + Send + 'static,
) {
    let mut files = Watcher::new(paths);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            why = files.next() => reload(why.as_str()),
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare fixed-length digests: comparing the raw slices would return early when the lengths
    // differ and so reveal the password's length.
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.as_slice().ct_eq(db.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn auth() -> Authenticator {
        Authenticator::new(Some(Secret::new("thisisapassword")))
    }

    async fn check(a: &Authenticator, header: &[u8]) -> Result<Principal, ProtocolError> {
        a.check(Credential::Authorization(header)).await
    }

    #[tokio::test]
    async fn seed_header_either_case() {
        for h in [
            "basic thisisapassword",
            "Basic thisisapassword",
            "BASIC thisisapassword",
        ] {
            let p = check(&auth(), h.as_bytes()).await.unwrap();
            assert_eq!(p, Principal::named(Kind::Password, ""));
        }
    }

    #[tokio::test]
    async fn rfc7617_with_the_shared_password() {
        let h = format!("Basic {}", b64("alice:thisisapassword"));
        let p = check(&auth(), h.as_bytes()).await.unwrap();
        assert_eq!(p, Principal::named(Kind::Password, "alice"));
        let h = format!("Basic {}", b64("alice:wrong"));
        assert!(check(&auth(), h.as_bytes()).await.is_err());
    }

    #[tokio::test]
    async fn rejects_without_echoing_the_secret() {
        for h in [
            &b"basic wrong"[..],
            b"Bearer thisisapassword",
            b"thisisapassword",
            b"basic ",
            b"basic thisisapasswordX",
            &[0xff, 0xfe],
        ] {
            let e = check(&auth(), h).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(!e.message.contains("thisisapassword"), "{}", e.message);
        }
        let e = auth().check(Credential::None).await.unwrap_err();
        assert!(e.message.contains("basic <password>"), "{}", e.message);
        let e = auth()
            .check(Credential::Certificate("cn"))
            .await
            .unwrap_err();
        assert!(e.message.contains("not accepted"), "{}", e.message);
    }

    #[tokio::test]
    async fn disabled_allows_all() {
        let a = Authenticator::new(None);
        assert!(!a.enabled());
        assert_eq!(
            a.check(Credential::None).await.unwrap(),
            Principal::anonymous()
        );
    }

    struct Files {
        dir: PathBuf,
        config: Config,
    }

    fn argon2_hash(password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(password.as_bytes())
            .unwrap_or_else(|_| SaltString::encode_b64(b"saltsaltsaltsalt").unwrap());
        a.hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    const TOKEN: &str = "ci-token-0123456789abcdef";

    fn files(password: Option<&str>) -> Files {
        let dir = std::env::temp_dir().join(format!(
            "kp-authn-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users");
        std::fs::write(
            &users,
            format!(
                "alice:{}:ops\nbob:{}\n",
                argon2_hash("alice-password"),
                bcrypt::hash("bob-password", 4).unwrap()
            ),
        )
        .unwrap();
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("ci:{TOKEN}:deploy\n")).unwrap();
        let mut config = Config {
            auth: password.map(Secret::new),
            ..Config::default()
        };
        config.security.users_file = Some(users);
        config.security.tokens_file = Some(tokens);
        Files { dir, config }
    }

    #[tokio::test]
    async fn users_tokens_and_certificates_become_principals() {
        let f = files(Some("shared-password"));
        let a = Authenticator::from_config(&f.config).unwrap();
        assert!(a.enabled());
        let basic = |u: &str| format!("Basic {}", b64(u));
        let p = check(&a, basic("alice:alice-password").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            (p.kind, p.name.as_str(), p.roles.clone()),
            (Kind::User, "alice", vec!["ops".into()])
        );
        let p = check(&a, basic("bob:bob-password").as_bytes())
            .await
            .unwrap();
        assert_eq!((p.kind, p.name.as_str()), (Kind::User, "bob"));
        let e = check(&a, basic("alice:bob-password").as_bytes())
            .await
            .unwrap_err();
        assert_eq!(e.message, "unknown user or wrong password");
        // A user of the file is not let in with the shared password; other names are.
        assert!(check(&a, basic("alice:shared-password").as_bytes())
            .await
            .is_err());
        let p = check(&a, basic("carol:shared-password").as_bytes())
            .await
            .unwrap();
        assert_eq!((p.kind, p.name.as_str()), (Kind::Password, "carol"));
        assert!(check(&a, b"basic shared-password").await.is_ok());

        let p = check(&a, format!("Bearer {TOKEN}").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            (p.kind, p.name.as_str(), p.roles.clone()),
            (Kind::Token, "ci", vec!["deploy".into()])
        );
        let p = a.check(Credential::Bearer(TOKEN)).await.unwrap();
        assert_eq!(p.kind, Kind::Token);
        let e = check(&a, b"Bearer ci-token-0123456789abcdeX")
            .await
            .unwrap_err();
        assert_eq!(e.message, "unknown bearer token");
        let e = check(&a, b"Digest abc").await.unwrap_err();
        assert!(
            e.message.starts_with("unsupported Authorization scheme"),
            "{}",
            e.message
        );

        // Certificates count only with a client CA on a TLS listener.
        let mut c = f.config.clone();
        c.tls = Some(crate::config::TlsFiles {
            cert: f.dir.join("c"),
            key: f.dir.join("k"),
        });
        c.security.tls_client_ca = Some(f.dir.join("ca"));
        let a = Authenticator::from_config(&c).unwrap();
        let p = a.check(Credential::Certificate("device-7")).await.unwrap();
        assert_eq!(p, Principal::named(Kind::Certificate, "device-7"));
    }

    #[tokio::test]
    async fn a_reload_revokes_removed_and_changed_users_and_tokens() {
        let f = files(None);
        let a = Authenticator::from_config(&f.config).unwrap();
        let alice = Principal::named(Kind::User, "alice");
        let bob = Principal::named(Kind::User, "bob");
        let ci = Principal::named(Kind::Token, "ci");
        let mut alice_end = a.revocation(&alice).unwrap();
        let mut bob_end = a.revocation(&bob).unwrap();
        let mut ci_end = a.revocation(&ci).unwrap();
        assert!(a.revocation(&Principal::named(Kind::Jwt, "x")).is_none());
        let pending = |f: &mut Revocation| {
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            f.as_mut().poll(&mut cx).is_pending()
        };
        assert!(pending(&mut alice_end) && pending(&mut bob_end) && pending(&mut ci_end));

        // alice removed, bob unchanged (same line), the token unchanged.
        let users =
            std::fs::read_to_string(f.config.security.users_file.as_ref().unwrap()).unwrap();
        let bob_line = users.lines().nth(1).unwrap().to_string();
        std::fs::write(
            f.config.security.users_file.as_ref().unwrap(),
            format!("{bob_line}\n"),
        )
        .unwrap();
        let gen = a.generation();
        a.reload_users("test");
        assert!(gen.has_changed().unwrap());
        let e = tokio::time::timeout(Duration::from_secs(1), &mut alice_end)
            .await
            .unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Unauthorized, "credential revoked")
        );
        assert!(!a.still_valid(&alice));
        assert!(a.still_valid(&bob));
        assert!(pending(&mut bob_end));

        // A changed token line revokes its sessions, a later session of it is fine.
        std::fs::write(
            f.config.security.tokens_file.as_ref().unwrap(),
            format!("ci:{TOKEN}:deploy,more\n"),
        )
        .unwrap();
        a.reload_tokens("test");
        let e = tokio::time::timeout(Duration::from_secs(1), &mut ci_end)
            .await
            .unwrap();
        assert_eq!(e.message, "credential revoked");
        let mut later = a.revocation(&ci).unwrap();
        assert!(pending(&mut later));
        assert!(pending(&mut bob_end));

        // A file that does not load keeps what was loaded.
        std::fs::write(f.config.security.users_file.as_ref().unwrap(), "bob\n").unwrap();
        a.reload_users("test");
        assert!(a.still_valid(&bob));
        let p = check(&a, format!("Basic {}", b64("bob:bob-password")).as_bytes()).await;
        assert!(p.is_ok());
    }

    #[test]
    fn a_malformed_file_is_a_startup_error_naming_the_line() {
        let f = files(None);
        std::fs::write(
            f.config.security.users_file.as_ref().unwrap(),
            "# c\nalice:$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA:x\n",
        )
        .unwrap();
        let e = Authenticator::from_config(&f.config)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad usersFile"), "{e}");
        assert!(e.contains("line 2:"), "{e}");
        assert!(!e.contains("c2FsdA"), "{e}");
    }
}
