//! Admission: whether the proxy takes another session at all (the `maxConnections` cap and
//! shutdown). Checked first in the gate, before any work is done for a request. A permit also
//! carries the principal's own session slot (`quota::SessionSlot`), taken once it is known.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::quota::SessionSlot;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::shutdown::Shutdown;

/// Caps concurrent sessions (sockets and HTTP produce requests), and the records they may hold
/// unacknowledged or unanswered, summed over all of them.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    records: Arc<Semaphore>,
    max_records: usize,
    shutdown: Shutdown,
}

/// A session slot, the records it reserved and its principal's slot
/// (`maxSessionsPerPrincipal`); all are free again when it is dropped.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    _records: Option<OwnedSemaphorePermit>,
    _principal: Option<SessionSlot>,
}

impl Permit {
    /// Holds the principal's session slot for as long as this permit lives.
    pub fn hold(&mut self, slot: Option<SessionSlot>) {
        self._principal = slot;
    }
}

impl Admission {
    pub fn new(max: usize, max_records: usize, shutdown: Shutdown) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            records: Arc::new(Semaphore::new(max_records.min(Semaphore::MAX_PERMITS))),
            max_records,
            shutdown,
        }
    }

    /// Reserves `n` records of the shared budget for the session holding `permit` (its window),
    /// or refuses with `limit_reached` (429).
    pub fn reserve(&self, permit: &mut Permit, n: usize) -> Result<(), ProtocolError> {
        if n == 0 {
            return Ok(());
        }
        let refused = || {
            ProtocolError::new(
                ErrorCode::LimitReached,
                format!(
                    "the proxy holds too many unacknowledged records to take a window of {n} \
                     (maxUnackedRecords = {}); retry later or ask for a smaller window",
                    self.max_records
                ),
            )
        };
        let n = u32::try_from(n).map_err(|_| refused())?;
        let reserved = self
            .records
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| refused())?;
        permit._records = Some(reserved);
        Ok(())
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
            .map(|slot| Permit {
                _slot: slot,
                _records: None,
                _principal: None,
            })
            .map_err(|_| {
                ProtocolError::new(
                    ErrorCode::LimitReached,
                    format!("too many sessions (maxConnections = {})", self.max),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_reserved_from_one_budget() {
        let (_trigger, shutdown) = crate::shutdown::channel();
        let a = Admission::new(10, 1000, shutdown);
        let mut first = a.admit().unwrap();
        a.reserve(&mut first, 600).unwrap();
        let mut second = a.admit().unwrap();
        let e = a.reserve(&mut second, 600).unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitReached);
        assert!(
            e.message.contains("maxUnackedRecords = 1000"),
            "{}",
            e.message
        );
        a.reserve(&mut second, 400).unwrap();
        // A session that ends gives its window back.
        drop(first);
        let mut third = a.admit().unwrap();
        a.reserve(&mut third, 600).unwrap();
    }
}
