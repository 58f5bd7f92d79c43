//! The one WebSocket driver every endpoint uses: queued writes with stall detection, pings,
//! dead-peer detection, read errors classified by type, and the close sequence.
//!
//! A use case owns a [`Conn`] inside its own task and polls it beside its other sources (Kafka,
//! the tail ring, delivery reports). No socket has reader or writer tasks of its own: a hand-off
//! between tasks costs a wake-up per frame, and one task per socket keeps the live tail's
//! per-socket memory small. Writes never block the owner: frames are queued here and written
//! whenever the owner polls, so a slow socket cannot stop a session from serving Kafka (group
//! rebalances included).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

pub use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream};
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;

/// What a `Conn` drives: axum's `WebSocket`, or a channel pair in unit tests.
pub trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// Why a socket ends. Each end has one close code (docs/PROTOCOL.md, "Close codes").
#[derive(Debug)]
pub enum End {
    /// The client closed (tungstenite echoes its close frame) or the connection broke.
    ClientGone,
    /// The proxy is shutting down: 1001.
    Shutdown,
    /// A documented error: an error frame (v1 sockets), then 4000 + its HTTP status.
    Error(ProtocolError),
    /// A WebSocket-level violation (RFC 6455): 1002 or 1007, no error frame.
    Violation(u16, String),
    /// No frame, not even a pong, for three ping intervals: dropped.
    Silent,
    /// The peer took no bytes for the stall limit: nothing more is written.
    Stalled,
}

impl End {
    /// The close frame this end sends, if any.
    pub fn close(&self) -> Option<(u16, String)> {
        match self {
            End::ClientGone | End::Silent | End::Stalled => None,
            End::Shutdown => Some((1001, "proxy shutting down".to_string())),
            End::Error(e) => Some((e.code.close_code(), e.close_reason())),
            End::Violation(code, reason) => Some((*code, reason.clone())),
        }
    }
}

/// Maps a failed read to how the socket ends, by the error's type (tungstenite's, or a
/// [`Guarded`] socket's end), not its text.
pub fn read_end(e: &axum::Error, max_frame_bytes: usize) -> End {
    use std::error::Error as _;
    use tungstenite::Error as W;
    if let Some(Ended(e)) = e.source().and_then(|s| s.downcast_ref::<Ended>()) {
        return End::Error(e.clone());
    }
    match e.source().and_then(|s| s.downcast_ref::<W>()) {
        Some(w @ W::Capacity(_)) => End::Error(ProtocolError::new(
            ErrorCode::TooLarge,
            format!("frame exceeds maxFrameBytes ({max_frame_bytes} bytes): {w}"),
        )),
        Some(W::Utf8(_)) => End::Violation(1007, "text frame is not valid UTF-8".into()),
        Some(W::Protocol(_) | W::AttackAttempt) => {
            End::Violation(1002, "WebSocket protocol error".into())
        }
        _ => End::ClientGone,
    }
}

/// Why a [`Guarded`] socket ended, carried as its read error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Ended(pub(crate) ProtocolError);

pub use super::lease::Guarded;

/// A socket that took no bytes for this many ping intervals is given up.
pub fn stall_limit(ping_interval: Duration) -> Duration {
    ping_interval * 3
}

/// A frame the client sent.
pub enum Inbound {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// What a queued frame carries, reported back once it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Note {
    /// The record frame's `batch` number; 0 for frames that are not record frames.
    pub batch: u64,
    /// Records the frame delivers or answers.
    pub records: u32,
}

/// A frame the socket took (flushed to the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub note: Note,
    pub bytes: usize,
}

/// Whether frames can still be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The client closed or the socket broke: frames are dropped, only a flush is attempted.
    Gone,
    /// The peer took no bytes for the stall limit: nothing more is written.
    Stalled,
}

/// What `Conn::poll_io` reports.
pub enum Io {
    /// Frames were written (there is room in the queue again); `Conn::take_written` lists the
    /// noted ones.
    Written,
    Frame(Inbound),
    End(End),
}

/// The driver of one WebSocket.
pub struct Conn<S> {
    ws: S,
    queue: VecDeque<(Message, Note, usize)>,
    queued_bytes: usize,
    queued_records: usize,
    /// Frames handed to the socket since its last flush.
    sending: Vec<Written>,
    /// Frames flushed since the owner last looked.
    written: Vec<Written>,
    /// Some frame was flushed since the owner last looked (noted or not): the owner may have
    /// been waiting for room in the queue.
    progress: bool,
    state: State,
    ping: Interval,
    ping_due: bool,
    /// Something (a frame or tungstenite's pong) waits for a flush.
    unflushed: bool,
    /// Liveness check, once a second.
    tick: Interval,
    last_seen: Instant,
    /// A frame was read since the last tick.
    seen: bool,
    dead_after: Duration,
    stall: Pin<Box<Sleep>>,
    stall_armed: bool,
    stall_limit: Duration,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    max_frame_bytes: usize,
}

impl<S: Socket> Conn<S> {
    pub fn new(
        ws: S,
        ping_interval: Duration,
        max_frame_bytes: usize,
        mut shutdown: Shutdown,
    ) -> Self {
        let now = tokio::time::Instant::now();
        let mut tick =
            tokio::time::interval_at(now + Duration::from_secs(1), Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval_at(now + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Conn {
            ws,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_records: 0,
            sending: Vec::new(),
            written: Vec::new(),
            progress: false,
            state: State::Open,
            ping,
            ping_due: false,
            unflushed: false,
            tick,
            last_seen: Instant::now(),
            seen: false,
            dead_after: ping_interval * 3,
            stall: Box::pin(tokio::time::sleep_until(now)),
            stall_armed: false,
            stall_limit: stall_limit(ping_interval),
            shutdown: Box::pin(async move { shutdown.wait().await }),
            max_frame_bytes,
        }
    }

    /// Queues a frame; it is written as the owner polls. Dropped once the socket is gone.
    pub fn push(&mut self, msg: Message, note: Note) {
        if self.state != State::Open {
            return;
        }
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        self.queued_bytes += len;
        self.queued_records += note.records as usize;
        self.queue.push_back((msg, note, len));
    }

    /// Queues a text frame with nothing to report.
    pub fn push_text(&mut self, text: impl Into<Utf8Bytes>) {
        self.push(Message::Text(text.into()), Note::default());
    }

    /// Frames queued or handed to the socket and not yet flushed.
    pub fn queued_frames(&self) -> usize {
        self.queue.len() + self.sending.len()
    }

    /// Bytes of the frames queued or not yet flushed.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Records in the frames queued or not yet flushed.
    pub fn queued_records(&self) -> usize {
        self.queued_records
    }

    /// Whether frames can still be written.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The client left: queued frames are dropped (tungstenite refuses to send after the peer's
    /// close frame); only the flush of its close echo is still tried.
    pub fn client_gone(&mut self) {
        if self.state == State::Open {
            self.state = State::Gone;
        }
        self.drop_queue();
    }

    fn drop_queue(&mut self) {
        self.queue.clear();
        self.sending.clear();
        self.queued_bytes = 0;
        self.queued_records = 0;
    }

    /// Moves the noted frames written since the last call to `into`.
    pub fn take_written(&mut self, into: &mut Vec<Written>) {
        if into.is_empty() {
            std::mem::swap(into, &mut self.written);
        } else {
            into.append(&mut self.written);
        }
    }

    /// Whether frames were flushed since the last call.
    pub fn take_progress(&mut self) -> bool {
        std::mem::take(&mut self.progress)
    }

    /// Ready once the proxy shuts down (and on every poll after that).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shutdown.as_mut().poll(cx)
    }

    /// Writes the queued frames and a due ping and flushes them. `Ready(Ok)` once everything is
    /// written (or the socket is no longer open), `Pending` while the peer does not take them,
    /// `Ready(Err)` when the socket broke or stalled.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        if self.state != State::Open {
            return Poll::Ready(Ok(()));
        }
        if self.ping.poll_tick(cx).is_ready() {
            self.ping_due = true;
        }
        match self.try_write(cx) {
            Poll::Ready(Ok(())) => {
                self.stall_armed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(_)) => {
                self.state = State::Gone;
                self.drop_queue();
                Poll::Ready(Err(End::ClientGone))
            }
            Poll::Pending => {
                if !self.stall_armed {
                    self.stall_armed = true;
                    let at = tokio::time::Instant::now() + self.stall_limit;
                    self.stall.as_mut().reset(at);
                }
                if self.stall.as_mut().poll(cx).is_ready() {
                    self.state = State::Stalled;
                    self.drop_queue();
                    return Poll::Ready(Err(End::Stalled));
                }
                Poll::Pending
            }
        }
    }

    fn try_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let mut ws = Pin::new(&mut self.ws);
        while self.ping_due || !self.queue.is_empty() {
            ready!(ws.as_mut().poll_ready(cx))?;
            let msg = if std::mem::take(&mut self.ping_due) {
                Message::Ping(Bytes::new())
            } else if let Some((msg, note, bytes)) = self.queue.pop_front() {
                self.sending.push(Written { note, bytes });
                msg
            } else {
                break;
            };
            ws.as_mut().start_send(msg)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(ws.as_mut().poll_flush(cx))?;
            self.unflushed = false;
        }
        self.progress |= !self.sending.is_empty();
        for w in self.sending.drain(..) {
            self.queued_bytes -= w.bytes;
            self.queued_records -= w.note.records as usize;
            if w.note.batch != 0 {
                self.written.push(w);
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the next data frame. Pings and pongs count as signs of life and are handled here.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Inbound, End>> {
        loop {
            let msg = ready!(Pin::new(&mut self.ws).poll_next(cx));
            self.seen = true;
            match msg {
                Some(Ok(Message::Text(t))) => return Poll::Ready(Ok(Inbound::Text(t))),
                Some(Ok(Message::Binary(b))) => return Poll::Ready(Ok(Inbound::Binary(b))),
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite queued the pong; send it now rather than with the next frame.
                    self.unflushed = true;
                    if let Poll::Ready(Err(end)) = self.poll_write(cx) {
                        return Poll::Ready(Err(end));
                    }
                }
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Err(End::ClientGone)),
                Some(Err(e)) => return Poll::Ready(Err(read_end(&e, self.max_frame_bytes))),
            }
        }
    }

    /// Ready with `End::Silent` when nothing came from the peer for three ping intervals while
    /// the owner was reading. Time spent not reading (backpressure) does not count as silence.
    pub fn poll_alive(&mut self, cx: &mut Context<'_>, reading: bool) -> Poll<End> {
        while self.tick.poll_tick(cx).is_ready() {
            let now = Instant::now();
            if !reading || std::mem::take(&mut self.seen) {
                self.last_seen = now;
            } else if now.duration_since(self.last_seen) > self.dead_after {
                return Poll::Ready(End::Silent);
            }
        }
        Poll::Pending
    }

    /// Writes, then reads one frame when `reading`, then checks liveness.
    pub fn poll_io(&mut self, cx: &mut Context<'_>, reading: bool) -> Poll<Io> {
        if let Poll::Ready(Err(end)) = self.poll_write(cx) {
            return Poll::Ready(Io::End(end));
        }
        if self.take_progress() || !self.written.is_empty() {
            return Poll::Ready(Io::Written);
        }
        if reading && self.state == State::Open {
            match self.poll_read(cx) {
                Poll::Ready(Ok(f)) => return Poll::Ready(Io::Frame(f)),
                Poll::Ready(Err(end)) => return Poll::Ready(Io::End(end)),
                Poll::Pending => {}
            }
        }
        if let Poll::Ready(end) = self.poll_alive(cx, reading) {
            return Poll::Ready(Io::End(end));
        }
        Poll::Pending
    }

    /// `poll_io` as a future (cancel-safe: all state lives in the `Conn`).
    pub fn io(&mut self, reading: bool) -> impl Future<Output = Io> + '_ {
        std::future::poll_fn(move |cx| self.poll_io(cx, reading))
    }

    /// The close sequence: the frames queued before the end, an error frame if `error_frame`
    /// and the end is an error, then the end's close frame; only a flush when the client left.
    /// Bounded by `budget` and by the stall limit, so shutdown never waits on a stuck peer.
    pub async fn finish(&mut self, end: &End, error_frame: bool, budget: Duration) {
        if let End::ClientGone | End::Silent = end {
            self.client_gone();
        }
        let limit = budget.min(self.stall_limit);
        let _ = tokio::time::timeout(limit, self.close_sequence(end, error_frame)).await;
    }

    async fn close_sequence(&mut self, end: &End, error_frame: bool) {
        match self.state {
            State::Stalled => return,
            State::Gone => {
                let _ = self.ws.flush().await;
                return;
            }
            State::Open => {}
        }
        if let (true, End::Error(e)) = (error_frame, end) {
            self.push_text(e.frame());
        }
        let close = end.close().map(|(code, reason)| {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        });
        if let Some(close) = close {
            self.push(close, Note::default());
        }
        let written = std::future::poll_fn(|cx| self.poll_write(cx)).await;
        if written.is_ok() && self.unflushed {
            let _ = self.ws.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(e: tungstenite::Error) -> axum::Error {
        axum::Error::new(e)
    }

    #[test]
    fn read_errors_are_classified_by_type() {
        let too_long = wrap(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong {
                size: 9,
                max_size: 4,
            },
        ));
        match read_end(&too_long, 4) {
            End::Error(e) => {
                assert_eq!(e.code, ErrorCode::TooLarge);
                assert!(
                    e.message.contains("maxFrameBytes (4 bytes)"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_end(&wrap(tungstenite::Error::Utf8("x".into())), 4),
            End::Violation(1007, _)
        ));
        assert!(matches!(
            read_end(
                &wrap(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::NonZeroReservedBits
                )),
                4
            ),
            End::Violation(1002, _)
        ));
        assert!(matches!(
            read_end(&wrap(tungstenite::Error::ConnectionClosed), 4),
            End::ClientGone
        ));
        // An error that is not tungstenite's (the connection itself) ends quietly.
        let io = axum::Error::new(std::io::Error::other("reset"));
        assert!(matches!(read_end(&io, 4), End::ClientGone));
    }

    #[tokio::test]
    async fn a_guarded_socket_ends_with_its_guards_error() {
        use futures::StreamExt;
        // A socket that never yields a frame: only the guard can end it.
        struct Idle;
        impl Stream for Idle {
            type Item = Result<Message, axum::Error>;
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                Poll::Pending
            }
        }
        impl Sink<Message> for Idle {
            type Error = axum::Error;
            fn poll_ready(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
                Ok(())
            }
            fn poll_flush(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
        }
        struct Revocable(tokio::sync::oneshot::Receiver<()>);
        impl crate::transport::lease::Lease for Revocable {
            fn expires(&self) -> Option<std::time::SystemTime> {
                None
            }
            fn renew(&self, _: String) -> crate::transport::lease::Renewal {
                Box::pin(async { Ok(None) })
            }
            fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
                Pin::new(&mut self.0).poll(cx).map(|_| ())
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let watch = crate::transport::lease::Watch::new(
            Some(Box::new(Revocable(rx))),
            crate::transport::lease::Renewable::InBand,
        );
        let mut g = Guarded::new(Idle, watch);
        let quiet = tokio::time::timeout(Duration::from_millis(50), g.next()).await;
        assert!(quiet.is_err(), "no frame and no end before the guard fires");
        tx.send(()).unwrap();
        let e = g.next().await.unwrap().unwrap_err();
        match read_end(&e, 1024) {
            End::Error(e) => {
                assert_eq!(e.code.close_code(), 4401);
                assert_eq!(e.close_reason(), "unauthorized: credential revoked");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_end_has_one_close() {
        assert_eq!(End::ClientGone.close(), None);
        assert_eq!(End::Silent.close(), None);
        assert_eq!(End::Stalled.close(), None);
        assert_eq!(End::Shutdown.close().map(|c| c.0), Some(1001));
        assert_eq!(
            End::Error(ProtocolError::new(ErrorCode::UnknownTopic, "x"))
                .close()
                .map(|c| c.0),
            Some(4404)
        );
        assert_eq!(
            End::Violation(1007, "r".into()).close(),
            Some((1007, "r".into()))
        );
    }
}
