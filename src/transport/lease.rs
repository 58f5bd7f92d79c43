//! A socket's credential over its life: the socket closes with 4401 when the credential lapses
//! or is revoked, unless the client renews it in-band with an auth frame (`protocol::auth`).
//! [`Guarded`] wraps every session's socket, so every endpoint gets it.

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

/// What the access layer tells the socket about its credential.
pub trait Lease: Send {
    /// When the credential lapses, if ever.
    fn expires(&self) -> Option<SystemTime>;
    /// Checks a token from an auth frame: its new expiry when it names the same principal.
    fn renew(&self, token: String) -> Renewal;
    /// Ready when the credential was revoked (a reload dropped the user or token).
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// The lease plus its timer and any renewal in progress.
pub struct Keeper {
    lease: Box<dyn Lease>,
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
    pub fn new(lease: Box<dyn Lease>) -> Keeper {
        let deadline = lease
            .expires()
            .map(|at| Box::pin(tokio::time::sleep_until(until(at))));
        Keeper {
            lease,
            deadline,
            renewing: None,
        }
    }

    /// Starts checking a token from an auth frame (a newer frame replaces an older check).
    pub fn renew(&mut self, token: String) {
        self.renewing = Some(self.lease.renew(token));
    }

    /// Ready with a frame to send (a renewal went through), or with the error that ends the
    /// socket: the credential lapsed, was revoked, or a renewal was refused.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, ProtocolError>> {
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
        // A renewal under way keeps the socket open past the expiry until it is decided.
        if self.renewing.is_none() {
            if let Some(d) = &mut self.deadline {
                if d.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(unauthorized(
                        "credential expired; renew it before expiry with {\"type\":\"auth\",\"token\":\"...\"}",
                    )));
                }
            }
        }
        Poll::Pending
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
    keeper: Option<Keeper>,
    /// An operator's close request (`POST /admin/sessions/{id}/close`): resolves with the error
    /// the session closes with (`closed_by_admin`, 4410).
    closer: Option<Closer>,
    /// An answer to an auth frame, waiting for room in the socket. While it waits no further
    /// frame is read, so a client cannot queue answers without bound.
    out: Option<Message>,
}

/// What ends a socket from outside (an operator's close request).
pub type Closer = Pin<Box<dyn Future<Output = ProtocolError> + Send>>;

impl<S> Guarded<S> {
    pub fn new(ws: S, lease: Option<Box<dyn Lease>>) -> Self {
        Guarded {
            ws,
            keeper: lease.map(Keeper::new),
            closer: None,
            out: None,
        }
    }

    /// Also ends the socket when `closer` resolves.
    pub fn with_closer(mut self, closer: Closer) -> Self {
        self.closer = Some(closer);
        self
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
        if let Some(Poll::Ready(e)) = this.closer.as_mut().map(|c| c.as_mut().poll(cx)) {
            this.closer = None;
            return Poll::Ready(Some(Err(axum::Error::new(Ended(e)))));
        }
        loop {
            if let Some(k) = &mut this.keeper {
                match k.poll(cx) {
                    Poll::Ready(Ok(answer)) => {
                        this.out = Some(Message::Text(answer.into()));
                    }
                    Poll::Ready(Err(e)) => {
                        this.keeper = None;
                        return Poll::Ready(Some(Err(axum::Error::new(Ended(e)))));
                    }
                    Poll::Pending => {}
                }
            }
            if let Err(e) = ready!(this.poll_out(cx)) {
                return Poll::Ready(Some(Err(e)));
            }
            let m = ready!(Pin::new(&mut this.ws).poll_next(cx));
            let Some(Ok(Message::Text(t))) = &m else {
                return Poll::Ready(m);
            };
            match (auth_frame(t.as_str()), &mut this.keeper) {
                (None, _) => return Poll::Ready(m),
                (Some(Ok(token)), Some(k)) => k.renew(token),
                (Some(Ok(_)), None) => {
                    let e = ProtocolError::bad_request(
                        "this socket's credential does not expire or renew; auth frames are not taken",
                    );
                    this.out = Some(Message::Text(e.frame().into()));
                }
                (Some(Err(e)), _) => this.out = Some(Message::Text(e.frame().into())),
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
                lease,
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
