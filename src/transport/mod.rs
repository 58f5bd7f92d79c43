//! How clients are connected: `ws`, the one WebSocket driver every endpoint uses (room for SSE
//! and TLS beside it).

pub mod ws;
