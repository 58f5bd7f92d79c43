//! TLS in process (rustls, ring): loads the PEM certificate and key, reloads them when the files
//! change or on SIGHUP, and hands the accept loop an acceptor that always serves the latest pair.
//! With a client CA (mTLS), verifies client certificates and names the client by its subject CN.
//!
//! A reload swaps the certificate that new handshakes get; sockets already open keep the session
//! they negotiated. A reload that fails (a half-written file, a key that does not match) keeps the
//! previous certificate and logs a warning, so a bad deploy never takes the listener down.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::server::{danger::ClientCertVerifier, WebPkiClientVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;

use crate::config::watch::{self, Watcher};
use crate::config::TlsFiles;
use crate::shutdown::Shutdown;

/// Longest a client may take to complete the TLS handshake; the same bound as the header-read
/// timeout, so a half-open TLS client holds a socket no longer than a slowloris one.
pub const HANDSHAKE_TIMEOUT: Duration = super::listen::HEADER_READ_TIMEOUT;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_POLL: Duration = watch::POLL;

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

/// Where client certificates are checked (mTLS): the CA bundle, and revocation lists if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM bundle of the CAs that sign client certificates (`tlsClientCa`).
    pub ca: PathBuf,
    /// PEM file of CRLs, one from each of those CAs (`tlsClientCrl`).
    pub crl: Option<PathBuf>,
}

/// TLS for the listener: the acceptor new handshakes use, and what rebuilds it from the files.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    client: Option<ClientAuth>,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    /// Rebuilt whole when the client CA bundle or CRLs change; the certificate alone swaps
    /// through `current`.
    acceptor: Arc<RwLock<TlsAcceptor>>,
}

impl Tls {
    /// Loads the certificate and key; any problem is a startup error.
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        Tls::with_client_auth(files, None)
    }

    /// As [`Tls::new`], and with `client` asks clients for a certificate (mTLS): one that
    /// chains to a CA of that PEM bundle, and that no list in `client.crl` revokes, is verified
    /// and its subject CN names the client ([`peer_name`]). A client without a certificate is
    /// still let in (it may authenticate otherwise); one with a certificate that does not verify
    /// fails the handshake.
    pub fn with_client_auth(files: &TlsFiles, client: Option<ClientAuth>) -> Result<Tls, TlsError> {
        let provider = provider();
        let current = Arc::new(Current(RwLock::new(Arc::new(load(files, &provider)?))));
        let acceptor = acceptor(files, client.as_ref(), &provider, &current)?;
        Ok(Tls {
            files: files.clone(),
            client,
            provider,
            current,
            acceptor: Arc::new(RwLock::new(acceptor)),
        })
    }

    /// The acceptor for a new handshake (a cheap clone).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the files again: the certificate and key, and the client CA bundle and CRLs. A
    /// file that fails to load changes nothing: the previous certificate and checks stay.
    pub fn reload(&self, why: &str) -> Result<(), TlsError> {
        // Everything is loaded before anything is swapped, so a failure changes nothing.
        let loaded = load(&self.files, &self.provider).and_then(|key| {
            let acceptor = match &self.client {
                Some(c) => Some(acceptor(
                    &self.files,
                    Some(c),
                    &self.provider,
                    &self.current,
                )?),
                None => None,
            };
            Ok((key, acceptor))
        });
        match loaded {
            Ok((key, acceptor)) => {
                self.current.set(key);
                if let Some(acceptor) = acceptor {
                    *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
                }
                tracing::info!(
                    cert = %self.files.cert.display(),
                    client_ca = ?self.client.as_ref().map(|c| &c.ca),
                    client_crl = ?self.client.as_ref().and_then(|c| c.crl.as_ref()),
                    why,
                    "TLS reloaded"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "TLS reload failed; keeping the previous certificate and client checks");
                Err(e)
            }
        }
    }

    /// Reloads when any of its files changes (checked every [`RELOAD_POLL`]) and on SIGHUP,
    /// until `shutdown`.
    pub async fn watch(self, mut shutdown: Shutdown) {
        let mut paths = vec![self.files.cert.clone(), self.files.key.clone()];
        if let Some(c) = &self.client {
            paths.push(c.ca.clone());
            paths.extend(c.crl.clone());
        }
        let mut files = Watcher::new(paths);
        loop {
            let why = tokio::select! {
                _ = shutdown.wait() => return,
                why = files.next() => why,
            };
            let _ = self.reload(why.as_str());
        }
    }
}

/// The acceptor of a configuration: with client certificates when `client` is given.
fn acceptor(
    files: &TlsFiles,
    client: Option<&ClientAuth>,
    provider: &Arc<CryptoProvider>,
    current: &Arc<Current>,
) -> Result<TlsAcceptor, TlsError> {
    let verifier = match client {
        Some(c) => client_verifier(c, provider)?,
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let config = server_config(files, verifier, provider, current)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn server_config(
    files: &TlsFiles,
    verifier: Arc<dyn ClientCertVerifier>,
    provider: &Arc<CryptoProvider>,
    current: &Arc<Current>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(current.clone());
    // No h2: the accept loop serves HTTP/1.1 only. A client offering only h2 fails the
    // handshake (no_application_protocol) instead of speaking a protocol we would not parse.
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// The verifier of client certificates: chains to a CA of the bundle, is not revoked by a list
/// of the CRL file, or no certificate at all.
fn client_verifier(
    client: &ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    const WHAT: &str = "client CA";
    let ca = &client.ca;
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| pem_error(WHAT, ca, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(WHAT, ca, e))?;
    let bad = |what: &'static str, path: &Path, message: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(WHAT, ca, format!("a certificate is not a usable CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad(WHAT, ca, "no PEM certificate in the file".into()));
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated();
    if let Some(path) = &client.crl {
        const CRL: &str = "client CRL";
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| pem_error(CRL, path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(CRL, path, e))?;
        if crls.is_empty() {
            return Err(bad(CRL, path, "no PEM X509 CRL in the file".into()));
        }
        // Only the client's own certificate is looked up: intermediates need no list. A
        // certificate whose CA sent no list fails (unknown status), so a missing list shows.
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    // A list that does not parse (or a v1 list) fails here, at load; one whose signature does
    // not verify fails each handshake it is consulted in.
    builder.build().map_err(|e| match &client.crl {
        Some(path) => bad("client CRL", path, e.to_string()),
        None => bad(WHAT, ca, e.to_string()),
    })
}

/// The subject CN of the client's verified certificate, if it sent one (mTLS). rustls hands out
/// peer certificates only once its verifier accepted them, so the name can be trusted. A
/// certificate without a CN names no one (the client may still authenticate otherwise).
pub fn peer_name(conn: &ServerConnection) -> Option<String> {
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_string())
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
