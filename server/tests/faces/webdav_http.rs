//! The WebDAV face of a real node, driven with curl and raw requests: reads with ranges and
//! conditionals, whole-file writes through the ingest, namespace changes, uploads cut off,
//! the bad-input list, authentication and roles, HTTPS, and dead properties and locks that
//! survive a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::dav::{admin_login, node, Dav};
use crate::common::process::{files_under, free_port, wait_for, webdav_port, Server, BIN};

fn data_of(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7).wrapping_add(seed) % 251) as u8)
        .collect()
}

fn part_count(root: &Path) -> usize {
    files_under(&root.join("wormfs-data/disks"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wp"))
        .count()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reads_ranges_conditionals_and_unreadable_files() {
    let (t, s, dav) = node();
    let data = data_of(3_000_000, 0);
    std::fs::write(t.path().join("f.bin"), &data).unwrap();
    s.ok(&["mkdir", "/Films and more"]);
    s.ok(&[
        "put",
        "f.bin",
        "/Films and more/été #1.mkv",
        "--policy",
        "ec:4+2",
    ]);
    let path = "/Films%20and%20more/%C3%A9t%C3%A9%20%231.mkv";

    // Whole GET, with a strong ETag and Last-Modified.
    let a = dav.curl(&[], path);
    assert_eq!(a.status, 200, "{}", a.headers);
    assert!(a.body == data, "GET returned other bytes");
    let etag = a.header("etag").expect("ETag").to_owned();
    assert!(a.header("last-modified").is_some(), "{}", a.headers);
    // Ranges around 64 KiB, open-ended and suffix ranges.
    for (range, from, to) in [
        ("bytes=65536-131071", 65_536usize, 131_072usize),
        ("bytes=2999000-", 2_999_000, 3_000_000),
        ("bytes=-100", 2_999_900, 3_000_000),
    ] {
        let a = dav.curl(&["-H", &format!("Range: {range}")], path);
        assert_eq!(a.status, 206, "{range}: {}", a.headers);
        assert!(a.body == data[from..to], "{range}: wrong bytes");
    }
    // Conditional GET, HEAD.
    let a = dav.curl(&["-H", &format!("If-None-Match: {etag}")], path);
    assert_eq!(a.status, 304, "{}", a.headers);
    let a = dav.curl(&["-I"], path);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("3000000"));
    // PROPFIND depth 1 lists the file, depth 0 only the directory.
    let a = dav.curl(
        &["-X", "PROPFIND", "-H", "Depth: 1"],
        "/Films%20and%20more/",
    );
    assert_eq!(a.status, 207, "{}", a.headers);
    let xml = a.text();
    assert!(xml.contains("%C3%A9t%C3%A9%20%231.mkv"), "{xml}");
    assert!(xml.contains("getcontentlength>3000000<"), "{xml}");
    let a = dav.curl(&["-X", "PROPFIND", "-H", "Depth: 0"], "/");
    assert_eq!(a.status, 207);
    assert!(!a.text().contains("mkv"));
    assert_eq!(dav.curl(&[], "/nope").status, 404);

    // Three of six parts of every segment lost (m = 2): the read fails, never zero bytes.
    let stat = s.json(&["stat", "/Films and more/été #1.mkv"]);
    let fid = stat["file_id"].as_str().unwrap().to_owned();
    let mut removed = 0;
    for e in files_under(&t.path().join("wormfs-data/disks")) {
        let n = e.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with(&fid)
            && (n.ends_with("-p0.wp") || n.ends_with("-p1.wp") || n.ends_with("-p2.wp"))
        {
            std::fs::remove_file(&e).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 3);
    // Parts opened by the reads above may be reused for a few seconds; any change to the tree
    // makes the next read open them afresh.
    s.ok(&["mkdir", "/elsewhere"]);
    let login = admin_login(&t.path().join("wormfs-data"));
    let o = Command::new("curl")
        .args([
            "-s",
            "-u",
            &login,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .arg(format!("{}{path}", dav.base))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // Either an error status, or the transfer is cut short (curl exit 18): never a complete
    // 200 with zero-filled bytes.
    assert!(
        !o.status.success() || !out.starts_with('2'),
        "an unreadable file was served as complete: {out}"
    );
    s.term();
}

#[test]
fn writes_whole_files_and_changes_the_tree() {
    let (t, s, dav) = node();
    let one = data_of(2_500_000, 1);
    let two = data_of(1_200_000, 2);
    std::fs::write(t.path().join("one"), &one).unwrap();
    std::fs::write(t.path().join("two"), &two).unwrap();
    let one_path = t.path().join("one");
    let one_file = one_path.to_str().unwrap();
    let two_path = t.path().join("two");
    let two_file = two_path.to_str().unwrap();

    // MKCOL: created, then refused as existing, and 409 without a parent.
    assert_eq!(dav.curl(&["-X", "MKCOL"], "/Films/").status, 201);
    assert_eq!(dav.curl(&["-X", "MKCOL"], "/Films/").status, 405);
    assert_eq!(dav.curl(&["-X", "MKCOL"], "/no/such/").status, 409);

    // PUT: created (answered once durable: the file is then listed and readable).
    let a = dav.curl(&["-T", one_file], "/Films/a%20film.mkv");
    assert_eq!(a.status, 201, "{}", a.headers);
    let stat = s.json(&["stat", "/Films/a film.mkv"]);
    assert_eq!(stat["size"], 2_500_000);
    assert_eq!(
        stat["blake3"].as_str().unwrap(),
        blake3::hash(&one).to_hex().as_str()
    );
    // The PUT answers with the ETag and Last-Modified the file is then read with.
    let validators = |r: &crate::common::dav::Answer| {
        (
            r.header("etag").map(str::to_owned),
            r.header("last-modified").map(str::to_owned),
        )
    };
    let put = validators(&a);
    assert!(put.0.is_some() && put.1.is_some(), "{}", a.headers);
    let head = dav.curl(&["-I"], "/Films/a%20film.mkv");
    assert_eq!(put, validators(&head), "{}", head.headers);
    let first_etag = put.0.unwrap();
    // PUT over it: a whole new version replaces it.
    let a = dav.curl(&["-T", two_file], "/Films/a%20film.mkv");
    assert_eq!(a.status, 204, "{}", a.headers);
    let put = validators(&a);
    let a = dav.curl(&[], "/Films/a%20film.mkv");
    assert!(a.body == two, "replaced content differs");
    assert_eq!(put, validators(&a), "{}", a.headers);
    assert_ne!(a.header("etag").unwrap(), first_etag);
    // If-None-Match: * on an existing file, and a PUT without its parent.
    let a = dav.curl(
        &["-T", one_file, "-H", "If-None-Match: *"],
        "/Films/a%20film.mkv",
    );
    assert_eq!(a.status, 412, "{}", a.headers);
    assert_eq!(dav.curl(&["-T", one_file], "/nowhere/x.mkv").status, 409);
    // Write-once: partial PUT and PATCH are refused.
    let a = dav.curl(
        &["-T", one_file, "-H", "Content-Range: bytes 0-9/100"],
        "/Films/a%20film.mkv",
    );
    assert_eq!(a.status, 400, "{}", a.headers);
    let a = dav.curl(
        &["-X", "PATCH", "--data-binary", "x"],
        "/Films/a%20film.mkv",
    );
    assert_eq!(a.status, 405, "{}", a.headers);
    assert!(dav.curl(&[], "/Films/a%20film.mkv").body == two);

    // COPY is metadata only: no new part on any disk, and the copy outlives the original.
    let parts = part_count(t.path());
    let dest = format!("{}/Films/copy.mkv", dav.base);
    let a = dav.curl(
        &["-X", "COPY", "-H", &format!("Destination: {dest}")],
        "/Films/a%20film.mkv",
    );
    assert_eq!(a.status, 201, "{}", a.headers);
    assert_eq!(part_count(t.path()), parts, "COPY wrote parts");
    assert_eq!(
        dav.curl(&["-X", "DELETE"], "/Films/a%20film.mkv").status,
        204
    );
    assert!(dav.curl(&[], "/Films/copy.mkv").body == two);
    // MOVE renames; DELETE of a collection removes what is inside.
    assert_eq!(dav.curl(&["-X", "MKCOL"], "/Kept/").status, 201);
    let dest = format!("{}/Kept/moved.mkv", dav.base);
    let a = dav.curl(
        &["-X", "MOVE", "-H", &format!("Destination: {dest}")],
        "/Films/copy.mkv",
    );
    assert_eq!(a.status, 201, "{}", a.headers);
    assert_eq!(dav.curl(&[], "/Films/copy.mkv").status, 404);
    assert!(dav.curl(&[], "/Kept/moved.mkv").body == two);
    assert_eq!(dav.curl(&["-X", "DELETE"], "/Kept/").status, 204);
    assert_eq!(dav.curl(&[], "/Kept/moved.mkv").status, 404);
    s.term();
}

#[test]
fn uploads_cut_off_or_short_leave_nothing() {
    let (t, s, dav) = node();
    let body = data_of(6_000_000, 3);

    // The client announces 6 MB, sends 3 MB and goes away.
    let head = format!(
        "PUT /cut.mkv HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n",
        dav.auth_line(),
        body.len()
    );
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", dav.port)).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&body[..3_000_000]).unwrap();
    }
    // Finder's chunked upload with an announced length that the body does not reach.
    let chunked = |len: usize, expected: Option<usize>| {
        let mut req = format!(
            "PUT /finder.mkv HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\n",
            dav.auth_line()
        );
        if let Some(e) = expected {
            req.push_str(&format!("X-Expected-Entity-Length: {e}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        let mut b = Vec::new();
        for c in body[..len].chunks(100_000) {
            b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            b.extend_from_slice(c);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        dav.raw(&req, &b)
    };
    let answer = chunked(1_000_000, Some(2_000_000));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Nothing visible, no intent left, no part on any disk.
    wait_until("the cut-off ingests to end", || {
        s.json(&["status"])["ingests_in_progress"] == 0
    });
    assert_eq!(dav.curl(&[], "/cut.mkv").status, 404);
    assert_eq!(dav.curl(&[], "/finder.mkv").status, 404);
    wait_until("no parts left behind", || part_count(t.path()) == 0);

    // A chunked body with the announced length, and one with none: committed.
    let answer = chunked(2_000_000, Some(2_000_000));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(dav.curl(&[], "/finder.mkv").body == body[..2_000_000]);
    let answer = chunked(1_500_000, None);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert!(dav.curl(&[], "/finder.mkv").body == body[..1_500_000]);
    s.term();
}

#[test]
fn bad_inputs_are_refused_and_lose_nothing() {
    let (t, s, dav) = node();
    std::fs::write(t.path().join("f"), b"keep me").unwrap();
    s.ok(&["mkdir", "/frag"]);
    s.ok(&["put", "f", "/frag/keep.txt"]);
    s.ok(&["put", "f", "/top.txt"]);

    for bad in [
        "/frag/../top.txt",
        "/frag/%2e%2e/top.txt",
        "/frag%2fkeep.txt",
        "/frag%5ckeep.txt",
        "/frag\\keep.txt",
        "/top.txt%00.jpg",
        "/bad%zz",
    ] {
        for method in ["GET", "DELETE"] {
            let a = dav.curl(&["-X", method], bad);
            assert_eq!(a.status, 400, "{method} {bad}: {}", a.headers);
        }
    }
    // A Destination outside the tree.
    let a = dav.curl(
        &[
            "-X",
            "MOVE",
            "-H",
            &format!("Destination: {}/frag/%2e%2e/x", dav.base),
        ],
        "/top.txt",
    );
    assert_eq!(a.status, 400, "{}", a.headers);
    // A #fragment never widens a DELETE to the collection (curl drops fragments: raw request).
    let answer = dav.raw(
        &format!(
            "DELETE /frag/#ment HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            dav.auth_line()
        ),
        b"",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Depth: infinity is refused with the RFC's precondition, whatever other headers say.
    let a = dav.curl(
        &[
            "-X",
            "PROPFIND",
            "-H",
            "Depth: infinity",
            "-H",
            "X-Litmus: props: 1",
        ],
        "/",
    );
    assert_eq!(a.status, 403, "{}", a.headers);
    assert!(a.text().contains("propfind-finite-depth"), "{}", a.text());
    // No Depth header means infinity (RFC 4918 9.1), and a Depth that is none of the three is
    // malformed.
    let a = dav.curl(&["-X", "PROPFIND"], "/");
    assert_eq!(a.status, 403, "{}", a.headers);
    assert!(a.text().contains("propfind-finite-depth"), "{}", a.text());
    assert_eq!(
        dav.curl(&["-X", "PROPFIND", "-H", "Depth: 2"], "/").status,
        400
    );
    // Malformed XML, an oversized body, oversized headers.
    let a = dav.curl(
        &[
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
            "--data-binary",
            "<propfind xmlns=\"DAV:\"><prop>",
        ],
        "/",
    );
    assert_eq!(a.status, 400, "{}", a.headers);
    let big = format!(
        "<propfind xmlns=\"DAV:\"><prop>{}</prop></propfind>",
        "<x/>".repeat(40_000)
    );
    let big_file = t.path().join("big.xml");
    std::fs::write(&big_file, big).unwrap();
    let a = dav.curl(
        &[
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
            "--data-binary",
            &format!("@{}", big_file.display()),
        ],
        "/",
    );
    assert_eq!(a.status, 413, "{}", a.headers);
    let answer = dav.raw(
        &format!(
            "GET /top.txt HTTP/1.1\r\nHost: x\r\n{}X-Big: {}\r\n\r\n",
            dav.auth_line(),
            "a".repeat(100_000)
        ),
        b"",
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // Everything is still there.
    assert_eq!(dav.curl(&[], "/frag/keep.txt").body, b"keep me");
    assert_eq!(dav.curl(&[], "/top.txt").body, b"keep me");
    s.term();
}

fn hash_password(pw: &str) -> String {
    use std::io::Write;
    let mut c = Command::new(BIN)
        .args(["webdav", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

#[test]
fn users_roles_anonymous_access_and_https() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    // The embedded default: no anonymous access, a generated admin user.
    let s = Server::start(t.path(), port, &[]);
    let dav = Dav::of(&s);
    let a = dav.anonymous().curl(&[], "/");
    assert_eq!(a.status, 401);
    assert!(
        a.header("www-authenticate").unwrap().starts_with("Basic"),
        "{}",
        a.headers
    );
    let mut wrong = dav.anonymous();
    wrong.login = Some("admin:wrong".into());
    assert_eq!(wrong.curl(&[], "/").status, 401);
    assert_eq!(dav.curl(&[], "/").status, 200);
    s.term();

    // Users from a config file, anonymous read, and HTTPS with a certificate made here.
    let tls = t.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(&tls)
        .output()
        .expect("openssl runs (installed with the test tools)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = t.path().join("wormfs.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\ndata_dir = \"wormfs-data\"\n\n[webdav]\nanonymous = \"ro\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n\n\
             [[webdav.users]]\nname = \"ann\"\npassword_hash = \"{}\"\n\n\
             [[webdav.users]]\nname = \"kid\"\npassword_hash = \"{}\"\nrole = \"ro\"\n",
            hash_password("ann's pass"),
            hash_password("kid pass")
        ),
    )
    .unwrap();
    let s = Server::start(t.path(), port, &["--config", conf.to_str().unwrap()]);
    let https = |login: Option<&str>, args: &[&str], path: &str| {
        let d = Dav {
            base: format!("https://127.0.0.1:{}", webdav_port(port)),
            login: login.map(str::to_owned),
            port: webdav_port(port),
        };
        let cert = tls.join("cert.pem");
        let mut a = vec!["--cacert", cert.to_str().unwrap()];
        a.extend_from_slice(args);
        d.curl(&a, path)
    };
    std::fs::write(t.path().join("f"), b"hello").unwrap();
    let f = t.path().join("f");
    let f = f.to_str().unwrap();
    // Anonymous may read, not write; the read-only user likewise; the read-write user writes.
    assert_eq!(https(None, &[], "/").status, 200);
    assert_eq!(https(None, &["-T", f], "/a.txt").status, 403);
    assert_eq!(
        https(Some("kid:kid pass"), &["-T", f], "/a.txt").status,
        403
    );
    assert_eq!(https(Some("kid:wrong"), &[], "/").status, 401);
    assert_eq!(
        https(Some("ann:ann's pass"), &["-T", f], "/a.txt").status,
        201
    );
    assert_eq!(https(Some("kid:kid pass"), &[], "/a.txt").body, b"hello");
    // The generated admin is one of the cluster's users: the config's users join it, and it
    // goes when removed.
    let admin = admin_login(&t.path().join("wormfs-data"));
    assert_eq!(https(Some(&admin), &[], "/").status, 200);
    s.ok(&["user", "remove", "admin"]);
    wait_for(30, "the removed admin refused", || {
        (https(Some(&admin), &[], "/").status == 401).then_some(())
    });
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/", webdav_port(port)))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    s.term();
}

#[test]
fn dead_properties_and_locks_survive_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(t.path(), port, &[]);
    let dav = Dav::of(&s);
    std::fs::write(t.path().join("f"), b"v1").unwrap();
    let f = t.path().join("f");
    let f = f.to_str().unwrap();
    assert_eq!(dav.curl(&["-T", f], "/doc.txt").status, 201);
    let patch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:wormfs:test"><D:set><D:prop><Z:rating>five stars</Z:rating></D:prop></D:set></D:propertyupdate>"#;
    let a = dav.curl(&["-X", "PROPPATCH", "--data-binary", patch], "/doc.txt");
    assert_eq!(a.status, 207, "{}", a.text());
    let a = dav.lock("/doc.txt", "test");
    assert_eq!(a.status, 200, "{}", a.text());
    let token = a.header("lock-token").unwrap().to_owned();
    s.term();

    let s = Server::start(t.path(), port, &[]);
    let find = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:rating xmlns:Z="urn:wormfs:test"/><Z:missing xmlns:Z="urn:wormfs:test"/></D:prop></D:propfind>"#;
    let a = dav.curl(
        &["-X", "PROPFIND", "-H", "Depth: 0", "--data-binary", find],
        "/doc.txt",
    );
    assert_eq!(a.status, 207);
    let xml = a.text();
    assert!(xml.contains("five stars"), "{xml}");
    assert!(xml.contains("missing") && xml.contains("404"), "{xml}");
    // A listing (Depth: 1, allprop) shows the child's dead property and its lock too.
    let a = dav.curl(&["-X", "PROPFIND", "-H", "Depth: 1"], "/");
    assert_eq!(a.status, 207);
    let xml = a.text();
    assert!(xml.contains("five stars"), "{xml}");
    assert!(xml.contains(token.trim_matches(['<', '>'])), "{xml}");
    // Still locked: a write without the token is refused, with it accepted.
    std::fs::write(t.path().join("f"), b"v2").unwrap();
    assert_eq!(dav.curl(&["-T", f], "/doc.txt").status, 423);
    assert_eq!(dav.curl(&["-X", "DELETE"], "/doc.txt").status, 423);
    let a = dav.curl(&["-T", f, "-H", &format!("If: ({token})")], "/doc.txt");
    assert_eq!(a.status, 204, "{}", a.headers);
    // The new version keeps the property; MOVE and COPY carry it along.
    let a = dav.unlock("/doc.txt", &token);
    assert_eq!(a.status, 204, "{}", a.headers);
    let dest = format!("{}/copy.txt", dav.base);
    assert_eq!(
        dav.curl(
            &["-X", "COPY", "-H", &format!("Destination: {dest}")],
            "/doc.txt"
        )
        .status,
        201
    );
    let dest = format!("{}/moved.txt", dav.base);
    assert_eq!(
        dav.curl(
            &["-X", "MOVE", "-H", &format!("Destination: {dest}")],
            "/doc.txt"
        )
        .status,
        201
    );
    for p in ["/copy.txt", "/moved.txt"] {
        let a = dav.curl(
            &["-X", "PROPFIND", "-H", "Depth: 0", "--data-binary", find],
            p,
        );
        assert!(a.text().contains("five stars"), "{p}: {}", a.text());
    }
    assert_eq!(dav.curl(&[], "/moved.txt").body, b"v2");
    s.term();
}

/// What Finder does to copy a file in: LOCK the new name (creating it empty), PUT the body
/// chunked with `X-Expected-Entity-Length` under the lock, UNLOCK.
fn finder_copy(dav: &Dav, path: &str, body: &[u8], dir: &Path) -> u16 {
    let a = dav.lock(path, "<D:href>http://www.apple.com/webdav_fs/</D:href>");
    // 201: the LOCK created the (empty) file.
    assert_eq!(a.status, 201, "LOCK {path}: {}", a.text());
    let token = a.header("lock-token").unwrap().to_owned();
    let f = dir.join("finder-body");
    std::fs::write(&f, body).unwrap();
    let put = dav.curl(
        &[
            "-T",
            f.to_str().unwrap(),
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            &format!("X-Expected-Entity-Length: {}", body.len()),
            "-H",
            &format!("If: ({token})"),
        ],
        path,
    );
    let a = dav.unlock(path, &token);
    assert_eq!(a.status, 204, "UNLOCK {path}: {}", a.headers);
    put.status
}

#[test]
fn finder_uploads_and_macos_metadata_stored_or_discarded() {
    let film = data_of(700_000, 3);
    let apple_double = data_of(4096, 9);
    for discard in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let env: &[(&str, &str)] = if discard {
            &[("WORMFS_WEBDAV__MACOS_METADATA", "discard")]
        } else {
            &[]
        };
        let s = Server::start_env(t.path(), free_port(), &[], env);
        let dav = Dav::of(&s);
        assert_eq!(dav.curl(&["-X", "MKCOL"], "/Films").status, 201);
        assert!(
            [201, 204].contains(&finder_copy(&dav, "/Films/film.mkv", &film, t.path())),
            "film upload"
        );
        for name in ["._film.mkv", ".DS_Store"] {
            let status = finder_copy(&dav, &format!("/Films/{name}"), &apple_double, t.path());
            assert!([201, 204].contains(&status), "{name}: {status}");
        }
        // The film is whole either way, and parallel ranges read it back.
        let got = dav.curl(&[], "/Films/film.mkv");
        assert!(got.body == film, "film differs");
        std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4usize)
                .map(|i| {
                    let dav = &dav;
                    let film = &film;
                    sc.spawn(move || {
                        let from = i * 150_000;
                        let to = from + 65_535;
                        let a = dav.curl(
                            &["-H", &format!("Range: bytes={from}-{to}")],
                            "/Films/film.mkv",
                        );
                        assert_eq!(a.status, 206);
                        assert!(a.body == film[from..=to], "range {i}");
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        let listing = s.ok(&["ls", "/Films"]);
        for name in ["._film.mkv", ".DS_Store"] {
            let a = dav.curl(&[], &format!("/Films/{name}"));
            if discard {
                assert_eq!(a.status, 404, "{name} was kept");
                assert!(!listing.contains(name), "{listing}");
            } else {
                assert_eq!(a.status, 200, "{name}");
                assert!(a.body == apple_double, "{name} differs");
                assert!(listing.contains(name), "{listing}");
            }
        }
        s.term();
    }
}

#[test]
fn reads_follow_changes_made_elsewhere_at_once() {
    let (t, s, dav) = node();
    let (v1, v2) = (t.path().join("v1"), t.path().join("v2"));
    std::fs::write(&v1, b"version one").unwrap();
    std::fs::write(&v2, b"version two, longer").unwrap();
    s.ok(&["put", v1.to_str().unwrap(), "/x.txt"]);
    // Read twice (the second from the recent lookups), then change the tree through the API:
    // every WebDAV read after the change sees it.
    for _ in 0..2 {
        assert_eq!(dav.curl(&[], "/x.txt").body, b"version one");
        assert_eq!(dav.curl(&["-r", "0-6"], "/x.txt").body, b"version");
    }
    s.ok(&[
        "put",
        v2.to_str().unwrap(),
        "/x.txt",
        "--conflict",
        "replace",
    ]);
    assert_eq!(dav.curl(&[], "/x.txt").body, b"version two, longer");
    assert_eq!(dav.curl(&["-r", "8-10"], "/x.txt").body, b"two");
    s.ok(&["mv", "/x.txt", "/y.txt"]);
    assert_eq!(dav.curl(&[], "/x.txt").status, 404);
    assert_eq!(dav.curl(&[], "/y.txt").body, b"version two, longer");
    s.ok(&["rm", "/y.txt"]);
    assert_eq!(dav.curl(&[], "/y.txt").status, 404);
    assert_eq!(dav.curl(&["-I"], "/y.txt").status, 404);
    s.term();
}
