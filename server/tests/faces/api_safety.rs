//! The API port's connection bounds (head and idle timeouts, connections per address), the
//! WebDAV login throttle, and API writes honouring WebDAV locks; against a real `wormfs serve`.
//!
//! The timeouts and the connection cap are shortened through `WORMFS_TEST_API_*` variables,
//! which only builds with the `crash-points` test feature read (the suite enables it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::dav::{admin_login, node};
use crate::common::process::{free_port, webdav_port, Server};

fn needs_test_feature() {
    if !cfg!(feature = "crash-points") {
        panic!("this test needs the crash-points feature: run the suite with tests/run-all.sh (--features wormfs-server/crash-points)");
    }
}

/// A connection to `to` from the loopback address `from` (127.0.0.x).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        sock.connect(to).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Reads until the server closes the connection (true) or `secs` pass (false); what came is
/// appended to `out`.
fn closed_within(s: &mut TcpStream, secs: u64, out: &mut Vec<u8>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset: closed too.
            Err(_) => return true,
        }
    }
    false
}

/// Reads one answer's head (up to the blank line) within `secs`.
fn answer_head(s: &mut TcpStream, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn token(s: &Server) -> String {
    std::fs::read_to_string(s.cwd.join("wormfs-data/admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn api_connections_with_slow_heads_or_stalled_requests_are_closed() {
    needs_test_feature();
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_env(
        t.path(),
        port,
        &[],
        &[
            ("WORMFS_TEST_API_HEADER_TIMEOUT_MS", "1000"),
            ("WORMFS_TEST_API_IDLE_TIMEOUT_MS", "1500"),
        ],
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tok = token(&s);

    // Half a request head: closed once the head timeout passes.
    let mut c = connect_from("127.0.0.1", api);
    c.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut got = Vec::new();
    assert!(
        closed_within(&mut c, 20, &mut got),
        "a half head kept the connection open"
    );

    // A request whose body stops coming: closed once the idle timeout passes.
    let mut c = connect_from("127.0.0.1", api);
    write!(
        c,
        "PUT /api/v1/files/stalled.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Length: 1000\r\n\r\nabc"
    )
    .unwrap();
    let mut got = Vec::new();
    assert!(
        closed_within(&mut c, 20, &mut got),
        "a stalled body kept the connection open"
    );

    // A keep-alive connection after one answer, then nothing: closed.
    let mut c = connect_from("127.0.0.1", api);
    write!(
        c,
        "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n"
    )
    .unwrap();
    let head = answer_head(&mut c, 20);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = Vec::new();
    assert!(
        closed_within(&mut c, 20, &mut got),
        "an idle keep-alive connection stayed open"
    );
    // The node still serves, and nothing half-uploaded became a file.
    s.fails(&["stat", "/stalled.bin"], 3, "");
    drop(s);
}

#[test]
fn api_connections_per_client_address_are_bounded() {
    needs_test_feature();
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_env(
        t.path(),
        port,
        &[],
        &[("WORMFS_TEST_API_MAX_CONNECTIONS_PER_IP", "4")],
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tok = token(&s);
    let status =
        format!("GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n");
    let served = |c: &mut TcpStream| -> bool {
        if c.write_all(status.as_bytes()).is_err() {
            return false;
        }
        answer_head(c, 10).starts_with("HTTP/1.1 200")
    };

    // Four connections from 127.0.0.1, each served (and left open).
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = connect_from("127.0.0.1", api);
            assert!(served(&mut c));
            c
        })
        .collect();
    // A fifth from the same address is turned away.
    let mut c = connect_from("127.0.0.1", api);
    assert!(
        !served(&mut c),
        "a fifth connection from one address was served"
    );
    // Another address is served at once.
    let mut other = connect_from("127.0.0.2", api);
    assert!(served(&mut other), "another address was refused");
    // Once one closes, the address gets a place again.
    held.pop();
    crate::common::process::wait_for(30, "a place for 127.0.0.1 again", || {
        let mut c = connect_from("127.0.0.1", api);
        served(&mut c).then_some(())
    });
    drop(held);
    drop(s);
}

/// A `GET /` on the WebDAV port from `from` with `login` (`user:password`): the status.
fn dav_get_from(from: &str, dav_port: u16, login: &str) -> u16 {
    use base64::Engine;
    let mut c = connect_from(from, format!("127.0.0.1:{dav_port}").parse().unwrap());
    let auth = base64::engine::general_purpose::STANDARD.encode(login);
    write!(
        c,
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let head = answer_head(&mut c, 30);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {head:?}"))
}

#[test]
fn webdav_wrong_passwords_throttle_their_address_not_the_user() {
    let (_t, s, _dav) = node();
    let port = webdav_port(s.port);
    let login = admin_login(&s.cwd.join("wormfs-data"));
    let user = login.split_once(':').unwrap().0.to_owned();
    let wrong = format!("{user}:not-the-password");
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let st = dav_get_from("127.0.0.1", port, &wrong);
        statuses.push(st);
        if st == 429 {
            break;
        }
        assert_eq!(st, 401);
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "wrong passwords were never throttled: {statuses:?}"
    );
    // The same user from another address logs in at once.
    assert_eq!(dav_get_from("127.0.0.2", port, &login), 200);
    // An unknown user name is refused like a wrong password.
    assert_eq!(dav_get_from("127.0.0.3", port, "nobody:pw"), 401);
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("repeated failed logins") && log.contains("127.0.0.1"),
        "no warning naming the address"
    );
}

#[test]
fn api_writes_honour_webdav_locks_unless_told_to_break_them() {
    let (t, s, dav) = node();
    let src = t.path().join("src.txt");
    std::fs::write(&src, b"hello").unwrap();
    let src = src.to_str().unwrap();
    s.ok(&["put", src, "/f.txt"]);
    s.ok(&["mkdir", "/d"]);
    s.ok(&["put", src, "/d/g.txt"]);
    let lock = dav.lock("/f.txt", "<D:href>ann</D:href>");
    assert_eq!(lock.status, 200, "{}", lock.text());

    // Refused with 423 (exit 4), saying what is locked, and the file stays.
    let o = s.fails(&["rm", "/f.txt"], 4, "locked");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/f.txt") && err.contains("admin") && err.contains("--break-locks"),
        "{err}"
    );
    s.fails(
        &["put", "--conflict", "replace", src, "/f.txt"],
        4,
        "locked",
    );
    s.fails(&["append", src, "/f.txt"], 4, "locked");
    s.fails(&["mv", "/f.txt", "/h.txt"], 4, "locked");
    let st = s.json(&["stat", "/f.txt"]);
    assert_eq!(st["size"], 5, "{st}");
    // The JSON answer names the lock.
    let o = std::process::Command::new("curl")
        .args(["-s", "-S", "-X", "DELETE", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", token(&s)))
        .arg(format!("{}/api/v1/files/f.txt", s.url))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap();
    assert_eq!(code, "423", "{out}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["kind"], "locked");
    assert_eq!(v["locks"][0]["path"], "/f.txt");
    assert_eq!(v["locks"][0]["principal"], "admin");
    assert!(v["locks"][0]["expires_in_secs"].as_u64().unwrap() > 0);

    // A deep lock on a directory covers what is below it and new files in it.
    assert_eq!(dav.lock("/d", "<D:href>ann</D:href>").status, 200);
    s.fails(&["put", src, "/d/new.txt"], 4, "locked");
    // A body far larger than the sockets' buffers: the refusal is answered, not "broken pipe".
    let big = t.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 8 << 20]).unwrap();
    s.fails(&["put", big.to_str().unwrap(), "/d/big.bin"], 4, "locked");
    s.fails(&["rm", "/d/g.txt"], 4, "locked");
    s.fails(&["mv", "/f.txt", "/d/f.txt"], 4, "locked");

    // --break-locks goes ahead and the lock is gone.
    let o = s.cli(&[
        "put",
        "--break-locks",
        "--conflict",
        "replace",
        src,
        "/f.txt",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("broke the WebDAV lock on /f.txt"));
    s.ok(&["append", src, "/f.txt"]);
    assert_eq!(s.json(&["stat", "/f.txt"])["size"], 10);
    s.ok(&["rm", "-r", "--break-locks", "/d"]);
    s.fails(&["stat", "/d"], 3, "");
    // No lock left anywhere: a WebDAV PUT without a token goes through.
    let put = dav.curl(&["-X", "PUT", "--data-binary", "x"], "/d");
    assert!(put.status == 201 || put.status == 204, "{}", put.status);
}
