//! Talking WebDAV to a node under test: curl with the node's admin user, and raw requests for
//! what curl will not send.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::{webdav_port, Server};

/// A curl answer: status, response headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The generated admin user of the node whose data folder is `data_dir`, as `user:password`.
pub fn admin_login(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(data_dir.join("webdav-admin.txt")).unwrap();
    let pw = text
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .expect("password line");
    format!("admin:{}", pw.trim())
}

/// A node on the embedded default in a new temporary folder, and its WebDAV face.
pub fn node() -> (tempfile::TempDir, Server, Dav) {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(t.path(), super::process::free_port(), &[]);
    let dav = Dav::of(&s);
    (t, s, dav)
}

/// The WebDAV face of a node.
pub struct Dav {
    pub base: String,
    pub login: Option<String>,
    pub port: u16,
}

impl Dav {
    /// The face of `s` (embedded default data folder), logged in as its admin user.
    pub fn of(s: &Server) -> Dav {
        let port = webdav_port(s.port);
        Dav {
            base: format!("http://127.0.0.1:{port}"),
            login: Some(admin_login(&s.cwd.join("wormfs-data"))),
            port,
        }
    }

    pub fn anonymous(&self) -> Dav {
        Dav {
            base: self.base.clone(),
            login: None,
            port: self.port,
        }
    }

    /// `curl` with `args` then the URL `base + path` (`path` already percent-encoded).
    pub fn curl(&self, args: &[&str], path: &str) -> Answer {
        let dir = tempfile::tempdir().unwrap();
        let (h, b) = (dir.path().join("h"), dir.path().join("b"));
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-S", "--path-as-is", "-D"])
            .arg(&h)
            .arg("-o")
            .arg(&b);
        if let Some(l) = &self.login {
            cmd.args(["-u", l]);
        }
        let o = cmd
            .args(args)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl runs (installed with the test tools)");
        let headers = std::fs::read_to_string(&h).unwrap_or_default();
        let status = headers
            .lines()
            .rfind(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no answer: {}", String::from_utf8_lossy(&o.stderr)));
        Answer {
            status,
            headers,
            body: std::fs::read(&b).unwrap_or_default(),
        }
    }

    /// An exclusive write LOCK on `path` for 600 s, with `owner` (XML) as its owner.
    pub fn lock(&self, path: &str, owner: &str) -> Answer {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner></D:lockinfo>"#
        );
        self.curl(
            &[
                "-X",
                "LOCK",
                "-H",
                "Timeout: Second-600",
                "--data-binary",
                &body,
            ],
            path,
        )
    }

    /// UNLOCK of `path` with the lock token `token` (as the Lock-Token header gave it).
    pub fn unlock(&self, path: &str, token: &str) -> Answer {
        self.curl(
            &["-X", "UNLOCK", "-H", &format!("Lock-Token: {token}")],
            path,
        )
    }

    /// Sends `head` (and `body`) on a fresh connection and returns what came back before the
    /// server closed or went quiet.
    pub fn raw(&self, head: &str, body: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // One answer is enough.
                    let t = String::from_utf8_lossy(&out);
                    if let Some(i) = t.find("\r\n\r\n") {
                        let len = t[..i]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if out.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The `Authorization` header line for raw requests.
    pub fn auth_line(&self) -> String {
        use base64::Engine;
        match &self.login {
            Some(l) => format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(l)
            ),
            None => String::new(),
        }
    }
}
