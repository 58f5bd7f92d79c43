//! The use cases, independent of how a client is connected: consume (batching, window,
//! backpressure), the ack ledger, the live tail (hub and shared readers) and produce (answer
//! order, window, HTTP batch). Sockets reach them through `transport`; Kafka through `kafka`.

pub mod consume;
pub mod ledger;
pub mod produce;
pub mod sse;
pub mod tail;

use std::sync::Arc;

use crate::config::Config;
use crate::kafka::Kafka;
use crate::shutdown::Shutdown;

/// What every session needs from the server.
#[derive(Clone)]
pub struct Deps {
    pub kafka: Arc<Kafka>,
    pub config: Arc<Config>,
    pub shutdown: Shutdown,
}

/// The ledger's commit mode of a consume request (the ledger itself stays free of crate types).
impl From<crate::protocol::consume::CommitMode> for ledger::Mode {
    fn from(c: crate::protocol::consume::CommitMode) -> Self {
        use crate::protocol::consume::CommitMode as C;
        match c {
            C::Auto => ledger::Mode::Auto,
            C::Ack => ledger::Mode::Ack,
            C::None => ledger::Mode::None,
        }
    }
}
