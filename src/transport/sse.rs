//! The Server-Sent Events driver: an HTTP response body fed from a queue the session owns, with
//! the `retry:` hint, keep-alive comments, stall detection and the end of the stream, including
//! an end from outside (the credential's lease or an operator's close: a [`Watch`]).
//!
//! Like `ws::Conn`, an [`SseConn`] lives in its session's task and is polled beside Kafka. The
//! HTTP connection (hyper, in the connection's own task) takes chunks from the [`SseBody`] as the
//! peer reads them. A chunk taken counts as written (`Written`), which is what commits and flow
//! control go by: a peer that stops reading stops hyper from taking chunks, the queue stays full,
//! and the session holds, then pauses its partitions, as it does for a WebSocket.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use super::lease::Watch;
use super::ws::{End, Io, Note, Utf8Bytes, Written};
use super::Outbound;
use crate::protocol::sse::{error_end, event, preamble, KEEP_ALIVE};

/// State the session and the body share.
#[derive(Default)]
struct Shared {
    queue: VecDeque<(Bytes, Note)>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// Noted chunks the body handed to the connection since the owner last looked.
    written: Vec<Written>,
    /// Some chunk was handed over since the owner last looked.
    progress: bool,
    /// The body was dropped: the connection closed.
    gone: bool,
    /// Nothing more will be queued: the body ends once the queue is empty.
    ended: bool,
    owner: Option<Waker>,
    body: Option<Waker>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Nothing panics while holding it; a poisoned lock's state is still consistent.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// The session's end of one event stream.
pub struct SseConn {
    shared: Arc<Mutex<Shared>>,
    keep_alive: Interval,
    stall: Pin<Box<Sleep>>,
    stall_armed: bool,
    stall_limit: Duration,
    stalled: bool,
    /// Ends the stream with its error when the credential lapses or is revoked, or an operator
    /// closes the session. Polled whatever the session is doing: an event stream is never read,
    /// so unlike a socket it does not wait for a read to notice.
    watch: Watch,
}

/// The response body: the chunks the session queued, in order. Dropped by hyper when the
/// connection closes, which the session sees as the client leaving.
pub struct SseBody {
    shared: Arc<Mutex<Shared>>,
}

impl SseConn {
    /// A stream that starts with the `retry:` hint, sends a keep-alive comment every
    /// `keep_alive` with nothing else queued, gives up on a peer that takes no bytes for
    /// `stall_limit`, and ends with an error event when `watch` fires.
    pub fn new(keep_alive: Duration, stall_limit: Duration, watch: Watch) -> (SseConn, SseBody) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let now = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(now + keep_alive, keep_alive);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut conn = SseConn {
            shared: shared.clone(),
            keep_alive: tick,
            stall: Box::pin(tokio::time::sleep_until(now)),
            stall_armed: false,
            stall_limit,
            stalled: false,
            watch,
        };
        conn.push(Bytes::from(preamble()), Note::default());
        (conn, SseBody { shared })
    }

    /// Queues a chunk; dropped once the stream is over.
    pub fn push(&mut self, chunk: Bytes, note: Note) {
        let mut s = lock(&self.shared);
        if s.gone || s.ended || self.stalled {
            return;
        }
        s.queued_bytes += chunk.len();
        s.queue.push_back((chunk, note));
        wake(&mut s.body);
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Io> {
        if self.stalled {
            return Poll::Ready(Io::End(End::Stalled));
        }
        let shared = self.shared.clone();
        let mut s = lock(&shared);
        if s.gone {
            return Poll::Ready(Io::End(End::ClientGone));
        }
        if let Poll::Ready(e) = self.watch.poll_end(cx) {
            return Poll::Ready(Io::End(End::Error(e)));
        }
        while self.keep_alive.poll_tick(cx).is_ready() {
            // Only an idle stream needs one: anything queued keeps the connection busy anyway.
            if s.queue.is_empty() {
                s.queued_bytes += KEEP_ALIVE.len();
                s.queue
                    .push_back((Bytes::from_static(KEEP_ALIVE.as_bytes()), Note::default()));
                wake(&mut s.body);
            }
        }
        if std::mem::take(&mut s.progress) || !s.written.is_empty() {
            self.stall_armed = false;
            return Poll::Ready(Io::Written);
        }
        if s.queue.is_empty() {
            self.stall_armed = false;
        } else {
            if !self.stall_armed {
                self.stall_armed = true;
                let at = tokio::time::Instant::now() + self.stall_limit;
                self.stall.as_mut().reset(at);
            }
            if self.stall.as_mut().poll(cx).is_ready() {
                self.stalled = true;
                s.queue.clear();
                s.queued_bytes = 0;
                return Poll::Ready(Io::End(End::Stalled));
            }
        }
        s.owner = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ends the body once what is queued was taken; resolves then, or when the client left.
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.shared);
        if s.gone || s.queue.is_empty() {
            return Poll::Ready(());
        }
        s.owner = Some(cx.waker().clone());
        Poll::Pending
    }

    fn end(&mut self, drop_queue: bool) {
        let mut s = lock(&self.shared);
        s.ended = true;
        if drop_queue {
            s.queue.clear();
            s.queued_bytes = 0;
        }
        wake(&mut s.body);
    }
}

impl Drop for SseConn {
    /// Whatever the session did not wait for is dropped: the stream is over.
    fn drop(&mut self) {
        self.end(true);
    }
}

impl Outbound for SseConn {
    fn push_frame(&mut self, text: Utf8Bytes, note: Note) {
        self.push(Bytes::from(text), note);
    }
    fn push_event(&mut self, kind: &'static str, json: String) {
        self.push(Bytes::from(event(kind, &json)), Note::default());
    }
    fn queued_frames(&self) -> usize {
        lock(&self.shared).queue.len()
    }
    fn queued_bytes(&self) -> usize {
        lock(&self.shared).queued_bytes
    }
    fn is_open(&self) -> bool {
        let s = lock(&self.shared);
        !(s.gone || s.ended || self.stalled)
    }
    fn io(&mut self, _reading: bool) -> impl Future<Output = Io> + Send + '_ {
        // Nothing is read: an event stream has no way back to the proxy.
        std::future::poll_fn(move |cx| self.poll_io(cx))
    }
    fn take_written(&mut self, into: &mut Vec<Written>) {
        into.append(&mut lock(&self.shared).written);
    }
    /// An error becomes an `error` event (after a long `retry:` for an operator's close); a
    /// shutdown just ends the stream (the browser reconnects with its `Last-Event-ID`). Nothing
    /// is sent to a peer that left or stalled.
    async fn finish(&mut self, end: &End, error_frame: bool, budget: Duration) {
        match end {
            End::ClientGone | End::Silent | End::Stalled => {
                self.end(true);
                return;
            }
            End::Error(e) if error_frame => self.push(Bytes::from(error_end(e)), Note::default()),
            End::Error(_) | End::Shutdown | End::Violation(..) => {}
        }
        self.end(false);
        let limit = budget.min(self.stall_limit);
        let drained = std::future::poll_fn(|cx| self.poll_drained(cx));
        let _ = tokio::time::timeout(limit, drained).await;
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = lock(&self.shared);
        if let Some((chunk, note)) = s.queue.pop_front() {
            s.queued_bytes -= chunk.len();
            s.progress = true;
            if note.batch != 0 {
                s.written.push(Written {
                    note,
                    bytes: chunk.len(),
                });
            }
            wake(&mut s.owner);
            return Poll::Ready(Some(Ok(chunk)));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        s.body = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.gone = true;
        s.queue.clear();
        s.queued_bytes = 0;
        wake(&mut s.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[tokio::test]
    async fn chunks_flow_in_order_and_are_reported_written() {
        let (mut conn, mut body) = SseConn::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Watch::default(),
        );
        assert_eq!(
            text(&body.next().await.unwrap().unwrap()),
            "retry: 2000\n\n"
        );
        conn.push_frame(
            "data: 1\n\n".into(),
            Note {
                batch: 7,
                records: 1,
            },
        );
        conn.push_event("assigned", "{}".into());
        assert_eq!(conn.queued_frames(), 2);
        assert_eq!(
            conn.queued_bytes(),
            9 + "event: assigned\ndata: {}\n\n".len()
        );
        assert_eq!(text(&body.next().await.unwrap().unwrap()), "data: 1\n\n");
        assert!(matches!(conn.io(false).await, Io::Written));
        let mut w = Vec::new();
        conn.take_written(&mut w);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].note.batch, 7);
        assert_eq!(w[0].bytes, 9);
        let e = End::Error(crate::protocol::ProtocolError::bad_request("x"));
        let finishing = tokio::spawn(async move {
            conn.finish(&e, true, Duration::from_secs(5)).await;
        });
        let mut rest = String::new();
        while let Some(c) = body.next().await {
            rest.push_str(text(&c.unwrap()));
        }
        finishing.await.unwrap();
        assert!(rest.starts_with("event: assigned\n"), "{rest}");
        assert!(rest.ends_with("event: error\ndata: {\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"x\"}\n\n"), "{rest}");
    }

    #[tokio::test]
    async fn keep_alive_when_idle_and_stall_when_unread() {
        let ms = Duration::from_millis;
        let (mut conn, mut body) = SseConn::new(ms(200), ms(600), Watch::default());
        body.next().await;
        let _ = conn.io(false).await; // the preamble was taken
        let io = tokio::time::timeout(ms(150), conn.io(false)).await;
        assert!(io.is_err(), "nothing to report while idle");
        // The keep-alive is queued when the owner polls after the interval.
        let io = tokio::time::timeout(ms(200), conn.io(false)).await;
        assert!(io.is_err());
        assert_eq!(text(&body.next().await.unwrap().unwrap()), KEEP_ALIVE);
        // Nobody reads from here on: the stream gives up after the stall limit.
        conn.push_frame("data: x\n\n".into(), Note::default());
        let started = std::time::Instant::now();
        let r = loop {
            match tokio::time::timeout(ms(2000), conn.io(false)).await {
                Ok(Io::Written) => continue,
                r => break r,
            }
        };
        assert!(matches!(r, Ok(Io::End(End::Stalled))));
        assert!(started.elapsed() >= ms(550), "{:?}", started.elapsed());
        assert!(!conn.is_open());
        assert_eq!(conn.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_watch_that_fires_ends_the_stream_with_its_error() {
        use crate::protocol::{ErrorCode, ProtocolError};
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let closer = Box::pin(async move {
            let _ = rx.await;
            ProtocolError::new(ErrorCode::ClosedByAdmin, "maintenance")
        });
        let watch = Watch::default().with_closer(closer);
        let (mut conn, mut body) =
            SseConn::new(Duration::from_secs(60), Duration::from_secs(60), watch);
        body.next().await;
        let _ = conn.io(false).await; // the preamble was taken
        let quiet = tokio::time::timeout(Duration::from_millis(50), conn.io(false)).await;
        assert!(
            quiet.is_err(),
            "nothing ends the stream before the watch fires"
        );
        tx.send(()).unwrap();
        let end = match conn.io(false).await {
            Io::End(end @ End::Error(_)) => end,
            _ => panic!("the watch's error ends the stream"),
        };
        let finishing = tokio::spawn(async move {
            conn.finish(&end, true, Duration::from_secs(5)).await;
        });
        let mut rest = String::new();
        while let Some(c) = body.next().await {
            rest.push_str(text(&c.unwrap()));
        }
        finishing.await.unwrap();
        assert_eq!(
            rest,
            "retry: 300000\n\nevent: error\ndata: {\"type\":\"error\",\"code\":\"closed_by_admin\",\"message\":\"maintenance\"}\n\n"
        );
    }

    #[tokio::test]
    async fn a_dropped_body_is_a_client_gone() {
        let (mut conn, body) = SseConn::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Watch::default(),
        );
        drop(body);
        assert!(matches!(conn.io(false).await, Io::End(End::ClientGone)));
        assert!(!conn.is_open());
    }
}
