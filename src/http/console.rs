//! `/console`: the operator's browser console, a static page whose files are compiled into the
//! binary (no CDN, works offline); its data comes from the gated endpoints it calls.
//!
//! The page carries no data, so it is served without a credential. Every answer here carries a
//! Content-Security-Policy that lets the page load only its own files and talk only to its own
//! host: records and error messages are shown as text, and even a script injected through them
//! would have nowhere to load from or send to.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpError;
use crate::protocol::{ErrorCode, ProtocolError};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Quoted strong validator, a hash of `body` computed at compile time.
    etag: &'static str,
}

/// FNV-1a (64 bits): a cheap, stable content hash for the `ETag`s.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, built in a const context.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("console/", $name));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            name: $name,
            content_type: $type,
            body: BODY,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Files under `/console/`.
const ASSETS: &[Asset] = &[
    asset!("console.js", "text/javascript; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The policy without a socket origin: only the page's own files, only its own origin to
/// fetch from, no inline script or style, no plugins, no framing, no form posts.
const CSP_SELF: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The policy for a page fetched with `Host: host`: `CSP_SELF` plus WebSockets to that same
/// host and port, named explicitly because browsers before CSP level 3 do not count `ws:` as
/// `'self'`. A `Host` with characters a host name cannot have gets `CSP_SELF` (the page then
/// cannot stream in those browsers, and nothing can be smuggled into the header).
pub fn csp(host: Option<&str>) -> HeaderValue {
    let host = host.filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    let Some(h) = host else {
        return HeaderValue::from_static(CSP_SELF);
    };
    let policy = CSP_SELF.replace(
        "connect-src 'self'",
        &format!("connect-src 'self' ws://{h} wss://{h}"),
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(CSP_SELF))
}

/// `GET /console` (and `/console/`): the page.
pub async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /console/{asset}`: a script, style sheet or icon of the page.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a, &headers),
        None => HttpError::from(ProtocolError::new(
            ErrorCode::NotFound,
            "no such console file",
        ))
        .into_response(),
    }
}

fn serve(a: &Asset, request: &HeaderMap) -> Response {
    // `no-cache`: the browser may keep a copy but asks each time; an unchanged file costs a 304.
    // A new binary brings new files, and an old script must never run against a new proxy.
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let host = request.get(header::HOST).and_then(|v| v.to_str().ok());
    h.insert(header::CONTENT_SECURITY_POLICY, csp(host));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hashes_of_the_content() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(&etag_of(b"a"), b"\"af63dc4c8601ec8c\"");
        let tags: std::collections::HashSet<_> =
            ASSETS.iter().chain([&INDEX]).map(|a| a.etag).collect();
        assert_eq!(tags.len(), ASSETS.len() + 1, "each file has its own tag");
    }

    #[test]
    fn answers_carry_the_policy_and_honour_if_none_match() {
        let plain = serve(&INDEX, &HeaderMap::new());
        assert_eq!(plain.status(), StatusCode::OK);
        let h = plain.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP_SELF);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let mut again = HeaderMap::new();
        again.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {}", INDEX.etag)).unwrap(),
        );
        let cached = serve(&INDEX, &again);
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()[header::ETAG], INDEX.etag);
    }

    #[test]
    fn sockets_may_go_to_the_pages_own_host_only() {
        assert_eq!(
            csp(Some("proxy.example:9999")),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self' ws://proxy.example:9999 wss://proxy.example:9999; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert!(csp(Some("[::1]:80"))
            .to_str()
            .unwrap()
            .contains("ws://[::1]:80 "));
        for bad in ["", "a; script-src *", "a b", "a,b", "evil/x"] {
            assert_eq!(csp(Some(bad)), CSP_SELF, "{bad:?}");
        }
        assert_eq!(csp(None), CSP_SELF);
    }

    #[test]
    fn the_page_names_only_embedded_files() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        for a in ASSETS {
            assert!(
                html.contains(&format!("/console/{}", a.name)),
                "index.html links {}",
                a.name
            );
        }
        // No inline script or style: the policy would block them.
        assert!(!html.contains("<script>") && !html.contains("style="));
    }
}
