//! The operator's face on a real node: `GET /metrics` parsed by Prometheus's own text parser
//! (Python's `prometheus_client`, Debian's python3-prometheus-client), every documented name
//! there with sane values, the Grafana dashboard's names documented and exported, the access
//! rules (loopback only without a token; the token from anywhere with one), and the JSON log.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{free_port, wait_for, webdav_port, Server, BIN};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A plain HTTP/1.0 GET (the answer then has no chunked encoding): status and body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: wormfs\r\n{auth}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The scrape as Prometheus's parser reads it: family name -> (type, samples). The parser
/// names a counter's family without `_total` and a histogram's without its suffixes.
type Families = BTreeMap<String, (String, Vec<Sample>)>;

/// Parses the Prometheus text with `prometheus_client.parser` (`/usr/bin/python3`, where
/// tests/install-test-tools.sh puts it). A value that is not finite fails the parse.
fn parse(text: &str) -> Families {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = [{"name": f.name, "type": f.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
       for f in text_string_to_metric_families(sys.stdin.read())]
print(json.dumps(out, allow_nan=False))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (bash tests/install-test-tools.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = Families::new();
    for f in v.as_array().unwrap() {
        let samples = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_owned(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect();
        out.insert(
            f["name"].as_str().unwrap().to_owned(),
            (f["type"].as_str().unwrap().to_owned(), samples),
        );
    }
    out
}

/// The family a documented name belongs to, as the parser names it.
fn family(name: &str, kind: &str) -> String {
    match kind {
        "counter" => name.trim_end_matches("_total").to_owned(),
        _ => name.to_owned(),
    }
}

/// docs/metrics.md's table rows: name -> (type, labels).
fn documented() -> BTreeMap<String, (String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `wormfs_"))
        .map(|rest| {
            let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
            (
                format!("wormfs_{}", cells[0].trim_end_matches('`')),
                (cells[1].to_owned(), cells[2].to_owned()),
            )
        })
        .collect()
}

/// The samples of `name` (a sample name, `_total` and `_bucket` included) whose labels include
/// `labels`.
fn samples<'a>(f: &'a Families, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    f.values()
        .flat_map(|(_, s)| s.iter())
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one value of `name` with `labels`.
fn value(f: &Families, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = samples(f, name, labels);
    assert_eq!(s.len(), 1, "{name} {labels:?}: {s:?}");
    s[0].value
}

/// A non-loopback IPv4 address of this machine (`ip -4 -o addr show scope global`), to reach
/// the node from an address that is not loopback without leaving the machine.
fn own_address() -> Option<IpAddr> {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
        let mut w = l.split_whitespace();
        w.find(|x| *x == "inet")?;
        w.next()?.split('/').next()?.parse().ok()
    })
}

/// A real node scraped after storing a file: Prometheus's parser reads the answer; every name
/// of docs/metrics.md is there with its type (and its labels), with sane values (the file
/// counted, six active disks with space, this node leading, the PUT's route template and not
/// its path, a 404's error, a WebDAV request); every name the Grafana dashboard's expressions
/// use is documented and exported. Without a token, `/metrics` answers loopback and refuses
/// (403) the machine's own non-loopback address.
#[test]
fn metrics_scrape_has_every_documented_name_with_sane_values_and_the_dashboard_names() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let s = Server::start(t.path(), port, &["--listen", &listen]);
    let api: SocketAddr = ([127, 0, 0, 1], port).into();

    // Phase 1: a file stored, a 404, a WebDAV request (refused without a password).
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(t.path().join("f.bin"), &data).unwrap();
    s.ok(&["put", "f.bin", "/f.bin"]);
    assert_eq!(get(api, "/no/such/route", None).0, 404);
    let dav: SocketAddr = ([127, 0, 0, 1], webdav_port(port)).into();
    assert_eq!(get(dav, "/", None).0, 401);

    // Phase 2: scrape until every documented family is there (the request and WebDAV
    // histograms are recorded as their answers leave).
    let docs = documented();
    let families = wait_for(60, "every documented metric in /metrics", || {
        let (status, body) = get(api, "/metrics", None);
        assert_eq!(status, 200, "{body}");
        let f = parse(&body);
        let missing: Vec<&String> = docs
            .iter()
            .filter(|(name, (kind, _))| !f.contains_key(&family(name, kind)))
            .map(|(n, _)| n)
            .collect();
        let webdav = !samples(
            &f,
            "wormfs_request_duration_seconds_count",
            &[("face", "webdav")],
        )
        .is_empty();
        (missing.is_empty() && webdav).then_some(f)
    });

    // Phase 3: types and labels as documented.
    for (name, (kind, labels)) in &docs {
        let (ty, ss) = &families[&family(name, kind)];
        assert_eq!(ty, kind, "{name}");
        let want: BTreeSet<String> = labels
            .split(", ")
            .filter(|l| *l != "-")
            .map(|l| l.trim_matches('`').to_owned())
            .collect();
        for s in ss {
            let got: BTreeSet<String> = s.labels.keys().filter(|k| *k != "le").cloned().collect();
            assert_eq!(got, want, "{name}: {s:?}");
        }
    }

    // Phase 4: sane values.
    let f = &families;
    assert_eq!(value(f, "wormfs_files", &[]), 1.0);
    assert_eq!(value(f, "wormfs_logical_bytes", &[]), data.len() as f64);
    let totals = samples(f, "wormfs_disk_total_bytes", &[]);
    assert_eq!(totals.len(), 6, "the embedded default's six folder-disks");
    for d in &totals {
        let l: Vec<(&str, &str)> = d
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(d.value > 0.0, "{d:?}");
        assert!(value(f, "wormfs_disk_free_bytes", &l) <= d.value, "{d:?}");
        let mut active = l.clone();
        active.push(("state", "active"));
        assert_eq!(value(f, "wormfs_disk_state", &active), 1.0, "{d:?}");
        let mut up = l.clone();
        up.push(("status", "up"));
        assert_eq!(value(f, "wormfs_disk_status", &up), 1.0, "{d:?}");
        assert_eq!(value(f, "wormfs_disk_checksum_failures_total", &l), 0.0);
    }
    let used: f64 = samples(f, "wormfs_disk_used_bytes", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(
        used >= data.len() as f64,
        "parts hold at least the data: {used}"
    );
    let written: f64 = samples(f, "wormfs_disk_written_bytes_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(written >= data.len() as f64, "{written}");
    let segments: f64 = samples(f, "wormfs_segments", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(segments >= 1.0, "{segments}");
    assert!(samples(f, "wormfs_segments", &[])
        .iter()
        .all(|s| s.labels["tolerance"].parse::<i64>().is_ok_and(|t| t >= 1) || s.value == 0.0));
    assert_eq!(value(f, "wormfs_segments_below_policy", &[]), 0.0);
    assert_eq!(value(f, "wormfs_raft_role", &[("role", "leader")]), 1.0);
    assert_eq!(value(f, "wormfs_raft_role", &[("role", "follower")]), 0.0);
    assert!(value(f, "wormfs_raft_term", &[]) >= 1.0);
    let applied = value(f, "wormfs_raft_applied_index", &[]);
    assert!((1.0..=value(f, "wormfs_raft_last_log_index", &[])).contains(&applied));
    // Read after the applied index, the commit index is at least that.
    assert!(value(f, "wormfs_raft_commit_index", &[]) >= applied);
    assert_eq!(value(f, "wormfs_raft_voters", &[]), 1.0);
    assert!(value(f, "wormfs_ingest_files_total", &[]) >= 1.0);
    assert!(value(f, "wormfs_ingest_bytes_total", &[]) >= data.len() as f64);
    assert_eq!(value(f, "wormfs_ingest_failures_total", &[]), 0.0);
    assert_eq!(value(f, "wormfs_ingest_in_progress", &[]), 0.0);
    assert_eq!(value(f, "wormfs_repair_queue_segments", &[]), 0.0);
    assert_eq!(value(f, "wormfs_repair_failures_total", &[]), 0.0);
    let progress = value(f, "wormfs_scrub_progress_ratio", &[]);
    assert!((0.0..=1.0).contains(&progress), "{progress}");
    let backup_age = value(f, "wormfs_meta_backup_age_seconds", &[]);
    assert!(backup_age == -1.0 || backup_age >= 0.0, "{backup_age}");
    let puts = samples(
        f,
        "wormfs_request_duration_seconds_count",
        &[
            ("face", "api"),
            ("method", "PUT"),
            ("route", "/api/v1/files/{*path}"),
        ],
    );
    assert!(puts.iter().map(|s| s.value).sum::<f64>() >= 1.0, "{puts:?}");
    // Route templates only: no series names a file's path.
    for s in samples(f, "wormfs_request_duration_seconds_count", &[]) {
        assert!(!s.labels["route"].contains("f.bin"), "{s:?}");
    }
    assert!(
        value(
            f,
            "wormfs_request_errors_total",
            &[("face", "api"), ("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        value(
            f,
            "wormfs_request_errors_total",
            &[("face", "webdav"), ("status", "401")]
        ) >= 1.0
    );
    assert_eq!(
        value(f, "wormfs_build_info", &[]),
        1.0,
        "{:?}",
        samples(f, "wormfs_build_info", &[])
    );

    // Phase 5: the dashboard uses documented names that this node exports.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("packaging/grafana/wormfs-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dash, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    let mut used = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("wormfs_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    for name in &used {
        // A histogram's series are its name with a suffix.
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|sfx| {
                name.strip_suffix(sfx)
                    .filter(|b| docs.get(*b).is_some_and(|(k, _)| k == "histogram"))
            })
            .unwrap_or(name);
        let (kind, _) = docs
            .get(base)
            .unwrap_or_else(|| panic!("the dashboard uses {name}, not in docs/metrics.md"));
        assert!(
            families.contains_key(&family(base, kind)),
            "the dashboard uses {name}, which the node does not export"
        );
    }

    // Phase 6: without a token, loopback only.
    match own_address() {
        Some(ip) => {
            let (status, body) = get((ip, port).into(), "/metrics", None);
            assert_eq!(status, 403, "{body}");
            assert!(
                body.contains("loopback") && body.contains(&ip.to_string()),
                "{body}"
            );
            // The rest of the API is not affected.
            assert_eq!(get((ip, port).into(), "/api/v1/health", None).0, 200);
        }
        None => eprintln!(
            "no non-loopback address on this machine: the 403 is checked by the unit test \
             metrics::tests::the_token_or_loopback_decides"
        ),
    }
    // An API token does not open /metrics, nor does /metrics take one.
    assert_eq!(get(api, "/metrics", Some("whatever")).0, 200);
}

/// With `admin.metrics_token_file` set, `/metrics` asks every client for that token, loopback
/// included: 401 without one or with another, 200 with it. A token file others can read stops
/// the node at start, naming the file and the key.
#[test]
fn metrics_token_is_asked_of_everyone_when_set() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let token_file = t.path().join("metrics-token");
    std::fs::write(
        &token_file,
        "  t0ken-for-prometheus  \nsecond line ignored\n",
    )
    .unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Phase 1: a loose mode is refused before anything starts.
    let tf = token_file.to_str().unwrap();
    let o = Command::new(BIN)
        .args(["serve", "--mdns", "off", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .current_dir(t.path())
        .env("WORMFS_ADMIN__METRICS_TOKEN_FILE", tf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("admin.metrics_token_file") && err.contains(tf) && err.contains("chmod 600"),
        "{err}"
    );

    // Phase 2: with mode 0600 the node starts and asks for the token.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let s = Server::start_env(
        t.path(),
        port,
        &[],
        &[("WORMFS_ADMIN__METRICS_TOKEN_FILE", tf)],
    );
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let (status, body) = get(api, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing metrics token"), "{body}");
    let (status, body) = get(api, "/metrics", Some("t0ken-for-prometheu"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong metrics token"), "{body}");
    // The node's own API token is not the metrics token.
    let admin = std::fs::read_to_string(t.path().join("wormfs-data/admin-token")).unwrap();
    assert_eq!(get(api, "/metrics", Some(admin.trim())).0, 401);
    let (status, body) = get(api, "/metrics", Some("t0ken-for-prometheus"));
    assert_eq!(status, 200, "{body}");
    assert!(parse(&body).contains_key("wormfs_raft_role"));
    drop(s);
}

/// `--log-format json`: every line the node writes to standard error is one JSON object with
/// `timestamp`, `level`, `target`, and the event's `message` and fields at the top level;
/// an event inside spans lists them in `spans`, outermost first, each with its `name`.
#[test]
fn metrics_json_log_is_one_object_per_line_with_stable_fields() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(t.path(), free_port(), &["--log-format", "json"]);
    std::fs::write(t.path().join("a.txt"), b"hello").unwrap();
    s.ok(&["put", "a.txt", "/a.txt"]);
    let lines = wait_for(30, "the ingest's log line", || {
        let log = std::fs::read_to_string(&s.log).unwrap();
        log.contains("ingest committed")
            .then(|| log.lines().map(str::to_owned).collect::<Vec<_>>())
    });
    let mut events = Vec::new();
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{l}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{l}"
        );
        assert!(v["target"].as_str().is_some_and(|t| !t.is_empty()), "{l}");
        // Every WormFS event says something; another library's may carry fields only.
        let target = v["target"].as_str().unwrap_or("");
        assert!(
            v["message"].is_string() || !target.starts_with("wormfs"),
            "{l}"
        );
        assert!(v.get("fields").is_none() && v.get("span").is_none(), "{l}");
        events.push(v);
    }
    // The first line: what runs, with its fields at the top level.
    let first = &events[0];
    assert!(
        first["message"].as_str().unwrap().starts_with("running "),
        "{first}"
    );
    assert!(
        first["data_dir"].is_string() && first["mdns"] == false,
        "{first}"
    );
    // The banners for people are events too.
    assert!(
        events.iter().any(
            |e| e["note"] == true && e["message"].as_str().unwrap().contains("serving the API")
        ),
        "{lines:?}"
    );
    // The API token is not in the log, only where it is.
    let token = std::fs::read_to_string(t.path().join("wormfs-data/admin-token")).unwrap();
    assert!(
        !lines.iter().any(|l| l.contains(token.trim())),
        "the token was logged"
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("admin-token")),
        "{lines:?}"
    );
    // An event inside the API request's span and the ingest's.
    let done = events
        .iter()
        .find(|e| e["message"] == "ingest committed")
        .unwrap();
    assert_eq!(done["path"], "/a.txt", "{done}");
    assert_eq!(done["size"], 5, "{done}");
    let spans: Vec<&str> = done["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(spans, ["api", "ingest"], "{done}");
    assert_eq!(done["spans"][0]["method"], "PUT", "{done}");
}
