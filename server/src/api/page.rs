//! The admin page, embedded in the binary: one HTML page, one script, one style sheet
//! (`server/ui/`), served on the API port at `/`. The page itself holds no data: the script
//! logs in (`POST /api/v1/session`) and reads the JSON routes with the session cookie.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/admin.js");
const STYLE: &str = include_str!("../../ui/admin.css");

/// The page's own files only: no other origin, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// For working on the page: a folder to read the three files from at each request instead of
/// the copies built in (`WORMFS_DEV_UI_DIR=server/ui`), so a change shows at a reload.
const DEV_DIR: &str = "WORMFS_DEV_UI_DIR";

fn asset(built_in: &'static str, content_type: &'static str) -> Response {
    let body = match std::env::var_os(DEV_DIR) {
        Some(dir) => {
            let name = match content_type.split(';').next() {
                Some("text/javascript") => "admin.js",
                Some("text/css") => "admin.css",
                _ => "index.html",
            };
            std::fs::read_to_string(std::path::Path::new(&dir).join(name))
                .unwrap_or_else(|_| built_in.to_owned())
        }
        None => built_in.to_owned(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /`: the page.
pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /admin.js`: its script.
pub(super) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /admin.css`: its style sheet.
pub(super) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
