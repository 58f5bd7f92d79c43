//! How clients are connected: `listen`, the accept loop with the connection-level limits;
//! `tls`, the listener's certificate (loaded, reloaded) and handshakes; `ws`, the one
//! WebSocket driver every socket endpoint uses; and `sse`, the Server-Sent Events driver.
//! Both drivers are [`Outbound`], so a use case is written once for either.

pub mod lease;
pub mod listen;
pub mod sse;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::time::Duration;

use ws::{End, Io, Message, Note, Utf8Bytes, Written};

/// What a session writes to and polls beside its other sources: a WebSocket ([`ws::Conn`]) or
/// a Server-Sent Events body ([`sse::SseConn`]). Writes never block the owner: frames are
/// queued and written as the owner polls `io`; written frames are reported by `take_written`.
pub trait Outbound: Send {
    /// Queues a frame of records; `note` comes back through `take_written` once written.
    fn push_frame(&mut self, text: Utf8Bytes, note: Note);
    /// Queues a control message, the JSON of a frame whose `type` is `kind` (`error`,
    /// `assigned`, `revoked`, `skipped`): a text frame on a WebSocket, a named event on SSE.
    fn push_event(&mut self, kind: &'static str, json: String);
    /// Frames queued and not yet written.
    fn queued_frames(&self) -> usize;
    /// Bytes of the frames queued and not yet written.
    fn queued_bytes(&self) -> usize;
    /// Whether frames can still be written.
    fn is_open(&self) -> bool;
    /// Writes what is queued; ready when frames were written, a client frame arrived (read
    /// only when `reading`) or the connection ended. Cancel-safe.
    fn io(&mut self, reading: bool) -> impl Future<Output = Io> + Send + '_;
    /// Moves the noted frames written since the last call to `into`.
    fn take_written(&mut self, into: &mut Vec<Written>);
    /// Ends the connection: what is queued, an error message if `error_frame` and the end is an
    /// error, then the end itself; bounded by `budget`.
    fn finish(
        &mut self,
        end: &End,
        error_frame: bool,
        budget: Duration,
    ) -> impl Future<Output = ()> + Send;
}

impl<S: ws::Socket> Outbound for ws::Conn<S> {
    fn push_frame(&mut self, text: Utf8Bytes, note: Note) {
        self.push(Message::Text(text), note);
    }
    fn push_event(&mut self, _kind: &'static str, json: String) {
        self.push_text(json);
    }
    fn queued_frames(&self) -> usize {
        ws::Conn::queued_frames(self)
    }
    fn queued_bytes(&self) -> usize {
        ws::Conn::queued_bytes(self)
    }
    fn is_open(&self) -> bool {
        ws::Conn::is_open(self)
    }
    fn io(&mut self, reading: bool) -> impl Future<Output = Io> + Send + '_ {
        ws::Conn::io(self, reading)
    }
    fn take_written(&mut self, into: &mut Vec<Written>) {
        ws::Conn::take_written(self, into)
    }
    async fn finish(&mut self, end: &End, error_frame: bool, budget: Duration) {
        ws::Conn::finish(self, end, error_frame, budget).await
    }
}
