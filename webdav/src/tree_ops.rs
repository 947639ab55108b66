//! DELETE, COPY and MOVE as one committed change each.
//!
//! dav-server walks a tree and calls the filesystem once per entry: a DELETE of a collection
//! removes its members one by one, and a COPY or MOVE with `Overwrite: T` first deletes the
//! destination that way. A request that failed half-way (or that was refused only at the end,
//! as the root was) had already destroyed part of the tree. Here:
//!
//! - [`preflight`] refuses, before anything is touched, what must never happen: deleting or
//!   overwriting the root, a `Destination` on another server (502, RFC 4918 9.8.4 and 9.9.4),
//!   a destination that is the source, inside it or one of its ancestors;
//! - the request then runs through dav-server (which checks the `If` header and the locks) on a
//!   filesystem view ([`crate::WormDavFs`] with a [`TreeOp`]) in which the destructive calls
//!   of the walk are folded into the one backend call that does the whole operation: a
//!   recursive remove, a rename that replaces, a copy of a whole subtree.

use http::{HeaderMap, Method, Request, StatusCode};
use unicode_normalization::UnicodeNormalization;

use crate::guard::{decode_segment, Refusal};

/// The tree operation a request asks for, as decided before dav-server runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeOp {
    /// DELETE of `path` (a file, or a collection with all it holds).
    Delete {
        /// Tree path.
        path: String,
    },
    /// MOVE of `from` to `to`.
    Move {
        /// Tree path of the source.
        from: String,
        /// Tree path of the destination.
        to: String,
        /// `Overwrite: T` (the default).
        overwrite: bool,
    },
    /// COPY of `from` to `to`.
    Copy {
        /// Tree path of the source.
        from: String,
        /// Tree path of the destination.
        to: String,
        /// `Overwrite: T` (the default).
        overwrite: bool,
        /// `Depth: infinity` (the default): a collection's members are copied too.
        deep: bool,
    },
}

impl TreeOp {
    /// The destination, for COPY and MOVE.
    pub(crate) fn destination(&self) -> Option<&str> {
        match self {
            TreeOp::Delete { .. } => None,
            TreeOp::Move { to, .. } | TreeOp::Copy { to, .. } => Some(to),
        }
    }
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
        precondition: None,
    }
}

/// A raw, percent-encoded path (already checked by [`crate::guard::check_raw_path`]) as a
/// tree path: decoded, NFC, without a trailing slash (`/` for the root).
pub fn tree_path(raw: &str) -> Result<String, Refusal> {
    let mut out = String::new();
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let bytes =
            decode_segment(seg).ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "bad path"))?;
        let s = String::from_utf8(bytes)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the path is not UTF-8"))?;
        out.push('/');
        out.extend(s.nfc());
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether `inner` is `outer` or below it (tree paths).
fn within(inner: &str, outer: &str) -> bool {
    crate::locks::is_ancestor_or_self(outer, inner)
}

/// The port a URL of `scheme` uses when it names none.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The path of the `Destination` header, refusing a URL that names another server: its
/// scheme, host and port must be this request's (the `Host` header, `https` when `tls`).
fn destination_path(headers: &HeaderMap, tls: bool) -> Result<Option<String>, Refusal> {
    let Some(v) = headers.get("destination") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Destination is not ASCII"))?;
    let uri: http::Uri = s
        .parse()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Destination is not a URL"))?;
    let Some(scheme) = uri.scheme_str() else {
        if uri.authority().is_some() || !s.starts_with('/') {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Destination must be an absolute URL or an absolute path",
            ));
        }
        return Ok(Some(uri.path().to_owned()));
    };
    let elsewhere = || {
        refuse(
            StatusCode::BAD_GATEWAY,
            format!("Destination {s} is on another server: COPY and MOVE stay on this one"),
        )
    };
    let ours = if tls { "https" } else { "http" };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != ours {
        return Err(elsewhere());
    }
    let dest = uri.authority().ok_or_else(elsewhere)?;
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "an absolute Destination needs a Host header to be compared with",
            )
        })?;
    let port = |a: &http::uri::Authority| a.port_u16().or(default_port(ours));
    if !dest.host().eq_ignore_ascii_case(host.host()) || port(dest) != port(&host) {
        return Err(elsewhere());
    }
    Ok(Some(uri.path().to_owned()))
}

/// The tree operation of a DELETE, COPY or MOVE request, after the checks that need no tree;
/// `None` for other methods. `tls` says whether this face speaks HTTPS.
pub fn preflight<B>(req: &Request<B>, tls: bool) -> Result<Option<TreeOp>, Refusal> {
    let m = req.method();
    let is = |name: &str| m.as_str() == name;
    if !(m == Method::DELETE || is("COPY") || is("MOVE")) {
        return Ok(None);
    }
    let h = req.headers();
    let path = tree_path(req.uri().path())?;
    let depth = h
        .get("depth")
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    if m == Method::DELETE {
        if path == "/" {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "the root of the tree cannot be deleted; delete what is in it instead",
            ));
        }
        if depth.as_deref().is_some_and(|d| d != "infinity") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "DELETE takes no Depth header, or Depth: infinity (RFC 4918 9.6.1)",
            ));
        }
        return Ok(Some(TreeOp::Delete { path }));
    }
    let deep = match depth.as_deref() {
        None | Some("infinity") => true,
        Some("0") if is("COPY") => false,
        Some(d) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("Depth: {d} is not allowed on {m} (RFC 4918 9.8.3, 9.9.3)"),
            ))
        }
    };
    let overwrite = match h.get("overwrite").map(|v| v.as_bytes()) {
        None | Some(b"T" | b"t") => true,
        Some(b"F" | b"f") => false,
        Some(_) => return Err(refuse(StatusCode::BAD_REQUEST, "Overwrite must be T or F")),
    };
    let Some(raw_dest) = destination_path(h, tls)? else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("{m} needs a Destination header"),
        ));
    };
    crate::guard::check_raw_path(&raw_dest)?;
    let to = tree_path(&raw_dest)?;
    if path == "/" {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("the root of the tree cannot be the source of a {m}"),
        ));
    }
    if to == "/" {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the root of the tree cannot be overwritten",
        ));
    }
    if to == path {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the source and the destination are the same",
        ));
    }
    if within(&to, &path) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the destination is inside the source",
        ));
    }
    if within(&path, &to) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the destination is an ancestor of the source: overwriting it would delete the source",
        ));
    }
    Ok(Some(if is("MOVE") {
        TreeOp::Move {
            from: path,
            to,
            overwrite,
        }
    } else {
        TreeOp::Copy {
            from: path,
            to,
            overwrite,
            deep,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1:7711");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn status(r: Result<Option<TreeOp>, Refusal>) -> StatusCode {
        r.map(|_| StatusCode::OK).unwrap_or_else(|r| r.status)
    }

    #[test]
    fn the_root_and_other_servers_are_refused_before_anything() {
        let f = StatusCode::FORBIDDEN;
        assert_eq!(status(preflight(&req("DELETE", "/", &[]), false)), f);
        for m in ["COPY", "MOVE"] {
            let dest = |d| preflight(&req(m, "/seed.txt", &[("destination", d)]), false);
            assert_eq!(status(dest("/")), f);
            assert_eq!(status(dest("http://127.0.0.1:7711/")), f);
            assert_eq!(status(dest("/seed.txt")), f);
            assert_eq!(status(dest("/seed.txt/x")), f);
            assert_eq!(status(dest("http://other.host/")), StatusCode::BAD_GATEWAY);
            assert_eq!(
                status(dest("http://127.0.0.1:7712/x")),
                StatusCode::BAD_GATEWAY
            );
            assert_eq!(
                status(dest("https://127.0.0.1:7711/x")),
                StatusCode::BAD_GATEWAY
            );
            assert_eq!(status(dest("http://127.0.0.1:7711/x")), StatusCode::OK);
            assert_eq!(
                status(dest("http://127.0.0.1:7711/caf%C3%A9/")),
                StatusCode::OK
            );
            let from_root = preflight(&req(m, "/", &[("destination", "/x")]), false);
            assert_eq!(status(from_root), f);
            let onto_parent = preflight(&req(m, "/d1/d2", &[("destination", "/d1/")]), false);
            assert_eq!(status(onto_parent), f);
        }
        let default_port = Request::builder()
            .method("MOVE")
            .uri("/a")
            .header("host", "Example.org")
            .header("destination", "http://example.ORG:80/b")
            .body(())
            .unwrap();
        assert_eq!(
            preflight(&default_port, false).unwrap(),
            Some(TreeOp::Move {
                from: "/a".into(),
                to: "/b".into(),
                overwrite: true
            })
        );
    }

    #[test]
    fn headers_are_read_as_rfc_4918_says() {
        let copy = preflight(
            &req(
                "COPY",
                "/a/",
                &[
                    ("destination", "/b%20c/"),
                    ("depth", "0"),
                    ("overwrite", "F"),
                ],
            ),
            false,
        )
        .unwrap();
        assert_eq!(
            copy,
            Some(TreeOp::Copy {
                from: "/a".into(),
                to: "/b c".into(),
                overwrite: false,
                deep: false
            })
        );
        let bad = StatusCode::BAD_REQUEST;
        let d = [("destination", "/b")];
        assert_eq!(
            status(preflight(
                &req("MOVE", "/a", &[d[0], ("depth", "0")]),
                false
            )),
            bad
        );
        assert_eq!(
            status(preflight(
                &req("COPY", "/a", &[d[0], ("overwrite", "x")]),
                false
            )),
            bad
        );
        assert_eq!(status(preflight(&req("COPY", "/a", &[]), false)), bad);
        assert_eq!(
            status(preflight(&req("DELETE", "/a", &[("depth", "0")]), false)),
            bad
        );
        assert_eq!(preflight(&req("GET", "/", &[]), false).unwrap(), None);
    }
}
