//! A minimal HTTP/1.1 client for the WebDAV benchmark (tests/bench/webdav_vs_nginx_apache.sh):
//! one keep-alive connection, requests written and answers read with as little client work as
//! possible, so that the server's latency is what is measured. Plain HTTP on loopback only.
//!
//!   http_bench ranges HOST:PORT PATH FILE_SIZE COUNT [USER:PASSWORD]
//!       COUNT random 64 KiB Range GETs (fixed seed) after 10% as warm-up; prints p50 and p99 in ms
//!   http_bench propfind HOST:PORT PATH COUNT [USER:PASSWORD]
//!       COUNT PROPFIND Depth: 1 (allprop) after 3 warm-ups; prints the median in ms and the
//!       number of <response> elements
//!   http_bench mkdirs HOST:PORT PREFIX COUNT TOKEN [WHILE_PID]
//!       COUNT `POST /api/v1/mkdir/PREFIX/dN` (node API, bearer TOKEN), each a Raft command
//!       committed by a majority and applied on the node asked, after 10% as warm-up; prints
//!       p50, p99 and max in ms and how many were timed. With WHILE_PID, only while that
//!       process runs (at most COUNT, after 5 as warm-up): latency during, say, an ingest.
//!   http_bench puts HOST:PORT SRC_DIR DEST THREADS USER:PASSWORD
//!       every file of SRC_DIR (read into memory first) PUT into the WebDAV folder DEST (made
//!       with MKCOL first), THREADS at a time, each thread on its own keep-alive connection;
//!       prints files_per_s, secs and files (tests/bench/small_files.sh: the server's rate
//!       with a client that costs little CPU beside it)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use base64::Engine;

const RANGE: u64 = 64 * 1024;

struct Conn {
    host: String,
    auth: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(host: &str, login: Option<&str>) -> Conn {
        let s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        s.set_nodelay(true).unwrap();
        let auth = match login {
            Some(l) if l.starts_with("bearer:") => {
                format!("Authorization: Bearer {}\r\n", &l["bearer:".len()..])
            }
            Some(l) => format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(l)
            ),
            None => String::new(),
        };
        Conn {
            host: host.to_owned(),
            auth,
            reader: BufReader::with_capacity(256 * 1024, s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends one request and reads the whole answer; returns the status and the body.
    fn request(&mut self, method: &str, path: &str, extra: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}{extra}Content-Length: {}\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.writer.write_all(&out).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
                let start = body.len();
                body.resize(start + n, 0);
                self.reader.read_exact(&mut body[start..]).unwrap();
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).unwrap();
        }
        (status, body)
    }
}

/// A small deterministic generator (xorshift), so both servers get the same offsets.
fn offsets(size: u64, count: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (size - RANGE)) & !4095
        })
        .collect()
}

/// Prints the median and 99th percentile of `times` (ms), as the bench scripts parse them.
fn print_p50_p99(mut times: Vec<f64>) {
    assert!(!times.is_empty(), "nothing was timed");
    times.sort_by(f64::total_cmp);
    println!(
        "p50_ms={:.3} p99_ms={:.3} max_ms={:.3} n={}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
        times.len()
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ranges") if args.len() >= 5 => {
            let (host, path) = (&args[1], &args[2]);
            let size: u64 = args[3].parse().expect("FILE_SIZE");
            let count: usize = args[4].parse().expect("COUNT");
            let mut c = Conn::open(host, args.get(5).map(String::as_str));
            let warm = (count / 10).max(10);
            let mut times = Vec::with_capacity(count);
            for (i, off) in offsets(size, warm + count).into_iter().enumerate() {
                let range = format!("Range: bytes={off}-{}\r\n", off + RANGE - 1);
                let t = Instant::now();
                let (status, body) = c.request("GET", path, &range, b"");
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(status, 206, "range {off}");
                assert_eq!(body.len() as u64, RANGE, "range {off}");
                if i >= warm {
                    times.push(ms);
                }
            }
            print_p50_p99(times);
        }
        Some("propfind") if args.len() >= 4 => {
            let (host, path) = (&args[1], &args[2]);
            let count: usize = args[3].parse().expect("COUNT");
            let mut c = Conn::open(host, args.get(4).map(String::as_str));
            let body = br#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
            let extra = "Depth: 1\r\nContent-Type: application/xml\r\n";
            let mut times = Vec::new();
            let mut responses = 0;
            for i in 0..count + 3 {
                let t = Instant::now();
                let (status, answer) = c.request("PROPFIND", path, extra, body);
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(status, 207, "{}", String::from_utf8_lossy(&answer));
                responses = [&b"</D:response>"[..], b"</d:response>", b"</response>"]
                    .iter()
                    .map(|t| occurrences(&answer, t))
                    .sum::<usize>();
                if i >= 3 {
                    times.push(ms);
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "median_ms={:.1} responses={responses}",
                percentile(&times, 0.5)
            );
        }
        Some("mkdirs") if args.len() >= 5 => {
            let (host, prefix) = (&args[1], &args[2]);
            let count: usize = args[3].parse().expect("COUNT");
            let mut c = Conn::open(host, Some(&format!("bearer:{}", args[4])));
            let mkdir = |c: &mut Conn, path: &str| {
                let (status, answer) = c.request("POST", &format!("/api/v1/mkdir{path}"), "", b"");
                assert!(
                    (200..300).contains(&status),
                    "{path}: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            };
            mkdir(&mut c, prefix);
            let while_pid = args.get(5).map(|p| format!("/proc/{p}"));
            let running = || {
                while_pid
                    .as_ref()
                    .is_none_or(|p| std::path::Path::new(p).exists())
            };
            let warm = if while_pid.is_some() {
                5
            } else {
                (count / 10).max(5)
            };
            let mut times = Vec::with_capacity(count);
            for i in 0..warm + count {
                if !running() {
                    break;
                }
                let t = Instant::now();
                mkdir(&mut c, &format!("{prefix}/d{i}"));
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if i >= warm {
                    times.push(ms);
                }
            }
            print_p50_p99(times);
        }
        Some("puts") if args.len() >= 6 => {
            let threads: usize = args[4].parse().expect("THREADS");
            puts(&args[1], &args[2], &args[3], threads.max(1), &args[5]);
        }
        _ => {
            eprintln!("usage: http_bench ranges HOST:PORT PATH FILE_SIZE COUNT [USER:PASSWORD]\n       http_bench propfind HOST:PORT PATH COUNT [USER:PASSWORD]\n       http_bench mkdirs HOST:PORT PREFIX COUNT TOKEN [WHILE_PID]\n       http_bench puts HOST:PORT SRC_DIR DEST THREADS USER:PASSWORD");
            std::process::exit(2);
        }
    }
}

/// `puts`: the files of `src`, `threads` PUTs at a time into `dest`.
fn puts(host: &str, src: &str, dest: &str, threads: usize, login: &str) {
    let dest = format!("/{}", dest.trim_matches('/'));
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read {src}: {e}"))
        .map(|e| {
            let e = e.expect("read_dir entry");
            let name = e.file_name().into_string().expect("a UTF-8 file name");
            let body = std::fs::read(e.path()).unwrap_or_else(|err| panic!("read {name}: {err}"));
            (name, body)
        })
        .collect();
    files.sort();
    let mut c = Conn::open(host, Some(login));
    let (status, answer) = c.request("MKCOL", &format!("{dest}/"), "", b"");
    assert!(
        status == 201 || status == 405,
        "MKCOL {dest}/: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    drop(c);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut c = Conn::open(host, Some(login));
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, body)) = files.get(i) else {
                        break;
                    };
                    let extra = "Content-Type: application/octet-stream\r\n";
                    let (status, answer) = c.request("PUT", &format!("{dest}/{name}"), extra, body);
                    assert!(
                        status == 201 || status == 204,
                        "PUT {dest}/{name}: {status} {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "files_per_s={:.1} secs={secs:.3} files={}",
        files.len() as f64 / secs,
        files.len()
    );
}

fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}
