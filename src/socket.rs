//! WebSocket plumbing shared by every session: bounded sends and read-error classification.

use std::time::Duration;

use axum::extract::ws::Message;
use futures::{Sink, SinkExt};

/// How a failed read ends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// A frame over `maxFrameBytes`: close 4413 naming the limit.
    TooLarge(String),
    /// A WebSocket-level violation (RFC 6455): close with 1007 (bad UTF-8) or 1002.
    Violation(u16, String),
    /// The connection broke; nothing more can be sent.
    Gone,
}

/// Maps a tungstenite read error (axum exposes it only as text) to how the session ends.
pub fn classify_read_error(text: &str) -> ReadError {
    if text.contains("too long") || text.contains("Space limit") {
        ReadError::TooLarge(text.to_string())
    } else if text.contains("UTF-8") || text.contains("utf-8") || text.contains("Utf8") {
        ReadError::Violation(1007, "text frame is not valid UTF-8".into())
    } else if text.contains("Protocol") || text.contains("protocol") {
        ReadError::Violation(1002, "WebSocket protocol error".into())
    } else {
        ReadError::Gone
    }
}

/// Sends one message, giving up after `limit`: a peer that takes no bytes for that long is dead
/// (it advertises a zero window forever), and its writer must not hang on to the socket.
pub async fn send_within<S>(sink: &mut S, msg: Message, limit: Duration) -> bool
where
    S: Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(limit, sink.send(msg)).await,
        Ok(Ok(()))
    )
}

/// A socket that took no bytes for this many ping intervals is given up.
pub fn stall_limit(ping_interval: Duration) -> Duration {
    ping_interval * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(matches!(
            classify_read_error("Space limit exceeded: Message too long: 9 > 4"),
            ReadError::TooLarge(_)
        ));
        assert_eq!(
            classify_read_error("Could not decode UTF-8"),
            ReadError::Violation(1007, "text frame is not valid UTF-8".into())
        );
        assert!(matches!(
            classify_read_error("WebSocket protocol error: reserved bits"),
            ReadError::Violation(1002, _)
        ));
        assert_eq!(classify_read_error("Connection reset"), ReadError::Gone);
    }
}
