//! Checks made before dav-server sees a request: paths confined to the tree, write-once rules,
//! and refusals dav-server would get wrong or not make.

use dav_server::body::Body;
use http::{HeaderMap, Method, Request, Response, StatusCode};

/// Why a request is refused before it reaches dav-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer.
    pub status: StatusCode,
    /// A short human-readable reason (the body).
    pub reason: String,
    /// A WebDAV precondition element to answer as XML instead (`propfind-finite-depth`).
    pub precondition: Option<&'static str>,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
            precondition: None,
        }
    }

    /// The response for this refusal.
    pub fn response(&self) -> Response<Body> {
        let mut b = Response::builder().status(self.status);
        let body = match self.precondition {
            Some(p) => {
                b = b.header("content-type", "application/xml; charset=utf-8");
                format!(
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:{p}/></D:error>\n"
                )
            }
            None => {
                b = b.header("content-type", "text/plain; charset=utf-8");
                format!("{}\n", self.reason)
            }
        };
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            b = b.header("allow", ALLOWED);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            b = b.header("www-authenticate", crate::auth::CHALLENGE);
        }
        b.body(Body::from(body)).unwrap_or_else(|_| {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// The methods this face answers.
pub const ALLOWED: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, PROPFIND, PROPPATCH, LOCK, UNLOCK";

/// Checks one raw (percent-encoded) path: every segment must decode to UTF-8 without `/`, `\`,
/// NUL or control characters, and none may be `.` or `..`.
pub fn check_raw_path(raw: &str) -> Result<(), Refusal> {
    if !raw.starts_with('/') {
        return Err(Refusal::bad("the path must start with /"));
    }
    for seg in raw.split('/') {
        let bytes =
            decode_segment(seg).ok_or_else(|| Refusal::bad("bad percent-encoding in the path"))?;
        let s = std::str::from_utf8(&bytes)
            .map_err(|_| Refusal::bad("the path is not UTF-8 once decoded"))?;
        if s == "." || s == ".." {
            return Err(Refusal::bad("`.` and `..` are not allowed in paths"));
        }
        if s.contains('/') {
            return Err(Refusal::bad(
                "an encoded slash (%2F) is not allowed in a name",
            ));
        }
        if s.contains('\\') {
            return Err(Refusal::bad("a backslash is not allowed in a name"));
        }
        if s.chars().any(char::is_control) {
            return Err(Refusal::bad(
                "NUL and control characters are not allowed in names",
            ));
        }
    }
    Ok(())
}

/// Percent-decodes one path segment (`None` for a malformed escape).
pub(crate) fn decode_segment(seg: &str) -> Option<Vec<u8>> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let h = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The path part of a `Destination` header (an absolute URL or an absolute path).
fn destination_path(h: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(v) = h.get("destination") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| Refusal::bad("the Destination header is not ASCII"))?;
    if s.contains('#') {
        return Err(Refusal::bad("a fragment (#) is not allowed in Destination"));
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|_| Refusal::bad("the Destination header is not a URL"))?;
    Ok(Some(uri.path().to_owned()))
}

/// Every check that does not need the tree. `fragment` is set when the raw request line
/// carried a `#fragment` (which the URL parser drops).
pub fn check<B>(req: &Request<B>, fragment: bool) -> Result<(), Refusal> {
    if fragment {
        return Err(Refusal::bad(
            "a fragment (#) is not allowed in a request URL; percent-encode it as %23",
        ));
    }
    let m = req.method();
    check_raw_path(req.uri().path())?;
    if let Some(dest) = destination_path(req.headers())? {
        check_raw_path(&dest)?;
    }
    if m == Method::PUT && req.headers().contains_key("content-range") {
        // RFC 9110 14.5: a server that does not apply partial PUTs must answer 400.
        return Err(Refusal::bad(
            "partial PUT (Content-Range) is not supported: files are written once, whole",
        ));
    }
    if m == Method::PATCH || m.as_str() == "POST" {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "files are written once, whole: PATCH is not supported".into(),
            precondition: None,
        });
    }
    if m.as_str() == "PROPFIND" {
        let depth = req
            .headers()
            .get("depth")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        match depth.as_deref() {
            Some("0" | "1") => {}
            // RFC 4918 9.1: no Depth header means infinity (dav-server would instead list the
            // children without the resource itself).
            Some("infinity") | None => {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    reason: "PROPFIND needs Depth: 0 or 1 (infinity, also implied by no Depth header, is not supported)".into(),
                    precondition: Some("propfind-finite-depth"),
                })
            }
            Some(other) => {
                return Err(Refusal::bad(format!(
                    "Depth: {other:?} is not 0, 1 or infinity"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E%2E",
            "/a/./b",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "/a%zz",
            "/a%e9",
            "relative",
        ] {
            assert!(check_raw_path(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "/",
            "/a/b/",
            "/a%20b",
            "/caf%C3%A9",
            "/100%25",
            "/a%23b",
            "/..a",
        ] {
            assert!(check_raw_path(good).is_ok(), "{good} refused");
        }
    }

    #[test]
    fn depth_infinity_and_partial_writes_are_refused() {
        let r = Request::builder()
            .method("PROPFIND")
            .uri("/")
            .header("depth", "Infinity")
            .header("x-litmus", "props: 1")
            .body(())
            .unwrap();
        assert_eq!(check(&r, false).unwrap_err().status, StatusCode::FORBIDDEN);
        let propfind = |depth: Option<&str>| {
            let mut b = Request::builder().method("PROPFIND").uri("/");
            if let Some(d) = depth {
                b = b.header("depth", d);
            }
            check(&b.body(()).unwrap(), false).map_err(|r| r.status)
        };
        assert_eq!(propfind(None), Err(StatusCode::FORBIDDEN));
        assert_eq!(propfind(Some("2")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(propfind(Some("0")), Ok(()));
        assert_eq!(propfind(Some(" 1 ")), Ok(()));
        let r = Request::builder()
            .method("PUT")
            .uri("/f")
            .header("content-range", "bytes 0-1/10")
            .body(())
            .unwrap();
        assert_eq!(
            check(&r, false).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let r = Request::builder()
            .method("PATCH")
            .uri("/f")
            .body(())
            .unwrap();
        assert_eq!(
            check(&r, false).unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let r = Request::builder()
            .method("MOVE")
            .uri("/f")
            .header("destination", "http://h/a/%2e%2e/x")
            .body(())
            .unwrap();
        assert!(check(&r, false).is_err());
        let r = Request::builder()
            .method("DELETE")
            .uri("/frag/")
            .body(())
            .unwrap();
        assert!(check(&r, true).is_err());
        assert!(check(&r, false).is_ok());
    }
}
