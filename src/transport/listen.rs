//! The accept loop: every client socket, before HTTP, with the connection-level limits (header-read
//! timeout, a cap on open sockets, descriptors kept in reserve) and graceful shutdown.
//!
//! Sessions are capped by `maxConnections` in the gate; this caps sockets, which exist before a
//! request is understood (a half-sent request holds one too). A socket counts until it closes,
//! including after a WebSocket upgrade: the count travels with the socket itself (`Counted`).
//!
//! With TLS on, each socket's handshake runs in its own task, bounded by `HANDSHAKE_TIMEOUT`,
//! so neither a slow client nor a burst of handshakes holds up the accept loop.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::tls::{Tls, HANDSHAKE_TIMEOUT};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;

/// Longest a client may take to send a request's headers (slowloris), and to start the next
/// request on a kept-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Sockets beyond `maxConnections` still accepted, so a full proxy can answer health checks,
/// the admin API and clean refusals.
pub const SOCKET_HEADROOM: usize = 1024;

/// How long a socket may go without a whole first request (TLS handshake included) before, at
/// the socket cap, a newer socket takes its place: half-open sockets then cannot lock new clients
/// out, yet a client on a slow link has three seconds before it can lose its place.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(3);

/// File descriptors kept free for the proxy's own needs (Kafka connections of sessions that
/// are starting, librdkafka's internal pipes, files): new client sockets are refused before the
/// process's open-file limit comes closer than this.
pub const FD_RESERVE: usize = 1024;

/// How often the number of open descriptors is read again (`/proc/self/fd`).
const FD_REFRESH: Duration = Duration::from_millis(500);

/// The limits the accept loop applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most client sockets open at once.
    pub max_sockets: usize,
    /// The process's open-file limit, if known.
    pub fd_limit: Option<usize>,
}

impl Limits {
    /// Limits for a proxy serving at most `max_sessions` sessions.
    pub fn for_sessions(max_sessions: usize) -> Limits {
        Limits {
            max_sockets: max_sessions.saturating_add(SOCKET_HEADROOM),
            fd_limit: open_file_limit(),
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere.
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors open now, from `/proc/self/fd` (Linux); `None` elsewhere.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

/// A client socket that counts itself open until it is dropped, wherever it went (hyper hands
/// it to the WebSocket session on upgrade).
struct Counted {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Sockets that have not yet sent a whole first request, oldest first, each with the means to
/// close it: at the socket cap, the oldest one past [`FIRST_REQUEST_GRACE`] gives its place to
/// the newcomer.
#[derive(Default)]
struct Waiting {
    next: AtomicU64,
    queue: Mutex<Queue>,
}

/// Waiting sockets by arrival: when each came, and the sender that closes it.
type Queue = BTreeMap<u64, (tokio::time::Instant, tokio::sync::oneshot::Sender<()>)>;

/// A socket's place in [`Waiting`]; dropping it (the first request arrived, or the socket
/// closed) takes the socket off the queue.
struct Place {
    waiting: Arc<Waiting>,
    seq: u64,
}

impl Waiting {
    /// Queues a new socket; the receiver fires if the socket is to give its place up.
    fn join(self: &Arc<Self>) -> (Place, tokio::sync::oneshot::Receiver<()>) {
        let seq = self.next.fetch_add(1, Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert(seq, (tokio::time::Instant::now(), tx));
        let place = Place {
            waiting: self.clone(),
            seq,
        };
        (place, rx)
    }

    /// Closes the oldest socket if it has waited past the grace; whether one was closed.
    fn evict_oldest(&self) -> bool {
        let mut queue = self.lock();
        let Some(entry) = queue.first_entry() else {
            return false;
        };
        if entry.get().0.elapsed() < FIRST_REQUEST_GRACE {
            return false;
        }
        let (_, close) = entry.remove();
        // A socket whose task already ended has nothing to close; its slot is free anyway.
        let _ = close.send(());
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.seq);
    }
}

/// A connection's service that gives up the socket's [`Place`] once its first request's headers
/// are in.
struct FirstRequest<S> {
    inner: S,
    place: Mutex<Option<Place>>,
}

impl<S, R> hyper::service::Service<R> for FirstRequest<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn call(&self, req: R) -> S::Future {
        self.place.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.inner.call(req)
    }
}

/// Why a socket is refused before HTTP.
fn refusal(open: usize, limits: &Limits, fds: Option<usize>) -> Option<ProtocolError> {
    if open >= limits.max_sockets {
        return Some(ProtocolError::new(
            ErrorCode::LimitReached,
            format!("too many open connections ({open}; maxConnections + {SOCKET_HEADROOM})"),
        ));
    }
    if let (Some(limit), Some(fds)) = (limits.fd_limit, fds) {
        if fds + FD_RESERVE >= limit {
            return Some(ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "the proxy is near its open-file limit ({fds} of {limit} descriptors in use)"
                ),
            ));
        }
    }
    None
}

/// Answers a refused socket with a complete HTTP response (over TLS when it is on) and closes
/// it, all within one second: a refused socket is not counted, so it must not linger.
async fn refuse(tcp: TcpStream, e: ProtocolError, tls: Option<Tls>) {
    let body = e.http_body();
    let status = e.code.http_status();
    let head = format!(
        "HTTP/1.1 {status} Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    async fn write<W: AsyncRead + AsyncWrite + Unpin>(
        mut w: W,
        head: &str,
        body: &str,
    ) -> io::Result<()> {
        // One write: a client that reads the status line and headers from the first segment
        // would otherwise miss a body that comes in a second one.
        let answer = [head.as_bytes(), body.as_bytes()].concat();
        w.write_all(&answer).await?;
        w.shutdown().await?;
        // Read what the client sent until it closes: closing a socket with unread bytes makes
        // the kernel send a reset, and a client that is still sending its request would see
        // "connection reset" instead of this answer.
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match w.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok(())
    }
    let answer = async {
        match tls {
            None => write(tcp, &head, &body).await,
            Some(tls) => write(tls.acceptor().accept(tcp).await?, &head, &body).await,
        }
    };
    // Bounded: a client that never closes gets its answer and is dropped after this.
    let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
}

/// Accepts sockets until `shutdown` fires and serves HTTP/1.1 (with upgrades) on each through
/// the service `make` builds for its peer, over TLS when `tls` is given (and then reloads its
/// certificate while serving). `make` gets the peer's address and, with mTLS, the subject CN of
/// its verified client certificate (`tls::peer_name`), once the handshake is done. Returns once shutdown fired and every connection still speaking
/// HTTP has finished (upgraded sockets are their sessions' to close).
pub async fn serve<M, S, B>(
    listener: TcpListener,
    make: M,
    limits: Limits,
    tls: Option<Tls>,
    mut shutdown: Shutdown,
) -> io::Result<()>
where
    M: Fn(SocketAddr, Option<String>) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let make = Arc::new(make);
    let open = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(Waiting::default());
    let (mut refused_unlogged, mut refused_logged_at) = (0u64, None::<tokio::time::Instant>);
    // Connections still speaking HTTP, for the drain at shutdown.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let mut fds = open_fds();
    let mut fds_read_at = tokio::time::Instant::now();
    let mut accepted_since = 0usize;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection that died in the backlog:
                // wait a moment rather than spin; the socket stays in the kernel's backlog.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            // Frames must not wait for the client's delayed ACK (Nagle): small live frames
            // would gain up to 40 ms of latency.
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if limits.fd_limit.is_some() && fds_read_at.elapsed() >= FD_REFRESH {
            fds = open_fds();
            fds_read_at = tokio::time::Instant::now();
            accepted_since = 0;
        }
        accepted_since += 1;
        let estimate = fds.map(|n| n + accepted_since);
        let mut now_open = open.load(Relaxed);
        if now_open >= limits.max_sockets && waiting.evict_oldest() {
            // The evicted socket's task closes it and gives the count back; its slot is this
            // socket's now.
            now_open -= 1;
        }
        if let Some(e) = refusal(now_open, &limits, estimate) {
            // One warning a second at most: a flood must not become a flood of log lines.
            refused_unlogged += 1;
            if refused_logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(%peer, reason = %e.message, refused = refused_unlogged, "sockets refused (this one and any since the last such warning)");
                refused_logged_at = Some(tokio::time::Instant::now());
                refused_unlogged = 0;
            }
            tokio::spawn(refuse(tcp, e, tls.clone()));
            continue;
        }
        open.fetch_add(1, Relaxed);
        let counted = Counted {
            tcp,
            open: open.clone(),
        };
        let make = make.clone();
        let builder = builder.clone();
        let mut stop = shutdown.clone();
        let alive = alive.clone();
        let tls = tls.clone();
        let (place, evicted) = waiting.join();
        let place = Mutex::new(Some(place));
        let conn = async move {
            let service = |name| FirstRequest {
                inner: make(peer, name),
                place,
            };
            let Some(tls) = tls else {
                return serve_http(&builder, counted, service(None), stop).await;
            };
            let handshake = tokio::select! {
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(counted)) => h,
                _ = stop.wait() => return,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    let name = super::tls::peer_name(stream.get_ref().1);
                    serve_http(&builder, stream, service(name), stop).await
                }
                // Scanners, plain-HTTP clients and clients that distrust the certificate.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        };
        tokio::spawn(async move {
            let _alive = alive;
            tokio::select! {
                () = conn => {}
                // Only an eviction sends; the sender dropped means the first request came.
                Ok(()) = evicted => {
                    tracing::debug!(%peer, "socket closed: no whole request within the grace, and a newer socket needed its place");
                }
            }
        });
    }
    drop(alive);
    // Every sender gone: every HTTP connection finished.
    let _ = drained.recv().await;
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades) on one socket, plain or TLS, until it ends or shutdown.
async fn serve_http<I, S, B>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    mut stop: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_conn(r),
        _ = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            log_conn(conn.await);
        }
    }
}

fn log_conn(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        // Header-read timeouts of slow or half-open clients land here.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_socket_cap_and_near_the_fd_limit() {
        let limits = Limits {
            max_sockets: 10,
            fd_limit: Some(20_000),
        };
        assert!(refusal(9, &limits, Some(100)).is_none());
        let e = refusal(10, &limits, Some(100)).unwrap();
        assert_eq!(e.code, ErrorCode::LimitReached);
        let e = refusal(0, &limits, Some(20_000 - FD_RESERVE)).unwrap();
        assert!(e.message.contains("open-file limit"), "{}", e.message);
        assert!(refusal(0, &limits, None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_waiting_socket_gives_its_place_only_after_the_grace() {
        use tokio::sync::oneshot::error::TryRecvError;
        let waiting = Arc::new(Waiting::default());
        let (first, mut first_closed) = waiting.join();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (second, mut second_closed) = waiting.join();
        assert!(!waiting.evict_oldest(), "evicted within the grace");
        tokio::time::advance(FIRST_REQUEST_GRACE).await;
        assert!(waiting.evict_oldest());
        assert_eq!(first_closed.try_recv(), Ok(()), "the oldest is told");
        assert_eq!(second_closed.try_recv(), Err(TryRecvError::Empty));
        drop(first);
        // The second's first request comes: it leaves the queue, so no one is left to evict,
        // and its task sees a closed channel, not an eviction.
        drop(second);
        assert!(!waiting.evict_oldest());
        assert_eq!(second_closed.try_recv(), Err(TryRecvError::Closed));
        assert!(waiting.lock().is_empty());
    }

    #[test]
    fn reads_the_open_file_limit_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|n| n > 0));
            assert!(open_fds().is_some_and(|n| n > 0));
        }
    }
}
