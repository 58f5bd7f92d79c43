//! The in-band credential frame: `{"type":"auth","token":"..."}` renews an expiring credential on
//! an open socket, on every endpoint (docs/PROTOCOL.md, "Expiring credentials").

use serde::Deserialize;

use super::ProtocolError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFrame {
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

/// `Some` when `text` is an auth frame (a JSON object whose `type` is `auth`): its token, or why
/// it is malformed. `None` for every other frame, which belongs to the endpoint.
pub fn auth_frame(text: &str) -> Option<Result<String, ProtocolError>> {
    // Cheapest test first: this runs on every text frame of every socket, and most produce
    // frames (plain lines) fail the first byte test without a scan of the frame.
    if !text.trim_start().starts_with('{') || !text.contains("\"auth\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type").and_then(|t| t.as_str()) != Some("auth") {
        return None;
    }
    Some(
        serde_json::from_value::<AuthFrame>(v)
            .map_err(|e| {
                ProtocolError::bad_request(format!(
                    "an auth frame is {{\"type\":\"auth\",\"token\":\"...\"}}: {e}"
                ))
            })
            .and_then(|f| {
                debug_assert_eq!(f.kind, "auth");
                if f.token.is_empty() {
                    Err(ProtocolError::bad_request(
                        "the auth frame's token is empty",
                    ))
                } else {
                    Ok(f.token)
                }
            }),
    )
}

/// The proxy's answer to an accepted auth frame: when the new credential lapses (seconds since
/// the epoch), or `null` when it does not.
pub fn renewed_frame(expires: Option<u64>) -> String {
    match expires {
        Some(e) => format!(r#"{{"type":"auth","expires":{e}}}"#),
        None => r#"{"type":"auth","expires":null}"#.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_frames_are_told_apart_from_data() {
        assert_eq!(
            auth_frame(r#"{"type":"auth","token":"abc"}"#)
                .unwrap()
                .unwrap(),
            "abc"
        );
        assert_eq!(
            auth_frame(r#" { "token":"abc", "type":"auth" } "#)
                .unwrap()
                .unwrap(),
            "abc"
        );
        for other in [
            r#"{"type":"ack","batch":1}"#,
            r#"{"value":"auth"}"#,
            "auth",
            r#"["auth"]"#,
            r#"{"type":"authx","token":"a"}"#,
        ] {
            assert!(auth_frame(other).is_none(), "{other}");
        }
        for bad in [
            r#"{"type":"auth"}"#,
            r#"{"type":"auth","token":""}"#,
            r#"{"type":"auth","token":"a","x":1}"#,
            r#"{"type":"auth","token":5}"#,
        ] {
            assert!(auth_frame(bad).unwrap().is_err(), "{bad}");
        }
        assert_eq!(renewed_frame(Some(5)), r#"{"type":"auth","expires":5}"#);
    }
}
