//! Who may use the page: whoever holds the token printed with its URL, through a browser
//! tab that really is on that address.
//!
//! - The token comes once in the URL (`/?token=...`, as Jupyter does) and is exchanged at once
//!   for a cookie that scripts cannot read (HttpOnly) and that no other site's request carries
//!   (SameSite=Strict); the redirect drops it from the address bar. Another user of the machine
//!   reaches the port but not the token: 401.
//! - The Host header must name the address served: a page on attacker.example that rebinds
//!   its name to 127.0.0.1 sends `Host: attacker.example` and gets 403 (DNS rebinding).
//! - A request that changes anything (every non-GET) must carry `Origin: http://HOST` of the
//!   same address: a form or fetch from another origin gets 403 before the cookie is even
//!   looked at (CSRF). Nothing here answers CORS, so no other origin reads a reply either.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::Error;

/// The token and the addresses the page answers as.
#[derive(Debug)]
pub struct Guard {
    token: String,
    /// The cookie's name: one per port, so that two pages on this machine do not share one.
    cookie: String,
    /// The Host headers accepted: the address, and `localhost` for a loopback one.
    hosts: Vec<String>,
}

impl Guard {
    pub fn new(address: SocketAddr) -> Result<Guard, Error> {
        let mut bytes = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| Error::io(std::path::Path::new("/dev/urandom"), e))?;
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let port = address.port();
        let mut hosts = vec![address.to_string()];
        hosts.push(format!("localhost:{port}"));
        Ok(Guard { token, cookie: format!("cairn_ui_{port}"), hosts })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether `offered` is the token, in time that does not depend on where they differ.
    fn is_token(&self, offered: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("cairn ui: {why}\n"))
        .into_response()
}

/// Runs before every route: Host, Origin, then the cookie (or the token, once).
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let guard = &state.guard;
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !guard.hosts.iter().any(|h| h == host) {
        return refuse(StatusCode::FORBIDDEN, "this page answers only as its own address");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if origin != Some(format!("http://{host}").as_str()) {
            return refuse(StatusCode::FORBIDDEN, "a change must come from this page (Origin)");
        }
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == guard.cookie)
        .map(|(_, value)| value.to_owned());
    if cookie.is_some_and(|c| guard.is_token(&c)) {
        return next.run(request).await;
    }
    let offered = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    if request.method() == Method::GET && offered.is_some_and(|t| guard.is_token(t)) {
        // The token becomes the cookie, and leaves the address bar (and the history).
        let cookie = format!("{}={}; HttpOnly; SameSite=Strict; Path=/", guard.cookie, guard.token);
        return Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, request.uri().path())
            .header(header::SET_COOKIE, cookie)
            .body(Body::empty())
            .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "a redirect"));
    }
    refuse(
        StatusCode::UNAUTHORIZED,
        "open the URL `cairn ui` printed, with its token (this page changes your configuration)",
    )
}

/// Headers on every reply: no framing, no sniffing, no referrer (the first URL holds the
/// token), nothing cached, scripts and styles only from the page's own files.
pub fn with_headers(router: axum::Router) -> axum::Router {
    use tower_http::set_header::SetResponseHeaderLayer as Set;
    let csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
               connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";
    router
        .layer(Set::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp)))
        .layer(Set::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(Set::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(Set::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(Set::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}
