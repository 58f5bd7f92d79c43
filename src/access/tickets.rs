//! Tickets: short-lived, single-use credentials a page puts in a WebSocket or SSE URL instead
//! of a long-lived secret (`POST /v1/tickets`).
//!
//! A ticket is `base64url(claims).base64url(HMAC-SHA256(key, claims))`: it carries the principal,
//! the path it may open and its expiry, so any instance holding the same key (`ticketKeyFile`)
//! can check it. Single use is enforced by the instance that redeems it: it remembers used
//! ticket ids until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Principal;
use crate::protocol::{ErrorCode, ProtocolError};

/// Most tickets remembered as used at once; beyond it new tickets are refused (429) until
/// the oldest expire, so memory stays bounded whatever clients do.
pub const MAX_USED: usize = 100_000;

/// Longest ticket accepted, in bytes: a principal with many roles and grants fits, a flood of
/// bytes in a query string does not reach the decoder.
pub const MAX_TICKET_BYTES: usize = 8 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The ticket's id, random.
    id: String,
    /// The path it opens (`/v1/consume`).
    path: String,
    /// Expiry, seconds since the epoch.
    exp: u64,
    principal: Principal,
}

/// Issues and redeems tickets.
pub struct Tickets {
    key: Vec<u8>,
    ttl: Duration,
    /// Ticket id -> expiry (seconds since the epoch) of tickets already redeemed.
    used: Mutex<HashMap<String, u64>>,
}

/// A ticket just issued.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub ticket: String,
    pub path: String,
    pub expires_in: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator; without one the proxy cannot make secrets at all.
    getrandom::fill(&mut b).expect("the OS random number generator works");
    b
}

fn refused(message: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unauthorized,
        format!("ticket refused: {message}"),
    )
}

impl Tickets {
    /// With `key` (from `ticketKeyFile`), or a random key of this process.
    pub fn new(key: Option<&str>, ttl: Duration) -> Tickets {
        let key = match key {
            Some(k) => k.as_bytes().to_vec(),
            None => random_bytes::<32>().to_vec(),
        };
        Tickets {
            key,
            ttl,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    /// A ticket for `principal` to open `path` once within the ticket TTL.
    pub fn issue(&self, principal: &Principal, path: &str) -> Result<Issued, ProtocolError> {
        let mut exp = now_secs() + self.ttl.as_secs();
        // A ticket never outlives the credential it was bought with.
        if let Some(e) = principal.expires {
            exp = exp.min(e);
        }
        let claims = Claims {
            id: B64.encode(random_bytes::<16>()),
            path: path.to_string(),
            exp,
            principal: principal.clone(),
        };
        let body = serde_json::to_vec(&claims)
            .map_err(|e| ProtocolError::new(ErrorCode::Internal, e.to_string()))?;
        let body = B64.encode(body);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        let ticket = format!("{body}.{sig}");
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(ProtocolError::bad_request(
                "the principal's roles and grants are too large for a ticket",
            ));
        }
        Ok(Issued {
            ticket,
            path: path.to_string(),
            expires_in: exp.saturating_sub(now_secs()),
        })
    }

    /// Redeems a ticket for `path`: checks its signature, path and expiry, and that it was not
    /// used before. Every refusal is 401 `unauthorized` with the reason.
    pub fn redeem(&self, ticket: &str, path: &str) -> Result<Principal, ProtocolError> {
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(refused("too long"));
        }
        let (body, sig) = ticket.split_once('.').ok_or_else(|| refused("malformed"))?;
        let sig = B64.decode(sig).map_err(|_| refused("malformed"))?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig)
            .map_err(|_| refused("bad signature (issued by another key?)"))?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| refused("malformed"))?;
        let now = now_secs();
        if claims.exp <= now {
            return Err(refused("expired; get a new one from POST /v1/tickets"));
        }
        if claims.path != path {
            return Err(refused(&format!("issued for {}, not {path}", claims.path)));
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains_key(&claims.id) {
            return Err(refused("already used; a ticket opens one connection"));
        }
        if used.len() >= MAX_USED {
            used.retain(|_, exp| *exp > now);
            if used.len() >= MAX_USED {
                return Err(ProtocolError::new(
                    ErrorCode::LimitReached,
                    "too many tickets in use; try again shortly",
                ));
            }
        }
        used.insert(claims.id, claims.exp);
        Ok(claims.principal)
    }

    /// Forgets used tickets that expired (called now and then; `redeem` also prunes when full).
    pub fn prune(&self) {
        let now = now_secs();
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, exp| *exp > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Kind;

    fn alice() -> Principal {
        let mut p = Principal::named(Kind::User, "alice");
        p.roles = vec!["readers".into()];
        p
    }

    #[test]
    fn a_ticket_opens_its_path_once() {
        let t = Tickets::new(None, Duration::from_secs(30));
        let issued = t.issue(&alice(), "/v1/consume").unwrap();
        assert!(issued.expires_in >= 29 && issued.expires_in <= 30);
        let e = t.redeem(&issued.ticket, "/v1/produce").unwrap_err();
        assert!(
            e.message.contains("issued for /v1/consume"),
            "{}",
            e.message
        );
        assert_eq!(t.redeem(&issued.ticket, "/v1/consume").unwrap(), alice());
        let e = t.redeem(&issued.ticket, "/v1/consume").unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("already used"), "{}", e.message);
    }

    #[test]
    fn tickets_are_bound_to_their_key() {
        let a = Tickets::new(Some("shared-key"), Duration::from_secs(30));
        let b = Tickets::new(Some("shared-key"), Duration::from_secs(30));
        let c = Tickets::new(None, Duration::from_secs(30));
        let issued = a.issue(&alice(), "/v1/tail").unwrap();
        assert!(c.redeem(&issued.ticket, "/v1/tail").is_err());
        assert_eq!(b.redeem(&issued.ticket, "/v1/tail").unwrap(), alice());
    }

    #[test]
    fn tampered_expired_and_garbage_tickets_are_refused() {
        let t = Tickets::new(None, Duration::from_secs(30));
        let issued = t.issue(&alice(), "/v1/consume").unwrap();
        // Another principal's claims under the original signature.
        let (_, sig) = issued.ticket.split_once('.').unwrap();
        let forged = Claims {
            id: "x".into(),
            path: "/v1/consume".into(),
            exp: now_secs() + 30,
            principal: Principal::named(Kind::User, "root"),
        };
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        assert!(t.redeem(&forged, "/v1/consume").is_err());
        let mut old = alice();
        old.expires = Some(now_secs() - 1);
        let stale = t.issue(&old, "/v1/consume").unwrap();
        let e = t.redeem(&stale.ticket, "/v1/consume").unwrap_err();
        assert!(e.message.contains("expired"), "{}", e.message);
        for junk in ["", ".", "a.b", "no-dot", &"x".repeat(MAX_TICKET_BYTES + 1)] {
            assert_eq!(
                t.redeem(junk, "/v1/consume").unwrap_err().code,
                ErrorCode::Unauthorized
            );
        }
    }
}
