//! How clients are connected: `listen`, the accept loop with the connection-level limits, and
//! `ws`, the one WebSocket driver every endpoint uses (room for SSE and TLS beside them).

pub mod listen;
pub mod ws;
