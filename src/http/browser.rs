//! Browser safety, one middleware in front of every route: the `Origin` check, CORS preflights
//! and headers for allowed origins, and no `WWW-Authenticate` challenge to a browser.
//!
//! Browsers attach an `Origin` header to WebSocket upgrades, `EventSource` and cross-origin
//! requests; other clients rarely do. A request without one is not a browser's cross-site
//! request and passes here untouched (its credential is checked by the gate as usual).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, HttpError};
use crate::protocol::{ErrorCode, ProtocolError};

/// Which browser origins may call the proxy.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// `allowedOrigins`, exact `scheme://host[:port]` strings.
    list: Vec<String>,
    /// `*` was listed.
    any: bool,
    /// Whether origins are checked at all: when any authentication is configured, or a list was
    /// given. An open proxy with no list accepts every origin, as the seed did.
    enforce: bool,
}

/// Seconds a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";

impl Origins {
    pub fn new(allowed: &[String], auth_configured: bool) -> Origins {
        Origins {
            any: allowed.iter().any(|o| o == "*"),
            list: allowed.iter().filter(|o| *o != "*").cloned().collect(),
            enforce: auth_configured || !allowed.is_empty(),
        }
    }

    /// Whether a request carrying `origin` may be served. Same-origin requests (a page the
    /// proxy serves itself: the origin's host equals the `Host` header) always may.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if !self.enforce || self.any || self.list.iter().any(|o| o == origin) {
            return true;
        }
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
    }
}

/// Whether a request without `Origin` comes from a browser: every browser's `User-Agent` starts
/// with `Mozilla/`. (`Sec-Fetch-Mode` is no sign: Node's fetch sends it too.)
fn is_browser(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Mozilla/"))
}

fn origin_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = origin_of(req.headers()).map(str::to_string) else {
        // A top-level navigation has no Origin; it still must not get a Basic challenge.
        let browser = is_browser(req.headers());
        let mut resp = next.run(req).await;
        if browser {
            resp.headers_mut().remove(header::WWW_AUTHENTICATE);
        }
        return resp;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !state.origins.allows(&origin, host) {
        state.metrics.reject();
        tracing::info!(%origin, path = %req.uri().path(), "origin not allowed");
        let e = ProtocolError::new(
            ErrorCode::Forbidden,
            format!("origin {origin} is not allowed here (allowedOrigins)"),
        );
        return HttpError::from(e).into_response();
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        // `last-event-id`: fetch-based EventSource polyfills set it themselves on a reconnect
        // (a native EventSource sends it without a preflight).
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    // A browser that sees a Basic challenge shows a password prompt and then caches what was
    // typed for the whole site, which every other page could then ride on.
    h.remove(header::WWW_AUTHENTICATE);
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_recognised_without_an_origin() {
        let mut h = HeaderMap::new();
        assert!(!is_browser(&h));
        h.insert(header::USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
        assert!(!is_browser(&h));
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Chrome/120"),
        );
        assert!(is_browser(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("node"));
        assert!(!is_browser(&h), "Node's fetch is not a browser");
    }

    #[test]
    fn origins_are_enforced_once_auth_or_a_list_exists() {
        let open = Origins::new(&[], false);
        assert!(open.allows("https://evil.example", Some("proxy:9999")));
        let authed = Origins::new(&[], true);
        assert!(!authed.allows("https://evil.example", Some("proxy:9999")));
        // Same origin: the proxy's own pages.
        assert!(authed.allows("http://proxy:9999", Some("proxy:9999")));
        assert!(!authed.allows("http://proxy:9999", None));
        let listed = Origins::new(&["https://app.example".into()], true);
        assert!(listed.allows("https://app.example", None));
        assert!(!listed.allows("https://app.example.evil", None));
        assert!(!listed.allows("http://app.example", None));
        let any = Origins::new(&["*".into()], true);
        assert!(any.allows("https://anything.example", None));
    }
}
