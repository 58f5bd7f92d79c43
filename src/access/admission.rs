//! Admission: whether the proxy takes another session at all (the `maxConnections` cap and
//! shutdown). Checked first in the gate, before any work is done for a request.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;

/// Caps concurrent sessions (sockets and HTTP produce requests).
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    shutdown: Shutdown,
}

/// A session slot; the slot is free again when it is dropped.
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    pub fn new(max: usize, shutdown: Shutdown) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            shutdown,
        }
    }

    /// Takes a session slot, or refuses with `shutting_down` (503) or `limit_reached` (429).
    pub fn admit(&self) -> Result<Permit, ProtocolError> {
        if self.shutdown.is_triggered() {
            return Err(ProtocolError::new(
                ErrorCode::ShuttingDown,
                "proxy is shutting down",
            ));
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Permit)
            .map_err(|_| {
                ProtocolError::new(
                    ErrorCode::LimitReached,
                    format!("too many sessions (maxConnections = {})", self.max),
                )
            })
    }
}
