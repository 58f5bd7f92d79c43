//! What ends a connection from outside its session: the credential's lapse or revocation (a
//! [`Lease`]) and an operator's close request, watched together by a [`Watch`]. A WebSocket
//! closes with 4401 (or 4410 for the close request) unless the client renews its credential
//! in-band with an auth frame (`protocol::auth`); [`Guarded`] wraps every session's socket, so
//! every socket endpoint gets it. An event stream (`transport::sse`) polls its own `Watch` and has
//! no renewal: it has no way back to the proxy.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use futures::{Sink, Stream};
use tokio::time::Sleep;

use super::ws::{Ended, Message, Socket};
use crate::protocol::auth::{auth_frame, renewed_frame};
use crate::protocol::{ErrorCode, ProtocolError};

/// A credential check in progress.
pub type Renewal = Pin<Box<dyn Future<Output = Result<Option<SystemTime>, ProtocolError>> + Send>>;

/// What the access layer tells the connection about its credential.
pub trait Lease: Send {
    /// When the credential lapses, if ever.
    fn expires(&self) -> Option<SystemTime>;
    /// Checks a token from an auth frame: its new expiry when it names the same principal.
    fn renew(&self, token: String) -> Renewal;
    /// Ready when the credential was revoked (a reload dropped the user or token).
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Whether a connection can renew its credential in-band: a WebSocket can (auth frames), an
/// event stream cannot (its client reconnects with a fresh credential instead). Decides what the
/// expiry error tells the client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewable {
    InBand,
    ByReconnect,
}

impl Renewable {
    /// The message of the error that ends a connection whose credential lapsed.
    fn expired(self) -> &'static str {
        match self {
            Renewable::InBand => {
                "credential expired; renew it before expiry with {\"type\":\"auth\",\"token\":\"...\"}"
            }
            Renewable::ByReconnect => "credential expired; reconnect with a fresh credential",
        }
    }
}

/// The lease plus its timer and any renewal in progress.
struct Keeper {
    lease: Box<dyn Lease>,
    renewable: Renewable,
    deadline: Option<Pin<Box<Sleep>>>,
    renewing: Option<Renewal>,
}

fn until(at: SystemTime) -> tokio::time::Instant {
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::Instant::now() + left
}

fn unauthorized(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unauthorized, message)
}

impl Keeper {
    fn new(lease: Box<dyn Lease>, renewable: Renewable) -> Keeper {
        let deadline = lease
            .expires()
            .map(|at| Box::pin(tokio::time::sleep_until(until(at))));
        Keeper {
            lease,
            renewable,
            deadline,
            renewing: None,
        }
    }

    /// Starts checking a token from an auth frame (a newer frame replaces an older check).
    fn renew(&mut self, token: String) {
        self.renewing = Some(self.lease.renew(token));
    }

    /// Ready with a frame to send (a renewal went through), or with the error that ends the
    /// connection: the credential lapsed, was revoked, or a renewal was refused.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, ProtocolError>> {
        if let Some(r) = &mut self.renewing {
            if let Poll::Ready(result) = r.as_mut().poll(cx) {
                self.renewing = None;
                let expires =
                    result.map_err(|e| unauthorized(format!("renewal refused: {}", e.message)))?;
                self.deadline = expires.map(|at| Box::pin(tokio::time::sleep_until(until(at))));
                let secs = expires
                    .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                return Poll::Ready(Ok(renewed_frame(secs)));
            }
        }
        if self.lease.poll_revoked(cx).is_ready() {
            return Poll::Ready(Err(unauthorized("credential revoked")));
        }
        // A renewal under way keeps the connection open past the expiry until it is decided.
        if self.renewing.is_none() {
            if let Some(d) = &mut self.deadline {
                if d.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(unauthorized(self.renewable.expired())));
                }
            }
        }
        Poll::Pending
    }
}

/// What ends a connection from outside (an operator's close request): resolves with the error
/// the connection ends with.
pub type Closer = Pin<Box<dyn Future<Output = ProtocolError> + Send>>;

/// Everything that ends a connection from outside its session: its credential's lease (lapse,
/// revocation, refused renewal) and an operator's close request (`closed_by_admin`). Either
/// fires once; after that the watch is spent and stays pending.
#[derive(Default)]
pub struct Watch {
    keeper: Option<Keeper>,
    closer: Option<Closer>,
}

impl Watch {
    /// Watches `lease` (`None`: a credential that neither lapses nor can be revoked).
    pub fn new(lease: Option<Box<dyn Lease>>, renewable: Renewable) -> Watch {
        Watch {
            keeper: lease.map(|l| Keeper::new(l, renewable)),
            closer: None,
        }
    }

    /// Also ends the connection when `closer` resolves.
    pub fn with_closer(mut self, closer: Closer) -> Watch {
        self.closer = Some(closer);
        self
    }

    /// Starts checking a token from an auth frame; `false` when the credential neither lapses
    /// nor can be revoked (nothing to renew).
    fn renew(&mut self, token: String) -> bool {
        match &mut self.keeper {
            Some(k) => {
                k.renew(token);
                true
            }
            None => false,
        }
    }

    /// Ready with a renewal's answer frame, or with the error that ends the connection.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, ProtocolError>> {
        if let Some(Poll::Ready(e)) = self.closer.as_mut().map(|c| c.as_mut().poll(cx)) {
            *self = Watch::default();
            return Poll::Ready(Err(e));
        }
        match self.keeper.as_mut().map(|k| k.poll(cx)) {
            Some(Poll::Ready(Err(e))) => {
                *self = Watch::default();
                Poll::Ready(Err(e))
            }
            Some(Poll::Ready(Ok(answer))) => Poll::Ready(Ok(answer)),
            Some(Poll::Pending) | None => Poll::Pending,
        }
    }

    /// Ready with the error that ends a connection that takes no renewals (an event stream).
    pub fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<ProtocolError> {
        // Without `renew` there is no renewal answer: a ready answer cannot come.
        match self.poll(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(e),
            Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
        }
    }
}

/// A socket that carries its session's credential: the one place every endpoint's socket gets
/// expiry, revocation and in-band renewal without its use case knowing. When the credential
/// lapses, is revoked or a renewal is refused, its next read is that error, so every session,
/// whatever its use case, closes with the error's frame and close code (4401 for
/// `unauthorized`). Auth frames (`protocol::auth`) are answered here and never reach the use
/// case. A session that is not reading (backpressure) sees an end when it reads again.
pub struct Guarded<S> {
    ws: S,
    /// The credential's lease and an operator's close request (`POST
    /// /admin/sessions/{id}/close`, `closed_by_admin`, 4410).
    watch: Watch,
    /// An answer to an auth frame, waiting for room in the socket. While it waits no further
    /// frame is read, so a client cannot queue answers without bound.
    out: Option<Message>,
}

impl<S> Guarded<S> {
    /// `watch` should be made with `Renewable::InBand`: auth frames renew the credential.
    pub fn new(ws: S, watch: Watch) -> Self {
        Guarded {
            ws,
            watch,
            out: None,
        }
    }
}

impl<S: Socket> Guarded<S> {
    /// Hands the waiting answer to the socket; `Pending` while it has no room.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        if self.out.is_some() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx))?;
            if let Some(m) = self.out.take() {
                Pin::new(&mut self.ws).start_send(m)?;
            }
            // The owner may have nothing to flush for a while: push the answer out now.
            let _ = Pin::new(&mut self.ws).poll_flush(cx)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Socket> Stream for Guarded<S> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.watch.poll(cx) {
                Poll::Ready(Ok(answer)) => this.out = Some(Message::Text(answer.into())),
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(axum::Error::new(Ended(e))))),
                Poll::Pending => {}
            }
            if let Err(e) = ready!(this.poll_out(cx)) {
                return Poll::Ready(Some(Err(e)));
            }
            let m = ready!(Pin::new(&mut this.ws).poll_next(cx));
            let Some(Ok(Message::Text(t))) = &m else {
                return Poll::Ready(m);
            };
            match auth_frame(t.as_str()) {
                None => return Poll::Ready(m),
                Some(Ok(token)) => {
                    if !this.watch.renew(token) {
                        let e = ProtocolError::bad_request(
                            "this socket's credential does not expire or renew; auth frames are not taken",
                        );
                        this.out = Some(Message::Text(e.frame().into()));
                    }
                }
                Some(Err(e)) => this.out = Some(Message::Text(e.frame().into())),
            }
        }
    }
}

impl<S: Socket> Sink<Message> for Guarded<S> {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        // An auth answer goes before the owner's next frame.
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.ws).poll_ready(cx)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.get_mut().ws).start_send(item)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().ws).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::*;
    use crate::transport::ws::{read_end, End};

    /// A socket fed from a channel; what is sent to it is recorded.
    struct Pipe {
        rx: mpsc::UnboundedReceiver<Message>,
        sent: Arc<Mutex<Vec<String>>>,
    }
    impl Stream for Pipe {
        type Item = Result<Message, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.rx.poll_recv(cx).map(|m| m.map(Ok))
        }
    }
    impl Sink<Message> for Pipe {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), Self::Error> {
            if let Message::Text(t) = m {
                self.sent.lock().unwrap().push(t.to_string());
            }
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Expires `first` seconds from now; the token "good-N" renews it for N seconds.
    struct Timed(u64);
    impl Lease for Timed {
        fn expires(&self) -> Option<SystemTime> {
            Some(SystemTime::now() + Duration::from_secs(self.0))
        }
        fn renew(&self, token: String) -> Renewal {
            Box::pin(async move {
                match token
                    .strip_prefix("good-")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => Ok(Some(SystemTime::now() + Duration::from_secs(n))),
                    None => Err(unauthorized("bad token")),
                }
            })
        }
        fn poll_revoked(&mut self, _: &mut Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }

    fn guarded(
        lease: Option<Box<dyn Lease>>,
    ) -> (
        Guarded<Pipe>,
        mpsc::UnboundedSender<Message>,
        Arc<Mutex<Vec<String>>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sent = Arc::new(Mutex::new(Vec::new()));
        (
            Guarded::new(
                Pipe {
                    rx,
                    sent: sent.clone(),
                },
                Watch::new(lease, Renewable::InBand),
            ),
            tx,
            sent,
        )
    }

    fn end_of(item: Option<Result<Message, axum::Error>>) -> ProtocolError {
        match read_end(&item.expect("an item").expect_err("an end"), 1024) {
            End::Error(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lapsed_credential_ends_the_socket_with_4401() {
        let (mut g, _tx, _) = guarded(Some(Box::new(Timed(1))));
        let t = std::time::Instant::now();
        let e = end_of(g.next().await);
        assert_eq!(e.code.close_code(), 4401);
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_stream_without_renewal_is_told_to_reconnect() {
        let mut w = Watch::new(Some(Box::new(Timed(1))), Renewable::ByReconnect);
        let e = std::future::poll_fn(|cx| w.poll_end(cx)).await;
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert_eq!(
            e.message,
            "credential expired; reconnect with a fresh credential"
        );
        // Spent: it fires once.
        let again = tokio::time::timeout(
            Duration::from_millis(50),
            std::future::poll_fn(|cx| w.poll_end(cx)),
        )
        .await;
        assert!(again.is_err());
    }

    #[tokio::test]
    async fn auth_frames_renew_and_never_reach_the_owner() {
        let (mut g, tx, sent) = guarded(Some(Box::new(Timed(1))));
        tx.send(Message::Text(r#"{"type":"auth","token":"good-30"}"#.into()))
            .unwrap();
        tx.send(Message::Text(r#"{"type":"ack","batch":1}"#.into()))
            .unwrap();
        let m = g.next().await.unwrap().unwrap();
        assert_eq!(m, Message::Text(r#"{"type":"ack","batch":1}"#.into()));
        // Past the first expiry, still open: the renewal moved it.
        let quiet = tokio::time::timeout(Duration::from_millis(2500), g.next()).await;
        assert!(quiet.is_err(), "renewed: no end at the old expiry");
        let answers = sent.lock().unwrap().clone();
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert!(
            answers[0].starts_with(r#"{"type":"auth","expires":"#),
            "{answers:?}"
        );
        // A refused renewal ends the socket.
        tx.send(Message::Text(r#"{"type":"auth","token":"nope"}"#.into()))
            .unwrap();
        let e = end_of(g.next().await);
        assert_eq!(e.code.close_code(), 4401);
        assert!(e.message.contains("renewal refused"), "{}", e.message);
    }

    #[tokio::test]
    async fn malformed_auth_frames_get_an_error_frame() {
        let (mut g, tx, sent) = guarded(None);
        tx.send(Message::Text(r#"{"type":"auth"}"#.into())).unwrap();
        tx.send(Message::Text(r#"{"type":"auth","token":"x"}"#.into()))
            .unwrap();
        tx.send(Message::Text("data".into())).unwrap();
        assert_eq!(
            g.next().await.unwrap().unwrap(),
            Message::Text("data".into())
        );
        let answers = sent.lock().unwrap().clone();
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| a.contains(r#""code":"bad_request""#)),
            "{answers:?}"
        );
    }
}
