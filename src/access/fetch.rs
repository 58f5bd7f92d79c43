//! A minimal HTTP(S) GET for the JWKS URL: one request per connection, bounded in time
//! ([`FETCH_TIMEOUT`]) and size ([`MAX_BODY`]), no redirects. https uses rustls (ring) with the
//! system's trusted roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Longest a whole fetch may take: connect, TLS, request and body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest body accepted; a JWKS is a few kilobytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a fetch failed. The messages name the URL's host, never a body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {host}: {source}")]
    Connect {
        host: String,
        source: std::io::Error,
    },
    #[error("TLS with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(String),
    #[error("answered {0} (expected 200; redirects are not followed)")]
    Status(StatusCode),
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

/// Fetches one URL again and again.
pub struct Fetcher {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
}

impl Fetcher {
    /// Checks the URL; for https, loads the trusted roots once. An error explains what is wrong.
    pub fn new(url: &str) -> Result<Fetcher, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("must be an http:// or https:// URL".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            ServerName::try_from(host.clone())
                .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
            Some(connector()?)
        } else {
            None
        };
        Ok(Fetcher {
            uri,
            host,
            port,
            tls,
        })
    }

    /// GETs the URL and returns its body (200 only).
    pub async fn get(&self) -> Result<Bytes, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_unbounded())
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn get_unbounded(&self) -> Result<Bytes, FetchError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| FetchError::Connect {
                host: self.host.clone(),
                source,
            })?;
        let Some(tls) = &self.tls else {
            return self.request(tcp).await;
        };
        let name =
            ServerName::try_from(self.host.clone()).map_err(|e| FetchError::Http(e.to_string()))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|source| FetchError::Tls {
                host: self.host.clone(),
                source,
            })?;
        self.request(stream).await
    }

    async fn request<I>(&self, io: I) -> Result<Bytes, FetchError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |e: hyper::Error| FetchError::Http(e.to_string());
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http)?;
        // The connection is driven beside the request and ends with it (its sender is dropped).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = self.uri.authority().map_or("", |a| a.as_str());
        let req = Request::get(path)
            .header(header::HOST, host)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "kafka-proxy")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(http)?;
        if resp.status() != StatusCode::OK {
            return Err(FetchError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Http(e.to_string())
                }
            })?;
        Ok(body.to_bytes())
    }
}

/// A TLS client with the system's trusted roots and the ring provider.
fn connector() -> Result<TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "https needs trusted CA certificates and none were found ({} errors); install \
             ca-certificates or set SSL_CERT_FILE",
            found.errors.len()
        ));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_are_checked() {
        assert!(Fetcher::new("http://127.0.0.1:8080/jwks.json").is_ok());
        assert!(Fetcher::new("http://[::1]:8080/jwks").is_ok_and(|f| f.host == "::1"));
        for (bad, why) in [
            ("ftp://x/jwks", "http:// or https://"),
            ("http://u:p@x/jwks", "credentials"),
            ("not a url at all", "not a URL"),
        ] {
            let e = Fetcher::new(bad).err().unwrap();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// Serves one answer to one connection.
    async fn serve_once(answer: Vec<u8>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
        });
        port
    }

    #[tokio::test]
    async fn gets_a_body_and_refuses_errors_and_oversize() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"keys\":[]}".to_vec();
        let port = serve_once(ok).await;
        let f = Fetcher::new(&format!("http://127.0.0.1:{port}/k")).unwrap();
        assert_eq!(f.get().await.unwrap().as_ref(), b"{\"keys\":[]}");

        let moved = b"HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n".to_vec();
        let port = serve_once(moved).await;
        let f = Fetcher::new(&format!("http://127.0.0.1:{port}/k")).unwrap();
        assert!(matches!(f.get().await, Err(FetchError::Status(s)) if s == 302));

        let mut big = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY + 1
        )
        .into_bytes();
        big.extend(std::iter::repeat_n(b' ', MAX_BODY + 1));
        let port = serve_once(big).await;
        let f = Fetcher::new(&format!("http://127.0.0.1:{port}/k")).unwrap();
        assert!(matches!(f.get().await, Err(FetchError::TooLarge)));
    }
}
