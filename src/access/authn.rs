//! Authentication: credentials to a `Principal`. Today the seed's `Authorization: basic
//! <password>` and RFC 7617 Basic; secrets are compared in constant time and never logged.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Kind, Principal};
use crate::config::Secret;
use crate::protocol::{ErrorCode, ProtocolError};

/// Checks credentials against the configured shared password.
#[derive(Debug, Clone)]
pub struct Authenticator {
    password: Option<Secret>,
}

impl Authenticator {
    pub fn new(password: Option<Secret>) -> Self {
        Authenticator { password }
    }

    pub fn enabled(&self) -> bool {
        self.password.is_some()
    }

    /// Checks an `Authorization` header value. Accepts, with either case of the scheme:
    /// `basic <password>` (the seed) and `Basic base64(user:password)` (RFC 7617).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Principal, ProtocolError> {
        let Some(password) = &self.password else {
            return Ok(Principal::anonymous());
        };
        let denied = || {
            ProtocolError::new(
                ErrorCode::Unauthorized,
                "send Authorization: basic <password> or RFC 7617 Basic credentials",
            )
        };
        let header = authorization.ok_or_else(denied)?;
        let header = std::str::from_utf8(header).map_err(|_| denied())?.trim();
        let (scheme, token) = header.split_once(' ').ok_or_else(denied)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(denied());
        }
        let token = token.trim();
        let want = password.expose().as_bytes();
        // Both forms are always evaluated so timing does not reveal which one matched.
        let seed_ok = ct_eq(token.as_bytes(), want);
        let mut rfc_user = None;
        let mut rfc_ok = false;
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) {
            if let Some(colon) = decoded.iter().position(|&b| b == b':') {
                rfc_ok = ct_eq(&decoded[colon + 1..], want);
                if rfc_ok {
                    rfc_user = String::from_utf8(decoded[..colon].to_vec()).ok();
                }
            }
        }
        if seed_ok {
            Ok(Principal::named(Kind::Password, ""))
        } else if rfc_ok {
            Ok(Principal::named(
                Kind::Password,
                rfc_user.as_deref().unwrap_or(""),
            ))
        } else {
            Err(denied())
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare fixed-length digests: comparing the raw slices would return early when the lengths
    // differ and so reveal the password's length.
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.as_slice().ct_eq(db.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(Some(Secret::new("thisisapassword")))
    }

    #[test]
    fn seed_header_either_case() {
        assert!(auth().check(Some(b"basic thisisapassword")).is_ok());
        assert!(auth().check(Some(b"Basic thisisapassword")).is_ok());
        assert!(auth().check(Some(b"BASIC thisisapassword")).is_ok());
    }

    #[test]
    fn rfc7617() {
        let token = base64::engine::general_purpose::STANDARD.encode("alice:thisisapassword");
        let p = auth()
            .check(Some(format!("Basic {token}").as_bytes()))
            .unwrap();
        assert_eq!(p, Principal::named(Kind::Password, "alice"));
        let token = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
        assert!(auth()
            .check(Some(format!("Basic {token}").as_bytes()))
            .is_err());
    }

    #[test]
    fn rejects() {
        for h in [
            &b"basic wrong"[..],
            b"Bearer thisisapassword",
            b"thisisapassword",
            b"basic ",
            b"basic thisisapasswordX",
            &[0xff, 0xfe],
        ] {
            let e = auth().check(Some(h)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(!e.message.contains("thisisapassword"));
        }
        assert!(auth().check(None).is_err());
    }

    #[test]
    fn disabled_allows_all() {
        let a = Authenticator::new(None);
        assert_eq!(a.check(None).unwrap(), Principal::anonymous());
    }
}
