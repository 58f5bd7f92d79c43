//! The wire protocol: request parameters, frames and error codes. Pure: no I/O, no Kafka.
//!
//! Everything a client can see is defined here so `docs/PROTOCOL.md` has one source to follow.

pub mod admin;
pub mod auth;
pub mod consume;
pub mod json;
pub mod produce;
pub mod sse;
pub mod tail;

use std::collections::HashMap;

use serde::Serialize;

/// Every error a client can receive, before the upgrade (HTTP status + JSON body) or after it
/// (an error frame and/or a WebSocket close code). The close code is always 4000 + HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A query parameter or control frame is malformed.
    BadRequest,
    /// No or wrong credentials.
    Unauthorized,
    /// The principal may not use this topic.
    Forbidden,
    /// The topic does not exist in Kafka.
    UnknownTopic,
    /// The partition does not exist in the topic.
    UnknownPartition,
    /// A client frame or record is larger than the configured limit.
    TooLarge,
    /// A requested offset is outside the partition's range.
    OffsetOutOfRange,
    /// An ack names an offset or batch that was never delivered on this socket.
    BadAck,
    /// A connection or session limit is reached.
    LimitReached,
    /// An unexpected proxy fault.
    Internal,
    /// Kafka answered with an error for this request.
    KafkaError,
    /// Kafka cannot be reached.
    KafkaUnavailable,
    /// The proxy is shutting down.
    ShuttingDown,
    /// An operator closed the session (`POST /admin/sessions/{id}/close`).
    ClosedByAdmin,
    /// An admin API object (a consumer group, a session) that does not exist.
    NotFound,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::TooLarge,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::BadAck,
        ErrorCode::LimitReached,
        ErrorCode::Internal,
        ErrorCode::KafkaError,
        ErrorCode::KafkaUnavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::ClosedByAdmin,
        ErrorCode::NotFound,
    ];

    /// The stable machine-readable name used in JSON bodies and error frames.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::UnknownPartition => "unknown_partition",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::BadAck => "bad_ack",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Internal => "internal_error",
            ErrorCode::KafkaError => "kafka_error",
            ErrorCode::KafkaUnavailable => "kafka_unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ClosedByAdmin => "closed_by_admin",
            ErrorCode::NotFound => "not_found",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownTopic => 404,
            ErrorCode::UnknownPartition => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::OffsetOutOfRange => 416,
            ErrorCode::BadAck => 422,
            ErrorCode::LimitReached => 429,
            ErrorCode::Internal => 500,
            ErrorCode::KafkaError => 502,
            ErrorCode::KafkaUnavailable => 503,
            ErrorCode::ShuttingDown => 503,
            // Only ever a close code (4410): "gone", the session was ended on purpose.
            ErrorCode::ClosedByAdmin => 410,
            ErrorCode::NotFound => 404,
        }
    }

    /// WebSocket close code: 4000 + HTTP status, except that shutdown uses the standard 1001.
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::ShuttingDown => 1001,
            // 4404 for both unknown topic and partition would hide which; partitions get 4405.
            ErrorCode::UnknownPartition => 4405,
            // Only answered over HTTP (the admin API); distinct from 4404 and 4405 all the same.
            ErrorCode::NotFound => 4406,
            other => 4000 + other.http_status(),
        }
    }
}

/// An error with a human-readable reason, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The JSON body of an HTTP error response: `{"error":{"code":"...","message":"..."}}`.
    pub fn http_body(&self) -> String {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'static str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        serde_json::to_string(&Body {
            error: Inner {
                code: self.code.name(),
                message: &self.message,
            },
        })
        .unwrap_or_else(|_| String::from("{\"error\":{\"code\":\"internal_error\"}}"))
    }

    /// An error frame: `{"type":"error","code":"...","message":"..."}`.
    pub fn frame(&self) -> String {
        self.frame_with_id(None)
    }

    /// An error frame that names the client's record or request id.
    pub fn frame_with_id(&self, id: Option<&serde_json::Value>) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a serde_json::Value>,
            code: &'static str,
            message: &'a str,
        }
        serde_json::to_string(&Frame {
            kind: "error",
            id,
            code: self.code.name(),
            message: &self.message,
        })
        .unwrap_or_else(|_| String::from("{\"type\":\"error\",\"code\":\"internal_error\"}"))
    }

    /// A close reason fits in 123 bytes (RFC 6455); cut on a char boundary.
    pub fn close_reason(&self) -> String {
        let mut s = format!("{}: {}", self.code.name(), self.message);
        if s.len() > 123 {
            let mut cut = 123;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

/// Parses a URL query string into its parameters, decoded as HTML forms and axum's `Query` do
/// (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte, invalid UTF-8 becomes
/// U+FFFD, empty `&&` pieces are skipped, `name` alone means `name=`). A parameter given twice,
/// even spelled differently (`topic` and `%74opic`), is refused: a map would keep one of them and
/// the request would be half-understood.
pub fn parse_query(raw: &str) -> Result<HashMap<String, String>, ProtocolError> {
    let mut params = HashMap::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let name = form_decode(name);
        if params.contains_key(&name) {
            return Err(ProtocolError::bad_request(format!(
                "parameter {name:?} is given more than once; give it once (lists are comma-separated)"
            )));
        }
        params.insert(name, form_decode(value));
    }
    Ok(params)
}

/// One `application/x-www-form-urlencoded` name or value; a `%` not followed by two hex digits
/// stays as it is, like the WHATWG URL standard says.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Parses a non-negative integer parameter with a clear message.
pub(crate) fn parse_int<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, ProtocolError> {
    raw.trim().parse::<T>().map_err(|_| {
        ProtocolError::bad_request(format!(
            "{name} must be a non-negative integer, got {raw:?}"
        ))
    })
}

/// Kafka's legal topic names: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), ProtocolError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::bad_request(format!(
            "invalid topic name {topic:?}: use 1-249 characters of [a-zA-Z0-9._-]"
        )))
    }
}

/// `v` in decimal ASCII, written into `out` without `fmt`: the encoders write an offset for every
/// record and every ack. Twenty bytes hold any `i64` with its sign.
pub(crate) fn decimal(v: i64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        out[i] = b'-';
    }
    &out[i..]
}

/// Builds a query map for unit tests.
#[cfg(test)]
pub(crate) fn query(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn close_codes_are_distinct_and_in_range() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            let cc = c.close_code();
            assert!(cc == 1001 || (4000..5000).contains(&cc), "{c:?}");
            assert!(seen.insert(cc), "duplicate close code {cc}");
        }
    }

    #[test]
    fn decimal_writes_every_i64() {
        for v in [0, 7, -7, 10, 1_000_000, i64::MAX, i64::MIN] {
            let mut d = [0u8; 20];
            assert_eq!(decimal(v, &mut d), v.to_string().as_bytes());
        }
    }

    #[test]
    fn close_reason_is_bounded() {
        let e = ProtocolError::bad_request("é".repeat(200));
        assert!(e.close_reason().len() <= 123);
    }

    #[test]
    fn http_body_shape() {
        let e = ProtocolError::new(ErrorCode::UnknownTopic, "topic \"x\" does not exist");
        assert_eq!(
            e.http_body(),
            r#"{"error":{"code":"unknown_topic","message":"topic \"x\" does not exist"}}"#
        );
    }

    #[test]
    fn query_decodes_like_forms() {
        let q = parse_query("topic=a%2Cb&group=my+group&x&&y=%zz%4&z=%C3%A9%FF&e=a=b").unwrap();
        assert_eq!(q["topic"], "a,b");
        assert_eq!(q["group"], "my group");
        assert_eq!(q["x"], "");
        assert_eq!(q["y"], "%zz%4");
        assert_eq!(q["z"], "é\u{fffd}");
        assert_eq!(q["e"], "a=b");
        assert_eq!(q.len(), 6);
        assert!(parse_query("").unwrap().is_empty());
    }

    #[test]
    fn query_refuses_a_parameter_given_twice() {
        for raw in [
            "topic=a&topic=b",
            "topic=a&topic=a",
            "topic=a&%74opic=b",
            "group=g&topic=a&group=",
            "x&x",
        ] {
            let e = parse_query(raw).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{raw}");
            assert!(e.message.contains("more than once"), "{raw}: {}", e.message);
        }
        let e = parse_query("topic=a&topic=b").unwrap_err();
        assert!(e.message.contains("\"topic\""), "{}", e.message);
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic("a.b_c-1").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("..").is_err());
        assert!(validate_topic("a b").is_err());
        assert!(validate_topic(&"a".repeat(250)).is_err());
    }
}
