//! A local HTTP receiver for what a node sends out (alert webhooks): every request kept with
//! its path, headers and body; answers 200, or a chosen status to the requests a rule picks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status it was answered with.
    pub answered: u16,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Decides a request's status: `None` for 200.
pub type Rule = Box<dyn FnMut(&str, &str) -> Option<u16> + Send>;

pub struct Receiver {
    pub port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (a free port) until the test process ends.
    pub fn start(mut rule: Rule) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let kept = hits.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut headers = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        let k = k.trim().to_ascii_lowercase();
                        let v = v.trim().to_owned();
                        if k == "content-length" {
                            len = v.parse().unwrap_or(0);
                        }
                        headers.push((k, v));
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let answered = rule(&path, &body).unwrap_or(200);
                let _ = write!(
                    s,
                    "HTTP/1.1 {answered} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                kept.lock().unwrap().push(Hit {
                    path,
                    headers,
                    body,
                    answered,
                });
            }
        });
        Receiver { port, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The requests to `path` so far.
    pub fn to(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }
}
