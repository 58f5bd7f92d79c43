//! Security options: where credentials come from, which browser origins may connect, the ACL
//! rules, tickets and quotas. Parsed and checked here; `access` turns them into decisions.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::{bad, defaults, ConfigError};

/// Flags of the security options (flattened into [`super::Cli`]). Each also reads
/// `KAFKA_PROXY_<NAME>` and the TOML key in brackets.
#[derive(Debug, Args, Default)]
pub struct SecurityCli {
    /// File holding the shared password of --auth (first line), so it never shows in `ps`
    /// [authFile]
    #[arg(long = "auth-file")]
    pub auth_file: Option<PathBuf>,
    /// Users file: lines `name:hash[:role,role...]`, hash in argon2 PHC or bcrypt form; Basic
    /// auth then carries a user name. Reloaded when it changes and on SIGHUP [usersFile]
    #[arg(long = "users-file")]
    pub users_file: Option<PathBuf>,
    /// Static bearer tokens file: lines `name:token[:role,role...]`. Reloaded when it changes
    /// and on SIGHUP [tokensFile]
    #[arg(long = "tokens-file")]
    pub tokens_file: Option<PathBuf>,
    /// JWKS file with the public keys JWT bearer tokens are checked against [jwtJwksFile]
    #[arg(long = "jwt-jwks-file")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// URL of a JWKS (http or https), fetched at start and refreshed [jwtJwksUrl]
    #[arg(long = "jwt-jwks-url")]
    pub jwt_jwks_url: Option<String>,
    /// File holding the HS256 secret of JWT bearer tokens [jwtSecretFile]
    #[arg(long = "jwt-secret-file")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Issuer (`iss`) a JWT must carry [jwtIssuer]
    #[arg(long = "jwt-issuer")]
    pub jwt_issuer: Option<String>,
    /// Audience (`aud`) a JWT must carry [jwtAudience]
    #[arg(long = "jwt-audience")]
    pub jwt_audience: Option<String>,
    /// Seconds of clock leeway for `exp` and `nbf` [jwtLeeway]
    #[arg(long = "jwt-leeway")]
    pub jwt_leeway: Option<u64>,
    /// JWT claim listing the principal's roles (an array, or a space-separated string)
    /// [jwtRolesClaim]
    #[arg(long = "jwt-roles-claim")]
    pub jwt_roles_claim: Option<String>,
    /// JWT claim granting access directly: an object of action -> list of patterns
    /// [jwtGrantsClaim]
    #[arg(long = "jwt-grants-claim")]
    pub jwt_grants_claim: Option<String>,
    /// Seconds between fetches of --jwt-jwks-url (a token with an unknown key id fetches at once,
    /// at most every 10 s) [jwtJwksRefresh]
    #[arg(long = "jwt-jwks-refresh")]
    pub jwt_jwks_refresh: Option<u64>,
    /// PEM CA bundle for client certificates (mTLS, needs --tls-cert); a client with a
    /// certificate it signed is the principal named by the certificate's subject CN
    /// [tlsClientCa]
    #[arg(long = "tls-client-ca")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM file of certificate revocation lists, one from each CA of --tls-client-ca: a client
    /// certificate they revoke fails the handshake; reloaded on change like the CA bundle
    /// [tlsClientCrl]
    #[arg(long = "tls-client-crl")]
    pub tls_client_crl: Option<PathBuf>,
    /// Origins (scheme://host[:port]) browsers may connect from, comma-separated; `*` allows
    /// any. Checked when any authentication is configured [allowedOrigins]
    #[arg(long = "allowed-origins", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Require a credential for /metrics [metricsAuth]
    #[arg(long = "metrics-auth")]
    pub metrics_auth: bool,
    /// Seconds a ticket from POST /v1/tickets stays valid [ticketTtl]
    #[arg(long = "ticket-ttl")]
    pub ticket_ttl: Option<u64>,
    /// File holding the key tickets are signed with; instances behind one load balancer share
    /// it. Unset: a random key per process [ticketKeyFile]
    #[arg(long = "ticket-key-file")]
    pub ticket_key_file: Option<PathBuf>,
    /// Most concurrent sessions of one principal; 0 is no limit [maxSessionsPerPrincipal]
    #[arg(long = "max-sessions-per-principal")]
    pub max_sessions_per_principal: Option<usize>,
    /// Records per second one principal may produce; 0 is no limit [produceRecordsPerSec]
    #[arg(long = "produce-records-per-sec")]
    pub produce_records_per_sec: Option<u64>,
    /// Bytes (keys plus values) per second one principal may produce; 0 is no limit
    /// [produceBytesPerSec]
    #[arg(long = "produce-bytes-per-sec")]
    pub produce_bytes_per_sec: Option<u64>,
    /// Failed authentications per minute from one client IP before it gets 429
    /// [authFailuresPerMinute]
    #[arg(long = "auth-failures-per-minute")]
    pub auth_failures_per_minute: Option<u32>,
}

/// The TOML keys [`SecurityFile`] takes; the file's other keys go to [`super::FileConfig`].
pub const FILE_KEYS: &[&str] = &[
    "authFile",
    "usersFile",
    "tokensFile",
    "jwtJwksFile",
    "jwtJwksUrl",
    "jwtSecretFile",
    "jwtIssuer",
    "jwtAudience",
    "jwtLeeway",
    "jwtRolesClaim",
    "jwtGrantsClaim",
    "jwtJwksRefresh",
    "tlsClientCa",
    "tlsClientCrl",
    "allowedOrigins",
    "metricsAuth",
    "ticketTtl",
    "ticketKeyFile",
    "maxSessionsPerPrincipal",
    "produceRecordsPerSec",
    "produceBytesPerSec",
    "authFailuresPerMinute",
    "acl",
];

/// The security keys of the TOML file (merged into the file's shape by [`super::FileConfig`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityFile {
    pub auth_file: Option<PathBuf>,
    pub users_file: Option<PathBuf>,
    pub tokens_file: Option<PathBuf>,
    pub jwt_jwks_file: Option<PathBuf>,
    pub jwt_jwks_url: Option<String>,
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway: Option<u64>,
    pub jwt_roles_claim: Option<String>,
    pub jwt_grants_claim: Option<String>,
    pub jwt_jwks_refresh: Option<u64>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_crl: Option<PathBuf>,
    pub allowed_origins: Option<Vec<String>>,
    pub metrics_auth: Option<bool>,
    pub ticket_ttl: Option<u64>,
    pub ticket_key_file: Option<PathBuf>,
    pub max_sessions_per_principal: Option<usize>,
    pub produce_records_per_sec: Option<u64>,
    pub produce_bytes_per_sec: Option<u64>,
    pub auth_failures_per_minute: Option<u32>,
    /// `[[acl]]` tables; only in the file.
    pub acl: Option<Vec<AclRule>>,
}

/// One ACL rule (`[[acl]]`): the principals it applies to may do `allow` on the topics and
/// groups matching its patterns. Rules only allow; what no rule allows is denied once any rule
/// exists (docs/SECURITY.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// `name` (any credential form naming it), `role:NAME`, `*` (any authenticated principal)
    /// or `anonymous`.
    pub principals: Vec<String>,
    /// Actions: `consume`, `produce`, `tail`, `group`, `admin`.
    pub allow: Vec<String>,
    /// Topic patterns: `name` (literal), `prefix:NAME` or a glob with `*` and `?`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Group patterns, as topics.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The action names an ACL rule or a JWT grants claim may use.
pub const ACTIONS: &[&str] = &["consume", "produce", "tail", "group", "admin"];

/// JWT verification settings; present when any JWT key source is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    pub roles_claim: String,
    pub grants_claim: Option<String>,
    pub jwks_refresh: Duration,
}

/// Per-principal and per-IP limits; 0 means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    pub sessions_per_principal: usize,
    pub produce_records_per_sec: u64,
    pub produce_bytes_per_sec: u64,
    pub auth_failures_per_minute: u32,
}

/// The validated security configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub users_file: Option<PathBuf>,
    pub tokens_file: Option<PathBuf>,
    pub jwt: Option<Jwt>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_crl: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub acl: Vec<AclRule>,
    pub metrics_auth: bool,
    pub ticket_ttl: Duration,
    pub ticket_key_file: Option<PathBuf>,
    pub quotas: Quotas,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            users_file: None,
            tokens_file: None,
            jwt: None,
            tls_client_ca: None,
            tls_client_crl: None,
            allowed_origins: Vec::new(),
            acl: Vec::new(),
            metrics_auth: false,
            ticket_ttl: Duration::from_secs(defaults::TICKET_TTL_SECS),
            ticket_key_file: None,
            quotas: Quotas {
                sessions_per_principal: defaults::NO_LIMIT as usize,
                produce_records_per_sec: defaults::NO_LIMIT,
                produce_bytes_per_sec: defaults::NO_LIMIT,
                auth_failures_per_minute: defaults::AUTH_FAILURES_PER_MINUTE,
            },
        }
    }
}

impl Security {
    /// Whether any credential source is configured besides the shared password.
    pub fn has_identities(&self) -> bool {
        self.users_file.is_some()
            || self.tokens_file.is_some()
            || self.jwt.is_some()
            || self.tls_client_ca.is_some()
    }
}

/// Merges the security flags, environment and file (CLI > env > file) and validates them.
/// Returns the security settings and the shared password read from `authFile`, if named.
pub(super) fn merge(
    cli: SecurityCli,
    env: &std::collections::HashMap<String, String>,
    file: SecurityFile,
) -> Result<(Security, Option<String>), ConfigError> {
    use super::{env_parse, pick};
    let auth_file: Option<PathBuf> = pick(cli.auth_file, env, "AUTH_FILE", file.auth_file)?;
    let password = match auth_file {
        Some(path) => Some(read_secret_file("authFile", &path)?),
        None => None,
    };
    let users_file: Option<PathBuf> = pick(cli.users_file, env, "USERS_FILE", file.users_file)?;
    let tokens_file: Option<PathBuf> = pick(cli.tokens_file, env, "TOKENS_FILE", file.tokens_file)?;
    let jwks_file: Option<PathBuf> =
        pick(cli.jwt_jwks_file, env, "JWT_JWKS_FILE", file.jwt_jwks_file)?;
    let jwks_url: Option<String> = pick(cli.jwt_jwks_url, env, "JWT_JWKS_URL", file.jwt_jwks_url)?;
    let secret_file: Option<PathBuf> = pick(
        cli.jwt_secret_file,
        env,
        "JWT_SECRET_FILE",
        file.jwt_secret_file,
    )?;
    let issuer: Option<String> = pick(cli.jwt_issuer, env, "JWT_ISSUER", file.jwt_issuer)?;
    let audience: Option<String> = pick(cli.jwt_audience, env, "JWT_AUDIENCE", file.jwt_audience)?;
    let leeway: u64 = pick(cli.jwt_leeway, env, "JWT_LEEWAY", file.jwt_leeway)?
        .unwrap_or(defaults::JWT_LEEWAY_SECS);
    let roles_claim: String = pick(
        cli.jwt_roles_claim,
        env,
        "JWT_ROLES_CLAIM",
        file.jwt_roles_claim,
    )?
    .unwrap_or_else(|| defaults::JWT_ROLES_CLAIM.into());
    let grants_claim: Option<String> = pick(
        cli.jwt_grants_claim,
        env,
        "JWT_GRANTS_CLAIM",
        file.jwt_grants_claim,
    )?;
    let refresh: u64 = pick(
        cli.jwt_jwks_refresh,
        env,
        "JWT_JWKS_REFRESH",
        file.jwt_jwks_refresh,
    )?
    .unwrap_or(defaults::JWT_JWKS_REFRESH_SECS);
    let tls_client_ca: Option<PathBuf> =
        pick(cli.tls_client_ca, env, "TLS_CLIENT_CA", file.tls_client_ca)?;
    let tls_client_crl: Option<PathBuf> = pick(
        cli.tls_client_crl,
        env,
        "TLS_CLIENT_CRL",
        file.tls_client_crl,
    )?;
    if tls_client_crl.is_some() && tls_client_ca.is_none() {
        return Err(bad(
            "tlsClientCrl",
            "needs tlsClientCa: the lists revoke certificates of those CAs",
        ));
    }
    let allowed_origins: Vec<String> = if !cli.allowed_origins.is_empty() {
        cli.allowed_origins
    } else if let Some(v) = env
        .get("KAFKA_PROXY_ALLOWED_ORIGINS")
        .filter(|v| !v.is_empty())
    {
        v.split(',').map(str::to_string).collect()
    } else {
        file.allowed_origins.unwrap_or_default()
    };
    let metrics_auth = cli.metrics_auth
        || env_parse::<bool>(env, "METRICS_AUTH")?.unwrap_or(false)
        || file.metrics_auth.unwrap_or(false);
    let ticket_ttl: u64 = pick(cli.ticket_ttl, env, "TICKET_TTL", file.ticket_ttl)?
        .unwrap_or(defaults::TICKET_TTL_SECS);
    let ticket_key_file: Option<PathBuf> = pick(
        cli.ticket_key_file,
        env,
        "TICKET_KEY_FILE",
        file.ticket_key_file,
    )?;
    let quotas = Quotas {
        sessions_per_principal: pick(
            cli.max_sessions_per_principal,
            env,
            "MAX_SESSIONS_PER_PRINCIPAL",
            file.max_sessions_per_principal,
        )?
        .unwrap_or(defaults::NO_LIMIT as _),
        produce_records_per_sec: pick(
            cli.produce_records_per_sec,
            env,
            "PRODUCE_RECORDS_PER_SEC",
            file.produce_records_per_sec,
        )?
        .unwrap_or(defaults::NO_LIMIT as _),
        produce_bytes_per_sec: pick(
            cli.produce_bytes_per_sec,
            env,
            "PRODUCE_BYTES_PER_SEC",
            file.produce_bytes_per_sec,
        )?
        .unwrap_or(defaults::NO_LIMIT as _),
        auth_failures_per_minute: pick(
            cli.auth_failures_per_minute,
            env,
            "AUTH_FAILURES_PER_MINUTE",
            file.auth_failures_per_minute,
        )?
        .unwrap_or(defaults::AUTH_FAILURES_PER_MINUTE),
    };

    let jwt = if jwks_file.is_some() || jwks_url.is_some() || secret_file.is_some() {
        if let Some(u) = &jwks_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad("jwtJwksUrl", "must be an http:// or https:// URL"));
            }
        }
        if leeway > 300 {
            return Err(bad("jwtLeeway", "must be at most 300 seconds"));
        }
        if refresh < 10 {
            return Err(bad("jwtJwksRefresh", "must be at least 10 seconds"));
        }
        Some(Jwt {
            jwks_file,
            jwks_url,
            secret_file,
            issuer,
            audience,
            leeway: Duration::from_secs(leeway),
            roles_claim,
            grants_claim,
            jwks_refresh: Duration::from_secs(refresh),
        })
    } else {
        if issuer.is_some() || audience.is_some() || grants_claim.is_some() {
            return Err(bad(
                "jwtIssuer",
                "JWT settings need a key source: jwtJwksFile, jwtJwksUrl or jwtSecretFile",
            ));
        }
        None
    };
    for o in &allowed_origins {
        check_origin(o)?;
    }
    if !(5..=600).contains(&ticket_ttl) {
        return Err(bad("ticketTtl", "must be between 5 and 600 seconds"));
    }
    let acl = file.acl.unwrap_or_default();
    for (i, rule) in acl.iter().enumerate() {
        check_rule(i, rule)?;
    }
    Ok((
        Security {
            users_file,
            tokens_file,
            jwt,
            tls_client_ca,
            tls_client_crl,
            allowed_origins,
            acl,
            metrics_auth,
            ticket_ttl: Duration::from_secs(ticket_ttl),
            ticket_key_file,
            quotas,
        },
        password,
    ))
}

/// Reads a secret from the first line of a file (a trailing newline is not part of it).
pub fn read_secret_file(option: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(option, format!("cannot read {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        return Err(bad(
            option,
            format!("{} is empty; the secret is its first line", path.display()),
        ));
    }
    Ok(first.to_string())
}

fn check_origin(o: &str) -> Result<(), ConfigError> {
    if o == "*" {
        return Ok(());
    }
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| {
            bad(
                "allowedOrigins",
                format!("{o:?} is not an origin: expected scheme://host[:port] or *"),
            )
        })?;
    if rest.is_empty() || rest.contains('/') || o.ends_with(':') {
        return Err(bad(
            "allowedOrigins",
            format!("{o:?} is not an origin: expected scheme://host[:port] with no path"),
        ));
    }
    Ok(())
}

/// Checks a pattern's syntax: `prefix:` needs a rest; a glob may use `*` and `?`.
pub fn check_pattern(p: &str) -> Result<(), String> {
    match p.strip_prefix("prefix:") {
        Some("") => Err("prefix: needs a prefix after it".into()),
        Some(_) => Ok(()),
        None if p.is_empty() => Err("an empty pattern matches nothing".into()),
        None => Ok(()),
    }
}

fn check_rule(i: usize, rule: &AclRule) -> Result<(), ConfigError> {
    let name = format!("acl[{i}]");
    if rule.principals.is_empty() || rule.principals.iter().any(|p| p.is_empty()) {
        return Err(bad(
            &name,
            "principals must list at least one non-empty name",
        ));
    }
    if rule.allow.is_empty() {
        return Err(bad(&name, "allow must list at least one action"));
    }
    for a in &rule.allow {
        if !ACTIONS.contains(&a.as_str()) {
            return Err(bad(
                &name,
                format!(
                    "unknown action {a:?}; expected one of {}",
                    ACTIONS.join(", ")
                ),
            ));
        }
    }
    for p in rule.topics.iter().chain(&rule.groups) {
        check_pattern(p).map_err(|m| bad(&name, format!("pattern {p:?}: {m}")))?;
    }
    let needs_topics = rule
        .allow
        .iter()
        .any(|a| matches!(a.as_str(), "consume" | "produce" | "tail"));
    if needs_topics && rule.topics.is_empty() {
        return Err(bad(&name, "consume, produce and tail need topics = [...]"));
    }
    if rule.allow.iter().any(|a| a == "group") && rule.groups.is_empty() {
        return Err(bad(&name, "group needs groups = [...]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: &[&str], topics: &[&str], groups: &[&str]) -> AclRule {
        AclRule {
            principals: vec!["alice".into()],
            allow: allow.iter().map(|s| s.to_string()).collect(),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rules_are_checked() {
        assert!(check_rule(0, &rule(&["consume", "group"], &["t"], &["g-*"])).is_ok());
        assert!(check_rule(0, &rule(&["admin"], &[], &[])).is_ok());
        for bad_rule in [
            rule(&["read"], &["t"], &[]),
            rule(&["consume"], &[], &[]),
            rule(&["group"], &[], &[]),
            rule(&[], &["t"], &[]),
            rule(&["consume"], &["prefix:"], &[]),
            rule(&["consume"], &[""], &[]),
        ] {
            assert!(check_rule(3, &bad_rule).is_err(), "{bad_rule:?}");
        }
    }

    #[test]
    fn origins_are_checked() {
        for ok in ["*", "https://app.example.com", "http://localhost:8080"] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for no in [
            "app.example.com",
            "https://a.example/",
            "https://",
            "ftp://x",
        ] {
            assert!(check_origin(no).is_err(), "{no}");
        }
    }

    #[test]
    fn secret_files_take_their_first_line() {
        let dir = std::env::temp_dir().join(format!("kp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(read_secret_file("authFile", &f).unwrap(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        let e = read_secret_file("authFile", &f).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
