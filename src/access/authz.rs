//! Authorization: may this principal do this action to this resource. Every request passes
//! here before its upgrade (`http::gate`), with everything it names.

use super::{Action, Principal, Resource};
use crate::protocol::{ErrorCode, ProtocolError};

/// The rules a request is checked against. Until ACLs are configured (the security issue), the
/// proxy is open as the seed was: every authenticated principal may do everything. The decision
/// is made here, with the principal, the action and the resource, so adding rules changes this
/// file only.
#[derive(Debug, Clone, Default)]
pub struct Policy {}

impl Policy {
    /// The policy of a proxy with no ACLs: allow every authenticated request.
    pub fn open() -> Policy {
        Policy {}
    }

    /// Allows or denies one action on one resource; a denial is `forbidden` (403 / 4403).
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Result<(), ProtocolError> {
        let _ = (principal, action, resource);
        Ok(())
    }

    /// Checks every (action, resource) a request needs; the first denial wins.
    pub fn authorize_all(
        &self,
        principal: &Principal,
        wants: &[(Action, Resource)],
    ) -> Result<(), ProtocolError> {
        for (action, resource) in wants {
            self.authorize(principal, *action, resource)
                .map_err(|e| denied(e, principal, *action, resource))?;
        }
        Ok(())
    }
}

fn denied(
    e: ProtocolError,
    principal: &Principal,
    action: Action,
    resource: &Resource,
) -> ProtocolError {
    tracing::info!(%principal, ?action, ?resource, "request denied");
    if e.code == ErrorCode::Forbidden {
        e
    } else {
        ProtocolError::new(ErrorCode::Forbidden, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_policy_allows_every_action() {
        let p = Policy::open();
        let who = Principal::named(crate::access::Kind::Password, "a");
        for action in [
            Action::Consume,
            Action::Tail,
            Action::Produce,
            Action::Group,
            Action::Admin,
        ] {
            assert!(p
                .authorize_all(&who, &[(action, Resource::Topic("t".into()))])
                .is_ok());
        }
    }
}
