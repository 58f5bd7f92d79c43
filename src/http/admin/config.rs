//! `GET /admin/config`: the effective configuration under the option names of the README, with
//! every secret replaced by `<redacted>`: the `auth` password, Kafka property values whose key
//! names a secret (`kafka::is_secret_property`), and credentials inside the JWKS URL. Paths of
//! secret files are shown; their contents never are.

use serde_json::{json, Value};

use crate::config::Config;
use crate::kafka::{is_secret_property, REDACTED};

/// The configuration as the admin API shows it.
pub fn effective(c: &Config) -> Value {
    let props: serde_json::Map<String, Value> = c
        .kafka_properties
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_property(k) {
                REDACTED
            } else {
                v.expose()
            };
            (k.clone(), Value::from(shown))
        })
        .collect();
    let s = &c.security;
    let jwt = s.jwt.as_ref().map(|j| {
        json!({
            "jwtJwksFile": j.jwks_file,
            "jwtJwksUrl": j.jwks_url.as_deref().map(redact_url),
            "jwtSecretFile": j.secret_file,
            "jwtIssuer": j.issuer,
            "jwtAudience": j.audience,
            "jwtLeeway": j.leeway.as_secs(),
            "jwtRolesClaim": j.roles_claim,
            "jwtGrantsClaim": j.grants_claim,
            "jwtJwksRefresh": j.jwks_refresh.as_secs(),
        })
    });
    let acl: Vec<Value> = s
        .acl
        .iter()
        .map(|r| {
            json!({
                "principals": r.principals,
                "allow": r.allow,
                "topics": r.topics,
                "groups": r.groups,
            })
        })
        .collect();
    json!({
        "listen": c.listen.to_string(),
        "kafka": c.kafka,
        "idleTimeout": u64::try_from(c.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        "maxBytes": c.max_bytes,
        "partition": c.partition,
        "auth": c.auth.as_ref().map(|_| REDACTED),
        "offsetReset": c.offset_reset.as_str(),
        "sessionBufferBytes": c.session_buffer_bytes,
        "maxFrameBytes": c.max_frame_bytes,
        "maxConnections": c.max_connections,
        "maxUnackedRecords": c.max_unacked_records,
        "maxTailReaders": c.max_tail_readers,
        "statsInterval": c.stats_interval.map_or(0, |d| d.as_secs()),
        "shutdownGrace": c.shutdown_grace.as_secs(),
        "pingInterval": c.ping_interval.as_secs(),
        "kafkaProperties": props,
        "logFormat": c.log_format,
        "tlsCert": c.tls.as_ref().map(|t| &t.cert),
        "tlsKey": c.tls.as_ref().map(|t| &t.key),
        "usersFile": s.users_file,
        "tokensFile": s.tokens_file,
        "jwt": jwt,
        "tlsClientCa": s.tls_client_ca,
        "tlsClientCrl": s.tls_client_crl,
        "allowedOrigins": s.allowed_origins,
        "metricsAuth": s.metrics_auth,
        "ticketTtl": s.ticket_ttl.as_secs(),
        "ticketKeyFile": s.ticket_key_file,
        "maxSessionsPerPrincipal": s.quotas.sessions_per_principal,
        "produceRecordsPerSec": s.quotas.produce_records_per_sec,
        "produceBytesPerSec": s.quotas.produce_bytes_per_sec,
        "authFailuresPerMinute": s.quotas.auth_failures_per_minute,
        "acl": acl,
    })
}

/// A URL without the credentials it may carry: user information and the query string.
fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, _)) => (b, Some(REDACTED)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}{path}"),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    match query {
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn secrets_are_redacted_and_the_rest_shown() {
        let mut c = Config {
            auth: Some(Secret::new("pw-shared")),
            ..Config::default()
        };
        for (k, v) in [
            ("sasl.password", "pw-kafka"),
            ("sasl.username", "proxy"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("sasl.jaas.config", "x password=\"pw-jaas\";"),
        ] {
            c.kafka_properties.insert(k.into(), Secret::new(v));
        }
        let shown = effective(&c).to_string();
        for secret in ["pw-shared", "pw-kafka", "pw-jaas"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let v = effective(&c);
        assert_eq!(v["kafkaProperties"]["sasl.password"], REDACTED);
        assert_eq!(v["kafkaProperties"]["sasl.username"], "proxy");
        assert_eq!(v["kafkaProperties"]["ssl.ca.location"], "/etc/ca.pem");
        assert_eq!(v["auth"], REDACTED);
        assert_eq!(v["maxBytes"], c.max_bytes);
        assert!(effective(&Config::default())["auth"].is_null());
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://u:p@idp.example/keys?token=t"),
            "https://<redacted>@idp.example/keys?<redacted>"
        );
        assert_eq!(
            redact_url("https://idp.example/keys"),
            "https://idp.example/keys"
        );
        assert_eq!(redact_url("https://a@b@host"), "https://<redacted>@host");
    }
}
