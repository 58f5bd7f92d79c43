//! How clients are connected: `listen`, the accept loop with the connection-level limits;
//! `tls`, the listener's certificate (loaded, reloaded) and handshakes; and `ws`, the one
//! WebSocket driver every endpoint uses (room for SSE beside them).

pub mod lease;
pub mod listen;
pub mod tls;
pub mod ws;
