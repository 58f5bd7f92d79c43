//! A socket's credential over its life: the socket closes with 4401 when the credential lapses
//! or is revoked, unless the client renews it in-band with an auth frame
//! (`protocol::auth`). Held by the socket driver (`ws::Conn`), so every endpoint gets it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::time::Sleep;

use crate::protocol::auth::renewed_frame;
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
