//! One request must never destroy the tree or stop the node: the WebDAV tree operations
//! (DELETE, COPY, MOVE) as a table of single requests with the tree compared after each,
//! nested XML bodies, many ranges, caps on locks and dead properties, and a seeded fuzz of
//! random requests against a real node.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use crate::common::dav::Dav;
use crate::common::process::{free_port, Server};

/// The tree as PROPFIND shows it: every path with its ETag (files) or `dir`.
type Tree = BTreeMap<String, String>;

/// One raw HTTP request on a fresh connection; the status and the body (`None` when the node
/// did not answer: closed or reset before a status line).
fn request(
    dav: &Dav,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", dav.port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}",
        dav.port,
        dav.auth_line()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).ok()?;
    // The node may answer (413, 400) before reading a large body, and close.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body_at = memchr::memmem::find(&out, b"\r\n\r\n").map_or(out.len(), |i| i + 4);
    Some((status, out[body_at..].to_vec()))
}

fn status(dav: &Dav, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    request(dav, method, path, headers, b"")
        .unwrap_or_else(|| panic!("no answer to {method} {path}"))
        .0
}

/// The text between `<tag>` and `</tag>` for every element named `tag` (any prefix).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest
        .find(&format!(":{tag}>"))
        .or_else(|| rest.find(&format!("<{tag}>")))
    {
        let after = &rest[i + tag.len() + 2..];
        let Some(end) = after.find("</") else { break };
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

/// Walks the tree with PROPFIND Depth 1.
fn tree(dav: &Dav) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec!["/".to_owned()];
    while let Some(dir) = todo.pop() {
        let (st, body) = request(dav, "PROPFIND", &dir, &[("Depth", "1")], b"")
            .unwrap_or_else(|| panic!("no answer to PROPFIND {dir}"));
        assert_eq!(st, 207, "PROPFIND {dir}");
        let xml = String::from_utf8_lossy(&body).into_owned();
        for resp in xml.split("response>").filter(|r| r.contains("href>")) {
            let Some(href) = elements(resp, "href").first().map(|h| h.to_string()) else {
                continue;
            };
            let is_dir = resp.contains("collection");
            let key = href.trim_end_matches('/').to_owned();
            if key.is_empty() || href == dir {
                continue;
            }
            let etag = elements(resp, "getetag")
                .first()
                .map(|e| e.to_string())
                .unwrap_or_default();
            if is_dir {
                out.insert(key, "dir".into());
                todo.push(href);
            } else {
                out.insert(key, etag);
            }
        }
    }
    out
}

fn put(dav: &Dav, path: &str, body: &[u8]) {
    let (st, _) = request(dav, "PUT", path, &[], body).expect("PUT answered");
    assert!(st == 201 || st == 204, "PUT {path}: {st}");
}

/// Five files in a small tree: /seed.txt, /e.txt, /d1/a.txt, /d1/d2/b.txt, /d1/d2/c.txt.
fn seed(dav: &Dav) {
    for d in ["/d1", "/d1/d2"] {
        let st = status(dav, "MKCOL", d, &[]);
        assert!(st == 201 || st == 405, "MKCOL {d}: {st}");
    }
    for (p, b) in [
        ("/seed.txt", "seed"),
        ("/e.txt", "e"),
        ("/d1/a.txt", "a"),
        ("/d1/d2/b.txt", "b"),
        ("/d1/d2/c.txt", "c"),
    ] {
        put(dav, p, b.as_bytes());
    }
}

/// Whether `t` holds the seed tree's directories and files (and maybe more).
fn seeded(t: &Tree) -> bool {
    ["/d1", "/d1/d2"]
        .iter()
        .all(|d| t.get(*d).is_some_and(|v| v == "dir"))
        && [
            "/seed.txt",
            "/e.txt",
            "/d1/a.txt",
            "/d1/d2/b.txt",
            "/d1/d2/c.txt",
        ]
        .iter()
        .all(|f| t.get(*f).is_some_and(|v| v != "dir"))
}

/// Removes everything earlier cases made or moved, then seeds the tree again.
fn reset(dav: &Dav) {
    for path in tree(dav).keys().filter(|p| p.matches('/').count() == 1) {
        assert_eq!(status(dav, "DELETE", path, &[]), 204, "DELETE {path}");
    }
    seed(dav);
}

fn node(extra_env: &[(&str, &str)]) -> (tempfile::TempDir, Server, Dav) {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start_env(t.path(), free_port(), &[], extra_env);
    let dav = Dav::of(&s);
    (t, s, dav)
}

/// What a case expects of the tree after its one request.
enum After {
    /// Nothing changed.
    Same,
    /// Exactly these paths are gone, these appeared (with the ETag of the named original, or
    /// `dir`), and nothing else changed.
    Changed(
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    ),
}

/// One request (method, path, headers), the status it must get, and the tree after it.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    u16,
    After,
);

#[test]
fn tree_operations_happen_whole_or_not_at_all() {
    let (_t, _s, dav) = node(&[]);
    let other = "http://other.host/";
    let cases: Vec<Case> = vec![
        ("DELETE", "/", vec![], 403, After::Same),
        ("DELETE", "/", vec![("Depth", "infinity")], 403, After::Same),
        (
            "COPY",
            "/seed.txt",
            vec![("Destination", "/")],
            403,
            After::Same,
        ),
        (
            "MOVE",
            "/seed.txt",
            vec![("Destination", "/")],
            403,
            After::Same,
        ),
        (
            "COPY",
            "/seed.txt",
            vec![("Destination", other)],
            502,
            After::Same,
        ),
        (
            "MOVE",
            "/seed.txt",
            vec![("Destination", other)],
            502,
            After::Same,
        ),
        (
            "MOVE",
            "/seed.txt",
            vec![("Destination", "http://other.host/x.txt")],
            502,
            After::Same,
        ),
        (
            "MOVE",
            "/d1/d2",
            vec![("Destination", "/d1")],
            403,
            After::Same,
        ),
        (
            "MOVE",
            "/d1/d2/",
            vec![("Destination", "/d1/")],
            403,
            After::Same,
        ),
        (
            "COPY",
            "/d1/d2",
            vec![("Destination", "/d1")],
            403,
            After::Same,
        ),
        (
            "COPY",
            "/d1",
            vec![("Destination", "/d1/d2/x")],
            403,
            After::Same,
        ),
        (
            "MOVE",
            "/d1",
            vec![("Destination", "/d1")],
            403,
            After::Same,
        ),
        ("MOVE", "/", vec![("Destination", "/x")], 403, After::Same),
        ("COPY", "/", vec![("Destination", "/x")], 403, After::Same),
        ("DELETE", "/d1", vec![("Depth", "0")], 400, After::Same),
        (
            "MOVE",
            "/seed.txt",
            vec![("Destination", "/d1"), ("Overwrite", "F")],
            412,
            After::Same,
        ),
        // What must work, whole.
        (
            "DELETE",
            "/d1",
            vec![],
            204,
            After::Changed(
                &["/d1", "/d1/a.txt", "/d1/d2", "/d1/d2/b.txt", "/d1/d2/c.txt"],
                &[],
            ),
        ),
        (
            "MOVE",
            "/d1/d2",
            vec![("Destination", "/e.txt")],
            204,
            After::Changed(
                &["/d1/d2", "/d1/d2/b.txt", "/d1/d2/c.txt", "/e.txt"],
                &[
                    ("/e.txt", "dir"),
                    ("/e.txt/b.txt", "/d1/d2/b.txt"),
                    ("/e.txt/c.txt", "/d1/d2/c.txt"),
                ],
            ),
        ),
        (
            "COPY",
            "/seed.txt",
            vec![("Destination", "http://127.0.0.1:PORT/d1")],
            204,
            After::Changed(
                &["/d1", "/d1/a.txt", "/d1/d2", "/d1/d2/b.txt", "/d1/d2/c.txt"],
                &[("/d1", "/seed.txt")],
            ),
        ),
        (
            "COPY",
            "/d1",
            vec![("Destination", "/seed.txt")],
            204,
            After::Changed(
                &["/seed.txt"],
                &[
                    ("/seed.txt", "dir"),
                    ("/seed.txt/a.txt", "/d1/a.txt"),
                    ("/seed.txt/d2", "dir"),
                    ("/seed.txt/d2/b.txt", "/d1/d2/b.txt"),
                    ("/seed.txt/d2/c.txt", "/d1/d2/c.txt"),
                ],
            ),
        ),
        (
            "COPY",
            "/d1",
            vec![("Destination", "/d9"), ("Depth", "0")],
            201,
            After::Changed(&[], &[("/d9", "dir")]),
        ),
        (
            "MOVE",
            "/d1",
            vec![("Destination", "/d9")],
            201,
            After::Changed(
                &["/d1", "/d1/a.txt", "/d1/d2", "/d1/d2/b.txt", "/d1/d2/c.txt"],
                &[
                    ("/d9", "dir"),
                    ("/d9/a.txt", "/d1/a.txt"),
                    ("/d9/d2", "dir"),
                    ("/d9/d2/b.txt", "/d1/d2/b.txt"),
                    ("/d9/d2/c.txt", "/d1/d2/c.txt"),
                ],
            ),
        ),
    ];
    for (method, path, headers, want, after) in cases {
        reset(&dav);
        let before = tree(&dav);
        assert_eq!(before.len(), 7, "seeded tree: {before:?}");
        let port = dav.port.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.replace("PORT", &port)))
            .collect();
        let hs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (st, body) = request(&dav, method, path, &hs, b"").expect("the node answers");
        let now = tree(&dav);
        let case = format!("{method} {path} {hs:?}");
        assert_eq!(st, want, "{case}: {}", String::from_utf8_lossy(&body));
        if st == 403 || st == 502 {
            assert!(!body.is_empty(), "{case}: a refusal says why");
        }
        let mut expected = before.clone();
        if let After::Changed(gone, new) = after {
            for g in gone {
                assert!(expected.remove(*g).is_some(), "{case}: {g} was not there");
            }
            for (p, like) in new {
                let v = if *like == "dir" {
                    "dir".to_owned()
                } else {
                    before[*like].clone()
                };
                expected.insert(p.to_string(), v);
            }
        }
        assert_eq!(now, expected, "{case}: the tree after");
    }
}

#[test]
fn a_locked_member_keeps_its_collection() {
    let (_t, _s, dav) = node(&[]);
    seed(&dav);
    let before = tree(&dav);
    let l = dav.lock("/d1/d2/b.txt", "someone");
    assert_eq!(l.status, 200, "{}", l.text());
    assert_eq!(status(&dav, "DELETE", "/d1", &[]), 423);
    assert_eq!(
        status(&dav, "COPY", "/seed.txt", &[("Destination", "/d1")]),
        423
    );
    assert_eq!(
        status(&dav, "MOVE", "/e.txt", &[("Destination", "/d1")]),
        423
    );
    assert_eq!(status(&dav, "MOVE", "/d1", &[("Destination", "/d5")]), 423);
    assert_eq!(tree(&dav), before);
    let token = l.header("lock-token").unwrap().to_owned();
    assert_eq!(dav.unlock("/d1/d2/b.txt", &token).status, 204);
    // With the token of a lock on the collection, the whole collection goes, and the lock.
    let l = dav.lock("/d1", "someone");
    assert_eq!(l.status, 200, "{}", l.text());
    let token = l.header("lock-token").unwrap().to_owned();
    assert_eq!(status(&dav, "DELETE", "/d1", &[]), 423);
    assert_eq!(
        status(&dav, "DELETE", "/d1", &[("If", &format!("({token})"))]),
        204
    );
    assert!(!tree(&dav).keys().any(|k| k.starts_with("/d1")));
    seed(&dav);
    assert_eq!(dav.lock("/d1", "again").status, 200, "no stale lock left");
}

fn nested(n: usize, method: &str) -> Vec<u8> {
    let (open, close) = match method {
        "PROPFIND" => ("<D:propfind xmlns:D=\"DAV:\"><D:prop>", "</D:prop></D:propfind>"),
        "PROPPATCH" => (
            "<D:propertyupdate xmlns:D=\"DAV:\"><D:set><D:prop><Z:p xmlns:Z=\"urn:z\">",
            "</Z:p></D:prop></D:set></D:propertyupdate>",
        ),
        _ => (
            "<D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>",
            "</D:owner></D:lockinfo>",
        ),
    };
    let mut s = String::from("<?xml version=\"1.0\"?>");
    s.push_str(open);
    s.push_str(&"<x>".repeat(n));
    s.push_str(&"</x>".repeat(n));
    s.push_str(close);
    s.into_bytes()
}

#[test]
fn nested_xml_is_refused_and_the_node_lives() {
    let (_t, _s, dav) = node(&[]);
    seed(&dav);
    let anon = node_anonymous_ro();
    for d in [&dav, &anon.2] {
        for method in ["PROPFIND", "PROPPATCH", "LOCK"] {
            for n in [3_000usize, 100_000] {
                let body = nested(n, method);
                let answer = request(
                    d,
                    method,
                    "/seed.txt",
                    &[("Depth", "0"), ("Content-Type", "application/xml")],
                    &body,
                );
                let want: &[u16] = if anon.2.base == d.base && method != "PROPFIND" {
                    &[400, 401, 403, 413]
                } else {
                    &[400, 413]
                };
                match answer {
                    Some((st, _)) => assert!(want.contains(&st), "{method} with {n} levels: {st}"),
                    // 700 KB against a 64 KiB bound: the node may answer 413 and close before
                    // the client has sent it all (the client then sees a reset).
                    None => assert!(n > 10_000, "{method} with {n} levels: no answer"),
                }
                assert_eq!(
                    status(d, "OPTIONS", "/", &[]),
                    200,
                    "{method} with {n} levels: the node is gone"
                );
            }
        }
        // Still alive, still serving.
        assert_eq!(status(d, "PROPFIND", "/", &[("Depth", "0")]), 207);
    }
    // Ordinary nesting still works.
    let ok = nested(5, "PROPPATCH");
    let (st, _) = request(&dav, "PROPPATCH", "/seed.txt", &[], &ok).unwrap();
    assert_eq!(st, 207);
}

fn node_anonymous_ro() -> (tempfile::TempDir, Server, Dav) {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(t.path(), free_port(), &["--anonymous", "ro"]);
    let dav = Dav::of(&s).anonymous();
    (t, s, dav)
}

#[test]
fn many_ranges_are_coalesced_capped_and_bounded() {
    let (t, s, dav) = node(&[]);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(t.path().join("f.bin"), &data).unwrap();
    s.ok(&["put", "f.bin", "/f.bin"]);
    // 1,000 copies of the whole file: the whole file once.
    let spec = format!("bytes={}", vec!["0-999999"; 1000].join(","));
    let (st, body) = request(&dav, "GET", "/f.bin", &[("Range", &spec)], b"").unwrap();
    assert_eq!(st, 200);
    assert_eq!(body.len(), data.len());
    // 150 overlapping copies (under the cap): coalesced into one range.
    let spec = format!("bytes={}", vec!["0-999999"; 150].join(","));
    let (st, body) = request(&dav, "GET", "/f.bin", &[("Range", &spec)], b"").unwrap();
    assert_eq!(st, 206);
    assert_eq!(body, data);
    let (st, body) = request(&dav, "GET", "/f.bin", &[("Range", "bytes=0-9,5-19")], b"").unwrap();
    assert_eq!((st, body.as_slice()), (206, &data[0..20]));
    // Two disjoint ranges: multipart with a random boundary, each part right.
    let a = dav.curl(&["-H", "Range: bytes=10-19,500000-500009"], "/f.bin");
    assert_eq!(a.status, 206);
    let ct = a.header("content-type").unwrap().to_owned();
    let boundary = ct.split("boundary=").nth(1).unwrap().to_owned();
    assert_ne!(boundary, "BOUNDARY");
    let text = a.body.clone();
    assert_eq!(
        a.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        text.len()
    );
    let sep = format!("--{boundary}");
    let mut bodies: Vec<&[u8]> = Vec::new();
    let mut rest = &text[..];
    while let Some(i) = memchr::memmem::find(rest, sep.as_bytes()) {
        let part = &rest[..i];
        if let Some(h) = memchr::memmem::find(part, b"\r\n\r\n") {
            // Each part ends with the CRLF that precedes the next delimiter.
            bodies.push(&part[h + 4..part.len() - 2]);
        }
        rest = &rest[i + sep.len()..];
    }
    assert_eq!(bodies, vec![&data[10..20], &data[500_000..500_010]]);
    assert!(rest.starts_with(b"--"), "the closing delimiter");
    assert!(String::from_utf8_lossy(&text).contains("Content-Range: bytes 10-19/1000000"));
    // A range end beyond any size, and an unsatisfiable one.
    let (st, body) = request(
        &dav,
        "GET",
        "/f.bin",
        &[("Range", "bytes=0-18446744073709551615")],
        b"",
    )
    .unwrap();
    assert_eq!((st, body.len()), (206, data.len()));
    assert_eq!(
        status(&dav, "GET", "/f.bin", &[("Range", "bytes=2000000-")]),
        416
    );
    // If-Range that does not match: the whole file.
    let (st, body) = request(
        &dav,
        "GET",
        "/f.bin",
        &[("Range", "bytes=0-1,5-6"), ("If-Range", "\"nope\"")],
        b"",
    )
    .unwrap();
    assert_eq!((st, body.len()), (200, data.len()));
}

#[test]
fn locks_and_dead_properties_are_capped() {
    let (_t, _s, dav) = node(&[
        ("WORMFS_WEBDAV__MAX_LOCKS_PER_RESOURCE", "3"),
        ("WORMFS_WEBDAV__MAX_DEAD_PROPS_PER_RESOURCE", "4"),
        ("WORMFS_WEBDAV__MAX_DEAD_PROP_BYTES_PER_RESOURCE", "2000"),
    ]);
    seed(&dav);
    let shared = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>o</D:owner></D:lockinfo>"#;
    for i in 0..3 {
        let (st, _) = request(
            &dav,
            "LOCK",
            "/seed.txt",
            &[("Timeout", "Second-600")],
            shared.as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "shared lock {i}");
    }
    let (st, body) = request(
        &dav,
        "LOCK",
        "/seed.txt",
        &[("Timeout", "Second-600")],
        shared.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 403);
    assert!(String::from_utf8_lossy(&body).contains("max_locks_per_resource"));
    // Another resource is not affected.
    let (st, _) = request(
        &dav,
        "LOCK",
        "/e.txt",
        &[("Timeout", "Second-600")],
        shared.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200);

    let patch = |names: &[&str], value: &str| {
        let mut s = String::from(
            r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>"#,
        );
        for n in names {
            s.push_str(&format!("<Z:{n}>{value}</Z:{n}>"));
        }
        s.push_str("</D:prop></D:set></D:propertyupdate>");
        let (st, body) = request(&dav, "PROPPATCH", "/d1/a.txt", &[], s.as_bytes()).unwrap();
        assert_eq!(st, 207);
        String::from_utf8_lossy(&body).into_owned()
    };
    let ok = patch(&["a", "b", "c"], "v");
    assert!(ok.contains("200 OK") && !ok.contains("507"), "{ok}");
    let over = patch(&["d", "e"], "v");
    assert!(over.contains("507"), "{over}");
    let big = patch(&["a"], &"x".repeat(3000));
    assert!(big.contains("507"), "{big}");
    // Nothing of the refused patches was stored.
    let (_, got) = request(
        &dav,
        "PROPFIND",
        "/d1/a.txt",
        &[("Depth", "0")],
        br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#,
    )
    .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(!got.contains(":d>") && !got.contains("xxxxxxxxxx"), "{got}");
}

/// A small seeded generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn random_xml(r: &mut Rng) -> Vec<u8> {
    let depth = *r.pick(&[1usize, 3, 10, 99, 150, 2_000, 5_000]);
    let tag = *r.pick(&[
        "D:prop",
        "x",
        "D:lockinfo",
        "D:propertyupdate",
        "D:set",
        "a:b",
    ]);
    let mut s = String::from(*r.pick(&[
        "",
        "<?xml version=\"1.0\"?>",
        "<!DOCTYPE a [<!ENTITY e \"x\">]>",
    ]));
    s.push_str(r#"<D:propfind xmlns:D="DAV:" xmlns:a="urn:a">"#);
    s.push_str(&format!("<{tag}>").repeat(depth));
    if r.chance(30) {
        s.push_str("&e;<![CDATA[<y>]]><!-- <z> -->");
    }
    if !r.chance(10) {
        s.push_str(&format!("</{tag}>").repeat(depth));
        s.push_str("</D:propfind>");
    }
    let mut b = s.into_bytes();
    if r.chance(10) {
        let i = (r.next() as usize) % b.len().max(1);
        b.truncate(i);
    }
    b
}

#[test]
fn a_seeded_fuzz_never_crashes_the_node_or_changes_what_it_refused() {
    let (_t, s, dav) = node(&[]);
    seed(&dav);
    let seed_value: u64 = std::env::var("WORMFS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd);
    let rounds: usize = std::env::var("WORMFS_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut r = Rng(seed_value);
    let methods = [
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
        "MKCOL",
        "COPY",
        "MOVE",
        "PROPFIND",
        "PROPPATCH",
        "LOCK",
        "UNLOCK",
        "OPTIONS",
        "PATCH",
        "POST",
        "TRACE",
        "BREW",
        "get",
    ];
    let paths = [
        "/",
        "/seed.txt",
        "/e.txt",
        "/d1",
        "/d1/",
        "/d1/d2",
        "/d1/d2/",
        "/d1/a.txt",
        "/d1/d2/b.txt",
        "/nope",
        "/d1/new",
        "/x%20y",
        "/%2e%2e/etc",
        "/a%2fb",
        "//",
        "/d1/../",
        "/caf%C3%A9",
        "*",
        "/%ff",
    ];
    let dests = [
        "/",
        "/d1",
        "/d1/d2",
        "/seed.txt",
        "/new",
        "/d1/d2/new",
        "http://other.host/",
        "http://127.0.0.1:PORT/",
        "http://127.0.0.1:PORT/moved",
        "https://127.0.0.1:PORT/x",
        "relative",
        "",
        "/%2e%2e/",
    ];
    let headers = [
        ("Depth", &["0", "1", "infinity", "2", "", "-1"][..]),
        ("Overwrite", &["T", "F", "x"][..]),
        (
            "Range",
            &[
                "bytes=0-1",
                "bytes=0-18446744073709551615",
                "bytes=-5",
                "bytes=5-2",
                "bytes=0-0,0-0,0-0",
                "items=1-2",
                "bytes=99999999999999999999999-",
            ][..],
        ),
        (
            "If",
            &[
                "(<urn:uuid:nope>)",
                "(Not <urn:x>)",
                "<http://other/> (<urn:y>)",
                "garbage",
            ][..],
        ),
        (
            "Timeout",
            &["Second-1", "Infinite", "Second-99999999999999999999"][..],
        ),
        ("Lock-Token", &["<urn:uuid:nope>", "nope"][..]),
        ("If-Match", &["*", "\"x\""][..]),
        ("Content-Range", &["bytes 0-1/2"][..]),
    ];
    let port = dav.port.to_string();
    let mut baseline = tree(&dav);
    let mut acknowledged = 0;
    for round in 0..rounds {
        let method = *r.pick(&methods);
        let path = *r.pick(&paths);
        let mut hs: Vec<(String, String)> = Vec::new();
        if matches!(method, "COPY" | "MOVE") || r.chance(5) {
            hs.push(("Destination".into(), r.pick(&dests).replace("PORT", &port)));
        }
        for (name, values) in headers.iter() {
            if r.chance(15) {
                hs.push((name.to_string(), r.pick(values).to_string()));
            }
        }
        let body = if matches!(method, "PROPFIND" | "PROPPATCH" | "LOCK") && r.chance(70) {
            random_xml(&mut r)
        } else if method == "PUT" {
            vec![b'z'; (r.next() % 5_000) as usize]
        } else {
            Vec::new()
        };
        let hr: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let case = format!(
            "round {round} (seed {seed_value:#x}): {method} {path} {hr:?}, {} body bytes",
            body.len()
        );
        let Some((st, _)) = request(&dav, method, path, &hr, &body) else {
            // An answer may be refused at the protocol level (a bad request line): the node
            // must still be there.
            assert_eq!(
                status(&dav, "OPTIONS", "/", &[]),
                200,
                "{case}: the node stopped answering"
            );
            continue;
        };
        let now = tree(&dav);
        // A tree operation is one change: a multistatus from one would be a partial result.
        let whole = !(st == 207 && matches!(method, "DELETE" | "COPY" | "MOVE"));
        if (200..300).contains(&st) && whole {
            if now != baseline {
                acknowledged += 1;
            }
            baseline = now;
        } else {
            assert_eq!(now, baseline, "{case}: answered {st} yet the tree changed");
        }
        if !seeded(&baseline) {
            // Acknowledged changes took the seed tree apart: put it back for the next rounds.
            reset(&dav);
            baseline = tree(&dav);
        }
    }
    assert!(
        acknowledged > 10,
        "the fuzz changed the tree only {acknowledged} times: it is not exercising writes"
    );
    // The node is still the same process, healthy.
    s.ok(&["status"]);
}
