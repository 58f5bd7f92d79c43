//! Authorization: may this principal do this action to this resource. Every request passes
//! here before its upgrade (`http::gate`), with everything it names. The rules are the
//! `[[acl]]` tables of the config file and the grants a credential carries (docs/SECURITY.md,
//! "Authorization (ACLs)").

use std::net::SocketAddr;
use std::sync::Arc;

use super::pattern::{self, Pattern};
use super::{Action, Kind, Principal, Resource};
use crate::config::{AclRule, Config};
use crate::protocol::{ErrorCode, ProtocolError};

/// The rules a request is checked against.
///
/// Without rules (no `[[acl]]` table and no JWT grants claim) the proxy is open as the seed
/// was: every authenticated principal may do everything. With rules, what no rule and no grant
/// allows is denied.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None`: the open policy.
    rules: Option<Arc<[Rule]>>,
}

/// One `[[acl]]` table, parsed once at start.
#[derive(Debug, Clone)]
struct Rule {
    principals: Vec<Who>,
    allow: Vec<Action>,
    topics: Vec<Pattern>,
    groups: Vec<Pattern>,
}

/// Whom a rule's `principals` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    /// `NAME`: a principal of an identity (user, token, JWT, certificate) with that name.
    Name(String),
    /// `role:NAME`: a principal with that role.
    Role(String),
    /// `*`: any authenticated principal.
    Authenticated,
    /// `anonymous`: requests of a proxy with no authentication configured.
    Anonymous,
    /// `password`: requests that sent the shared password.
    Password,
}

impl Who {
    fn parse(s: &str) -> Who {
        match s {
            "*" => Who::Authenticated,
            "anonymous" => Who::Anonymous,
            "password" => Who::Password,
            _ => match s.strip_prefix("role:") {
                Some(role) => Who::Role(role.to_string()),
                None => Who::Name(s.to_string()),
            },
        }
    }

    fn matches(&self, p: &Principal) -> bool {
        match self {
            // The Basic user name sent with the shared password is not authenticated: anyone
            // who knows the password can send any name, so names match identities only.
            Who::Name(n) => {
                matches!(
                    p.kind,
                    Kind::User | Kind::Token | Kind::Jwt | Kind::Certificate
                ) && p.name == *n
            }
            Who::Role(r) => p.roles.iter().any(|have| have == r),
            Who::Authenticated => p.kind != Kind::Anonymous,
            Who::Anonymous => p.kind == Kind::Anonymous,
            Who::Password => p.kind == Kind::Password,
        }
    }
}

impl Rule {
    fn parse(r: &AclRule) -> Rule {
        Rule {
            principals: r.principals.iter().map(|p| Who::parse(p)).collect(),
            // The config check refused unknown actions; one that slipped through allows nothing.
            allow: r
                .allow
                .iter()
                .filter_map(|a| Action::from_name(a))
                .collect(),
            topics: r.topics.iter().map(|p| Pattern::parse(p)).collect(),
            groups: r.groups.iter().map(|p| Pattern::parse(p)).collect(),
        }
    }

    fn allows(&self, principal: &Principal, action: Action, resource: &Resource) -> bool {
        self.allow.contains(&action)
            && self.principals.iter().any(|w| w.matches(principal))
            && match resource_name(action, resource) {
                Some(Target::Proxy) => true,
                Some(Target::Topic(t)) => self.topics.iter().any(|p| p.matches(t)),
                Some(Target::Group(g)) => self.groups.iter().any(|p| p.matches(g)),
                None => false,
            }
    }
}

/// The name an action's patterns are matched against.
enum Target<'a> {
    Topic(&'a str),
    Group(&'a str),
    Proxy,
}

/// Consume, produce and tail act on topics, group on groups, admin on the proxy; any other
/// pairing is a caller's mistake and is denied.
fn resource_name(action: Action, resource: &Resource) -> Option<Target<'_>> {
    match (action, resource) {
        (Action::Consume | Action::Produce | Action::Tail, Resource::Topic(t)) => {
            Some(Target::Topic(t))
        }
        (Action::Group, Resource::Group(g)) => Some(Target::Group(g)),
        (Action::Admin, Resource::Proxy) => Some(Target::Proxy),
        _ => None,
    }
}

/// Whether a credential's own grants (the JWT grants claim) allow it. An admin grant needs an
/// entry (any pattern, `"admin": ["*"]`); the proxy has no name to match.
fn granted(principal: &Principal, action: Action, resource: &Resource) -> bool {
    let Some(target) = resource_name(action, resource) else {
        return false;
    };
    principal
        .grants
        .iter()
        .filter(|(a, _)| *a == action)
        .any(|(_, p)| match target {
            Target::Proxy => true,
            Target::Topic(name) | Target::Group(name) => pattern::matches(p, name),
        })
}

impl Policy {
    /// The policy of a proxy with no ACLs: allow every authenticated request.
    pub fn open() -> Policy {
        Policy { rules: None }
    }

    /// The `[[acl]]` rules of the configuration. Enforced (default deny) when any rule exists
    /// or a JWT grants claim is configured: grants alone must not leave everything else open.
    pub fn from_config(config: &Config) -> Policy {
        let sec = &config.security;
        let grants = sec.jwt.as_ref().is_some_and(|j| j.grants_claim.is_some());
        if sec.acl.is_empty() && !grants {
            return Policy::open();
        }
        Policy {
            rules: Some(sec.acl.iter().map(Rule::parse).collect()),
        }
    }

    /// Whether rules are enforced (false for the open policy).
    pub fn enforced(&self) -> bool {
        self.rules.is_some()
    }

    /// Allows or denies one action on one resource; a denial is `forbidden` (403 / 4403) and
    /// names the action and the resource, never the rules.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Result<(), ProtocolError> {
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        if rules.iter().any(|r| r.allows(principal, action, resource))
            || granted(principal, action, resource)
        {
            return Ok(());
        }
        let what = match resource {
            Resource::Topic(t) => format!("topic {t:?}"),
            Resource::Group(g) => format!("group {g:?}"),
            Resource::Proxy => "the proxy".to_string(),
        };
        Err(ProtocolError::new(
            ErrorCode::Forbidden,
            format!("not allowed to {} {what}", action.name()),
        ))
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
    tracing::info!(%principal, action = action.name(), ?resource, "request denied");
    if e.code == ErrorCode::Forbidden {
        e
    } else {
        ProtocolError::new(ErrorCode::Forbidden, e.message)
    }
}

/// What an operator should hear at start about who can reach what: an open proxy on a
/// reachable address, or rules that can only ever apply to `anonymous`.
pub fn startup_warnings(config: &Config, addr: SocketAddr) -> Vec<String> {
    let authenticated = config.auth.is_some() || config.security.has_identities();
    let mut out = Vec::new();
    if !authenticated && !addr.ip().is_loopback() {
        out.push(format!(
            "no authentication is configured and the proxy listens on {addr}: anyone who can \
             reach this port can read and write every topic and join every consumer group. Set \
             a credential (--auth-file, --users-file, --tokens-file or JWT options) and [[acl]] \
             rules, or bind to a loopback address (--host 127.0.0.1)"
        ));
    }
    if !authenticated && !config.security.acl.is_empty() {
        out.push(
            "[[acl]] rules are configured but no authentication is: every request is \
             `anonymous`, so only rules naming `anonymous` (or none) apply"
                .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::security::Jwt;
    use crate::config::Secret;

    const ACTIONS: [Action; 5] = [
        Action::Consume,
        Action::Tail,
        Action::Produce,
        Action::Group,
        Action::Admin,
    ];

    fn rule(principals: &[&str], allow: &[&str], topics: &[&str], groups: &[&str]) -> AclRule {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        AclRule {
            principals: v(principals),
            allow: v(allow),
            topics: v(topics),
            groups: v(groups),
        }
    }

    fn policy(rules: Vec<AclRule>) -> Policy {
        let mut c = Config::default();
        c.security.acl = rules;
        Policy::from_config(&c)
    }

    fn who(kind: Kind, name: &str, roles: &[&str]) -> Principal {
        let mut p = Principal::named(kind, name);
        p.roles = roles.iter().map(|r| r.to_string()).collect();
        p
    }

    fn topic(t: &str) -> Resource {
        Resource::Topic(t.into())
    }

    fn group(g: &str) -> Resource {
        Resource::Group(g.into())
    }

    fn allowed(p: &Policy, who: &Principal, action: Action, r: Resource) -> bool {
        p.authorize_all(who, &[(action, r)]).is_ok()
    }

    #[test]
    fn the_open_policy_allows_every_action() {
        let p = Policy::open();
        assert!(!p.enforced());
        assert!(!Policy::from_config(&Config::default()).enforced());
        let who = Principal::named(Kind::Password, "a");
        for action in ACTIONS {
            assert!(p
                .authorize_all(&who, &[(action, Resource::Topic("t".into()))])
                .is_ok());
        }
    }

    /// Every principal form of a rule against every principal kind.
    #[test]
    fn principal_forms_match_these_kinds() {
        let kinds = [
            Kind::Anonymous,
            Kind::Password,
            Kind::User,
            Kind::Token,
            Kind::Jwt,
            Kind::Certificate,
        ];
        // (rule principal, kinds it matches for a principal named "alice" with role "ops")
        let table: [(&str, &[Kind]); 6] = [
            (
                "alice",
                &[Kind::User, Kind::Token, Kind::Jwt, Kind::Certificate],
            ),
            ("bob", &[]),
            ("role:ops", &kinds),
            (
                "*",
                &[
                    Kind::Password,
                    Kind::User,
                    Kind::Token,
                    Kind::Jwt,
                    Kind::Certificate,
                ],
            ),
            ("anonymous", &[Kind::Anonymous]),
            ("password", &[Kind::Password]),
        ];
        for (form, matching) in table {
            let p = policy(vec![rule(&[form], &["consume"], &["t"], &[])]);
            for kind in kinds {
                let principal = who(kind, "alice", &["ops"]);
                assert_eq!(
                    allowed(&p, &principal, Action::Consume, topic("t")),
                    matching.contains(&kind),
                    "rule principal {form:?}, principal {principal}"
                );
            }
            // Without the role, role rules match nobody.
            if form == "role:ops" {
                assert!(!allowed(
                    &p,
                    &who(Kind::User, "alice", &["dev"]),
                    Action::Consume,
                    topic("t")
                ));
            }
        }
    }

    /// Each action against the resource kinds and patterns of a rule set.
    #[test]
    fn decisions_by_action_and_resource() {
        let p = policy(vec![
            rule(
                &["alice"],
                &["consume", "tail"],
                &["orders", "prefix:logs-"],
                &[],
            ),
            rule(&["alice"], &["group"], &[], &["app-*"]),
            rule(&["alice"], &["produce"], &["in-??"], &[]),
            rule(&["role:admin"], &["admin"], &[], &[]),
        ]);
        let alice = who(Kind::User, "alice", &[]);
        let root = who(Kind::Jwt, "root", &["admin"]);
        let table = [
            (&alice, Action::Consume, topic("orders"), true),
            (&alice, Action::Consume, topic("orders-eu"), false),
            (&alice, Action::Tail, topic("logs-web"), true),
            (&alice, Action::Consume, topic("logs-"), true),
            (&alice, Action::Produce, topic("orders"), false),
            (&alice, Action::Produce, topic("in-01"), true),
            (&alice, Action::Produce, topic("in-1"), false),
            (&alice, Action::Group, group("app-billing"), true),
            (&alice, Action::Group, group("billing"), false),
            // A group pattern never grants a topic, nor a topic pattern a group.
            (&alice, Action::Consume, topic("app-billing"), false),
            (&alice, Action::Group, group("orders"), false),
            (&alice, Action::Admin, Resource::Proxy, false),
            (&root, Action::Admin, Resource::Proxy, true),
            (&root, Action::Consume, topic("orders"), false),
            // Mismatched pairs are denied whatever the rules.
            (&alice, Action::Consume, group("orders"), false),
            (&root, Action::Admin, topic("orders"), false),
        ];
        for (principal, action, resource, want) in table {
            assert_eq!(
                allowed(&p, principal, action, resource.clone()),
                want,
                "{principal} {action:?} {resource:?}"
            );
        }
    }

    #[test]
    fn a_consume_with_a_group_needs_both() {
        let p = policy(vec![
            rule(&["password"], &["consume"], &["t"], &[]),
            rule(&["password"], &["group"], &[], &["g"]),
        ]);
        let pw = who(Kind::Password, "", &[]);
        let wants = |g: &str| vec![(Action::Consume, topic("t")), (Action::Group, group(g))];
        assert!(p.authorize_all(&pw, &wants("g")).is_ok());
        let e = p.authorize_all(&pw, &wants("other")).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(e.message, "not allowed to group group \"other\"");
        let e = p
            .authorize_all(&pw, &[(Action::Consume, topic("u"))])
            .unwrap_err();
        assert_eq!(e.message, "not allowed to consume topic \"u\"");
    }

    #[test]
    fn grants_of_the_credential_allow_too() {
        let p = policy(vec![rule(&["nobody"], &["admin"], &[], &[])]);
        let mut j = who(Kind::Jwt, "svc", &[]);
        j.grants = vec![
            (Action::Consume, "orders".into()),
            (Action::Consume, "prefix:logs-".into()),
            (Action::Group, "app-*".into()),
            (Action::Admin, "*".into()),
        ];
        assert!(allowed(&p, &j, Action::Consume, topic("orders")));
        assert!(allowed(&p, &j, Action::Consume, topic("logs-x")));
        assert!(!allowed(&p, &j, Action::Produce, topic("orders")));
        assert!(!allowed(&p, &j, Action::Tail, topic("orders")));
        assert!(allowed(&p, &j, Action::Group, group("app-1")));
        assert!(!allowed(&p, &j, Action::Group, group("orders")));
        assert!(allowed(&p, &j, Action::Admin, Resource::Proxy));
    }

    #[test]
    fn a_grants_claim_alone_enforces_the_rules() {
        let mut c = Config::default();
        c.security.jwt = Some(Jwt {
            jwks_file: None,
            jwks_url: None,
            secret_file: Some("/dev/null".into()),
            issuer: None,
            audience: None,
            leeway: std::time::Duration::ZERO,
            roles_claim: "roles".into(),
            grants_claim: Some("grants".into()),
            jwks_refresh: std::time::Duration::from_secs(300),
        });
        let p = Policy::from_config(&c);
        assert!(p.enforced());
        assert!(!allowed(
            &p,
            &who(Kind::Jwt, "x", &[]),
            Action::Consume,
            topic("t")
        ));
    }

    #[test]
    fn warnings_at_start() {
        let public: SocketAddr = "0.0.0.0:9999".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let mut c = Config::default();
        let w = startup_warnings(&c, public);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("anyone who can reach this port"), "{}", w[0]);
        assert!(startup_warnings(&c, local).is_empty());
        assert!(startup_warnings(&c, "[::1]:1".parse().unwrap()).is_empty());
        c.security.acl = vec![rule(&["anonymous"], &["tail"], &["t"], &[])];
        let w = startup_warnings(&c, local);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("only rules naming `anonymous`"), "{}", w[0]);
        c.auth = Some(Secret::new("pw"));
        assert!(startup_warnings(&c, public).is_empty());
    }
}
