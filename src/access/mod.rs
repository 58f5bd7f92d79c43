//! Access: who a request is (`authn`, with its credential sources `users`, `tokens`, `jwt` and
//! `jwks`, `fetch` for the JWKS URL, and `tickets`), whether it may do what it asks (`authz`, with
//! the name patterns of `pattern`), whether the proxy takes it at all (`admission`) and the
//! per-principal and per-address limits (`quota`). The HTTP gate (`http::gate`) calls them in
//! order.

pub mod admission;
pub mod authn;
pub mod authz;
pub mod fetch;
pub mod jwks;
pub mod jwt;
pub mod pattern;
pub mod quota;
pub mod tickets;
pub mod tokens;
pub mod users;

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// No authentication is configured: everyone is anonymous.
    Anonymous,
    /// The shared password (`auth`), with or without a Basic user name.
    Password,
    /// A user of the users file (RFC 7617 Basic).
    User,
    /// A static bearer token of the tokens file.
    Token,
    /// A JWT bearer token.
    Jwt,
    /// A TLS client certificate (mTLS).
    Certificate,
}

/// Who a request authenticated as. Carried into the session, so logs, metrics and the admin API
/// can name who a session belongs to, and a ticket can carry it to the socket it opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub kind: Kind,
    /// The name ACL rules match: the user, the token's name, the JWT `sub`, the certificate's
    /// CN, the Basic user name sent with the shared password; empty when there is none.
    pub name: String,
    /// Roles (users and tokens files, the JWT roles claim), matched by `role:NAME` in ACLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Grants the credential carries itself (the JWT grants claim): action and pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<(Action, String)>,
    /// When the credential stops being valid (a JWT's `exp`), in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

impl Principal {
    /// Everyone, when no authentication is configured.
    pub fn anonymous() -> Principal {
        Principal::named(Kind::Anonymous, "")
    }

    /// A principal with a name and nothing else.
    pub fn named(kind: Kind, name: &str) -> Principal {
        Principal {
            kind,
            name: name.to_string(),
            roles: Vec::new(),
            grants: Vec::new(),
            expires: None,
        }
    }
}

impl fmt::Display for Principal {
    /// `kind:name` (`user:alice`, `jwt:svc-1`), or the kind alone without a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Anonymous => "anonymous",
            Kind::Password => "password",
            Kind::User => "user",
            Kind::Token => "token",
            Kind::Jwt => "jwt",
            Kind::Certificate => "cert",
        };
        if self.name.is_empty() {
            f.write_str(kind)
        } else {
            write!(f, "{kind}:{}", self.name)
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read records of a topic (`/`, `/v1/consume`).
    Consume,
    /// Follow a topic live (`/v1/tail`).
    Tail,
    /// Write records to a topic (`/v1/produce`, `POST /v1/topics/{topic}/records`).
    Produce,
    /// Join a consumer group or commit to it.
    Group,
    /// Read or act on the proxy's own state (`/admin/*`).
    Admin,
}

impl Action {
    /// The action's name in ACL rules and JWT grants.
    pub fn name(self) -> &'static str {
        match self {
            Action::Consume => "consume",
            Action::Tail => "tail",
            Action::Produce => "produce",
            Action::Group => "group",
            Action::Admin => "admin",
        }
    }

    /// The action an ACL rule or grant names (`config::security::ACTIONS`).
    pub fn from_name(name: &str) -> Option<Action> {
        [
            Action::Consume,
            Action::Tail,
            Action::Produce,
            Action::Group,
            Action::Admin,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// What an action is done to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic(String),
    Group(String),
    /// The proxy itself (admin actions).
    Proxy,
}
