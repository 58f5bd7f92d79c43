//! The credential lease of a session's connection (`transport::lease`): when the principal's
//! credential lapses (a JWT's `exp`), whether a reload revoked it, and how a fresh token sent
//! in-band renews it; and the [`session_watch`] every session's connection (socket or event
//! stream) is ended by. Here because it joins the authenticator (`access`) and the session
//! registry (`metrics`) to the connection (`transport`).

use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::access::authn::{Authenticator, Credential, Revocation};
use crate::access::Principal;
use crate::metrics::SessionStats;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::transport::lease::{Lease, Renewable, Renewal, Watch};

/// What ends a session's connection from outside: its principal's credential lapsing or being
/// revoked (`unauthorized`), and an operator's close request (`closed_by_admin`, with the
/// operator's reason).
pub fn session_watch(
    auth: &Authenticator,
    principal: &Principal,
    stats: &SessionStats,
    renewable: Renewable,
) -> Watch {
    let requested = stats.close_requested();
    let closer =
        Box::pin(async move { ProtocolError::new(ErrorCode::ClosedByAdmin, requested.await) });
    Watch::new(AuthLease::for_session(auth, principal), renewable).with_closer(closer)
}

/// A session's lease on its principal's credential.
pub struct AuthLease {
    principal: Principal,
    auth: Authenticator,
    revoked: Option<Revocation>,
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl AuthLease {
    /// `None` when the credential neither lapses nor can be revoked (nothing to watch).
    pub fn for_session(auth: &Authenticator, principal: &Principal) -> Option<Box<dyn Lease>> {
        let revoked = auth.revocation(principal);
        if principal.expires.is_none() && revoked.is_none() {
            return None;
        }
        Some(Box::new(AuthLease {
            principal: principal.clone(),
            auth: auth.clone(),
            revoked,
        }))
    }
}

impl Lease for AuthLease {
    fn expires(&self) -> Option<SystemTime> {
        self.principal.expires.map(at)
    }

    fn renew(&self, token: String) -> Renewal {
        let (auth, current) = (self.auth.clone(), self.principal.clone());
        Box::pin(async move {
            let fresh = auth.check(Credential::Bearer(&token)).await?;
            // A renewal extends this session's credential; it cannot turn it into someone else's.
            if fresh.kind != current.kind || fresh.name != current.name {
                return Err(ProtocolError::new(
                    ErrorCode::Unauthorized,
                    format!("the new token is for {fresh}, this socket belongs to {current}"),
                ));
            }
            Ok(fresh.expires.map(at))
        })
    }

    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.revoked {
            Some(r) => r.as_mut().poll(cx).map(|_| ()),
            None => Poll::Pending,
        }
    }
}
