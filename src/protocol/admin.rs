//! Admin API parameters (docs/PROTOCOL.md, "Admin API"): each endpoint's query parameters and the
//! body of the close action.

use std::collections::HashMap;

use super::{validate_topic, ProtocolError};

/// Longest `reason` of a close action, in bytes. The close frame carries at most 123 bytes
/// (`closed_by_admin: ` plus the reason, cut on a character boundary); the error frame sent
/// before it carries the whole reason.
pub const MAX_CLOSE_REASON: usize = 256;

/// The reason a session closed by an operator is given when the request names none.
pub const DEFAULT_CLOSE_REASON: &str = "closed by an operator";

/// Most topics a group look-up may name with `topic=`.
pub const MAX_GROUP_TOPICS: usize = 100;

fn known(q: &HashMap<String, String>, names: &[&str]) -> Result<(), ProtocolError> {
    match q.keys().find(|k| !names.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) if names.is_empty() => Err(ProtocolError::bad_request(format!(
            "unknown parameter {k:?}; this endpoint takes none"
        ))),
        Some(k) => Err(ProtocolError::bad_request(format!(
            "unknown parameter {k:?}; known: {}",
            names.join(", ")
        ))),
    }
}

fn flag(q: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, ProtocolError> {
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        // `?internal` alone means yes, as a form's checkbox would say it.
        Some("" | "true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ProtocolError::bad_request(format!(
            "{name} must be true or false, got {other:?}"
        ))),
    }
}

/// An endpoint without parameters.
pub fn parse_none(q: &HashMap<String, String>) -> Result<(), ProtocolError> {
    known(q, &[])
}

/// `GET /admin/topics[?internal=true]`: whether Kafka's own `__` topics are listed.
pub fn parse_topics(q: &HashMap<String, String>) -> Result<bool, ProtocolError> {
    known(q, &["internal"])?;
    flag(q, "internal", false)
}

/// `GET /admin/groups/{group}[?topic=a,b]`: the topics to look at, all when `None`.
pub fn parse_group(q: &HashMap<String, String>) -> Result<Option<Vec<String>>, ProtocolError> {
    known(q, &["topic"])?;
    let Some(list) = q.get("topic") else {
        return Ok(None);
    };
    let topics: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if topics.is_empty() {
        return Err(ProtocolError::bad_request("topic names no topic"));
    }
    if topics.len() > MAX_GROUP_TOPICS {
        return Err(ProtocolError::bad_request(format!(
            "topic names more than {MAX_GROUP_TOPICS} topics"
        )));
    }
    for t in &topics {
        validate_topic(t)?;
    }
    Ok(Some(topics))
}

/// `GET /admin/sessions[?lag=false]`: whether each session's lag is read from Kafka.
pub fn parse_sessions(q: &HashMap<String, String>) -> Result<bool, ProtocolError> {
    known(q, &["lag"])?;
    flag(q, "lag", true)
}

/// A group id in a path: not empty, at most 255 bytes as Kafka allows.
pub fn validate_group(group: &str) -> Result<(), ProtocolError> {
    if group.is_empty() || group.len() > 255 {
        return Err(ProtocolError::bad_request(
            "a group id is 1 to 255 bytes long",
        ));
    }
    Ok(())
}

/// The body of `POST /admin/sessions/{id}/close`: empty, or `{"reason":"..."}`.
pub fn parse_close(body: &[u8]) -> Result<String, ProtocolError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Close {
        reason: Option<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_CLOSE_REASON.to_string());
    }
    let c: Close = serde_json::from_slice(body).map_err(|e| {
        ProtocolError::bad_request(format!("the body must be {{\"reason\":\"...\"}}: {e}"))
    })?;
    match c.reason {
        None => Ok(DEFAULT_CLOSE_REASON.to_string()),
        Some(r) if r.len() > MAX_CLOSE_REASON => Err(ProtocolError::bad_request(format!(
            "reason is longer than {MAX_CLOSE_REASON} bytes"
        ))),
        Some(r) if r.trim().is_empty() => Ok(DEFAULT_CLOSE_REASON.to_string()),
        Some(r) => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(parse_topics(&q(&[])), Ok(false));
        assert_eq!(parse_topics(&q(&[("internal", "")])), Ok(true));
        assert_eq!(parse_topics(&q(&[("internal", "false")])), Ok(false));
        assert!(parse_topics(&q(&[("internal", "maybe")])).is_err());
        assert!(parse_topics(&q(&[("x", "1")])).is_err());
        assert!(parse_none(&q(&[("x", "1")])).is_err());
        assert_eq!(parse_sessions(&q(&[])), Ok(true));
        assert_eq!(parse_group(&q(&[])), Ok(None));
        assert_eq!(
            parse_group(&q(&[("topic", "a, b")])),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert!(parse_group(&q(&[("topic", ",")])).is_err());
        assert!(validate_group("").is_err());
        assert!(validate_group(&"g".repeat(256)).is_err());
    }

    #[test]
    fn close_bodies() {
        assert_eq!(parse_close(b"").as_deref(), Ok(DEFAULT_CLOSE_REASON));
        assert_eq!(parse_close(b"{}").as_deref(), Ok(DEFAULT_CLOSE_REASON));
        assert_eq!(
            parse_close(br#"{"reason":"maintenance"}"#).as_deref(),
            Ok("maintenance")
        );
        assert!(parse_close(br#"{"why":"x"}"#).is_err());
        assert!(parse_close(b"nope").is_err());
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(MAX_CLOSE_REASON + 1));
        assert!(parse_close(long.as_bytes()).is_err());
    }
}
