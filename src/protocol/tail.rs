//! `/v1/tail` parameters: a topic and an optional encoding.

use std::collections::HashMap;

use super::consume::{parse_encoding, Encoding};
use super::{validate_topic, ProtocolError};

/// Parses `/v1/tail` parameters: `topic` and optional `encoding`.
pub fn parse_tail(q: &HashMap<String, String>) -> Result<(String, Encoding), ProtocolError> {
    const KNOWN: &[&str] = &["topic", "encoding"];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ProtocolError::bad_request(format!(
            "unknown parameter {k:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let topic = match q.get("topic").map(|s| s.trim()) {
        Some(t) if !t.is_empty() => t,
        _ => {
            return Err(ProtocolError::bad_request(
                "missing required parameter topic",
            ))
        }
    };
    validate_topic(topic)?;
    let enc = match q.get("encoding") {
        Some(e) => parse_encoding(e)?,
        None => Encoding::Text,
    };
    Ok((topic.to_string(), enc))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::query as q;

    #[test]
    fn parses_topic_and_encoding() {
        assert_eq!(
            parse_tail(&q(&[("topic", "t1")])).unwrap(),
            ("t1".into(), Encoding::Text)
        );
        assert_eq!(
            parse_tail(&q(&[("topic", "t1"), ("encoding", "base64")])).unwrap(),
            ("t1".into(), Encoding::Base64)
        );
        assert!(parse_tail(&q(&[])).is_err());
        assert!(parse_tail(&q(&[("topic", "a b")])).is_err());
        assert!(parse_tail(&q(&[("topic", "t"), ("group", "g")])).is_err());
        assert!(parse_tail(&q(&[("topic", "t"), ("encoding", "hex")])).is_err());
    }
}
