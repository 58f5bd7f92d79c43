//! Access: who a request is (`authn`), whether it may do what it asks (`authz`), and whether the
//! proxy takes it at all (`admission`). Pure decisions; the HTTP gate (`http::gate`) calls them
//! in order.

pub mod admission;
pub mod authn;
pub mod authz;

use std::fmt;

/// Who a request authenticated as. Carried into the session, so logs, metrics and the admin API
/// can name who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No `auth` is configured: everyone is anonymous and allowed.
    Anonymous,
    /// Authenticated with the shared password; carries the Basic user name when one was sent.
    Password { user: Option<String> },
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Password { user: Some(u) } => write!(f, "user:{u}"),
            Principal::Password { user: None } => f.write_str("password"),
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What an action is done to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic(String),
    Group(String),
    /// The proxy itself (admin actions).
    Proxy,
}
