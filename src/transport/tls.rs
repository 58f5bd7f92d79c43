//! TLS in process (rustls, ring): loads the PEM certificate and key, reloads them when the files
//! change or on SIGHUP, and hands the accept loop an acceptor that always serves the latest pair.
//!
//! A reload swaps the certificate that new handshakes get; sockets already open keep the session
//! they negotiated. A reload that fails (a half-written file, a key that does not match) keeps the
//! previous certificate and logs a warning, so a bad deploy never takes the listener down.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::shutdown::Shutdown;

/// Longest a client may take to complete the TLS handshake; the same bound as the header-read
/// timeout, so a half-open TLS client holds a socket no longer than a slowloris one.
pub const HANDSHAKE_TIMEOUT: Duration = super::listen::HEADER_READ_TIMEOUT;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The only application protocol offered: the accept loop speaks HTTP/1.1 (with upgrades).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("bad TLS {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS key {key} does not fit certificate {cert}: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

fn pem_error(what: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    match e {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        },
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: format!("no PEM {what} in the file"),
        },
        other => TlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Reads the chain and key and checks that they belong together.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem_error("certificate", &files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", &files.cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            path: files.cert.clone(),
            message: "no PEM certificate in the file".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error("key", &files.key, e))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message: e.to_string(),
    })
}

/// The certificate new handshakes get; swapped by a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole Arc: a panic cannot leave it half-written.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// What identifies a file's version: a rewrite, a rename over it or a symlink swap (Kubernetes
/// secrets) changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// TLS for the listener: the acceptor and what reloads its certificate.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Loads the certificate and key; any problem is a startup error.
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = provider();
        let current = Arc::new(Current(RwLock::new(Arc::new(load(files, &provider)?))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair {
                cert: files.cert.clone(),
                key: files.key.clone(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // No h2: the accept loop serves HTTP/1.1 only. A client offering only h2 fails the
        // handshake (no_application_protocol) instead of speaking a protocol we would not parse.
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Tls {
            files: files.clone(),
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Loads the files again; on failure the previous certificate stays.
    pub fn reload(&self, why: &str) -> Result<(), TlsError> {
        match load(&self.files, &self.provider) {
            Ok(key) => {
                self.current.set(key);
                tracing::info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "TLS reload failed; keeping the previous certificate");
                Err(e)
            }
        }
    }

    /// Reloads when either file changes (checked every [`RELOAD_POLL`]) and on SIGHUP, until
    /// `shutdown`. SIGHUP is taken over only here, with TLS on; otherwise it keeps its default.
    pub async fn watch(self, mut shutdown: Shutdown) {
        let stamps = |t: &Tls| (stamp(&t.files.cert), stamp(&t.files.key));
        let mut seen = stamps(&self);
        let mut hup = hangup();
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => "file changed",
                _ = next_hangup(&mut hup) => "SIGHUP",
            };
            let now = stamps(&self);
            if why == "SIGHUP" || now != seen {
                // Remember the stamps even when the reload fails: a bad file is reported once,
                // and the next change (the rest of a deploy) triggers the next try.
                seen = now;
                let _ = self.reload(why);
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS reloads on file change only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

/// Resolves on the next SIGHUP; never where there is none.
async fn next_hangup(hup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = hup {
        if s.recv().await.is_some() {
            return;
        }
    }
    let _ = hup;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let c = dir.join("c.pem");
        let k = dir.join("k.pem");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        TlsFiles { cert: c, key: k }
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("kp-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = TlsFiles {
            cert: dir.join("nope.pem"),
            key: dir.join("nope.key"),
        };
        let e = Tls::new(&missing).err().unwrap().to_string();
        assert!(e.starts_with("cannot read TLS certificate"), "{e}");
        assert!(e.contains("nope.pem"), "{e}");

        let e = Tls::new(&files(&dir, "not pem at all\n", "x"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");

        let garbage = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = Tls::new(&files(&dir, garbage, "x"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("bad TLS certificate"), "{e}");
    }
}
